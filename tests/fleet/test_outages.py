"""Workers riding through Redis going away and coming back, on real redis-server processes: a
restart with AOF persistence that lost the writes of its last moment, a primary turned replica
for a while, Sentinel failovers (the primary killed, or still up), and the sentinel away or
frozen. No worker stops, every job ends with one true result, and what Redis lost is polled
again rather than recorded twice."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.fleet.conftest import COREDIS_LEAK, free_port, redis_cli, start_redis, start_replicated
from tests.helpers import stop
from video_translation_client import VideoTranslationClient
from vtpoll.fleet._redis import Fleet, open_fleet
from vtpoll.fleet._worker import Worker

GUARD = 20.0
LEASE = 3.0
#: Every write in the AOF as it is written, synced each second: what a crash of the machine
#: (not of the process alone, whose writes the kernel keeps) loses is at most the last second.
AOF = ("--appendonly", "yes", "--appendfsync", "everysec", "--appendfilename", "fleet.aof")


async def recorded(fleet: Fleet) -> int:
    """The results the fleet holds, asked through the fleet's retries (Redis may be away)."""
    return await fleet.call(partial(fleet.redis.xlen, fleet.keys.results))


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Until ``check`` holds: a state in Redis, or a worker's counter (no event to wait on)."""
    # A look every 50 ms, not 20: most are Redis calls (through Sentinel), and nothing here
    # is timed finer than a tenth of a lease.
    while not await check():  # noqa: ASYNC110
        await trio.sleep(0.05)


async def results_of(fleet: Fleet) -> list[dict[str, Any]]:
    found = await fleet.call(partial(fleet.redis.xrange, fleet.keys.results, "-", "+"))
    return [json.loads(str(r.field_values["record"])) for r in found]


async def staggered(sim: Any, prefix: str) -> dict[str, str]:
    """16 jobs on ``sim`` finishing one after another over 1.6 s, one in four in error: each
    job's outcome, by its ID."""
    outcomes = {f"{prefix}{i}": "error" if i % 4 == 3 else "completed" for i in range(16)}
    for i, (job, outcome) in enumerate(outcomes.items()):
        await sim.create(job, 0.1 * i, outcome)
    return outcomes


@asynccontextmanager
async def mid_run(fleets: list[Fleet], sim: Any, ids: list[str]) -> AsyncIterator[list[Worker]]:
    """``ids`` submitted and a worker polling them on each of ``fleets`` (``w1``, ``w2``, ...,
    room for 8 jobs each); the block runs once every job is taken and 3 results are recorded,
    and the workers are stopped when it ends."""
    await fleets[0].ensure_group()
    await fleets[0].submit(ids, None)
    async with trio.open_nursery() as nursery:
        workers = []
        for k, fleet in enumerate(fleets):
            client = VideoTranslationClient("http://sim", http_client=sim.client)
            worker = Worker(fleet, client, name=f"w{k + 1}", lease=LEASE, capacity=8)
            workers.append(worker)
            nursery.start_soon(worker.run)
        await until(lambda: _taken(fleets[0], len(ids)))
        await until(lambda: _known(workers, 3))
        yield workers
        nursery.cancel_scope.cancel()


def assert_each_once(results: list[dict[str, Any]], outcomes: dict[str, str]) -> None:
    """One result per job, with the job's own outcome."""
    assert sorted(r["job_id"] for r in results) == sorted(outcomes)
    assert {r["job_id"]: r["outcome"] for r in results} == outcomes


# Connections tried while Redis is down leave coredis's streams to the garbage collector.
@pytest.mark.filterwarnings(COREDIS_LEAK)
async def test_workers_ride_through_a_redis_restart_that_lost_its_last_writes(
    tmp_path: Path, make_sim
):
    """Redis killed mid-run and started again on the same socket from an AOF as the disk held
    it a moment before (results recorded since are lost, as a machine's crash loses up to
    the last second with ``appendfsync everysec``): both workers go on, the jobs whose
    results were lost are polled again (the entries are still theirs), every job ends with
    one result, its own, and the fleet's epoch is the one it had."""
    proc, url = start_redis(tmp_path, *AOF)
    aof, kept = tmp_path / "fleet.aof", tmp_path / "kept.aof"
    sim = make_sim(auto_create=False)
    outcomes = await staggered(sim, "a")
    ids = list(outcomes)
    try:
        with trio.fail_after(GUARD):
            async with open_fleet(url, "aof") as one, open_fleet(url, "aof") as two:
                async with mid_run([one, two], sim, ids) as workers:
                    epoch = one.epochs[0]
                    shutil.copyfile(aof, kept)  # the AOF as the disk will have kept it
                    copied = await recorded(one)
                    # A result the copy lacks, and its worker knows it recorded.
                    await until(lambda: _known(workers, copied + 1))
                    stop(proc)  # SIGKILL
                    killed = trio.current_time()
                    # Both workers find Redis gone before it is back.
                    await until(lambda: _failed_since(killed, one, two))
                    lost = _results_in(aof, one) - _results_in(kept, one)
                    shutil.copyfile(kept, aof)
                    proc, _ = start_redis(tmp_path, *AOF)
                    await until(lambda: _at_least(one, len(ids)))
                results = await results_of(one)
                await one.check_epoch()  # no "the fleet's state was lost"
                assert one.epochs[0] == epoch
    finally:
        stop(proc)
    assert_each_once(results, outcomes)
    # Each lost result its worker knew of is polled again; one whose reply the kill lost is
    # sent again (the entry still with it): nothing else is polled twice.
    assert 1 <= sum(w.stats.adopted for w in workers) <= lost


