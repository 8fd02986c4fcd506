"""Each load script run with a tiny workload: its report is complete and its numbers sane."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

LOAD = Path(__file__).parents[2] / "load"
PNG = b"\x89PNG\r\n\x1a\n"


#: Each script's tiny workload. The three run at once (they wait on their servers and clients
#: more than they compute): the suite pays for the slowest, not for the sum.
ARGS = {
    "policies": [
        *("--jobs", "40", "--time-scale", "0.02"),
        *("--policies", "fixed-1s", "original", "long-poll", "batch"),
    ],
    "scale": [
        *("--jobs", "40", "120", "--time-scale", "0.05", "--single-up-to", "40"),
        *("--wrk-seconds", "1"),
    ],
    "chaos": [
        *("--jobs", "20", "--time-scale", "0.05", "--fault-rate", "0.02", "--kill-at", "0.2"),
    ],
}


@dataclass
class Run:
    proc: subprocess.Popen[str]
    out: Path
    folder: Path

    def result(self) -> tuple[list[dict[str, Any]], str]:
        stdout, stderr = self.proc.communicate(timeout=180)
        assert self.proc.returncode == 0, stderr[-3000:]
        return json.loads(self.out.read_text()), stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    started: dict[str, Run] = {}
    for script, args in ARGS.items():
        folder = tmp_path_factory.mktemp(script)
        out = folder / f"{script}.json"
        common = ["--seed", "3", "--json", str(out), "--plots", str(folder)]
        proc = subprocess.Popen(
            [sys.executable, str(LOAD / f"{script}.py"), *args, *common],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[script] = Run(proc, out, folder)
    yield started
    for run in started.values():
        run.proc.kill()
        run.proc.communicate()


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG, path


def assert_lags(row: dict[str, Any]) -> None:
    assert 0 <= row["lag_p50_ms"] <= row["lag_p99_ms"] < 10_000, row


def test_policies(runs: dict[str, Run]):
    """Every policy asked for has a row; the cheap policies cost fewer requests than 1 s polls.

    40 jobs: long-poll then holds more connections than one pool of SHARD_SIZE.
    """
    rows, stdout = runs["policies"].result()
    assert [r["policy"] for r in rows] == ["fixed-1s", "original", "long-poll", "batch"]
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
    assert_png(runs["policies"].folder / "policies_lag_cdf.png")
    assert_png(runs["policies"].folder / "policies_requests.png")


def test_scale(runs: dict[str, Run]):
    """Batch and single rows per size, with memory, CPU per check, rate and the server ceiling."""
    rows, _ = runs["scale"].result()
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
    assert_png(runs["scale"].folder / "scale.png")


def test_chaos(runs: dict[str, Run]):
    """Through faults, a rate limit and a server kill, no job is lost."""
    rows, stdout = runs["chaos"].result()
    assert [r["policy"] for r in rows] == ["batch", "hint-aware"]
    for row in rows:
        assert row["jobs_lost"] == 0, row
        assert row["wrong_outcomes"] == 0, row
        assert row["downtime_s"] > 0
        assert 0 <= row["share_429"] < 1
        assert row["extra_requests_per_job"] >= 0
        assert_lags(row)
    assert "lost" in stdout
    assert_png(runs["chaos"].folder / "chaos_lag_cdf.png")
