"""The load scripts that plot, each run end to end on a tiny workload: its report has the
right shape and its invariants hold (no job lost, percentiles ordered, costs positive, plots
written).

The numbers themselves belong to full runs (load/README.md): nothing here depends on how fast
this machine is. These tests run one after another in one test process (``together``), so that
matplotlib is imported once for them: it costs 1.1 s of CPU in each process that draws a plot,
and spread over the workers of a run they drew in each (four of tests/load's run with four).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .scripts import LOAD, script

pytestmark = pytest.mark.together

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def small_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripts' plots drawn at a low resolution: what is checked is that each is drawn
    and written, not its pixels."""
    monkeypatch.syspath_prepend(str(LOAD))  # where the scripts import it from
    monkeypatch.setattr(importlib.import_module("_common"), "DPI", 20)


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG, path


def assert_lags(row: dict[str, Any]) -> None:
    assert 0 <= row["lag_p50_ms"] <= row["lag_p99_ms"], row


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
            # Few jobs: the clock is virtual, each job's checks all CPU. Three a table row, the
            # fewest whose p50 and p99 are different ranks; two a sweep point.
            *("--jobs", "3", "--sweep-jobs", "2", "--time-scale", "0.03"),
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


def test_plain_repeats_a_seeds_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """On the virtual clock a seed's table is the same on every run: the clients' draws are
    seeded, and so is the order in which trio wakes jobs due at one instant (without it, two
    runs of 6 jobs differed in 3 of 3 tries)."""
    plain = script("plain")
    monkeypatch.setattr(plain, "FIXED_SWEEP", (1.0, 3.0))
    tables = []
    for run in range(2):
        out = tmp_path / f"plain{run}.json"
        plain.main(
            [
                *("--jobs", "6", "--workloads", "sigma0.5", "--arrivals", "at-once"),
                *("--seed", "3", "--no-plots", "--json", str(out)),
            ]
        )
        tables.append(json.loads(out.read_text()))
    assert len(tables[0]) == 4
    assert tables[0] == tables[1]
