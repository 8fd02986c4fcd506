"""Each load script run end to end on a tiny workload: its report has the right shape and its
invariants hold (no job lost, percentiles ordered, costs positive, plots valid).

The numbers themselves belong to full runs (load/README.md): nothing here depends on how fast
this machine is. The scripts run one after another, each in a session of its own that is ended
as a whole afterwards, so that no server or client process they started outlives the test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import spawn, stop

LOAD = Path(__file__).parents[2] / "load"
PNG = b"\x89PNG\r\n\x1a\n"
#: A generous bound on one script's run, for a busy machine; it usually takes a few seconds.
SCRIPT_TIMEOUT = 120


def run_script(
    script: str, folder: Path, *args: str, workload: bool = True
) -> tuple[list[dict[str, Any]], str]:
    """Run ``load/SCRIPT.py ARGS`` (with a seed and plots into ``folder`` for the workload
    scripts); its JSON rows and its stdout (it must exit 0)."""
    out = folder / f"{script}.json"
    common = ["--seed", "3", "--plots", str(folder)] if workload else []
    proc = spawn(
        [sys.executable, str(LOAD / f"{script}.py"), *args, *common, "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = proc.communicate(timeout=SCRIPT_TIMEOUT)
    finally:
        # The script's session holds its server and client processes: end them all, whatever
        # happened to the script.
        stop(proc)
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(out.read_text()), stdout


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG, path


def assert_lags(row: dict[str, Any]) -> None:
    assert 0 <= row["lag_p50_ms"] <= row["lag_p99_ms"], row


def test_policies(tmp_path: Path):
    """Every policy asked for has a row with its costs and lags; none loses a job.

    The script has two ways to poll: the original design's loop, written out in it, and the
    library (every other policy is the library with other settings).
    """
    rows, stdout = run_script(
        "policies",
        tmp_path,
        *("--jobs", "24", "--time-scale", "0.02", "--policies", "original", "batch"),
    )
    assert [r["policy"] for r in rows] == ["original", "batch"]
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
    assert by["batch"]["requests_per_job"] < 1 <= by["original"]["requests_per_job"]
    assert "req/job" in stdout
    assert_png(tmp_path / "policies_lag_cdf.png")
    assert_png(tmp_path / "policies_requests.png")


def test_scale(tmp_path: Path):
    """A row per size, with memory, CPU per check, rate and the server's ceiling (when wrk
    is installed). (Single requests are the same client code with batch off: not run here.)"""
    rows, _ = run_script(
        "scale",
        tmp_path,
        *("--jobs", "30", "--time-scale", "0.05", "--single-up-to", "0", "--wrk-seconds", "1"),
    )
    assert [(r["jobs"], r["policy"]) for r in rows] == [(30, "batch")]
    for row in rows:
        assert row["jobs_lost"] == 0, row
        assert row["peak_rss_kib_per_job"] >= 0
        assert row["client_cpu_us_per_check"] > 0
        assert row["checks_per_s"] > 0
        assert 0 < row["requests_per_job"] < 1
        if shutil.which("wrk"):
            assert row["server_ceiling_checks_per_s"] > 0
    assert_png(tmp_path / "scale.png")


def test_chaos(tmp_path: Path):
    """Through faults, a rate limit and a server killed and restarted, no job is lost and every
    outcome is the server's (one policy: the script runs each the same way)."""
    rows, stdout = run_script(
        "chaos",
        tmp_path,
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


def test_hostile(tmp_path: Path):
    """A gzip bomb and an endless body: each job fails naming the size limit, and the client's
    memory stays within a few MiB of where it started (the limit is 1 MiB)."""
    rows, _ = run_script(
        "hostile",
        tmp_path,
        *("--bomb-mib", "64", "--endless-mib", "16", "--max-retries", "0"),
        workload=False,
    )
    assert [r["case"] for r in rows] == ["bomb", "endless"]
    for row in rows:
        assert row["outcome"] == "failed", row
        assert "max_response_bytes" in row["error"], row
        assert row["requests"] == 1
        assert 0 < row["sent_mib"] < row["body_mib"], row
        assert row["rss_peak_mib"] - row["rss_before_mib"] < 32, row
