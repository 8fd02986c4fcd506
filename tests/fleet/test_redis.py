"""The fleet's atomic steps against a real redis-server: submit once, record once, leases and
takeover, the shared rate limit; and Redis that cannot be used, refused in one line."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
import trio
from click.testing import CliRunner

from tests.fleet.conftest import COREDIS_LEAK
from tests.helpers import stop
from vtpoll import cli
from vtpoll.fleet._limiter import FleetRateLimiter
from vtpoll.fleet._options import with_fleet
from vtpoll.fleet._redis import Claimed, Fleet, FleetError, StateLost, check_url, open_fleet
from vtpoll.fleet._scripts import GROUP

NOW_MS = "local t = redis.call('TIME') return tostring(t[1] * 1000 + t[2] / 1000)"
#: Every test here ends well within this (real clock: Redis is a real server).
GUARD = 10.0


async def take(fleet: Fleet, worker: str, count: int) -> list[tuple[str, str]]:
    """(entry, job ID) of up to ``count`` new entries, read by ``worker``."""
    got = await fleet.redis.xreadgroup(
        GROUP, worker, streams={fleet.keys.jobs: ">"}, count=count, block=100
    )
    entries = got[fleet.keys.jobs] if got else ()
    return [(str(e.identifier), str(e.field_values["id"])) for e in entries]


async def until_recorded(fleet: Fleet, count: int) -> None:
    """Until the fleet's results stream holds ``count`` results (written by workers' tasks)."""
    recorded = 0
    while recorded < count:
        await trio.sleep(0.02)
        recorded = await fleet.redis.xlen(fleet.keys.results)


async def test_submit_adds_each_id_once(redis_url: str, fleet_name: str):
    """Resubmitting IDs adds nothing: the state hash decides, atomically with the stream."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            assert await fleet.submit(["a", "b", "c"], None) == 3
            assert await fleet.submit(["b", "c", "d"], 123.5) == 1
            assert await fleet.redis.hlen(fleet.keys.state) == 4
            assert await fleet.redis.xlen(fleet.keys.jobs) == 4
            queued = await fleet.redis.xrange(fleet.keys.jobs, "-", "+")
            deadlines = {e.field_values["id"]: e.field_values["deadline"] for e in queued}
            assert deadlines == {"a": "", "b": "", "c": "", "d": "123.5"}


async def test_a_result_is_recorded_once_however_often_its_job_was_polled(
    redis_url: str, fleet_name: str
):
    """The owner recording a job twice (a retry after a lost reply): one result, and the entry
    leaves the group's pending list and the stream."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            await fleet.submit(["j1", "j2"], None)
            assert await fleet.lease("w1", 60, join=True) > 0
            taken = await take(fleet, "w1", 10)
            by_id = {job_id: entry for entry, job_id in taken}
            assert await fleet.record("w1", [("j1", by_id["j1"], '{"job_id":"j1"}')]) == (1, 0)
            again = '{"job_id":"j1","again":1}'
            assert await fleet.record("w1", [("j1", by_id["j1"], again)]) == (0, 1)
            assert await fleet.record("w1", [("j2", by_id["j2"], '{"job_id":"j2"}')]) == (1, 0)
            results = await fleet.redis.xrange(fleet.keys.results, "-", "+")
            assert [r.field_values["id"] for r in results] == ["j1", "j2"]
            assert results[0].field_values["record"] == '{"job_id":"j1"}'
            pending = await fleet.redis.xpending(fleet.keys.jobs, GROUP)
            assert pending.pending == 0  # type: ignore[union-attr]
            assert await fleet.redis.xlen(fleet.keys.jobs) == 0


async def test_a_fenced_workers_late_result_is_dropped(redis_url: str, fleet_name: str):
    """A worker frozen past its lease records its job's result late: the job was taken over,
    so the result is dropped (counted stale) and the new owner's is the one kept; the frozen
    worker is fenced (its renewal fails), while a job still its own is recorded from it."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            await fleet.submit(["f1", "f2"], None)
            assert await fleet.lease("frozen", 0.05, join=True) > 0
            by_id = {job_id: entry for entry, job_id in await take(fleet, "frozen", 10)}
            assert await fleet.lease("alive", 60, join=True) > 0
            claimed: list[Claimed] = []
            with trio.fail_after(GUARD):
                while not claimed:  # until the frozen worker's lease has expired
                    await trio.sleep(0.05)
                    claimed = await fleet.take_over("alive", 1)
            [(entry, job_id, _, deliveries, _)] = claimed
            assert deliveries == 2  # read by the frozen worker, then claimed
            late = await fleet.record("frozen", [(job_id, entry, '{"outcome":"timeout"}')])
            assert late == (0, 1)
            kept = await fleet.record("alive", [(job_id, entry, '{"outcome":"completed"}')])
            assert kept == (1, 0)
            assert await fleet.lease("frozen", 60, join=False) == -1  # fenced: it must stop
            other = "f2" if job_id == "f1" else "f1"
            # Still its own entry, nobody else's to poll: its result is the one.
            assert await fleet.record("frozen", [(other, by_id[other], '{"outcome":"x"}')]) == (
                1,
                0,
            )
            results = await fleet.redis.xrange(fleet.keys.results, "-", "+")
            records = [r.field_values["record"] for r in results]
            assert records == ['{"outcome":"completed"}', '{"outcome":"x"}']


