"""``vtpoll`` processes forked from one that imported it already, for the tests that start
many: a ``vtpoll fleet`` process spends 0.6 s of CPU importing coredis, beartype, trio, httpx
and the client before it reads its arguments, and the fleet tests started a dozen.

The zygote (``python -m tests._zygote FD``) imports the commands once, then forks a child for
each request on the socket FD: the child takes the standard streams, environment, working
directory and session it was sent, and runs ``vtpoll.main`` with its arguments, exiting as
``python -m vtpoll`` does (the interpreter's own exit: its flushes, its exit status). Its
signals, pipes and exit codes are a process's: the tests kill, freeze, interrupt and read it
as they would any other. What only a fresh interpreter does (the import of ``vtpoll`` and its
extras, ``-m``) the CLI tests show with processes of their own.

The zygote is the children's parent, so it waits for them and sends their exit status back;
:class:`Forked` is a :class:`subprocess.Popen` whose polls and waits ask for it.
"""

from __future__ import annotations

import io
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

#: Largest message either side sends (a request's argv and environment).
MESSAGE = 1 << 20


# -- the zygote ------------------------------------------------------------------------------


def _serve(sock: socket.socket) -> None:
    """Fork a child per request until the tests close the socket; tell each child's pid, and
    its exit status once it has ended. Nothing here is cleaned up on the way out (no ``with``,
    no ``finally``): a child leaves this function by raising ``SystemExit`` through it."""
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, None)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                message, fds, _, _ = socket.recv_fds(sock, MESSAGE, 3)
                if not message:
                    return
                pid = os.fork()
                if pid == 0:
                    _child(json.loads(message), fds, sock, selector)
                for fd in fds:
                    os.close(fd)
                # Readable once the child has ended: no SIGCHLD handler for children to inherit.
                ended = os.pidfd_open(pid)
                selector.register(ended, selectors.EVENT_READ, pid)
                sock.send(json.dumps({"pid": pid}).encode())
            else:
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status, usage = os.wait4(key.data, 0)
                code = os.waitstatus_to_exitcode(status)
                cpu = usage.ru_utime + usage.ru_stime
                sock.send(json.dumps({"ended": key.data, "code": code, "cpu": cpu}).encode())


def _child(
    request: dict[str, Any],
    fds: list[int],
    sock: socket.socket,
    selector: selectors.BaseSelector,
) -> None:
    """Become ``vtpoll ARGV`` on the streams ``fds`` (stdin, stdout, stderr)."""
    for key in list(selector.get_map().values()):
        if key.data is not None:  # the other children's pidfds
            os.close(key.fd)
    selector.close()
    # Detached, not only closed: the object would otherwise close the number again when
    # collected, by then perhaps a socket of the child's.
    os.close(sock.detach())
    if request["session"]:
        os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import vtpoll

    # As ``python -m vtpoll`` has it (importing vtpoll.__main__ would run it).
    sys.argv = [str(Path(vtpoll.__file__).with_name("__main__.py")), *request["argv"]]
    vtpoll.main(request["argv"])


def main() -> None:
    # What every child would import: once, here.
    import vtpoll._main
    import vtpoll.fleet  # noqa: F401

    _serve(socket.socket(fileno=int(sys.argv[1])))


# -- the tests' side -------------------------------------------------------------------------


