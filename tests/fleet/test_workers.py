"""Real worker processes on a real redis-server and a real simulation server: a worker killed,
another frozen and thawed, and still every job's result recorded once, true, and nothing
left pending; the fleet's one rate limit keeps the server from refusing anything."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import coredis.exceptions
import pytest
from click.testing import CliRunner

from sim_server.testing import recorded_results
from tests._zygote import Zygote
from tests.helpers import metric, stop, wait_for
from vtpoll import cli
from vtpoll.fleet._options import with_fleet
from vtpoll.fleet._redis import Fleet
from vtpoll.fleet._scripts import GROUP

#: The whole scenario ends well within this, or the test fails.
GUARD = 45.0
#: Jobs, and each worker's room: two fifths of them (more than the three hold at once, so the
#: last one standing takes over the others' in rounds). 3,000 showed nothing 600 do not, at
#: five times the polling and recording, nor 600 anything 300 do not: each worker holds jobs
#: when it is killed or frozen either way (0.6 s of CPU less: the client polls in batches).
JOBS = 300
CAPACITY = 120
#: The fleet's rate, and the server's limit at 1.25 times it.
FLEET_RATE = 40
#: Shards: the kill and the freeze are each taken over in every shard, and a worker whose own
#: shards run dry reads the others'. One shard, the degenerate case, is not run here again (5 s
#: of CPU in processes): its kill is the chaos run of load/fleet.py in
#: tests/load/test_smoke.py, its fencing tests/fleet/test_redis.py's.
SHARDS = 3
#: Seconds between two looks at the fleet's state: each opens a connection, ~6 ms of CPU, and
#: nothing here needs to be seen sooner.
EVERY = 0.25


async def _counts(fleet: Fleet) -> dict[str, Any]:
    """Results, jobs pending with each worker, and jobs left, summed over the shards."""
    counts: dict[str, Any] = {"results": 0, "pending": {}, "left": 0}
    for shard in range(fleet.count):
        keys = fleet.shard(shard)
        pending = await fleet.redis.xpending(keys.jobs, GROUP)
        for name, held in (pending.consumers or {}).items():  # type: ignore[union-attr]
            counts["pending"][name] = counts["pending"].get(name, 0) + held
        counts["results"] += await fleet.redis.xlen(keys.results)
        counts["left"] += await fleet.redis.xlen(keys.jobs)
    return counts


async def _consumers(fleet: Fleet) -> set[str]:
    """The workers reading the group of every shard (each resumes in every shard at start)."""
    names: set[str] | None = None
    for shard in range(fleet.count):
        try:
            found = await fleet.redis.xinfo_consumers(fleet.shard(shard).jobs, GROUP)
        except coredis.exceptions.ResponseError:  # no stream or group yet
            return set()
        here = {str(consumer["name"]) for consumer in found}
        names = here if names is None else names & here
    return names or set()


@contextmanager
def _server(zygote: Zygote, *args: str) -> Iterator[str]:
    """``python -m sim_server --port 0 ARGS`` forked by the zygote, which imported Quart and
    hypercorn once a run (0.6 s of CPU a process started afresh): its URL; stopped with SIGINT
    after, which it must answer by exiting 0."""
    proc = zygote.python(
        ["-m", "sim_server", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], GUARD)
        assert ready, f"the server printed no URL within {GUARD:g} s"
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        stop(proc, signal.SIGINT)
    assert proc.returncode == 0, f"server exited with {proc.returncode} after SIGINT"


def _fenced(name: str) -> Callable[[Fleet], Awaitable[bool]]:
    """Whether ``name``'s lease is gone in some shard: its next renewal fails."""

    async def fenced(fleet: Fleet) -> bool:
        for shard in range(fleet.count):
            if await fleet.redis.zscore(fleet.shard(shard).workers, name) is None:
                return True
        return False

    return fenced


