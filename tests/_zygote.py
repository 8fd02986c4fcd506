"""Python processes forked from one that imported what they run already, for the tests that
start many: a ``vtpoll fleet`` process spends 0.6 s of CPU importing coredis, beartype, trio,
httpx and the client before it reads its arguments, a ``python -m sim_server`` 1 s importing
Quart and hypercorn, a load script's client process 0.6 s; the fleet tests start a dozen of
the first, the load scripts' smoke tests ten of the others.

The zygote (``python -m tests._zygote CONTROL [LISTENER]``) forks a child for each request on
a connection: the socket CONTROL of the process that started it, or one LISTENER accepted (the
main process of an xdist run starts one zygote for the run, and each worker connects). The
child takes the standard streams, environment, working directory and session it was sent,
and runs the program asked for (``-m vtpoll ARGS``, ``-m MODULE ARGS`` or ``SCRIPT.py ARGS``,
as ``python`` takes them), exiting as ``python`` does (the interpreter's own exit: its flushes,
its exit status). What a program imports, the zygote imports before its first fork of it, so
that its later children find it there. Their signals, pipes and exit codes are a process's:
the tests kill, freeze, interrupt and read them as they would any other. What only a fresh
interpreter does (the imports themselves, ``-m`` finding the module) the tests of the command
line and of the server's start show with processes of their own.

The zygote is the children's parent, so it waits for them and sends their exit status back
on the connection that asked; :class:`Forked` is a :class:`subprocess.Popen` whose polls and
waits ask for it. It ends when CONTROL closes.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import io
import json
import os
import runpy
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

#: What a socket of the zygote's is there for: a connection that asks for children, or the
#: listener that the run's other test processes connect to.
_ASKS, _JOINS = "asks", "joins"

#: What ``python -m MODULE`` runs, by module: imported by the zygote before it forks one.
_RUNS = {
    "vtpoll": ("vtpoll._main", "vtpoll.fleet"),
    "sim_server": ("sim_server._cli", "sim_server._server"),
    # Not the module itself: run as __main__ once imported, runpy warns that it was.
    "tests.cli.prepared": ("vtpoll._main", "vtpoll.fleet"),
}
#: What a load script's client process imports once it runs (the scripts import the library
#: in the functions that poll, so that their measuring side does not): 0.4 s a process.
_SCRIPTS_RUN = ("trio", "video_translation_client")


# -- the zygote ------------------------------------------------------------------------------


def _serve(control: socket.socket, listener: socket.socket | None) -> None:
    """Fork a child per request on a connection (``control``, or one ``listener`` accepted:
    a worker's of this run) until ``control`` closes; tell the connection that asked each
    child's pid, and its exit status once it has ended. Nothing here is cleaned up on the way
    out (no ``with``, no ``finally``): a child leaves this function by raising ``SystemExit``
    through it."""
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, _ASKS)
    if listener is not None:
        selector.register(listener, selectors.EVENT_READ, _JOINS)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if key.data == _JOINS:
                assert isinstance(sock, socket.socket)
                selector.register(sock.accept()[0], selectors.EVENT_READ, _ASKS)
            elif key.data == _ASKS:
                assert isinstance(sock, socket.socket)
                message, fds, _, _ = socket.recv_fds(sock, MESSAGE, 3)
                if not message:
                    if sock is control:
                        return
                    selector.unregister(sock)
                    sock.close()
                    continue
                request = json.loads(message)
                _prepare(request["program"])
                # What the zygote holds, the collector leaves alone from now on, in the zygote
                # and in its children: a child's collections, and the last one at its exit,
                # otherwise went over all of it, copying every page they wrote to (a child's
                # CPU halved, 0.2 s to 0.1 s for a load script's client, 50 ms to 22 ms for
                # one that does nothing).
                gc.freeze()
                pid = os.fork()
                if pid == 0:
                    _child(request, fds, selector)
                for fd in fds:
                    os.close(fd)
                # Readable once the child has ended: no SIGCHLD handler for children to inherit.
                ended = os.pidfd_open(pid)
                selector.register(ended, selectors.EVENT_READ, (pid, sock))
                sock.send(json.dumps({"pid": pid}).encode())
            else:
                pid, asked = key.data
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status, usage = os.wait4(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                cpu = usage.ru_utime + usage.ru_stime
                # The worker that asked may have ended meanwhile, its connection with it.
                with contextlib.suppress(OSError):
                    asked.send(json.dumps({"ended": pid, "code": code, "cpu": cpu}).encode())


def _prepare(program: list[str]) -> None:
    """Import what ``program`` will import (once: later calls find it in ``sys.modules``)."""
    if program[0] == "-m":
        for name in _RUNS.get(program[1], (program[1],)):
            importlib.import_module(name)
        return
    # A script, as a module of its own name: its top level (its imports) runs here, its
    # ``__main__`` part in the child. Its folder is on the path as ``python SCRIPT`` puts it.
    path = Path(program[0]).resolve()
    name = f"_zygote_script_{path.stem}"
    if name in sys.modules:
        return
    for imported in _SCRIPTS_RUN:
        importlib.import_module(imported)
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _child(request: dict[str, Any], fds: list[int], selector: selectors.BaseSelector) -> None:
    """Become ``python PROGRAM`` on the streams ``fds`` (stdin, stdout, stderr)."""
    for key in list(selector.get_map().values()):  # the sockets, the other children's pidfds
        if isinstance(key.fileobj, socket.socket):
            # Detached, not only closed: the object would otherwise close the number again
            # when collected, by then perhaps a socket of the child's.
            os.close(key.fileobj.detach())
        else:
            os.close(key.fd)
    selector.close()
    if request["session"]:
        os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    program = request["program"]
    if program[0] == "-m":
        # As ``python -m`` has it: sys.argv[0] the module's file, the module run as __main__.
        sys.argv = ["-m", *program[2:]]
        runpy.run_module(program[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = [program[0], *program[1:]]
        sys.path[0] = str(Path(program[0]).resolve().parent)
        runpy.run_path(program[0], run_name="__main__")
    # A program that returns exits 0, as the interpreter would (and must not return into the
    # zygote's loop).
    raise SystemExit(0)


def main() -> None:
    """``python -m tests._zygote CONTROL [LISTENER]``: the socket numbers it was handed."""
    listener = socket.socket(fileno=int(sys.argv[2])) if len(sys.argv) > 2 else None
    _serve(socket.socket(fileno=int(sys.argv[1])), listener)


# -- the tests' side -------------------------------------------------------------------------


class Zygote:
    """A connection to a zygote: to one of this test process's own (:meth:`start`), or to
    the run's, which the main process of an xdist run starts for its workers to share
    (:meth:`join`): each worker started its own, which imported the same programs again, 2 s
    of CPU each."""

    #: CPU seconds of the children this process asked for, ended so far: its getrusage never
    #: counts them (they are the zygote's children; a zygote of its own counts once ended),
    #: so a profile of the tests' CPU adds them to the test that ended them.
    children_cpu = 0.0

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[str] | None) -> None:
        self.sock = sock
        self.proc = proc
        self.codes: dict[int, int] = {}
        self.lock = threading.Lock()

    @classmethod
    def start(cls, spawn: Any, listen: str | None = None) -> Zygote:
        """A zygote of this process's, ended by :meth:`close`; the others of the run may
        :meth:`join` it at the unix socket ``listen``."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        handed = [theirs]
        if listen is not None:
            # Listening before the zygote runs: a worker may connect at once.
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            listener.bind(listen)
            listener.listen()
            handed.append(listener)
        numbers = [sock.fileno() for sock in handed]
        proc = spawn(
            [sys.executable, "-m", "tests._zygote", *map(str, numbers)],
            pass_fds=numbers,
            stdin=subprocess.DEVNULL,
            cwd=Path(__file__).parent.parent,
        )
        for sock in handed:
            sock.close()
        return cls(ours, proc)

    @classmethod
    def join(cls, path: str) -> Zygote:
        """A connection to the zygote listening at ``path``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(path)
        return cls(sock, None)

    def close(self) -> None:
        """End the connection, and the zygote if it is this process's (its children are the
        tests' to stop)."""
        self.sock.close()
        if self.proc is not None:
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
            ended = "" if self.proc is None else f" ({self.proc.wait()})"
            raise RuntimeError(f"the zygote ended{ended}")
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

    def spawn(self, argv: list[str], **streams: Any) -> Forked:
        """``vtpoll ARGV`` (``argv`` without the ``vtpoll``): :meth:`python` of ``-m vtpoll``."""
        return self.python(["-m", "vtpoll", *argv], **streams)

    def python(
        self,
        program: list[str],
        *,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        env: dict[str, str] | None = None,
        start_new_session: bool = True,
    ) -> Forked:
        """``python PROGRAM`` (``-m MODULE ARGS`` or ``SCRIPT ARGS``), its streams as
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
            "program": program,
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
        return Forked(self, said["pid"], ["python", *program], *ours)


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
