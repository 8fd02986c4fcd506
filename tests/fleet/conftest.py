"""Real redis-servers for the fleet tests (started by ``vtpoll.fleet._local``, which the load
scripts share): one on a unix socket in a temporary directory, a 3-master Redis Cluster, a
primary with a replica and a Sentinel."""

from __future__ import annotations

import gc
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from tests.helpers import spawn, stop, wait_for
from vtpoll.fleet import _local
from vtpoll.fleet._local import START_TIMEOUT, free_port, redis_binary

__all__ = ["COREDIS_LEAK", "free_port", "redis_cli", "start_redis", "start_replicated"]


def start_redis(folder: Path, *options: str) -> tuple[subprocess.Popen[str], str]:
    """A redis-server on ``folder``/redis.sock, answering, in a session of its own (see
    ``_local.start_redis``): the process and its URL."""
    return _local.start_redis(folder, *options, spawn=spawn)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``unix://...`` of a redis-server started for this test session."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """``redis://127.0.0.1:PORT`` of each node of a 3-master Redis Cluster started for this
    test session."""
    procs, ports = _local.start_cluster(tmp_path_factory.mktemp("cluster"), spawn=spawn)
    try:
        yield [f"redis://127.0.0.1:{port}" for port in ports]
    finally:
        for proc in procs:
            stop(proc)


@pytest.fixture(scope="session")
def redis_sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis+sentinel://127.0.0.1:PORT/primary``: a Redis Sentinel monitoring a primary, both
    started for this test session on local ports."""
    folder = tmp_path_factory.mktemp("sentinel")
    server = redis_binary()
    procs = []
    try:
        proc, primary = _local.start_node(folder, spawn=spawn, name="primary")
        procs.append(proc)
        port = free_port()
        config = folder / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor primary 127.0.0.1 {primary} 1\n"
        )
        procs.append(spawn([server, str(config), "--sentinel"], stdout=subprocess.DEVNULL))
        wait_for(partial(_local.answers, port), "PONG from the sentinel", timeout=START_TIMEOUT)
        yield f"redis+sentinel://127.0.0.1:{port}/primary"
    finally:
        for proc in procs:
            stop(proc)


@dataclass
class Replicated:
    """A primary, its replica and a Sentinel watching them, on local ports."""

    primary: subprocess.Popen[str]
    primary_port: int
    replica: subprocess.Popen[str]
    replica_port: int
    sentinel: subprocess.Popen[str]
    sentinel_port: int

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/primary"

    folder: Path

    def restart_sentinel(self) -> None:
        """The sentinel started again from its configuration (which it rewrites with what it
        learnt), answering."""
        stop(self.sentinel)
        self.sentinel = start_sentinel(self.folder / "sentinel.conf", self.sentinel_port)

    def stop(self) -> None:
        for proc in (self.sentinel, self.replica, self.primary):
            stop(proc)


def start_sentinel(config: Path, port: int) -> subprocess.Popen[str]:
    proc = spawn([redis_binary(), str(config), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        wait_for(
            partial(_local.answers, port),
            "PONG from the sentinel",
            timeout=START_TIMEOUT,
            alive=proc,
        )
    except BaseException:
        stop(proc)
        raise
    return proc


#: Milliseconds without an answer after which the sentinel deems the primary down (with a
#: quorum of 1, objectively: it fails over at once).
DOWN_AFTER_MS = 200


def start_replicated(folder: Path) -> Replicated:
    """A primary, a replica in sync with it, and a sentinel (quorum 1) that knows both and
    fails over ``DOWN_AFTER_MS`` after the primary stops answering."""
    started: list[subprocess.Popen[str]] = []
    try:
        primary, primary_port = _local.start_node(folder, spawn=spawn, name="primary")
        started.append(primary)
        replica, replica_port = _local.start_node(
            folder, "--replicaof", "127.0.0.1", str(primary_port), spawn=spawn, name="replica"
        )
        started.append(replica)
        wait_for(
            lambda: "master_link_status:up" in redis_cli(replica_port, "INFO", "replication"),
            "the replica in sync",
            timeout=START_TIMEOUT,
        )
        port = free_port()
        config = folder / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor primary 127.0.0.1 {primary_port} 1\n"
            f"sentinel down-after-milliseconds primary {DOWN_AFTER_MS}\n"
            "sentinel failover-timeout primary 5000\n"
        )
        sentinel = start_sentinel(config, port)
        started.append(sentinel)
        # The sentinel has seen the replica in sync: a candidate for promotion.
        wait_for(
            lambda: _known_in_sync(port),
            "the sentinel knowing the replica",
            timeout=START_TIMEOUT,
            alive=sentinel,
        )
    except BaseException:
        for proc in started:
            stop(proc)
        raise
    return Replicated(primary, primary_port, replica, replica_port, sentinel, port, folder)


def _known_in_sync(sentinel_port: int) -> bool:
    said = redis_cli(sentinel_port, "SENTINEL", "REPLICAS", "primary").split("\n")
    fields = dict(zip(said[::2], said[1::2], strict=False))
    return fields.get("flags") == "slave" and fields.get("master-link-status") == "ok"


def redis_cli(port: int, *args: str) -> str:
    """What redis-cli (beside redis-server) prints for one command to 127.0.0.1:``port``;
    empty if nothing answers."""
    cli = Path(redis_binary()).with_name("redis-cli")
    done = subprocess.run(
        [str(cli), "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    return done.stdout.strip()


#: coredis 6.9 makes three anyio memory streams per connection (connection/_base.py, in
#: ``__init__``) and closes them only when a connection that was established ends: each failed
#: connect leaves them to the garbage collector, which warns. Ignored in the tests marked with
#: it only, and collected after each of them so that none surfaces in a test of our own streams.
COREDIS_LEAK = "ignore:Unclosed <MemoryObject:ResourceWarning"


@pytest.fixture(autouse=True)
def _coredis_failed_connects(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    # After the tests marked alone: a full collection costs 35 ms of CPU in a worker that has
    # run much of the suite (3 s over every fleet test). The others leave nothing to collect
    # (none did in 4 runs); one that did would fail, or fail the next test, on the warning.
    marks = request.node.iter_markers("filterwarnings")
    if not any(COREDIS_LEAK in mark.args for mark in marks):
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unclosed <MemoryObject", ResourceWarning)
        gc.collect()


@pytest.fixture
def fleet_name(request: pytest.FixtureRequest) -> str:
    """A fleet of this test's own on the shared server."""
    name: str = request.node.name
    return "t-" + name.replace("[", "-").replace("]", "")
