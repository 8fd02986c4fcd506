"""Shared by the load scripts: the server as a separate process, its metrics, the standard
options, tables, JSON and plots."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from sim_server.testing import tls, wait_healthy

RESULTS = Path(__file__).parent / "results"
#: ``vtpoll serve`` without the command line's own imports (half a second a start).
SERVE = [sys.executable, "-m", "sim_server"]
#: The plots' resolution, dots per inch (their smoke tests draw the same figures at 20:
#: compressing a plot's pixels at 110 cost 30 ms of the 200 ms a plot takes).
DPI = 110
#: prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child before exec: a script killed outright (SIGKILL, a test's timeout) must
    # not leave its server or client processes running.
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """A child process of the script (text mode) that ends when the script ends."""
    return subprocess.Popen(argv, text=True, preexec_fn=_die_with_parent, **kwargs)


@contextmanager
def server(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``vtpoll serve --port 0 ARGS`` on 127.0.0.1; yields (url, process)."""
    proc = spawn(
        [*SERVE, "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        if not select.select([proc.stdout], [], [], 30)[0]:
            raise SystemExit("server printed no URL in 30 s")
        url = proc.stdout.readline().strip()
        wait_healthy(url, timeout=30)
        yield url, proc
    finally:
        stop(proc)


def client_process(script: str, *args: str) -> subprocess.Popen[str]:
    """The script again as a client process (``script --client ARGS``): each measured client
    runs alone in a fresh process, so that its CPU and memory are its own."""
    return spawn([sys.executable, script, "--client", *args], stdout=subprocess.PIPE)


def client_report(client: subprocess.Popen[str], what: str, timeout: float | None = None) -> Any:
    """What the client process reported (:func:`report`), once it has ended."""
    stdout, _ = client.communicate(timeout=timeout)
    if client.returncode != 0:
        raise SystemExit(f"{what}: the client process failed ({client.returncode})")
    return json.loads(stdout.splitlines()[-1])


def report(out: Any) -> None:
    """In a client process: hand the measurements to the script, as the last line."""
    print(json.dumps(out), flush=True)


def run_wrk(url: str, seconds: int, connections: int, threads: int) -> float:
    """Requests per second ``wrk`` (the Debian package) gets from ``url``."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? ([0-9.e+-]+)$")


def metrics(url: str) -> dict[str, float]:
    """The server's counters that the scripts read: status requests, checks, faults, 429s."""
    text = httpx.get(f"{url}/metrics", timeout=10, verify=tls(url)).text
    out = {"status_requests": 0.0, "status_checks": 0.0, "faults": 0.0, "throttled": 0.0}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
        if (
            name == "sim_requests_total"
            and 'method="GET"' in labels
            and ('route="/jobs/{id}"' in labels or 'route="/jobs"' in labels)
        ):
            out["status_requests"] += value
        elif name == "sim_status_checks_total":
            out["status_checks"] += value
        elif name == "sim_faults_injected_total":
            out["faults"] += value
        elif name == "sim_rate_limited_total":
            out["throttled"] += value
    return out


def standard_args(parser: argparse.ArgumentParser, *, jobs: int | list[int] = 1000) -> None:
    """The options every script takes: workload W's size, time scale, seed, JSON path."""
    if isinstance(jobs, list):
        parser.add_argument(
            "--jobs", type=int, nargs="+", default=jobs, help=f"sizes (default {jobs})"
        )
    else:
        parser.add_argument("--jobs", type=int, default=jobs, help=f"jobs (default {jobs})")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="multiply every duration (default 1)"
    )
    parser.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    parser.add_argument("--json", type=Path, help="write the table's rows here as JSON")
    parser.add_argument(
        "--plots", type=Path, default=RESULTS, help=f"folder for the PNG plots (default {RESULTS})"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the plots")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """Columns are (key, heading); numbers right-aligned."""
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [
        max(len(heading), *(len(r[i]) for r in cells)) for i, (_, heading) in enumerate(columns)
    ]
    print("  ".join(h.rjust(w) for (_, h), w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)), flush=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"  # not measured in this row
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def write_json(path: Path | None, rows: list[dict[str, Any]]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {path}")


def pyplot() -> Any:
    """matplotlib without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lag_cdf(lags_ms: dict[str, list[float]], title: str, folder: Path, name: str) -> None:
    """One CDF line of detection lag per label, on a log axis (lags under 0.1 ms drawn at it)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, values in lags_ms.items():
        lags = sorted(max(lag, 0.1) for lag in values)
        if lags:
            ax.plot(lags, [(i + 1) / len(lags) for i in range(len(lags))], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("detection lag, ms (log)")
    ax.set_ylabel("share of jobs seen final")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save(fig, folder, name)


def save(fig: Any, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    # pyplot holds every figure it made until closed: the smoke tests draw six in one
    # process, 23,000 objects that each full collection of the rest of its tests went over.
    pyplot().close(fig)
    print(f"wrote {path}")
