"""A fleet on a real 3-master Redis Cluster, reached through any node's URL (detected): submit,
a worker, results acknowledged and status, as on one Redis (the fleet's keys share one hash
tag, so one slot); and through Redis Sentinel."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from sim_server import ServerSettings
from tests.conftest import Sim
from tests.fleet.conftest import COREDIS_LEAK
from tests.fleet.test_redis import until_recorded
from video_translation_client import VideoTranslationClient
from vtpoll import cli
from vtpoll.fleet._redis import FleetError, check_url, open_fleet
from vtpoll.fleet._scripts import Keys
from vtpoll.fleet._worker import Worker

GUARD = 20.0


def _moved(url: str, key: str) -> bool:
    """Whether the node at ``url`` answers a read of ``key`` with MOVED (another serves it)."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(f"EXISTS {key}\r\n".encode())
        return sock.recv(256).startswith(b"-MOVED")


# coredis's cluster client makes a connection object (and its memory streams) per node it
# learns of, and leaves those it never connects to the garbage collector.
@pytest.mark.filterwarnings(COREDIS_LEAK)
def test_a_fleet_runs_on_a_redis_cluster_through_any_node(
    redis_cluster: list[str], fleet_name: str, tmp_path: Path
):
    """Through a node that does not serve the fleet's slot (a plain client gets MOVED)."""
    redis_cluster_url = next(url for url in redis_cluster if _moved(url, Keys(fleet_name).jobs))
    args = ["--redis", redis_cluster_url, "--fleet", fleet_name]
    ids = [f"c{i}" for i in range(20)]
    submitted = CliRunner().invoke(cli, ["fleet", "submit", *args, *ids])
    assert submitted.exit_code == 0, submitted.output
    assert "submitted 20 new jobs" in submitted.output

    async def work() -> None:
        sim = Sim(ServerSettings(error_rate=0.0))
        for job_id in ids:
            await sim.create(job_id, 0.0)
        with trio.fail_after(GUARD):
            async with open_fleet(redis_cluster_url, fleet_name) as fleet:
                client = VideoTranslationClient("http://sim", http_client=sim.client)
                worker = Worker(fleet, client, name="w", lease=5.0, capacity=50)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(worker.run)
                    await until_recorded(fleet, len(ids))
                    nursery.cancel_scope.cancel()
        await sim.client.aclose()
        sim.state.store.close()

    trio.run(work)
    out = tmp_path / "results.jsonl"
    written = CliRunner().invoke(cli, ["fleet", "results", *args, "-o", str(out), "--ack"])
    assert written.exit_code == 0, written.output
    assert sorted(json.loads(line)["job_id"] for line in out.read_text().splitlines()) == sorted(
        ids
    )
    status = CliRunner().invoke(cli, ["fleet", "status", *args, "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert (report["submitted"], report["done"], report["acknowledged"]) == (20, 20, 20)


def test_a_fleet_is_reached_through_redis_sentinel(redis_sentinel_url: str, fleet_name: str):
    """``redis+sentinel://HOST:PORT/SERVICE``: the primary the sentinel names serves the fleet."""
    args = ["--redis", redis_sentinel_url, "--fleet", fleet_name]
    submitted = CliRunner().invoke(cli, ["fleet", "submit", *args, "s1", "s2"])
    assert submitted.exit_code == 0, submitted.output
    assert "submitted 2 new jobs" in submitted.output
    status = CliRunner().invoke(cli, ["fleet", "status", *args, "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.output)["queued"] == 2


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://127.0.0.1:26379", "names no service"),
        (
            "redis+sentinel://127.0.0.1:x/primary",
            "each sentinel must be HOST:PORT, not '127.0.0.1:x'",
        ),
        ("redis+sentinel://:26379,h/primary", "each sentinel must be HOST:PORT"),
    ],
)
def test_a_malformed_sentinel_url_is_named(url: str, message: str):
    with pytest.raises(FleetError, match=re.escape(message)):
        check_url(url)