class Zygote:
    """A zygote process and the socket to it (one per test process)."""

    #: CPU seconds of the children ended so far, of every zygote of this process: this
    #: process's getrusage counts them only once the zygote has ended (a profile of the tests'
    #: CPU adds them to the test that ended them).
    children_cpu = 0.0

    def __init__(self, spawn: Any) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc: subprocess.Popen[str] = spawn(
            [sys.executable, "-m", "tests._zygote", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            cwd=Path(__file__).parent.parent,
        )
        theirs.close()
        self.sock = ours
        self.codes: dict[int, int] = {}
        self.lock = threading.Lock()

    def close(self) -> None:
        """End the zygote (its children are the tests' to stop)."""
        self.sock.close()
        self.proc.wait(timeout=10)

    def _next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next message (an ended child's noted), or None if none came within
        ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            message = self.sock.recv(MESSAGE)
        except (BlockingIOError, TimeoutError):
            return None
        if not message:
            raise RuntimeError(f"the zygote ended ({self.proc.wait()})")
        said: dict[str, Any] = json.loads(message)
        if "ended" in said:
            self.codes[said["ended"]] = said["code"]
            Zygote.children_cpu += said["cpu"]
        return said

    def code(self, pid: int, timeout: float | None) -> int | None:
        """``pid``'s exit status (as :class:`subprocess.Popen` gives it), waiting up to
        ``timeout`` seconds (None: until it ends); None if it has not ended by then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while pid not in self.codes:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if self._next(left) is None:
                    return None
            return self.codes[pid]

    def spawn(
        self,
        argv: list[str],
        *,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        env: dict[str, str] | None = None,
        start_new_session: bool = True,
    ) -> Forked:
        """``vtpoll ARGV`` (``argv`` without the ``vtpoll``), its streams as
        :class:`subprocess.Popen` takes them (None, DEVNULL, PIPE, a file), text mode, in a
        session of its own unless told."""
        theirs: list[int] = []
        ours: list[IO[str] | None] = []
        closing: list[int] = []
        for k, given in enumerate((stdin, stdout, stderr)):
            mine: IO[str] | None = None
            if given is None:
                fd = k
            elif given == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR)
                closing.append(fd)
            elif given == subprocess.PIPE:
                read, write = os.pipe()
                fd, end = (read, write) if k == 0 else (write, read)
                closing.append(fd)
                # Ours until the process is stopped, as Popen's pipes are.
                if k == 0:
                    mine = io.TextIOWrapper(open(end, "wb"), write_through=True)  # noqa: SIM115
                else:
                    mine = io.TextIOWrapper(open(end, "rb"))  # noqa: SIM115
            elif isinstance(given, int):
                fd = given
            else:
                fd = given.fileno()
            theirs.append(fd)
            ours.append(mine)
        request = {
            "argv": argv,
            "env": dict(os.environ if env is None else env),
            "cwd": os.getcwd(),
            "session": start_new_session,
        }
        with self.lock:
            self.sock.settimeout(None)
            try:
                socket.send_fds(self.sock, [json.dumps(request).encode()], theirs)
            finally:
                for fd in closing:
                    os.close(fd)
            while True:
                said = self._next(None)
                assert said is not None
                if "pid" in said:
                    break
        return Forked(self, said["pid"], ["vtpoll", *argv], *ours)


class Forked(subprocess.Popen[str]):
    """A child of the zygote, as the tests use a :class:`subprocess.Popen`: its pid, signals,
    pipes, ``poll``, ``wait`` and ``communicate``; its exit status is the zygote's to tell."""

    # Popen.__init__ would start a process: the attributes its other methods read are set here.
    def __init__(
        self,
        zygote: Zygote,
        pid: int,
        args: list[str],
        stdin: IO[str] | None,
        stdout: IO[str] | None,
        stderr: IO[str] | None,
    ) -> None:
        self._zygote = zygote
        self.args = args
        self.pid = pid
        self.returncode = None
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.text_mode = True
        self.encoding = None
        self.errors = None
        self.universal_newlines = True
        self.pipesize = -1
        self._child_created = True
        self._communication_started = False
        self._closed_child_pipe_fds = True
        self._input = None
        self._sigint_wait_secs = 0.25
        self._waitpid_lock = threading.Lock()

    def _internal_poll(self, *args: Any, **kwargs: Any) -> int | None:
        if self.returncode is None and self._zygote.sock.fileno() != -1:
            self.returncode = self._zygote.code(self.pid, 0)
        return self.returncode

    def _wait(self, timeout: float | None) -> int:
        if self.returncode is None:
            code = self._zygote.code(self.pid, timeout)
            if code is None:
                assert timeout is not None
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = code
        return self.returncode


if __name__ == "__main__":
    main()
