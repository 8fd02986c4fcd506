"""``vtpoll fleet results``: the same JSON Lines as ``watch --output``, each job once, through a
kill -9 and ``--resume``."""

from __future__ import annotations

import errno
import importlib
import json
import os
import signal
import subprocess
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from tests._zygote import Zygote
from tests.helpers import fill_up_after, head_1, read_until, stop, wait_for
from vtpoll import cli
from vtpoll.fleet._options import with_fleet
from vtpoll.fleet._redis import Fleet, open_fleet
from vtpoll.fleet._scripts import GROUP

#: The module (``vtpoll.fleet.results`` is the command, which the package's namespace names).
results = importlib.import_module("vtpoll.fleet.results")

GUARD = 20.0
JOBS = 3000


def _job_id(i: int) -> str:
    """An ID as long as a UUID, as vendors' job IDs often are."""
    return str(uuid.UUID(int=i))


async def _recorded(
    redis_url: str, name: str, first: int, count: int, shards: int | None = None
) -> None:
    """``count`` jobs from ``first`` on submitted (over ``shards``), taken and recorded, as
    workers would."""
    async with open_fleet(redis_url, name) as fleet:
        ids = [_job_id(i) for i in range(first, first + count)]
        await fleet.submit(ids, None, shards)
        for shard in range(fleet.count):
            jobs = fleet.shard(shard).jobs
            await fleet.lease("w", 60, join=True, shard=shard)
            while got := await fleet.redis.xreadgroup(GROUP, "w", streams={jobs: ">"}, count=500):
                batch = [
                    (
                        str(e.field_values["id"]),
                        str(e.identifier),
                        json.dumps({"job_id": e.field_values["id"], "outcome": "completed"}),
                    )
                    for e in got[jobs]
                ]
                await fleet.record("w", batch)