async def test_an_expired_workers_jobs_are_taken_over_with_their_deadlines(
    redis_url: str, fleet_name: str
):
    """A worker whose lease ran out loses its jobs, deadlines kept, to the next takeover
    pass; renewing then tells it that it was fenced."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            await fleet.submit(["x1", "x2", "x3"], 1234.5)
            assert await fleet.lease("dead", 60, join=True) > 0
            assert len(await take(fleet, "dead", 10)) == 3
            assert await fleet.lease("alive", 60, join=True) > 0
            assert await fleet.take_over("alive", 100) == []  # the lease still runs
            await fleet.redis.zadd(fleet.keys.workers, {"dead": 1})  # ... and now has run out
            claimed = await fleet.take_over("alive", 100)
            assert sorted(c.job_id for c in claimed) == ["x1", "x2", "x3"]
            assert {c.deadline for c in claimed} == {"1234.5"}
            assert await fleet.lease("dead", 0.2, join=False) == -1  # fenced
            pending = await fleet.redis.xpending(fleet.keys.jobs, GROUP)
            assert dict(pending.consumers) == {"alive": 3}  # type: ignore[union-attr]
            assert await fleet.redis.zscore(fleet.keys.workers, "dead") is None


async def test_the_rate_limit_hands_out_slots_one_interval_apart(redis_url: str, fleet_name: str):
    """Slots are reserved, never denied: N reservations at R/s move the next free slot N/R
    seconds on, whichever worker made them; a pause holds every slot back until it ends."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            rate = 50.0
            await fleet.throttled(30.0, None)  # every slot after the pause: exact arithmetic
            pause = float(await fleet.redis.get(fleet.keys.pause) or 0)
            waits = [(await fleet.reserve(rate, 1))[0] for _ in range(10)]
            assert all(25 < wait <= 30.2 for wait in waits), waits
            next_free = float(await fleet.redis.get(fleet.keys.rate) or 0)
            assert next_free == pytest.approx(pause + 10 * 1000 / rate)
            # A block of 20 slots: the next free slot 20 intervals on, the interval said.
            wait, interval = await fleet.reserve(rate, 1, slots=20)
            assert 25 < wait <= 30.2  # still after the pause
            assert interval == pytest.approx(1 / rate)
            assert float(await fleet.redis.get(fleet.keys.rate) or 0) == pytest.approx(
                next_free + 20 * 1000 / rate
            )


