"""Serving the app with hypercorn: embedded in a running event loop, or as a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from hypercorn.config import Config

from . import _protocol_errors as protocol_errors
from ._app import create_app
from ._jobs import prepare_database
from ._settings import ServerSettings
from ._state import LIVE_SETTINGS, sim_state

SETTINGS_ENV = "SIM_SERVER_SETTINGS"
_SETTING_NAMES = frozenset(f.name for f in dataclasses.fields(ServerSettings))
#: The master's process ID, for its workers to die with it.
PARENT_ENV = "SIM_SERVER_PARENT"

logger = logging.getLogger("sim_server")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; binding it here (not in hypercorn) tells us the port 0 picked."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def hypercorn_config(sock: socket.socket) -> Config:
    protocol_errors.install()
    config = Config()
    # Hypercorn takes ownership of the descriptor and closes it when it stops.
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 75.0
    config.backlog = 1024
    config.accesslog = None
    # An embedded server logs through the host program's logging (warnings and up by
    # default), not straight to its stderr; `vtpoll serve` sets its own.
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


class TranslationServer:
    """The simulation server, embedded in a trio or asyncio program.

    ``async with TranslationServer(completion_time=5) as server: ... server.url ...``, or
    ``url = await server.start()`` ... ``await server.stop()``. Keyword arguments are the
    fields of :class:`ServerSettings`; the port defaults to 0, a free one.

    The server runs on its own asyncio event loop in a thread of its own. That keeps
    ``start()`` and ``stop()`` free of task-nesting rules (they may be called from any task, in
    any order relative to the caller's own nurseries), works the same under trio and asyncio,
    and keeps the server's timers out of reach of the client's event loop.
    """

    def __init__(self, settings: ServerSettings | None = None, **kwargs: Any) -> None:
        if settings is not None and kwargs:
            raise TypeError("pass either settings or keyword arguments, not both")
        kwargs.setdefault("port", 0)
        self.settings = settings or ServerSettings(**kwargs)
        self._url: str | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._serving: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.app: Any = None

    def __repr__(self) -> str:
        return f"<TranslationServer {self._url or 'not started'}>"

    # The original design's tests change these on a running server: they take effect.

    @property
    def completion_time(self) -> float:
        return self.settings.completion_time

    @completion_time.setter
    def completion_time(self, value: float) -> None:
        self._change(completion_time=value)

    @property
    def error_rate(self) -> float:
        return self.settings.error_rate

    @error_rate.setter
    def error_rate(self, value: float) -> None:
        self._change(error_rate=value)

    def _change(self, **changes: Any) -> None:
        self.settings = dataclasses.replace(self.settings, **changes)  # validated here
        if self.app is not None:
            sim_state(self.app).change(**changes)

    def __setattr__(self, name: str, value: Any) -> None:
        # A setting that cannot change on a running server is refused, not silently kept
        # as an attribute nothing reads.
        if name in _SETTING_NAMES and name not in LIVE_SETTINGS:
            raise AttributeError(
                f"{name} cannot be changed on a TranslationServer; pass it when making one"
            )
        super().__setattr__(name, value)

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the server is not running: call start() first")
        return self._url

    async def start(self, *, host: str | None = None, port: int | None = None) -> str:
        """Start serving and return the base URL."""
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        sock = bind_socket(host or self.settings.host, self.settings.port if port is None else port)
        url = url_of(sock)
        self.app = create_app(self.settings, backend="asyncio")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._run, args=(hypercorn_config(sock),), name=f"sim-server {url}", daemon=True
        )
        self._thread.start()
        try:
            await anyio.to_thread.run_sync(self._ready.wait)
        except BaseException:
            await self.stop()
            raise
        if self._error is not None:
            await self.stop()
            raise RuntimeError(f"the server failed to start: {self._error!r}") from self._error
        self._url = url
        return url

    def _run(self, config: Config) -> None:
        async def main() -> None:
            from hypercorn.asyncio import serve

            self._loop = asyncio.get_running_loop()
            self._shutdown = asyncio.Event()
            self._serving = asyncio.current_task()
            # The socket already listens, so connections made from now on queue until
            # hypercorn accepts them: the server is usable as soon as start() returns.
            self._ready.set()
            await serve(self.app, config, shutdown_trigger=self._shutdown.wait)

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass  # stop() cut a graceful shutdown short
        except BaseException as exc:  # reported to start() or logged: a thread has no caller
            self._error = exc
            logger.exception("the simulation server stopped with an error")
        finally:
            self._ready.set()

    async def stop(self) -> None:
        """Stop serving: requests in progress get about a second to finish, then are cut."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, shutdown = self._loop, self._shutdown
        if loop is not None and shutdown is not None:
            state = sim_state(self.app)

            def begin_shutdown() -> None:
                state.release_holds()
                shutdown.set()

            with contextlib.suppress(RuntimeError):  # the loop may have closed already
                loop.call_soon_threadsafe(begin_shutdown)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(thread.join, 2.0)
            if thread.is_alive() and loop is not None and self._serving is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._serving.cancel)
                await anyio.to_thread.run_sync(thread.join, 5.0)
        if self.app is not None:
            sim_state(self.app).store.close()
        self._url = None
        self._loop = self._shutdown = self._serving = None

    async def __aenter__(self) -> TranslationServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def run_server(settings: ServerSettings) -> int:
    """Serve in the foreground until SIGINT or SIGTERM; print the URL as the first line.

    With several workers, hypercorn forks processes that share the socket; they must share
    the jobs too, so without ``--db`` a temporary database is made for them.
    """
    stop = _StopRequests()
    from hypercorn.run import run

    tmp: tempfile.TemporaryDirectory[str] | None = None
    if settings.workers > 1 and settings.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="sim-server-")
        settings = ServerSettings.from_dict(
            {**settings.to_dict(), "db": Path(tmp.name) / "jobs.db"}
        )
    # The database is opened before the URL is printed: a bad one is then the only line.
    if settings.workers > 1:
        assert settings.db is not None
        prepare_database(settings.db)
    else:
        app = create_app(settings, backend="asyncio")
    sock = bind_socket(settings.host, settings.port)
    print(url_of(sock), flush=True)
    config = hypercorn_config(sock)
    config.errorlog = "-"
    if settings.workers == 1:
        asyncio.run(_serve_until_signalled(app, config, stop))
        return 0
    os.environ[SETTINGS_ENV] = json.dumps(settings.to_dict())
    os.environ[PARENT_ENV] = str(os.getpid())
    config.application_path = "sim_server._worker:app"
    config.workers = settings.workers
    try:
        return 0 if stop.asked else run(config)
    finally:
        if tmp is not None:
            tmp.cleanup()


class _StopRequests:
    """SIGINT and SIGTERM noted from the very start: Ctrl-C as the URL appears, before the
    server is up, ends the start quietly rather than with a KeyboardInterrupt traceback."""

    def __init__(self) -> None:
        self.asked = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._note)

    def _note(self, signum: int, frame: object) -> None:
        self.asked = True


async def _serve_until_signalled(app: Any, config: Config, early: _StopRequests) -> None:
    """Serve until SIGINT or SIGTERM, then answer held long-polls and shut down gracefully."""
    from hypercorn.asyncio import serve

    shutdown = asyncio.Event()
    state = sim_state(app)

    def begin_shutdown() -> None:
        state.release_holds()
        shutdown.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, begin_shutdown)
    if early.asked:
        begin_shutdown()
    try:
        await serve(app, config, shutdown_trigger=shutdown.wait)
    finally:
        state.store.close()
