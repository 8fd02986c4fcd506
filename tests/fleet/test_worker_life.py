"""One worker in process, on a real redis-server and the simulation app: restarted under its
name it resumes the entries it held (no other worker takes over a name whose lease is alive,
so nobody else would poll them); the fleet's state wiped under it, it stops and says so."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from tests.fleet.test_redis import take, wipe
from video_translation_client import VideoTranslationClient
from vtpoll.fleet._redis import StateLost, open_fleet
from vtpoll.fleet._worker import Worker

GUARD = 10.0


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
                recorded = 0
                while recorded < 6:  # results written to Redis, by the worker's own task
                    await trio.sleep(0.02)
                    recorded = await fleet.redis.xlen(fleet.keys.results)
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