async def test_a_declared_quota_lowers_the_fleets_rate(redis_url: str, fleet_name: str):
    """A quota the server declares below the fleet's rate spaces every worker's slots by it."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.throttled(30.0, 10.0)  # slots after the pause: exact arithmetic
            pause = float(await fleet.redis.get(fleet.keys.pause) or 0)
            for _ in range(5):
                await fleet.reserve(50.0, 1)
            next_free = float(await fleet.redis.get(fleet.keys.rate) or 0)
            assert next_free == pytest.approx(pause + 5 * 1000 / 10.0)


async def test_a_redis_too_old_is_refused(
    redis_url: str, fleet_name: str, monkeypatch: pytest.MonkeyPatch
):
    """A server older than the fleet needs is named, with both versions."""
    from vtpoll.fleet import _redis

    monkeypatch.setattr(_redis, "MIN_VERSION", (99, 0))
    with (
        trio.fail_after(GUARD),
        pytest.raises(FleetError, match=r"is version .*; the fleet needs 99\.0\+"),
    ):
        async with open_fleet(redis_url, fleet_name):
            pass


async def test_a_429_pauses_every_worker(redis_url: str, fleet_name: str):
    """One worker's 429 with Retry-After holds another worker's next request back."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            one, other = FleetRateLimiter(fleet, 1000.0), FleetRateLimiter(fleet, 1000.0)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(one.publish)
                one.refused(0.5)
                pause = 0.0
                while not pause:  # until the publisher has handed it to Redis
                    await trio.sleep(0.01)
                    pause = float(await fleet.redis.get(fleet.keys.pause) or 0)
                await other.acquire()
                now_ms = float(str(await fleet.redis.eval(NOW_MS, keys=[fleet.keys.pause])))
                assert now_ms >= pause - 5  # it waited for the pause's end, on Redis's clock
                nursery.cancel_scope.cancel()


async def test_two_workers_share_the_rate_in_blocks(redis_url: str, fleet_name: str):
    """Two workers, 60 tasks each, 1,200 requests at a fleet rate of 1,000/s: never faster than
    the rate (1,200 slots take at least 1.2 s less a block), and at most 0.1 Redis calls per
    request (slots reserved in blocks sized by each worker's demand)."""
    rate, total = 1000.0, 1200
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            limiters = [FleetRateLimiter(fleet, rate), FleetRateLimiter(fleet, rate)]
            started = trio.current_time()

            async def requests(limiter: FleetRateLimiter) -> None:
                for _ in range(total // 120):
                    await limiter.acquire()

            async with trio.open_nursery() as nursery:
                for limiter in limiters:
                    for _ in range(60):
                        nursery.start_soon(requests, limiter)
            elapsed = trio.current_time() - started
    assert sum(limiter.statistics().acquired for limiter in limiters) == total
    block = rate * 0.1
    assert elapsed >= (total - 2 * block) / rate
    assert sum(limiter.reservations for limiter in limiters) <= 0.1 * total


async def test_slots_left_over_from_a_pause_in_demand_do_not_go_at_once(
    redis_url: str, fleet_name: str
):
    """Slots of a block that passed while nobody asked (more than a block's span ago) are
    dropped: ten requests after a pause are spaced by the rate, not sent together."""
    rate = 100.0
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            limiter = FleetRateLimiter(fleet, rate)

            async def ask(times: int) -> None:
                for _ in range(times):
                    await limiter.acquire()

            async with trio.open_nursery() as nursery:  # blocks sized by ten callers
                for _ in range(10):
                    nursery.start_soon(ask, 3)
            await ask(1)  # a block sized by that use: one slot used, the others left over
            assert limiter.reservations < 30
            await trio.sleep(0.5)
            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(9):
                    nursery.start_soon(ask, 1)
            elapsed = trio.current_time() - started
    assert elapsed >= 7 / rate


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://localhost:6379",
            "must be a redis://, rediss://, unix:// or redis+sentinel:// URL",
        ),
        ("redis://localhost:abc", "is not a valid URL"),
        ("redis://", "names no host"),
        ("unix://", "names no socket path"),
    ],
)
def test_a_malformed_url_is_named(url: str, message: str):
    """A URL that cannot name a Redis is refused before any connection."""
    with pytest.raises(FleetError, match=re.escape(message)):
        check_url(url)