def test_results_after_kill_9_and_resume_give_each_job_once(
    redis_url: str, fleet_name: str, tmp_path: Path, zygote: Zygote
):
    """A results writer following the fleet is killed with SIGKILL after half the jobs; the
    other half is recorded meanwhile; run again with --resume, it writes every job exactly
    once. Resubmitting known IDs adds none."""
    trio.run(_recorded, redis_url, fleet_name, 0, JOBS // 2)
    args = ["--redis", redis_url, "--fleet", fleet_name]
    out = tmp_path / "results.jsonl"
    writer = zygote.spawn(
        ["fleet", "results", *args, "-o", str(out), "--follow"], stderr=subprocess.PIPE
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
    assert sorted(r["job_id"] for r in records) == sorted(_job_id(i) for i in range(JOBS))
    again = CliRunner().invoke(cli, ["fleet", "submit", *args, _job_id(0), _job_id(1), "new-1"])
    assert again.exit_code == 0, again.output
    assert "submitted 1 new jobs" in again.stdout


async def _bytes(fleet: Fleet) -> int:
    """Redis memory of every key of the fleet (MEMORY USAGE, counted exactly)."""
    total = 0
    for key in await fleet.redis.keys(f"vt:{{{fleet.keys.fleet}}}:*"):
        total += await fleet.redis.memory_usage(key, samples=0) or 0
    return total


def test_ack_removes_what_was_written_and_keeps_a_small_marker(
    redis_url: str, fleet_name: str, tmp_path: Path
):
    """``results --ack`` writes every result, then removes them from Redis with each job's
    state, keeping a done marker: at most 16 bytes of Redis per job (UUID-long IDs; the
    issue's bound is 64, an intset's member is 8), no resubmitted ID is queued again, status
    counts them acknowledged, and a second run finds nothing to write."""
    jobs = 2000
    trio.run(_recorded, redis_url, fleet_name, 0, jobs)
    before = with_fleet(redis_url, fleet_name, _bytes)
    args = ["--redis", redis_url, "--fleet", fleet_name]
    out = tmp_path / "results.jsonl"
    acked = CliRunner().invoke(cli, ["fleet", "results", *args, "-o", str(out), "--ack"])
    assert acked.exit_code == 0, acked.output
    assert f"{jobs} removed from Redis" in acked.output
    assert len(out.read_text().splitlines()) == jobs
    after = with_fleet(redis_url, fleet_name, _bytes)
    assert after / jobs <= 16 < 64 < before / jobs
    again = CliRunner().invoke(cli, ["fleet", "results", *args, "-o", str(tmp_path / "2.jsonl")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "2.jsonl").read_text() == ""
    status = CliRunner().invoke(cli, ["fleet", "status", *args, "--json"])
    assert status.exit_code == 0, (status.output, status.exception)
    report = json.loads(status.output)
    assert (report["submitted"], report["done"], report["acknowledged"]) == (jobs, jobs, jobs)
    every = [_job_id(i) for i in range(jobs)]
    resubmitted = CliRunner().invoke(cli, ["fleet", "submit", *args, *every, "brand-new"])
    assert "submitted 1 new jobs" in resubmitted.stdout


def test_ack_with_no_retention_forgets_the_jobs(redis_url: str, fleet_name: str, tmp_path: Path):
    """``--retention 0``: nothing of an acknowledged job is kept; its ID is new again."""
    trio.run(_recorded, redis_url, fleet_name, 0, 10)
    args = ["--redis", redis_url, "--fleet", fleet_name]
    out = str(tmp_path / "r.jsonl")
    done = CliRunner().invoke(
        cli, ["fleet", "results", *args, "-o", out, "--ack", "--retention", "0"]
    )
    assert done.exit_code == 0, done.output
    resubmitted = CliRunner().invoke(cli, ["fleet", "submit", *args, _job_id(0)])
    assert "submitted 1 new jobs" in resubmitted.stdout


def test_one_acknowledging_reader_at_a_time(redis_url: str, fleet_name: str, tmp_path: Path):
    """A second ``results --ack`` while one reads is refused in one line, exit 2 (each would
    remove results the other has not written); once the first is done, it may."""
    trio.run(_recorded, redis_url, fleet_name, 0, 5)
    args = ["--redis", redis_url, "--fleet", fleet_name]

    async def other_reads(fleet: Fleet) -> None:
        assert await fleet.acker("another", hold=True)

    with_fleet(redis_url, fleet_name, other_reads)
    out = str(tmp_path / "r.jsonl")
    refused = CliRunner().invoke(cli, ["fleet", "results", *args, "-o", out, "--ack"])
    assert refused.exit_code == 2
    assert refused.output.count("\n") == 1
    assert "another 'results --ack' is reading fleet" in refused.output

    async def other_done(fleet: Fleet) -> None:
        await fleet.acker("another", hold=False)

    with_fleet(redis_url, fleet_name, other_done)
    done = CliRunner().invoke(cli, ["fleet", "results", *args, "-o", out, "--ack"])
    assert done.exit_code == 0, done.output
    assert "5 removed from Redis" in done.output


def test_the_ack_readers_place_lasts_through_a_long_round(
    redis_url: str, fleet_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A round over 8 shards whose acknowledgements each take 0.15 s (a slow disk, a busy
    Redis) lasts longer than the reader's place (0.9 s here, 30 s by default): renewed as the
    round goes, it is still held at every acknowledgement, so no second reader could take it
    and remove results this one has not written."""
    trio.run(partial(_recorded, redis_url, fleet_name, 0, 40, shards=8))
    monkeypatch.setattr(results, "ACKER_TTL", 0.9)
    held: list[int] = []
    ack = Fleet.ack

    async def slow_ack(fleet: Fleet, *args: Any, **kwargs: Any) -> int:
        await trio.sleep(0.15)
        held.append(await fleet.redis.exists([fleet.keys.acker]))
        return await ack(fleet, *args, **kwargs)

    monkeypatch.setattr(Fleet, "ack", slow_ack)
    args = ["--redis", redis_url, "--fleet", fleet_name, "-o", str(tmp_path / "r.jsonl")]
    done = CliRunner().invoke(cli, ["fleet", "results", *args, "--ack"])
    assert done.exit_code == 0, done.output
    assert "40 removed from Redis" in done.output
    assert held == [1] * 8


# -- results that cannot be written -------------------------------------------------------


def _results(zygote: Zygote, redis_url: str, fleet_name: str, *args: str, stdout: Any) -> Done:
    """``vtpoll fleet results`` in a real process, its standard output ``stdout``."""
    proc = zygote.spawn(
        ["fleet", "results", "--redis", redis_url, "--fleet", fleet_name, *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        _, stderr = proc.communicate(timeout=GUARD)
    finally:
        stop(proc)
    return Done(proc.returncode, stderr)


@dataclass
class Done:
    returncode: int
    stderr: str


def _all_still_there(redis_url: str, fleet_name: str, tmp_path: Path, count: int) -> None:
    """Every one of ``count`` results is still in Redis: nothing was acknowledged."""
    again = tmp_path / "again.jsonl"
    args = ["--redis", redis_url, "--fleet", fleet_name, "-o", str(again)]
    done = CliRunner().invoke(cli, ["fleet", "results", *args])
    assert done.exit_code == 0, done.output
    assert sorted(json.loads(line)["job_id"] for line in again.read_text().splitlines()) == [
        _job_id(i) for i in range(count)
    ]


@pytest.mark.parametrize("ack", [[], ["--ack"]])
def test_a_full_disk_ends_in_one_line_and_exit_3(
    redis_url: str, fleet_name: str, tmp_path: Path, ack: list[str], zygote: Zygote
):
    """Results to a full disk (/dev/full): exit 3, one line naming the system's error, what
    was written and how to go on; no traceback, and with --ack nothing removed from Redis."""
    trio.run(_recorded, redis_url, fleet_name, 0, 5)
    with open("/dev/full", "w") as full:
        done = _results(zygote, redis_url, fleet_name, *ack, stdout=full)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    removed = "; 0 removed from Redis" if ack else ""
    assert done.stderr.splitlines() == [
        f"0 results written (0 already there){removed}",
        "vtpoll: error: cannot write standard output: No space left on device",
        "once standard output can be written, run the same command again: what was not written"
        " is still in Redis",
    ]
    _all_still_there(redis_url, fleet_name, tmp_path, 5)


def test_a_file_filling_up_keeps_what_was_written_and_resume_ends_it(
    redis_url: str, fleet_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A results file that fills up after 2 of 5 results: exit 3, one line naming the file,
    how many were written and how to go on; nothing removed from Redis by --ack, and
    --resume then writes the other 3, each job once."""
    trio.run(_recorded, redis_url, fleet_name, 0, 5)
    out = tmp_path / "r.jsonl"
    fill_up_after(monkeypatch, room=2)
    args = ["fleet", "results", "--redis", redis_url, "--fleet", fleet_name, "-o", str(out)]
    done = CliRunner().invoke(cli, [*args, "--ack"], env={"NO_COLOR": "1"})
    assert done.exit_code == 3, done.output
    assert done.stderr.splitlines() == [
        "2 results written (0 already there); 0 removed from Redis",
        f"vtpoll: error: cannot write {out}: No space left on device",
        f"once {out} can be written, run the same command with --resume to write the others",
    ]
    monkeypatch.undo()
    _all_still_there(redis_url, fleet_name, tmp_path, 5)
    resumed = CliRunner().invoke(cli, [*args, "--ack", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "3 results written (2 already there); 5 removed from Redis" in resumed.stderr
    assert sorted(json.loads(line)["job_id"] for line in out.read_text().splitlines()) == [
        _job_id(i) for i in range(5)
    ]


def test_results_not_synced_are_not_acknowledged(
    redis_url: str, fleet_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """--ack removes results from Redis only once they are on disk: a sync that fails (EIO,
    the disk's own error) is a write failure, exit 3, and nothing is removed."""
    trio.run(_recorded, redis_url, fleet_name, 0, 5)

    def failing_sync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", failing_sync)
    out = tmp_path / "r.jsonl"
    args = ["fleet", "results", "--redis", redis_url, "--fleet", fleet_name, "-o", str(out)]
    done = CliRunner().invoke(cli, [*args, "--ack"], env={"NO_COLOR": "1"})
    assert done.exit_code == 3, done.output
    assert done.stderr.splitlines()[1] == f"vtpoll: error: cannot write {out}: Input/output error"
    monkeypatch.undo()
    _all_still_there(redis_url, fleet_name, tmp_path, 5)


def test_a_reader_closing_standard_output_ends_the_results_quietly(
    redis_url: str, fleet_name: str, zygote: Zygote
):
    """'fleet results --follow | head -1': once the reader has gone, the next result ends the
    command with 141 (128 + SIGPIPE) and nothing on stderr."""
    trio.run(_recorded, redis_url, fleet_name, 0, 1)
    proc = zygote.spawn(
        ["fleet", "results", "--redis", redis_url, "--fleet", fleet_name, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        # The next result, recorded once the reader has gone, is the write that fails.
        line, stderr = head_1(
            proc, timeout=GUARD, then=partial(trio.run, _recorded, redis_url, fleet_name, 1, 1)
        )
    finally:
        stop(proc)
    assert json.loads(line)["job_id"] == _job_id(0)
    assert proc.returncode == 141, stderr
    assert stderr == ""


# Each signal once and each output once: the signal is taken the same way whatever the
# output (stop_on_signal), and the output says how to go on the same way whatever the signal.
@pytest.mark.parametrize(
    ("sig", "to_file"),
    [(signal.SIGTERM, True), (signal.SIGINT, False)],
    ids=["file-SIGTERM", "stdout-SIGINT"],
)
def test_a_signal_ends_following_results_with_its_summary(
    redis_url: str,
    fleet_name: str,
    tmp_path: Path,
    sig: signal.Signals,
    to_file: bool,
    zygote: Zygote,
):
    """'fleet results --follow --ack', sent SIGTERM (or Ctrl-C's SIGINT) once it has written
    what there was: the summary of what was written and acknowledged, one line saying it was
    interrupted and how to go on, exit 128 + the signal; every result written is on disk, and
    a later run finds nothing left to write."""
    trio.run(_recorded, redis_url, fleet_name, 0, 3)
    out = tmp_path / "r.jsonl"
    args = ["--redis", redis_url, "--fleet", fleet_name, "-o", str(out) if to_file else "-"]
    proc = zygote.spawn(
        ["fleet", "results", *args, "--follow", "--ack"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        assert proc.stdout is not None
        if to_file:
            wait_for(
                lambda: out.exists() and out.read_text().count("\n") == 3,
                "3 results written",
                timeout=GUARD,
                alive=proc,
            )
        else:
            written = read_until(proc.stdout, "\n", 3, timeout=GUARD)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=GUARD)
    finally:
        stop(proc)
    if to_file:
        written = out.read_text()
        go_on = "interrupted: run the same command with --resume to write the others"
    else:
        written += stdout
        go_on = "interrupted: run the same command again: what was not written is still in Redis"
    assert proc.returncode == 128 + sig, stderr
    assert stderr.splitlines() == [
        "3 results written (0 already there); 3 removed from Redis",
        go_on,
    ]
    assert sorted(json.loads(line)["job_id"] for line in written.splitlines()) == [
        _job_id(i) for i in range(3)
    ]
    again = tmp_path / "again.jsonl"
    rest = CliRunner().invoke(cli, ["fleet", "results", *args[:4], "-o", str(again), "--ack"])
    assert rest.exit_code == 0, rest.output
    assert again.read_text() == ""
