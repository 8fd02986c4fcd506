"""Many jobs through one client process: requests per job, detection lag, CPU, memory.

    uv run python load/many_jobs.py [--jobs 1000 10000] [--modes plain long-poll batch]
                                    [--time-scale 0.25] [--seed 1] [--json PATH]

Starts ``vtpoll serve`` as a separate process, creates the jobs (durations lognormal,
median 8 s, clipped to [1, 60] s, times ``--time-scale``, plus a lead of 2 s + 1 ms per job so
that none ends before the client starts; 10% end in error), then runs each
mode in a fresh client process so that its peak RSS is its own:

- plain: one request per check, hint-aware, no long-poll, no batch;
- long-poll: one request per check with ``Prefer: wait``, ``max_in_flight`` = jobs;
- batch: checks due within 5 ms go out as one ``GET /jobs?ids=`` request.

Detection lag is the server's own figure: in the first final answer a job gets, ``elapsed``
minus its duration (server time), so clocks never need to agree.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_seconds, server


def workload(jobs: int, scale: float, seed: int) -> dict[str, tuple[float, str]]:
    """Durations from workload W, each plus a lead time: the jobs are created before the
    client process starts, and a job that finished before anyone could ask would measure the
    start-up, not the polling."""
    rng = random.Random(seed)
    lead = 2.0 + jobs / 1000
    out = {}
    for i in range(jobs):
        duration = lead + min(60.0, max(1.0, rng.lognormvariate(math.log(8), 0.8))) * scale
        out[f"w{seed}-{i}"] = (duration, "error" if rng.random() < 0.1 else "completed")
    return out


async def create(url: str, jobs: dict[str, tuple[float, str]]) -> None:
    items = list(jobs.items())
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def worker() -> None:
            while items:
                job_id, (duration, outcome) = items.pop()
                r = await http.post(
                    "/jobs", json={"job_id": job_id, "duration": duration, "outcome": outcome}
                )
                r.raise_for_status()

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(worker)


def client_run(url: str, mode: str, spec_path: str) -> None:
    """Runs in its own process: poll every job, print one JSON line of measurements."""
    from video_translation_client import StatusPollingConfig, VideoTranslationClient

    jobs: dict[str, list[Any]] = json.loads(Path(spec_path).read_text())
    lags: list[float] = []

    def on_change(resp: object) -> None:
        payload = resp.payload  # type: ignore[attr-defined]
        if resp.is_final:  # type: ignore[attr-defined]
            duration = float(jobs[resp.job_id][0])  # type: ignore[attr-defined]
            lags.append(float(payload["elapsed"]) - duration)

    config = StatusPollingConfig(timeout=600, long_poll=25 if mode == "long-poll" else 0)
    kwargs: dict[str, object] = {"rate_limit": None, "batch": mode == "batch"}
    if mode == "long-poll":
        kwargs["max_in_flight"] = len(jobs)

    async def main() -> dict[str, object]:
        async with VideoTranslationClient(url, config, on_status_change=on_change, **kwargs) as c:  # type: ignore[arg-type]
            cpu0, wall0 = time.process_time(), time.perf_counter()
            results = await c.poll_many(list(jobs))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            stats = c.statistics()
        wrong = sum(1 for r in results if r.outcome.value != jobs[r.job_id][1])
        return {
            "requests": stats.requests,
            "checks": stats.status_checks,
            "cpu": cpu,
            "wall": wall,
            "wrong": wrong,
            "lags": lags,
        }

    out = trio.run(main)
    out["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--modes", nargs="+", default=["plain", "long-poll", "batch"])
    parser.add_argument("--time-scale", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_run(*args.client)
        return

    baseline = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource, video_translation_client, trio, httpx;"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    base_rss = int(baseline.stdout)
    rows = []
    header = (
        f"{'jobs':>6} {'mode':<10} {'req/job':>8} {'lag p50':>9} {'lag p99':>9}"
        f" {'µs CPU/check':>13} {'KiB/job':>8} {'wrong':>5}"
    )
    print(header, flush=True)
    with server("--max-wait", "30") as (url, proc):
        for n in args.jobs:
            for k, mode in enumerate(args.modes):
                jobs = workload(n, args.time_scale, args.seed * 1000 + n + k)
                trio.run(create, url, jobs)
                spec = Path(f"/tmp/many_jobs_{n}_{mode}.json")
                spec.write_text(json.dumps(jobs))
                server_cpu0 = cpu_seconds(proc.pid)
                out = json.loads(
                    subprocess.run(
                        [sys.executable, __file__, "--client", url, mode, str(spec)],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                )
                lags = [x * 1000 for x in out["lags"]]
                row = {
                    "jobs": n,
                    "policy": mode,
                    "requests_per_job": round(out["requests"] / n, 3),
                    "checks_per_job": round(out["checks"] / n, 3),
                    "lag_p50_ms": round(pct(lags, 0.5), 1),
                    "lag_p99_ms": round(pct(lags, 0.99), 1),
                    "client_cpu_s": round(out["cpu"], 2),
                    "client_cpu_us_per_check": round(out["cpu"] / out["checks"] * 1e6, 1),
                    "server_cpu_s": round(cpu_seconds(proc.pid) - server_cpu0, 2),
                    "peak_rss_kib_per_job": round((out["peak_rss_kib"] - base_rss) / n, 2),
                    "wall_s": round(out["wall"], 1),
                    "jobs_wrong": out["wrong"],
                }
                rows.append(row)
                print(
                    f"{n:>6} {mode:<10} {row['requests_per_job']:>8} {row['lag_p50_ms']:>9} "
                    f"{row['lag_p99_ms']:>9} {row['client_cpu_us_per_check']:>13} "
                    f"{row['peak_rss_kib_per_job']:>8} {row['jobs_wrong']:>5}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
