"""One worker in process, on a real redis-server and the simulation app: restarted under its
name it resumes the entries it held (no other worker takes over a name whose lease is alive,
so nobody else would poll them); the fleet's state wiped under it, it stops and says so."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.fleet.conftest import start_redis
from tests.fleet.test_redis import take, until_recorded, wipe
from tests.fleet.test_shards import until_recorded as until_counted
from tests.helpers import stop
from video_translation_client import VideoTranslationClient
from vtpoll.fleet._metrics import WorkerMetrics, serving
from vtpoll.fleet._redis import StateLost, open_fleet
from vtpoll.fleet._worker import Worker

#: A bound on a hang, not on speed: the tests wait on events, and a machine three times
#: slower than ours under load must not reach it.
GUARD = 30.0


async def test_a_worker_restarted_under_its_name_resumes_its_jobs(
    redis_url: str, fleet_name: str, make_sim
):
    """The worker's first life read 5 jobs and died with its lease alive; its second life,
    under the same name, polls and records all 5 (and takes the new one too)."""
    sim = make_sim(auto_create=False)
    for job_id in ("r1", "r2", "r3", "r4", "r5", "new"):
        await sim.create(job_id, 0.0)
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            await fleet.submit(["r1", "r2", "r3", "r4", "r5"], None)
            assert await fleet.lease("same", 60, join=True) > 0
            assert len(await take(fleet, "same", 10)) == 5  # the first life, which then died
            await fleet.submit(["new"], None)
            client = VideoTranslationClient("http://sim", http_client=sim.client)
            worker = Worker(fleet, client, name="same", lease=60, capacity=3)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.run)
                await until_recorded(fleet, 6)  # results written to Redis, by the worker's own task
                nursery.cancel_scope.cancel()
            assert worker.stats.resumed == 5
            assert worker.stats.recorded == 6
            results = await fleet.redis.xrange(fleet.keys.results, "-", "+")
            assert sorted(r.field_values["id"] for r in results) == [
                "new",
                "r1",
                "r2",
                "r3",
                "r4",
                "r5",
            ]


async def test_a_worker_whose_fleet_was_wiped_stops_saying_so(
    redis_url: str, fleet_name: str, make_sim
):
    """Redis loses the fleet's state while a worker polls its jobs: the worker stops with
    :class:`StateLost` (exit 2 from the CLI) instead of a consumer-group traceback, and
    records nothing into the empty Redis."""
    sim = make_sim(auto_create=False)
    for job_id in ("long1", "long2"):
        await sim.create(job_id, 3600.0)
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            await fleet.submit(["long1", "long2"], None)
            client = VideoTranslationClient("http://sim", http_client=sim.client)
            worker = Worker(fleet, client, name="w", lease=1.5, capacity=10)

            async def wipe_once_held() -> None:
                held = 0
                while held < 2:  # the worker holds both jobs
                    await trio.sleep(0.02)
                    summary = await fleet.redis.xpending(fleet.keys.jobs, "pollers")
                    held = summary.pending  # type: ignore[union-attr]
                await wipe(fleet)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wipe_once_held)
                with pytest.raises(StateLost):
                    await worker.run()
            assert await fleet.redis.exists([fleet.keys.results, fleet.keys.state]) == 0


async def test_a_job_delivered_too_often_is_recorded_failed(
    redis_url: str, fleet_name: str, make_sim
):
    """A job every worker that took it died holding (delivered 7 times, more than 5): the
    worker taking it over records it failed, naming why, instead of polling it again."""
    sim = make_sim(auto_create=False)
    await sim.create("poison", 3600.0)
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            await fleet.submit(["poison"], None)
            [(entry, _)] = await take(fleet, "dead", 1)
            for _ in range(6):  # six more deliveries, to workers that died holding it
                await fleet.redis.xclaim(fleet.keys.jobs, "pollers", "dead", 0, [entry])
            client = VideoTranslationClient("http://sim", http_client=sim.client)
            worker = Worker(fleet, client, name="w", lease=1.0, capacity=10, max_deliveries=5)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.run)
                results: tuple[Any, ...] = ()
                while not results:
                    await trio.sleep(0.02)
                    results = await fleet.redis.xrange(fleet.keys.results, "-", "+")
                nursery.cancel_scope.cancel()
    record = json.loads(results[0].field_values["record"])
    assert record["job_id"] == "poison"
    assert record["outcome"] == "failed"
    assert record["error"].startswith("DeadLetter: delivered 8 times without a result")
    assert worker.stats.dead_letters == 1


@pytest.mark.long
async def test_two_workers_ride_through_a_redis_outage(tmp_path: Path, make_sim):
    """Redis frozen for two leases while two workers poll their jobs: neither stops, neither
    takes the other's jobs when Redis comes back (every lease ran out meanwhile), and every
    job is recorded once (at the default 20 s lease, any outage of 13 s fenced every worker,
    and one of 30 s stopped the fleet)."""
    proc, url = start_redis(tmp_path)
    sim = make_sim(auto_create=False)
    ids = [f"o{i}" for i in range(20)]
    for job_id in ids:
        await sim.create(job_id, 2.5)
    workers: list[Worker] = []
    try:
        with trio.fail_after(GUARD * 2):
            async with open_fleet(url, "outage") as one, open_fleet(url, "outage") as two:
                await one.ensure_group()
                await one.submit(ids, None)
                async with trio.open_nursery() as nursery:
                    for fleet, name in ((one, "w1"), (two, "w2")):
                        client = VideoTranslationClient("http://sim", http_client=sim.client)
                        worker = Worker(fleet, client, name=name, lease=1.0, capacity=10)
                        workers.append(worker)
                        nursery.start_soon(worker.run)
                    holders = 0
                    while holders < 2:  # both workers hold jobs
                        await trio.sleep(0.02)
                        summary = await one.redis.xpending(one.keys.jobs, "pollers")
                        holders = len(summary.consumers or {})  # type: ignore[union-attr]
                    proc.send_signal(signal.SIGSTOP)
                    await trio.sleep(2.0)  # the outage: two leases
                    proc.send_signal(signal.SIGCONT)
                    await until_recorded(one, len(ids))
                    # Redis holds the last results before their worker has its reply and
                    # counts them: cancelled then, the workers had counted 19 of 20 (seen
                    # once in 14 runs of the suite).
                    await until_counted(workers, len(ids))
                    nursery.cancel_scope.cancel()
                results = await one.redis.xrange(one.keys.results, "-", "+")
    finally:
        proc.send_signal(signal.SIGCONT)
        stop(proc)
    assert sorted(r.field_values["id"] for r in results) == sorted(ids)
    assert [w.stats.claimed for w in workers] == [0, 0]
    assert sum(w.stats.recorded for w in workers) == len(ids)


async def test_a_workers_metrics_are_served(redis_url: str, fleet_name: str, make_sim):
    """``--metrics-port``: Prometheus text on 127.0.0.1, the worker's results recorded, jobs
    held and its client's requests, labelled with its name."""
    sim = make_sim(auto_create=False)
    for job_id in ("m1", "m2", "m3"):
        await sim.create(job_id, 0.0)
    metrics = WorkerMetrics("w")
    with trio.fail_after(GUARD), serving(metrics, "127.0.0.1", 0) as url:
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            await fleet.submit(["m1", "m2", "m3"], None)
            client = VideoTranslationClient("http://sim", http_client=sim.client)
            worker = Worker(fleet, client, name="w", lease=5.0, capacity=10, metrics=metrics)
            async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
                nursery.start_soon(worker.run)
                text = ""
                while 'vtpoll_fleet_results_recorded_total{worker="w"} 3.0' not in text:
                    await trio.sleep(0.05)
                    text = (await http.get(url)).text
                nursery.cancel_scope.cancel()
    assert 'vtpoll_fleet_jobs_held{worker="w"}' in text
    assert 'vtpoll_fleet_shards_read{worker="w"} 1.0' in text
    assert 'vtpoll_client_requests_total{worker="w"}' in text


