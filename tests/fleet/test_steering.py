"""Steering a fleet as queue users expect to: one job's whereabouts (``status --job``), jobs
cancelled (``cancel``), workers held back from new jobs (``pause``, ``resume``)."""

from __future__ import annotations

import json
import socket

import trio
from click.testing import CliRunner

from tests.fleet.test_redis import take, until_recorded
from video_translation_client import VideoTranslationClient
from vtpoll import cli
from vtpoll.fleet._options import with_fleet
from vtpoll.fleet._redis import Fleet, open_fleet
from vtpoll.fleet._worker import Worker

#: A bound on a hang, not on speed: the tests wait on events, and a machine three times
#: slower than ours under load must not reach it.
GUARD = 30.0


def _invoke(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(cli, ["fleet", *args])
    return done.exit_code, done.output


def _record(job_id: str) -> str:
    return json.dumps({"job_id": job_id, "outcome": "completed"})


def test_one_job_is_found_wherever_it_is(redis_url: str, fleet_name: str, tmp_path):
    """Queued, in progress (with whom, delivered how often), done (its result), acknowledged,
    unknown (exit 2, one line)."""
    fleet = ["--redis", redis_url, "--fleet", fleet_name]
    taken: dict[str, str] = {}

    async def setup(f: Fleet) -> None:
        await f.ensure_group()
        await f.submit(["held", "done", "acked", "queued"], None)
        assert await f.lease("w", 60, join=True) > 0
        taken.update((job, entry) for entry, job in await take(f, "w", 3))
        assert await f.record("w", [("acked", taken["acked"], _record("acked"))]) == (1, 0)

    async def finish(f: Fleet) -> None:
        assert await f.record("w", [("done", taken["done"], _record("done"))]) == (1, 0)

    with_fleet(redis_url, fleet_name, setup)
    assert _invoke("results", *fleet, "-o", str(tmp_path / "r.jsonl"), "--ack")[0] == 0
    with_fleet(redis_url, fleet_name, finish)
    code, said = _invoke("status", *fleet, "--job", "held", "--json")
    assert code == 0, said
    assert json.loads(said) == {
        "job_id": "held",
        "state": "in progress",
        "worker": "w",
        "deliveries": 1,
    }
    assert _invoke("status", *fleet, "--job", "queued") == (0, "queued: queued\n")
    assert _invoke("status", *fleet, "--job", "done") == (0, "done: done: completed\n")
    assert _invoke("status", *fleet, "--job", "acked") == (0, "acked: acknowledged\n")
    code, said = _invoke("status", *fleet, "--job", "nope")
    assert code == 2
    assert said.count("\n") == 1
    assert "has no job 'nope'" in said


def test_cancelled_jobs_are_recorded_and_their_pollers_results_dropped(
    redis_url: str, fleet_name: str, tmp_path
):
    """A queued job and one a worker holds are cancelled (recorded failed, 'Cancelled'); the
    worker's late result is dropped; a done job stays done; an unknown ID is named, exit 1."""
    fleet = ["--redis", redis_url, "--fleet", fleet_name]
    taken: dict[str, str] = {}

    async def setup(f: Fleet) -> None:
        await f.ensure_group()
        await f.submit(["held", "queued", "done"], None)
        assert await f.lease("w", 60, join=True) > 0
        taken.update((job, entry) for entry, job in await take(f, "w", 2))
        if "done" not in taken:  # the stream's order: held, queued, done
            taken.update((job, entry) for entry, job in await take(f, "w", 1))
        assert await f.record("w", [("done", taken["done"], _record("done"))]) == (1, 0)

    with_fleet(redis_url, fleet_name, setup)
    code, said = _invoke("cancel", *fleet, "held", "queued", "done", "nope")
    assert code == 1
    assert "cancelled 2 jobs" in said
    assert "(1 done already, 1 unknown)" in said
    assert "unknown to the fleet: 'nope'" in said

    async def after(f: Fleet) -> tuple[tuple[int, int], dict[str, dict[str, object]], int]:
        late = await f.record("w", [("held", taken["held"], _record("held"))])
        results = await f.redis.xrange(f.keys.results, "-", "+")
        records = {
            str(r.field_values["id"]): json.loads(str(r.field_values["record"])) for r in results
        }
        return late, records, await f.redis.xlen(f.keys.jobs)

    late, records, left = with_fleet(redis_url, fleet_name, after)
    assert late == (0, 1)
    assert records["done"]["outcome"] == "completed"
    for job_id in ("held", "queued"):
        assert records[job_id]["outcome"] == "failed"
        assert str(records[job_id]["error"]).startswith("Cancelled: ")
    assert left == 0
    assert _invoke("results", *fleet, "-o", str(tmp_path / "r.jsonl"), "--ack")[0] == 0
    code, said = _invoke("cancel", *fleet, "done")  # acknowledged: a done marker is left
    assert (code, "(1 done already, 0 unknown)" in said) == (0, True)


async def test_a_paused_fleet_takes_no_new_jobs_until_resumed(
    redis_url: str, fleet_name: str, make_sim
):
    """Paused, a worker reads no job (it waits, a second at a time); resumed, it takes and
    records them all."""
    sim = make_sim(auto_create=False)
    ids = [f"p{i}" for i in range(5)]
    for job_id in ids:
        await sim.create(job_id, 0.0)
    with trio.fail_after(GUARD):
        async with open_fleet(redis_url, fleet_name) as fleet:
            await fleet.ensure_group()
            await fleet.submit(ids, None)
            await fleet.pause(True)
            client = VideoTranslationClient("http://sim", http_client=sim.client)
            worker = Worker(fleet, client, name="w", lease=5.0, capacity=10)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.run)
                # Its statistics, read as an operator's metrics would: no event to wait on.
                while worker.stats.paused_waits < 1:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                summary = await fleet.redis.xpending(fleet.keys.jobs, "pollers")
                assert summary.pending == 0  # type: ignore[union-attr]
                await fleet.pause(False)
                await until_recorded(fleet, len(ids))
                nursery.cancel_scope.cancel()


def test_a_metrics_port_taken_is_one_line_and_exit_2(redis_url: str, fleet_name: str):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, said = _invoke(
            "worker",
            *("--redis", redis_url, "--fleet", fleet_name, "--base-url", "http://127.0.0.1:9"),
            *("--metrics-port", port),
        )
    assert code == 2
    assert said.count("\n") == 1
    assert f"--metrics-port {port}" in said
