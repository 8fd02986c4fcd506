"""Each load script run end to end on a tiny workload: its report has the right shape and its
invariants hold (no job lost, percentiles ordered, costs positive, plots valid).

The numbers themselves belong to full runs (load/README.md): nothing here depends on how fast
this machine is. The scripts run one after another, in this process (their servers and clients
are processes of their own, stopped by the scripts, and by the suite's check that nothing is
left running), so that Python, the scripts' imports and matplotlib start once, not once a
script. Their servers and clients are forked from the suite's zygote (tests/_zygote.py), not
started: a server's start costs 1 s of CPU importing Quart and hypercorn, a client's 0.6 s, and
these tests start seventeen.
"""

from __future__ import annotations

import gc
import importlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests._zygote import Zygote
from tests.fleet.conftest import COREDIS_LEAK
from tests.helpers import spawn, stop

from .scripts import LOAD, script

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def small_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripts' plots drawn at a low resolution: what is checked is that each is drawn
    and written, not its pixels."""
    monkeypatch.syspath_prepend(str(LOAD))  # where the scripts import it from
    monkeypatch.setattr(importlib.import_module("_common"), "DPI", 20)


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch, zygote: Zygote) -> Callable[[ModuleType], None]:
    """Makes a load script's Python processes (``python ...``, through ``_common.spawn``)
    children of the zygote; the others (redis-server) it starts as it would."""

    def fork_from(module: ModuleType) -> None:
        common = sys.modules["_common"]  # imported by the script
        started: Callable[..., subprocess.Popen[str]] = common.spawn

        def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
            if argv[0] != sys.executable:
                return started(argv, **kwargs)
            return zygote.python(argv[1:], **kwargs)

        monkeypatch.setattr(common, "spawn", spawn)
        if hasattr(module, "spawn"):  # imported by name
            monkeypatch.setattr(module, "spawn", spawn)

    return fork_from


@pytest.fixture
def run_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], forked: Callable[[ModuleType], None]
) -> Callable[..., tuple[list[dict[str, Any]], str]]:
    """``run_script(NAME, *ARGS)``: ``load/NAME.py ARGS`` (with a seed and plots into the
    test's folder for the workload scripts, its processes forked): its JSON rows and what it
    printed."""

    def run(name: str, *args: str, workload: bool = True) -> tuple[list[dict[str, Any]], str]:
        out = tmp_path / f"{name}.json"
        common = ["--seed", "3", "--plots", str(tmp_path)] if workload else []
        module = script(name)
        forked(module)
        module.main([*args, *common, "--json", str(out)])
        return json.loads(out.read_text()), capsys.readouterr().out

    return run


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG, path


def assert_lags(row: dict[str, Any]) -> None:
    assert 0 <= row["lag_p50_ms"] <= row["lag_p99_ms"], row


@pytest.mark.long
def test_policies(tmp_path: Path, run_script: Callable[..., Any]):
    """Every policy asked for has a row with its costs and lags; none loses a job.

    The script has two ways to poll: the original design's loop, written out in it, and the
    library (every other policy is the library with other settings); and two servers: the
    simulation, and the same run --plain, like the original backend.
    """
    rows, stdout = run_script(
        "policies",
        *("--jobs", "24", "--time-scale", "0.02", "--longest", "20"),
        *("--policies", "batch", "--plain-policies", "original"),
    )
    assert [r["policy"] for r in rows] == ["batch", "original @plain"]
    for row in rows:
        assert row["jobs"] == 24
        assert row["jobs_lost"] == 0, row
        assert_lags(row)
        assert row["lag_p50_ms"] <= row["lag_p95_ms"] <= row["lag_p99_ms"]
        assert row["wall_s"] > 0
        assert row["client_cpu_s"] > 0
        assert row["server_cpu_s"] > 0
        assert row["throttled"] == 0
        assert row["late_start_s"] >= 0
    by = {r["policy"]: r for r in rows}
    # Batch shares requests between jobs; one request per check never can.
    assert by["batch"]["requests_per_job"] < 1 <= by["original @plain"]["requests_per_job"]
    assert "req/job" in stdout
    assert_png(tmp_path / "policies_lag_cdf.png")
    assert_png(tmp_path / "policies_requests.png")


@pytest.mark.long
def test_scale(tmp_path: Path, run_script: Callable[..., Any]):
    """A row per size, with memory, CPU per check and rate. (Single requests are the same
    client code with batch off, and wrk's ceiling two busy CPU seconds: not run here.)"""
    rows, _ = run_script(
        "scale",
        *("--jobs", "30", "--time-scale", "0.05", "--single-up-to", "0", "--wrk-seconds", "0"),
    )
    assert [(r["jobs"], r["policy"]) for r in rows] == [(30, "batch")]
    for row in rows:
        assert row["jobs_lost"] == 0, row
        assert row["peak_rss_kib_per_job"] >= 0
        assert row["client_cpu_us_per_check"] > 0
        assert row["checks_per_s"] > 0
        assert 0 < row["requests_per_job"] < 1
        assert row["server_ceiling_checks_per_s"] is None
    assert_png(tmp_path / "scale.png")


@pytest.mark.long
def test_chaos(tmp_path: Path, run_script: Callable[..., Any]):
    """Through faults, a rate limit and a server killed and restarted, no job is lost and every
    outcome is the server's (one policy: the script runs each the same way)."""
    rows, stdout = run_script(
        "chaos",
        *("--jobs", "16", "--time-scale", "0.05", "--fault-rate", "0.02", "--kill-at", "0.1"),
        *("--policies", "batch"),
    )
    assert [r["policy"] for r in rows] == ["batch"]
    for row in rows:
        assert row["jobs"] == 16
        assert row["jobs_lost"] == 0, row
        assert row["wrong_outcomes"] == 0, row
        assert row["downtime_s"] > 0
        assert 0 <= row["share_429"] < 1
        assert row["extra_requests_per_job"] >= 0
        assert_lags(row)
    assert "lost" in stdout
    assert_png(tmp_path / "chaos_lag_cdf.png")


def test_hostile(tmp_path: Path, run_script: Callable[..., Any]):
    """A gzip bomb and an endless body: each job fails naming the size limit, and the client's
    memory stays within a few MiB of where it started (the limit is 1 MiB)."""
    rows, _ = run_script(
        "hostile",
        *("--bomb-mib", "8", "--endless-mib", "4", "--max-retries", "0"),
        workload=False,
    )
    assert [r["case"] for r in rows] == ["bomb", "endless"]
    for row in rows:
        assert row["outcome"] == "failed", row
        assert "max_response_bytes" in row["error"], row
        assert row["requests"] == 1
        assert 0 < row["sent_mib"] < row["body_mib"], row
        assert row["rss_peak_mib"] - row["rss_before_mib"] < 32, row


@pytest.mark.long
def test_patterns(tmp_path: Path, run_script: Callable[..., Any]):
    """A row per way of calling and size; every outcome true; a check of its own costs a job at
    least one request, and batching never more than that."""
    rows, _ = run_script(
        "patterns",
        *("--sizes", "12", "--time-scale", "0.02", "--longest", "20"),
        *("--patterns", "tasks", "tasks-single"),
    )
    assert [(r["pattern"], r["jobs"]) for r in rows] == [("tasks", 12), ("tasks-single", 12)]
    for row in rows:
        assert row["outcomes_true"] == "12/12", row
        assert_lags(row)
        assert row["lag_p50_ms"] <= row["lag_p95_ms"] <= row["lag_p99_ms"]
        assert row["client_cpu_s"] > 0
        assert row["late_start_s"] >= 0
    by = {r["pattern"]: r for r in rows}
    assert 0 < by["tasks"]["requests_per_job"] <= by["tasks-single"]["requests_per_job"]
    assert by["tasks-single"]["requests_per_job"] >= 1
    assert_png(tmp_path / "patterns_lag_cdf.png")


@pytest.mark.long
def test_overhead(tmp_path: Path, run_script: Callable[..., Any]):
    """A row for raw httpx and one for the library, each with its CPU per request and the
    ratio to httpx's."""
    rows, stdout = run_script("overhead", "--requests", "40", "--rounds", "1", workload=False)
    assert [r["client"] for r in rows] == ["httpx", "library"]
    for row in rows:
        assert row["requests"] == 40
        assert row["cpu_us_per_request"] > 0
        assert row["ratio"] > 0
    httpx_row, library_row = rows
    assert library_row["ratio"] == pytest.approx(
        library_row["cpu_us_per_request"] / httpx_row["cpu_us_per_request"], rel=0.01
    )
    assert "x httpx" in stdout


# coredis's cluster client leaves the memory streams of nodes it never connects to to the
# garbage collector (as in tests/fleet/test_cluster.py).
@pytest.mark.long
@pytest.mark.filterwarnings(COREDIS_LEAK)
def test_fleet(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    forked: Callable[[ModuleType], None],
):
    """Two workers on a real redis-server, one killed with SIGKILL while it holds jobs, and on
    a real 3-master cluster: every job's true result once, the takeover timed, the costs
    counted, and what acknowledging the results leaves in Redis less than before."""
    fleet = script("fleet")
    forked(fleet)
    out = tmp_path / "fleet.json"
    fleet.main(
        [
            *("--jobs", "100", "--backends", "cluster", "--workers", "1"),
            *("--chaos", "kill", "--chaos-workers", "2"),
            *("--completion-time", "0.5", "--lease", "3", "--capacity", "40", "--rate", "400"),
            *("--timeout", "120"),  # a run that cannot end fails, rather than wait 30 minutes
            *("--json", str(out)),
        ]
    )
    rows, stdout = json.loads(out.read_text()), capsys.readouterr().out
    single, cluster = rows
    assert (single["backend"], single["workers"], single["chaos"]) == ("single", 2, "kill")
    assert (cluster["backend"], cluster["shards"], cluster["workers"]) == ("cluster", 3, 1)
    for row in rows:
        assert row["results"] == 100
        assert row["duplicates"] == 0
        assert row["true"] is True
        assert row["jobs_per_s"] > 0
        assert row["requests_per_job"] > 0
        assert row["redis_commands_per_job"] > 0
        assert 0 <= row["redis_bytes_per_job_acked"] < row["redis_bytes_per_job"]
    assert single["takeover_s"] is not None
    assert single["takeover_s"] > 0
    assert "Redis cmds/job" in stdout
    # Collected now, under this test's filter, not during whichever test this worker runs next.
    gc.collect()


def test_plain(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Each schedule has a row per workload and arrival, the best fixed interval among them,
    no job lost; the budget sweep is plotted."""
    plain = script("plain")
    # A small sweep: the shape is the point here.
    monkeypatch.setattr(plain, "LEARN_SWEEP", (2.0, 4.0))
    monkeypatch.setattr(plain, "FIXED_SWEEP", (1.0, 3.0))
    monkeypatch.setattr(plain, "BACKOFF_SWEEP", (1.0,))
    monkeypatch.setattr(plain, "ORIGINAL_SWEEP", (1.0,))
    out = tmp_path / "plain.json"
    plain.main(
        [
            # A few jobs a series: the clock is virtual, each job's checks all CPU.
            *("--jobs", "4", "--sweep-jobs", "3", "--time-scale", "0.03"),
            *("--workloads", "sigma0.5", "--arrivals", "at-once", "spread"),
            *("--seed", "3", "--plots", str(tmp_path), "--json", str(out)),
        ]
    )
    rows = json.loads(out.read_text())
    table = [r for r in rows if r["workload"] == "sigma0.5"]
    assert [(r["arrival"], r["schedule"]) for r in table] == [
        (arrival, schedule)
        for arrival in ("at-once", "spread")
        for schedule in ("original", "backoff", "fixed", "learn")
    ]
    swept = [r for r in rows if r["workload"] == "sigma0.5 sweep"]
    assert {r["schedule"] for r in swept} == {"original", "backoff", "fixed", "learn"}
    for row in rows:
        assert row["jobs_lost"] == 0, row
        assert row["requests_per_job"] >= 1
        assert row["wasted_per_job"] == pytest.approx(row["requests_per_job"] - 1, abs=0.01)
        assert row["lag_p50_s"] <= row["lag_p99_s"]
    assert_png(tmp_path / "plain_budgets.png")
    assert "schedule" in capsys.readouterr().out


def test_a_fleet_worker_that_ends_before_the_run_is_reported(tmp_path: Path):
    """fleet.py keeps each worker's stderr: one that ended while the run went on is named with
    its exit code and last words (a worker of the 1,000,000-job run ended unseen); one still
    running is not, nor the one the kill chaos ended."""
    fleet = script("fleet")

    def worker(i: int, program: str) -> subprocess.Popen[str]:
        with (tmp_path / f"w{i}.log").open("a") as log:
            return spawn([sys.executable, "-c", program], stderr=log)

    ended = worker(0, "import sys; sys.stderr.write('one\\ntwo\\nthree\\nboom\\n'); sys.exit(3)")
    running = worker(1, "import time; time.sleep(60)")
    quiet = worker(2, "pass")
    try:
        ended.wait(timeout=30)
        quiet.wait(timeout=30)
        workers = [ended, running, quiet]
        said = fleet.ended_early(workers, tmp_path, None)
        assert said == [
            f"worker w0 ended before the run, exit 3: two | three | boom ({tmp_path / 'w0.log'})",
            f"worker w2 ended before the run, exit 0: it said nothing ({tmp_path / 'w2.log'})",
        ]
        assert fleet.ended_early(workers, tmp_path, "kill") == said[1:]
    finally:
        stop(running)