async def test_workers_ride_through_their_primary_turned_replica_for_a_while(
    tmp_path: Path, make_sim
):
    """Redis made a replica mid-run (of a primary that does not answer), then a primary again:
    what a failover does to the primary it leaves. Writes are refused ``READONLY`` and
    blocked reads ended ``UNBLOCKED`` meanwhile; both workers retry them and go on, and every
    job ends with one result, its own."""
    proc, url = start_redis(tmp_path)
    sim = make_sim(auto_create=False)
    outcomes = await staggered(sim, "r")
    ids = list(outcomes)
    try:
        with trio.fail_after(GUARD):
            async with (
                open_fleet(url, "demoted") as one,
                open_fleet(url, "demoted") as two,
                open_fleet(url, "demoted") as admin,
            ):
                async with mid_run([one, two], sim, ids) as workers:
                    await admin.redis.replicaof("127.0.0.1", free_port())
                    demoted = trio.current_time()
                    # Both workers are refused before Redis is a primary again.
                    await until(lambda: _failed_since(demoted, one, two))
                    await admin.redis.replicaof()
                    await until(lambda: _at_least(admin, len(ids)))
                results = await results_of(admin)
    finally:
        stop(proc)
    assert_each_once(results, outcomes)
    assert all(w.stats.recorded for w in workers)


# Connections tried while the primary is down, or the sentinel names it still.
@pytest.mark.filterwarnings(COREDIS_LEAK)
async def test_workers_ride_through_a_sentinel_failover(tmp_path: Path, make_sim):
    """The primary killed mid-run, the sentinel promotes the replica: both workers, connected
    through ``redis+sentinel://``, retry through the failover and go on against the new
    primary; every job ends with one result, its own, and no worker stops."""
    nodes = start_replicated(tmp_path)
    sim = make_sim(auto_create=False)
    outcomes = await staggered(sim, "f")
    ids = list(outcomes)
    try:
        with trio.fail_after(GUARD):
            async with (
                open_fleet(nodes.url, "failover") as one,
                open_fleet(nodes.url, "failover") as two,
            ):
                async with mid_run([one, two], sim, ids) as workers:
                    stop(nodes.primary)  # SIGKILL
                    await until(lambda: _at_least(one, len(ids)))
                results = await results_of(one)
                await one.check_epoch()
        # The sentinel names the former replica.
        said = redis_cli(nodes.sentinel_port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "primary")
        assert said.split() == ["127.0.0.1", str(nodes.replica_port)]
    finally:
        nodes.stop()
    assert_each_once(results, outcomes)
    assert all(w.stats.recorded for w in workers)


# Connections tried while the sentinel names the primary it left.
@pytest.mark.filterwarnings(COREDIS_LEAK)
async def test_workers_follow_a_failover_from_a_primary_still_up(tmp_path: Path, make_sim):
    """``SENTINEL FAILOVER`` mid-run: the replica is promoted while the old primary still
    serves (the sentinel turns it into a replica only seconds later, and what was written to
    it meanwhile is lost). Both workers move to the new primary within a third of a lease, as
    they renew; neither takes the other's jobs there, both keep their leases, and every job
    ends with one result on the new primary, its own."""
    nodes = start_replicated(tmp_path)
    sim = make_sim(auto_create=False)
    outcomes = await staggered(sim, "s")
    ids = list(outcomes)
    new_primary = f"redis://127.0.0.1:{nodes.replica_port}"
    try:
        with trio.fail_after(GUARD):
            async with (
                open_fleet(nodes.url, "forced") as one,
                open_fleet(nodes.url, "forced") as two,
                open_fleet(new_primary, "forced") as promoted,
            ):
                async with mid_run([one, two], sim, ids) as workers:
                    said = redis_cli(nodes.sentinel_port, "SENTINEL", "FAILOVER", "primary")
                    assert said == "OK"
                    await until(lambda: _at_least(promoted, len(ids)))
                    live = await promoted.live_workers()
                results = await results_of(promoted)
    finally:
        nodes.stop()
    assert_each_once(results, outcomes)
    assert sorted(live) == ["w1", "w2"]
    assert [w.stats.claimed for w in workers] == [0, 0]


