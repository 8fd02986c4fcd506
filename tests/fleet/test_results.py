"""``vtpoll fleet results``: the same JSON Lines as ``watch --output``, each job once, through a
kill -9 and ``--resume``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import trio
from click.testing import CliRunner

from tests.helpers import spawn, stop, wait_for
from vtpoll import cli
from vtpoll.fleet._redis import open_fleet
from vtpoll.fleet._scripts import GROUP

GUARD = 20.0
JOBS = 3000


async def _recorded(redis_url: str, name: str, first: int, count: int) -> None:
    """``count`` jobs from ``first`` on submitted, taken and recorded, as workers would."""
    async with open_fleet(redis_url, name) as fleet:
        await fleet.ensure_group()
        ids = [f"r{i}" for i in range(first, first + count)]
        await fleet.submit(ids, None)
        await fleet.lease("w", 60, join=True)
        while got := await fleet.redis.xreadgroup(
            GROUP, "w", streams={fleet.keys.jobs: ">"}, count=500
        ):
            batch = [
                (
                    str(e.field_values["id"]),
                    str(e.identifier),
                    json.dumps({"job_id": e.field_values["id"], "outcome": "completed"}),
                )
                for e in got[fleet.keys.jobs]
            ]
            await fleet.record("w", batch)


def test_results_after_kill_9_and_resume_give_each_job_once(
    redis_url: str, fleet_name: str, tmp_path: Path
):
    """A results writer following the fleet is killed with SIGKILL after half the jobs; the
    other half is recorded meanwhile; run again with --resume, it writes every job exactly
    once. Resubmitting known IDs adds none."""
    trio.run(_recorded, redis_url, fleet_name, 0, JOBS // 2)
    args = ["--redis", redis_url, "--fleet", fleet_name]
    out = tmp_path / "results.jsonl"
    writer = spawn(
        [sys.executable, "-m", "vtpoll", "fleet", "results", *args, "-o", str(out), "--follow"],
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: out.exists() and out.read_text().count("\n") >= JOBS // 2,
            "first half written",
            timeout=GUARD,
            alive=writer,
        )
    finally:
        stop(writer, signal.SIGKILL)
    trio.run(_recorded, redis_url, fleet_name, JOBS // 2, JOBS - JOBS // 2)
    resumed = CliRunner().invoke(cli, ["fleet", "results", *args, "-o", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["job_id"] for r in records) == sorted(f"r{i}" for i in range(JOBS))
    again = CliRunner().invoke(cli, ["fleet", "submit", *args, "r0", "r1", "new-1"])
    assert again.exit_code == 0, again.output
    assert "submitted 1 new jobs" in again.stdout