@pytest.mark.long
def test_three_workers_one_killed_one_frozen_every_job_once(
    redis_url: str, fleet_name: str, tmp_path: Path, zygote: Zygote
):
    """3 workers, 300 jobs spread over 3 shards: SIGKILL one while it holds jobs,
    SIGSTOP another and SIGCONT it later. Results = distinct results = 300, each the
    server's outcome; nothing left pending in any group; and, the fleet's rate at 0.8 of the
    server's limit, no 429."""
    deadline = time.monotonic() + GUARD
    ids = [f"fj-{i}" for i in range(JOBS)]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    args = ["--redis", redis_url, "--fleet", fleet_name]
    server = ("--auto-create", "--seed", "5", "--completion-time", "1.0")
    # The shard count fixed first, as a first submit would: workers wait for it to read.
    assert with_fleet(redis_url, fleet_name, lambda fleet: fleet.load_shards(SHARDS)) == SHARDS
    with _server(zygote, *server, "--rate-limit", str(FLEET_RATE * 1.25)) as url:
        workers = [
            zygote.spawn(
                [
                    *("fleet", "worker", *args),
                    *("--base-url", url, "--name", f"w{i}", "--lease", "1.0"),
                    *("--capacity", str(CAPACITY), "--rate", str(FLEET_RATE)),
                ],
                stderr=subprocess.PIPE,
            )
            for i in range(3)
        ]
        try:
            # Jobs go in once every worker reads the group: submitted before, the first worker
            # up (processes start seconds apart on a slow, busy machine) could take them all.
            wait_for(
                lambda: with_fleet(redis_url, fleet_name, _consumers) == {"w0", "w1", "w2"},
                "every worker reading the group",
                timeout=deadline - time.monotonic(),
                every=EVERY,
            )
            done = CliRunner().invoke(
                cli, ["fleet", "submit", *args, "-f", str(tmp_path / "ids.txt")]
            )
            assert done.exit_code == 0, done.output

            def all_hold_jobs() -> bool:
                pending = with_fleet(redis_url, fleet_name, _counts)["pending"]
                return all(pending.get(f"w{i}", 0) > 0 for i in range(3))

            wait_for(
                all_hold_jobs,
                "every worker holding jobs",
                timeout=deadline - time.monotonic(),
                every=EVERY,
            )
            workers[0].send_signal(signal.SIGKILL)
            workers[1].send_signal(signal.SIGSTOP)
            # Frozen until a takeover fenced it (its jobs are claimed once its lease expired):
            # on waking, its renewal fails and it stops.
            wait_for(
                lambda: with_fleet(redis_url, fleet_name, _fenced("w1")),
                "the frozen worker fenced",
                timeout=deadline - time.monotonic(),
                every=EVERY,
            )
            workers[1].send_signal(signal.SIGCONT)

            def all_recorded() -> bool:
                return bool(with_fleet(redis_url, fleet_name, _counts)["results"] >= JOBS)

            wait_for(
                all_recorded, f"{JOBS} results", timeout=deadline - time.monotonic(), every=EVERY
            )
            assert workers[1].wait(timeout=10) == 1  # it found itself fenced, and stopped
            assert "its lease expired" in (workers[1].stderr.read() if workers[1].stderr else "")
            counts = with_fleet(redis_url, fleet_name, _counts)
            throttled = metric(url, "sim_rate_limited_total")
            truth = recorded_results(url, ids)
            workers[2].send_signal(signal.SIGTERM)
            assert workers[2].wait(timeout=10) == 0
            said = workers[2].stderr.read() if workers[2].stderr else ""
            taken_over = re.search(r"(\d+) jobs taken over", said)
            assert taken_over is not None, said
            assert int(taken_over[1]) > 0  # the killed and the frozen worker's
        finally:
            for proc in workers:
                stop(proc, signal.SIGTERM)
    assert counts["results"] == JOBS
    assert counts["pending"] == {}
    assert counts["left"] == 0
    out = tmp_path / "results.jsonl"
    written = CliRunner().invoke(cli, ["fleet", "results", *args, "-o", str(out)])
    assert written.exit_code == 0, written.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len({r["job_id"] for r in records}) == JOBS
    assert {r["job_id"]: r["outcome"] for r in records} == truth
    assert throttled == 0
