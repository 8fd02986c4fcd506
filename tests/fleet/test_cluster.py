"""A fleet on a real 3-master Redis Cluster, reached through any node's URL (detected): its 3
shards on the 3 nodes (each shard's keys share one hash tag, so one slot), submit, workers,
results acknowledged and status, as on one Redis; a new fleet there without --shards refused;
and through Redis Sentinel."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from tests.fleet.conftest import COREDIS_LEAK
from tests.fleet.test_shards import close, run_workers, sim_of
from vtpoll import cli
from vtpoll.fleet._redis import FleetError, check_url, open_fleet
from vtpoll.fleet._scripts import Keys
from vtpoll.fleet._shards import MAX_SHARDS

GUARD = 20.0
SHARDS = 3


def _exists(url: str, key: str) -> bytes:
    """What the node at ``url`` itself answers to EXISTS ``key``: ``:1``, ``:0``, or MOVED."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(f"EXISTS {key}\r\n".encode())
        return sock.recv(256).rstrip(b"\r\n")


def _moved(url: str, key: str) -> bool:
    """Whether the node at ``url`` answers a read of ``key`` with MOVED (another serves it)."""
    return _exists(url, key).startswith(b"-MOVED")


def _node_of(nodes: list[str], key: str) -> str:
    """The node that serves ``key`` (the one that answers it without MOVED)."""
    [node] = [url for url in nodes if not _moved(url, key)]
    return node


def _spread_name(nodes: list[str], base: str) -> str:
    """A fleet name from ``base`` whose 3 shards are served by the 3 nodes (a name's shards
    fall on distinct nodes for about 2 names in 9; the first such suffix, so the same name
    each run)."""
    for k in range(200):
        name = f"{base}-{k}"
        if len({_node_of(nodes, Keys(name, shard).jobs) for shard in range(SHARDS)}) == SHARDS:
            return name
    raise AssertionError("no name among 200 spreads its shards over the nodes")


# coredis's cluster client makes a connection object (and its memory streams) per node it
# learns of, and leaves those it never connects to the garbage collector.
@pytest.mark.long
@pytest.mark.filterwarnings(COREDIS_LEAK)
def test_a_sharded_fleet_runs_on_a_redis_cluster_through_any_node(
    redis_cluster: list[str], fleet_name: str, tmp_path: Path
):
    """3 shards on 3 nodes, reached through a node that does not serve shard 0 (a plain
    client gets MOVED): two workers record every job once, results and status sum the
    shards; once acknowledged, no ID is queued again."""
    fleet_name = _spread_name(redis_cluster, fleet_name)
    redis_cluster_url = next(url for url in redis_cluster if _moved(url, Keys(fleet_name).jobs))
    args = ["--redis", redis_cluster_url, "--fleet", fleet_name]
    ids = [f"c{i}" for i in range(30)]
    submitted = CliRunner().invoke(cli, ["fleet", "submit", *args, "--shards", "3", *ids])
    assert submitted.exit_code == 0, submitted.output
    assert "submitted 30 new jobs" in submitted.output
    # Each shard's keys are in the node that serves its tag's slot, one shard a node.
    holders = {_node_of(redis_cluster, Keys(fleet_name, s).state) for s in range(SHARDS)}
    assert holders == set(redis_cluster)
    for shard in range(SHARDS):
        key = Keys(fleet_name, shard).state
        assert _exists(_node_of(redis_cluster, key), key) == b":1"

    async def work() -> None:
        sim = sim_of()
        with trio.fail_after(GUARD):
            async with open_fleet(redis_cluster_url, fleet_name) as fleet:
                assert fleet.shards == SHARDS
                for shard in range(SHARDS):  # every shard holds jobs, in its own slot
                    assert await fleet.redis.hlen(fleet.shard(shard).state) > 0
                workers = await run_workers(fleet, sim, ["w1", "w2"], len(ids))
                assert sum(worker.stats.recorded for worker in workers) == len(ids)
        await close(sim)

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
    assert (report["submitted"], report["done"], report["acknowledged"]) == (30, 30, 30)
    assert report["shards"] == SHARDS
    # The done markers live in each shard's slot: none of the IDs is queued again.
    again = CliRunner().invoke(cli, ["fleet", "submit", *args, *ids, "c-new"])
    assert "submitted 1 new jobs" in again.output, again.output
    job = CliRunner().invoke(cli, ["fleet", "status", *args, "--job", "c7"])
    assert job.output == "c7: acknowledged\n"


@pytest.mark.filterwarnings(COREDIS_LEAK)
def test_a_new_fleet_on_a_redis_cluster_needs_shards(redis_cluster: list[str], fleet_name: str):
    """One line, exit 2, naming --shards: one hash tag would put the whole fleet on one node."""
    args = ["--redis", redis_cluster[0], "--fleet", fleet_name]
    submitted = CliRunner().invoke(cli, ["fleet", "submit", *args, "a", "b"])
    assert submitted.exit_code == 2
    assert submitted.output.count("\n") == 1
    assert "give its first submit --shards N" in submitted.output


def test_a_fleet_is_reached_through_redis_sentinel(redis_sentinel_url: str, fleet_name: str):
    """``redis+sentinel://HOST:PORT/SERVICE``: the primary the sentinel names serves the fleet,
    through a pool as large as a plain URL's."""
    args = ["--redis", redis_sentinel_url, "--fleet", fleet_name]
    submitted = CliRunner().invoke(cli, ["fleet", "submit", *args, "s1", "s2"])
    assert submitted.exit_code == 0, submitted.output
    assert "submitted 2 new jobs" in submitted.output
    status = CliRunner().invoke(cli, ["fleet", "status", *args, "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.output)["queued"] == 2

    async def pool() -> int:
        async with open_fleet(redis_sentinel_url, fleet_name) as fleet:
            return int(fleet.redis.connection_pool.max_connections)

    # The readers of up to 64 shards hold a connection each; renewals need room beside them.
    assert trio.run(pool) > 2 * MAX_SHARDS


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
