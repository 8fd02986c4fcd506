"""Processes for end-to-end tests: started in a session of their own, and stopped with all
they started, whatever the test did."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx
import pytest

from sim_server.testing import tls
from sim_server.testing import wait_healthy as wait_healthy

if TYPE_CHECKING:
    from tests._zygote import Zygote

#: How long a stopped process's session may take to empty before the rest is killed.
SESSION_GRACE = 5.0


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """A child process (text mode) leading a session of its own, so that :func:`stop` can end
    whatever it starts too (hypercorn's workers, a load script's server and clients)."""
    return subprocess.Popen(argv, text=True, start_new_session=True, **kwargs)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
    """Send ``sig`` and wait for the process (SIGKILL after ``timeout``); then wait for its
    session to empty, and kill what is left of it. Closes its pipes."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + SESSION_GRACE
    killed = False
    while members := session_members(proc.pid):
        if time.monotonic() > deadline:
            if killed:
                raise AssertionError(f"processes {members} survived SIGKILL")
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + SESSION_GRACE
        time.sleep(0.01)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def wait_for(
    check: Callable[[], bool],
    what: str,
    *,
    timeout: float,
    alive: subprocess.Popen[str] | None = None,
    every: float = 0.05,
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds, or at
    once if the process ``alive`` has ended meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        if alive is not None and alive.poll() is not None:
            said = alive.stderr.read() if alive.stderr is not None else ""
            raise AssertionError(f"process ended ({alive.returncode}) before {what}: {said}")
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(every)


def head_1(
    proc: subprocess.Popen[str], *, timeout: float, then: Callable[[], object] = lambda: None
) -> tuple[str, str]:
    """Read the first line of ``proc``'s standard output and close it, as ``| head -1`` does;
    ``then`` runs once the reader has gone; the process must end within ``timeout``. The
    line, and all it said on stderr."""
    assert proc.stdout is not None
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line on standard output within {timeout:g} s"
    line = proc.stdout.readline()
    proc.stdout.close()
    then()
    proc.wait(timeout=timeout)
    return line, proc.stderr.read()


def read_until(stream: IO[str], text: str, count: int, *, timeout: float) -> str:
    """Read a child's pipe (read here only, not through ``stream``'s buffer) until ``text``
    has come ``count`` times; fail after ``timeout`` seconds, or if the pipe ends first.
    All that was read."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while seen.count(text.encode()) < count:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"{text!r} not {count} times within {timeout:g} s: {seen.decode()}"
        chunk = os.read(fd, 65536)
        assert chunk, f"the pipe ended before {text!r} came {count} times: {seen.decode()}"
        seen += chunk
    return seen.decode()


def session_members(sid: int) -> list[int]:
    """Live processes (not zombies) of session ``sid`` (Linux: /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def start_server(
    *args: str,
    timeout: float = 15.0,
    env: dict[str, str] | None = None,
    zygote: Zygote | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """``python -m sim_server --port 0 ARGS`` in a session of its own, forked from ``zygote``
    if given (its start then costs no second of CPU importing Quart and hypercorn): the
    process and its URL (the first line it prints). The caller stops it with :func:`stop`."""
    program = ["-m", "sim_server", "--host", "127.0.0.1", "--port", "0", *args]
    streams: dict[str, Any] = {
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "env": {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    }
    if zygote is None:
        proc = spawn([sys.executable, *program], **streams)
    else:
        proc = zygote.python(program, **streams)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"server printed no URL within {timeout} s")
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (url, proc.stderr.read() if proc.stderr else "")
    except BaseException:
        stop(proc)
        raise
    return proc, url


@contextmanager
def stop_signals_kept() -> Iterator[None]:
    """Puts back this process's SIGINT and SIGTERM handlers after a server run in it, which
    sets its own (pytest's Ctrl-C, and xdist's stop, must go on working)."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@contextmanager
def server_process(
    *args: str,
    timeout: float = 15.0,
    env: dict[str, str] | None = None,
    zygote: Zygote | None = None,
) -> Iterator[str]:
    """:func:`start_server`, yielding its URL; stopped with SIGINT after, which it must
    answer by exiting 0 within 10 s."""
    proc, url = start_server(*args, timeout=timeout, env=env, zygote=zygote)
    try:
        yield url
    finally:
        stop(proc, signal.SIGINT)
    assert proc.returncode == 0, f"server exited with {proc.returncode} after SIGINT"


def metric(url: str, name: str) -> float:
    """A sample of a running server's ``/metrics``, summed over its labels (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10, verify=tls(url)).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


class FullDisk:
    """A results file on a disk that fills up after ``room`` records: every write after them
    raises ENOSPC, as a real full disk does (at the flush that hands the line over)."""

    def __init__(self, path: Path, room: int) -> None:
        self.file = path.open("a", encoding="utf-8")
        self.room = room
        self.closed = False

    def write(self, text: str) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= 1
        return self.file.write(text)

    def flush(self) -> None:
        self.file.flush()

    def fileno(self) -> int:
        return self.file.fileno()

    def close(self) -> None:
        self.closed = True
        self.file.close()

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fill_up_after(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """Every results file vtpoll opens from now on (until ``monkeypatch.undo()``) is a
    :class:`FullDisk` with ``room`` records: locked and read as a real one is first."""
    from vtpoll import _jobfile, _watching

    real = _jobfile.open_results

    def on_a_full_disk(path: Path, *, resume: bool) -> tuple[Any, Any]:
        file, previous = real(path, resume=resume)
        file.close()
        return FullDisk(path, room), previous

    monkeypatch.setattr(_watching, "open_results", on_a_full_disk)