async def test_entries_a_lost_reply_left_with_a_worker_are_polled(
    redis_url: str, fleet_name: str, make_sim
):
    """A read whose reply was lost (Redis answered after the call timed out) leaves entries
    held by the worker that it never saw: after a call failed, the worker looks for its own
    entries and polls those it does not know (else nobody would: its lease is alive)."""
    sim = make_sim(auto_create=False)
    for job_id in ("l1", "l2", "l3"):
        await sim.create(job_id, 0.0)
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            await fleet.pause(True)  # the worker itself reads nothing
            await fleet.submit(["l1", "l2", "l3"], None)
            client = VideoTranslationClient("http://sim", http_client=sim.client)
            worker = Worker(fleet, client, name="w", lease=1.0, capacity=10)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.run)
                # Its own entries read at start (none), it waits out the pause. (The pause is
                # watched by a task of its own: seen paused says nothing of the start's read,
                # which on a busy machine then found the entries below and resumed them.)
                await worker._resumed.wait()
                while worker.stats.paused_waits < 1:  # noqa: ASYNC110 - a counter, no event
                    await trio.sleep(0.02)
                assert len(await take(fleet, "w", 3)) == 3  # the read whose reply was lost
                fleet.troubled_at = trio.current_time()  # ... as its call timed out
                await until_recorded(fleet, 3)
                nursery.cancel_scope.cancel()
    assert worker.stats.adopted == 3
