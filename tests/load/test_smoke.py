"""Each load script run with a tiny workload: its report is complete and its numbers sane."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

LOAD = Path(__file__).parents[2] / "load"
PNG = b"\x89PNG\r\n\x1a\n"


def run(script: str, tmp_path: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    out = tmp_path / f"{script}.json"
    common = ["--seed", "3", "--json", str(out), "--plots", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(LOAD / f"{script}.py"), *args, *common],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG, path


def assert_lags(row: dict[str, Any]) -> None:
    assert 0 <= row["lag_p50_ms"] <= row["lag_p99_ms"] < 10_000, row


def test_policies(tmp_path: Path):
    """Every policy asked for has a row; the cheap policies cost fewer requests than 1 s polls.

    40 jobs: long-poll then holds more connections than one pool of SHARD_SIZE.
    """
    policies = ["fixed-1s", "original", "long-poll", "batch"]
    rows, stdout = run(
        "policies",
        tmp_path,
        *("--jobs", "40", "--time-scale", "0.02", "--policies", *policies),
    )
    assert [r["policy"] for r in rows] == policies
    for row in rows:
        assert row["jobs_lost"] == 0, row
        assert_lags(row)
        assert row["lag_p50_ms"] <= row["lag_p95_ms"]
        assert 0 < row["requests_per_job"] < 50, row
        assert row["wall_s"] > 0
        assert row["client_cpu_s"] > 0
        assert row["server_cpu_s"] > 0
        assert row["throttled"] == 0
    by = {r["policy"]: r for r in rows}
    assert by["long-poll"]["requests_per_job"] <= 1.5
    assert by["batch"]["requests_per_job"] < by["fixed-1s"]["requests_per_job"]
    assert "req/job" in stdout
    assert_png(tmp_path / "policies_lag_cdf.png")
    assert_png(tmp_path / "policies_requests.png")


def test_scale(tmp_path: Path):
    """Batch and single rows per size, with memory, CPU per check, rate and the server ceiling."""
    rows, _ = run(
        "scale",
        tmp_path,
        *("--jobs", "40", "120", "--time-scale", "0.05", "--single-up-to", "40"),
        *("--wrk-seconds", "1"),
    )
    assert [(r["jobs"], r["policy"]) for r in rows] == [
        (40, "batch"),
        (40, "single"),
        (120, "batch"),
    ]
    for row in rows:
        assert row["jobs_lost"] == 0, row
        assert row["peak_rss_kib_per_job"] >= 0
        assert 0 < row["client_cpu_us_per_check"] < 1e6
        assert row["checks_per_s"] > 0
        if shutil.which("wrk"):
            assert row["server_ceiling_checks_per_s"] > 0
    single = rows[1]["requests_per_job"]
    assert rows[0]["requests_per_job"] < single
    assert_png(tmp_path / "scale.png")


def test_chaos(tmp_path: Path):
    """Through faults, a rate limit and a server kill, no job is lost."""
    rows, stdout = run(
        "chaos",
        tmp_path,
        *("--jobs", "30", "--time-scale", "0.05", "--fault-rate", "0.03", "--kill-at", "0.2"),
    )
    assert [r["policy"] for r in rows] == ["batch", "hint-aware"]
    for row in rows:
        assert row["jobs_lost"] == 0, row
        assert row["wrong_outcomes"] == 0, row
        assert row["downtime_s"] > 0
        assert 0 <= row["share_429"] < 1
        assert row["extra_requests_per_job"] >= 0
        assert_lags(row)
    assert "lost" in stdout
    assert_png(tmp_path / "chaos_lag_cdf.png")