@pytest.mark.filterwarnings(COREDIS_LEAK)
def test_redis_that_cannot_be_used_is_one_line_and_exit_2(tmp_path):
    """Nothing listening, or something that is not Redis: one line, exit status 2."""
    with socket.socket() as not_redis:
        not_redis.bind(("127.0.0.1", 0))
        not_redis.listen()
        port = not_redis.getsockname()[1]

        def answer_http() -> None:
            conn, _ = not_redis.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        import threading

        thread = threading.Thread(target=answer_http, daemon=True)
        thread.start()
        started = time.monotonic()
        done = CliRunner().invoke(cli, ["fleet", "status", "--redis", f"redis://127.0.0.1:{port}"])
        assert time.monotonic() - started < GUARD
        thread.join(GUARD)
    assert done.exit_code == 2, done.output
    assert "does not answer as Redis does" in done.stderr
    assert done.stderr.count("\n") == 1
    nothing = CliRunner().invoke(cli, ["fleet", "status", "--redis", f"unix://{tmp_path}/no.sock"])
    assert nothing.exit_code == 2
    assert "cannot reach Redis at" in nothing.stderr


@pytest.mark.filterwarnings(COREDIS_LEAK)
async def test_a_call_rides_through_a_redis_restart(tmp_path):
    """Redis gone for a moment (killed, started again on the same socket): the call waits
    for it and gets through, instead of failing the worker; Redis kept nothing (no
    persistence here), which the call's answer shows: the fleet's epoch is a new one."""
    from tests.fleet.conftest import start_redis

    proc, url = start_redis(tmp_path)
    try:
        with trio.fail_after(GUARD):
            async with open_fleet(url, "restart") as fleet:
                assert await fleet.submit(["before"], None) == 1
                proc.kill()
                proc.wait()

                async def come_back() -> None:
                    await trio.sleep(0.3)
                    nonlocal proc
                    proc, _ = await trio.to_thread.run_sync(start_redis, tmp_path)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(come_back)
                    with pytest.raises(StateLost, match="its epoch is new"):
                        await fleet.submit(["after"], None)
                entry = await fleet.redis.hget(fleet.keys.state, "after")  # its queue entry
                assert await fleet.redis.xrange(fleet.keys.jobs, entry, entry)
    finally:
        stop(proc)


async def test_jobs_read_by_a_fenced_worker_are_taken_over_too(redis_url: str, fleet_name: str):
    """A worker fenced while frozen may read once more as it wakes: those jobs, held under a
    name with no lease at all, are claimed by the next takeover pass all the same."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            await fleet.submit(["s1", "s2"], None)
            assert await fleet.lease("alive", 60, join=True) > 0
            assert len(await take(fleet, "ghost", 10)) == 2  # no lease was ever taken
            claimed = await fleet.take_over("alive", 100)
            assert sorted(c.job_id for c in claimed) == ["s1", "s2"]
            consumers = await fleet.redis.xinfo_consumers(fleet.keys.jobs, GROUP)
            assert [c["name"] for c in consumers] == ["alive"]


async def dead_worker_holding(fleet: Fleet, jobs: int) -> None:
    """A worker "dead" that read ``jobs`` new jobs and whose lease then ran out."""
    await fleet.ensure_group()
    await fleet.submit([f"d{i}" for i in range(jobs)], None)
    assert await fleet.lease("dead", 60, join=True) > 0
    assert len(await take(fleet, "dead", jobs)) == jobs
    await fleet.redis.zadd(fleet.keys.workers, {"dead": 1})  # its lease ran out


async def test_a_dead_workers_jobs_are_shared_by_the_live_ones(redis_url: str, fleet_name: str):
    """A dead worker's 10 jobs and two live workers: a takeover pass claims the caller's share
    (half), and never more than the room the caller says it has."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            for live in ("live1", "live2"):
                assert await fleet.lease(live, 60, join=True) > 0
            await dead_worker_holding(fleet, 10)
            assert len(await fleet.take_over("live1", 2)) == 2  # its room
            assert len(await fleet.take_over("live2", 100)) == 4  # half of the 8 left
            assert len(await fleet.take_over("live1", 100)) == 2  # half of the 4 left
            pending = await fleet.redis.xpending(fleet.keys.jobs, GROUP)
            consumers = dict(pending.consumers or {})  # type: ignore[union-attr]
            assert consumers == {"live1": 4, "live2": 4, "dead": 2}


async def wipe(fleet: Fleet) -> None:
    """What a Redis restarted without persistence leaves of this fleet: nothing."""
    keys = await fleet.redis.keys(f"vt:{{{fleet.keys.fleet}}}:*")
    if keys:
        await fleet.redis.delete(keys)