# Connections tried while the sentinel is away.
@pytest.mark.filterwarnings(COREDIS_LEAK)
async def test_workers_reconnect_once_the_sentinel_is_back(tmp_path: Path, make_sim):
    """The sentinel down while the workers' connections to the primary are closed: asking it
    for the primary fails (no sentinel answers) until it is back; both workers retry that as
    they retry Redis itself, then go on, and every job ends with one result, its own."""
    nodes = start_replicated(tmp_path)
    sim = make_sim(auto_create=False)
    outcomes = await staggered(sim, "n")
    ids = list(outcomes)
    try:
        with trio.fail_after(GUARD):
            async with (
                open_fleet(nodes.url, "sentinel") as one,
                open_fleet(nodes.url, "sentinel") as two,
            ):
                async with mid_run([one, two], sim, ids) as workers:
                    stop(nodes.sentinel)
                    cut = trio.current_time()
                    said = redis_cli(nodes.primary_port, "CLIENT", "KILL", "TYPE", "normal")
                    assert int(said) >= 2  # the workers' connections, at least
                    await until(lambda: _failed_since(cut, one, two))
                    nodes.restart_sentinel()
                    await until(lambda: _at_least(one, len(ids)))
                results = await results_of(one)
    finally:
        nodes.stop()
    assert_each_once(results, outcomes)
    assert [w.stats.claimed for w in workers] == [0, 0]


@pytest.mark.long
async def test_a_frozen_sentinel_does_not_hold_up_a_workers_renewals(tmp_path: Path, make_sim):
    """The sentinel frozen (SIGSTOP): a worker asking it for the primary at each renewal
    gives up within a twelfth of a lease and renews on the primary it has, every third of a
    lease as ever (a sentinel's reply may take 10 s, longer than a lease)."""
    nodes = start_replicated(tmp_path)
    sim = make_sim(auto_create=False)
    await sim.create("long", 3600.0)
    try:
        with trio.fail_after(GUARD):
            async with open_fleet(nodes.url, "frozen") as fleet:
                await fleet.ensure_group()
                await fleet.submit(["long"], None)
                client = VideoTranslationClient("http://sim", http_client=sim.client)
                worker = Worker(fleet, client, name="w", lease=LEASE, capacity=1)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(worker.run)
                    await until(lambda: _pending(fleet, 1))
                    nodes.sentinel.send_signal(signal.SIGSTOP)
                    # Three renewals, within the lease's three thirds (and a margin).
                    with trio.fail_after(LEASE * 1.5):
                        for _ in range(3):
                            before = await _expiry(fleet, "w")
                            await until(partial(_renewed_after, fleet, "w", before))
                    nursery.cancel_scope.cancel()
    finally:
        nodes.sentinel.send_signal(signal.SIGCONT)
        nodes.stop()


async def _pending(fleet: Fleet, count: int) -> bool:
    summary: Any = await fleet.call(partial(fleet.redis.xpending, fleet.keys.jobs, "pollers"))
    return int(summary.pending) == count


async def _taken(fleet: Fleet, count: int) -> bool:
    """Every one of ``count`` jobs taken: held, or recorded already (every job held at once is
    a moment that a look may miss, the first results coming at once). The results are counted
    first: a job recorded in between is counted in neither, never in both."""
    done = await recorded(fleet)
    summary: Any = await fleet.call(partial(fleet.redis.xpending, fleet.keys.jobs, "pollers"))
    return done + int(summary.pending) >= count


async def _at_least(fleet: Fleet, count: int) -> bool:
    return await recorded(fleet) >= count


async def _failed_since(moment: float, *fleets: Fleet) -> bool:
    return all(fleet.troubled_at >= moment for fleet in fleets)


async def _known(workers: list[Worker], count: int) -> bool:
    return sum(w.stats.recorded for w in workers) >= count


def _results_in(aof: Path, fleet: Fleet) -> int:
    """Results appended in an AOF file (each an XADD to the fleet's results stream)."""
    key = fleet.keys.results.encode()
    return aof.read_bytes().count(b"XADD\r\n$%d\r\n%s\r\n" % (len(key), key))


async def _expiry(fleet: Fleet, worker: str) -> float:
    score = await fleet.call(partial(fleet.redis.zscore, fleet.keys.workers, worker))
    assert score is not None
    return float(score)


async def _renewed_after(fleet: Fleet, worker: str, expiry: float) -> bool:
    return await _expiry(fleet, worker) > expiry
