"""The load scripts that draw no plot (fleet, overhead, hostile, refusals), each run end to
end on a tiny workload: its report has the right shape and its invariants hold (every job's
result once, costs positive, memory bounded).

The numbers themselves belong to full runs (load/README.md): nothing here depends on how fast
this machine is.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.fleet.conftest import COREDIS_LEAK
from tests.helpers import spawn, stop

from .scripts import script


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
def test_refusals(tmp_path: Path, run_script: Callable[..., Any]):
    """A row per share of 429s at random (with Retry-After and without) and per client rate
    against a real limit (here in ElevenLabs' dialect, whose 429s say nothing of when to come
    back): every job ends completed, the run without 429s is the yardstick
    (x 1), and a floor is drawn only where a Retry-After imposes one."""
    rows, stdout = run_script(
        "refusals",
        *("--workloads", "A", "--modes", "single", "--shares", "0.2"),
        *("--dialects", "elevenlabs", "--rates", "none", "--runs", "1", "--scale", "20"),
        workload=False,
    )
    assert [(r["scenario"], r.get("share"), r.get("retry_after")) for r in rows] == [
        ("random", 0.0, None),
        ("random", 0.2, True),
        ("random", 0.2, False),
        ("limit", None, False),
    ]
    for row in rows:
        assert row["lost"] == 0, row
        assert row["jobs"] == (10 if row["scenario"] == "random" else 30)
        assert row["requests_per_job"] >= 1, row
        assert 0 <= row["refused_share"] < 1, row
    assert rows[0]["x_none"] == 1
    assert rows[0]["floor_x"] == 1
    assert rows[1]["floor_x"] >= 1
    assert rows[2]["floor_x"] == 1  # nothing imposed a wait
    for row in rows[3:]:
        assert row["refused_worst"] == row["refused_share"]  # one run
        assert row["accepted_per_s"] > 0
    assert "floor x" in stdout


def test_the_refusals_floor_grows_with_the_share():
    """The least a client loses to refusals that each say Retry-After: nothing without
    refusals or without the hint; more at a higher share (the draws are the same, so each
    job is refused at least as often)."""
    floor = script("refusals").floor_extra
    lengths = [1.5 + k / 100 for k in range(200)]
    assert floor(lengths, 0.0, 1.0, 7) == 0
    assert floor(lengths, 0.2, 0.0, 7) == 0
    low, high = floor(lengths, 0.05, 1.0, 7), floor(lengths, 0.2, 1.0, 7)
    assert 0 < low <= high


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


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--chaos-on", "cluster", "--chaos", "freeze-redis"], "only the workers' faults"),
        (["--chaos", "all", "--chaos-workers", "2"], "--chaos-workers too few"),
    ],
)
def test_fleet_refuses_chaos_it_cannot_strike(
    args: list[str], said: str, capsys: pytest.CaptureFixture[str]
):
    """Redis's faults strike the single Redis only, and ``all`` needs a worker for each of
    the workers' three faults: refused before anything starts."""
    with pytest.raises(SystemExit) as exited:
        script("fleet").main(args)
    assert exited.value.code == 2
    assert said in capsys.readouterr().err


def test_a_fleet_worker_that_ends_before_the_run_is_reported(tmp_path: Path):
    """fleet.py keeps each worker's stderr: one that ended while the run went on is named with
    its exit code and last words (a worker of the 1,000,000-job run ended unseen); one still
    running is not, nor the one the kill chaos ended (alone or among all five faults)."""
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
        assert fleet.ended_early(workers, tmp_path, "all") == said[1:]  # w0 is the one killed
        assert fleet.ended_early(workers, tmp_path, "freeze-worker") == said
    finally:
        stop(running)