async def test_a_wiped_fleet_says_its_state_was_lost(redis_url: str, fleet_name: str):
    """The fleet's state wiped after a submit: a worker renewing its lease learns the state was
    lost; a reader finding results or jobs but no epoch (something wrote into the wiped Redis)
    says so too, and ``fleet status`` exits 2 rather than report a fleet done."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            await fleet.submit(["w1", "w2"], None)
            assert await fleet.lease("w", 60, join=True) > 0
            await fleet.check_epoch()  # unchanged: nothing to say
            await wipe(fleet)
            with pytest.raises(StateLost, match="its epoch is gone"):
                await fleet.lease("w", 60, join=False)
            with pytest.raises(StateLost):  # a result recorded into the wiped Redis
                await fleet.record("w", [("w1", "1-0", "{}")])
            await fleet.redis.hset(fleet.keys.state, {"w1": "done"})
        async with open_fleet(redis_url, fleet_name) as fresh:
            with pytest.raises(StateLost, match="no epoch"):
                await fresh.check_epoch()


def test_a_fleet_with_workers_but_no_submit_yet_shows_zeros(redis_url: str, fleet_name: str):
    """Workers started before the first submit make the (empty) jobs stream: not a lost state."""

    async def worker_started(fleet: Fleet) -> None:
        await fleet.ensure_group()

    with_fleet(redis_url, fleet_name, worker_started)
    said = CliRunner().invoke(
        cli, ["fleet", "status", "--redis", redis_url, "--fleet", fleet_name, "--json"]
    )
    assert said.exit_code == 0, said.output
    assert json.loads(said.output)["submitted"] == 0


def test_status_and_results_of_a_wiped_fleet_exit_2(redis_url: str, fleet_name: str):
    """A worker that wrote into a wiped Redis left a result and no epoch: ``fleet status`` and
    ``fleet results`` say the state was lost, in one line, exit 2 (status said "submitted 3,
    done 3" of 100)."""

    async def leftover(fleet: Fleet) -> None:
        await fleet.redis.hset(fleet.keys.state, {"x": "done"})
        await fleet.redis.xadd(fleet.keys.results, {"id": "x", "record": "{}"})

    with_fleet(redis_url, fleet_name, leftover)
    args = ["--redis", redis_url, "--fleet", fleet_name]
    said = CliRunner().invoke(cli, ["fleet", "status", *args])
    assert said.exit_code == 2, said.output
    assert "the fleet's state was lost" in said.output
    assert said.output.count("\n") == 1
    results = CliRunner().invoke(cli, ["fleet", "results", *args])
    assert results.exit_code == 2, results.output
    assert "the fleet's state was lost" in results.output


async def test_jobs_handed_back_keep_their_delivery_count(redis_url: str, fleet_name: str):
    """A worker that stops gracefully hands its jobs back (lease 0): claimed with their count
    unchanged, so rolling restarts do not dead-letter long jobs; one that died (its lease ran
    out) counts a delivery."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            await fleet.submit(["long"], None)
            for name in ("first", "second", "third"):
                assert await fleet.lease(name, 60, join=True) > 0
            assert len(await take(fleet, "first", 1)) == 1  # delivered once
            await fleet.redis.zadd(fleet.keys.workers, {"first": 0})  # Worker.leave()
            [handed] = await fleet.take_over("second", 10)
            assert handed.deliveries == 1
            await fleet.redis.zadd(fleet.keys.workers, {"second": 1})  # its lease ran out
            [taken] = await fleet.take_over("third", 10)
            assert taken.deliveries == 2
            summary = await fleet.redis.xpending(fleet.keys.jobs, GROUP, "-", "+", 10)
            assert [(p.consumer, p.delivered) for p in summary] == [("third", 2)]  # type: ignore[union-attr]


async def test_full_workers_do_not_slow_a_takeover(redis_url: str, fleet_name: str):
    """Of two live workers one is full (it said so at its renewal): the other's share of a dead
    worker's jobs is all of them, within its room."""
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            assert await fleet.lease("full", 60, join=True, room=0) > 0
            assert await fleet.lease("free", 60, join=True, room=100) > 0
            await dead_worker_holding(fleet, 6)
            assert len(await fleet.take_over("free", 100)) == 6
