"""Serving the app with hypercorn: embedded in a running event loop, or as a process of its own."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import anyio
import sniffio
from anyio.abc import TaskGroup, TaskStatus
from hypercorn.config import Config

from ._app import create_app, sim_state
from ._settings import ServerSettings

SETTINGS_ENV = "SIM_SERVER_SETTINGS"


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
    config = Config()
    # Hypercorn takes ownership of the descriptor and closes it when it stops.
    config.bind = [f"fd://{sock.detach()}"]
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 75.0
    config.backlog = 1024
    config.accesslog = None
    return config


class TranslationServer:
    """The simulation server, embedded in the running trio or asyncio program.

    ``async with TranslationServer(completion_time=5) as server: ... server.url ...``, or
    ``await server.start(port=0)`` ... ``await server.stop()`` from the same task.
    Keyword arguments are the fields of :class:`ServerSettings`.
    """

    def __init__(self, settings: ServerSettings | None = None, **kwargs: Any) -> None:
        if settings is not None and kwargs:
            raise TypeError("pass either settings or keyword arguments, not both")
        self.settings = settings or ServerSettings(**kwargs)
        self._url: str | None = None
        self._tg: TaskGroup | None = None
        self._shutdown: anyio.Event | None = None
        self._stopped: anyio.Event | None = None
        self.app: Any = None

    def __repr__(self) -> str:
        return f"<TranslationServer {self._url or 'not started'}>"

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the server is not running: call start() first")
        return self._url

    async def start(self, *, host: str | None = None, port: int | None = None) -> str:
        """Start serving and return the base URL (port 0, the default, picks a free port)."""
        if self._tg is not None:
            raise RuntimeError("the server is already running")
        sock = bind_socket(host or self.settings.host, self.settings.port if port is None else port)
        self._url = url_of(sock)
        backend = sniffio.current_async_library()
        self.app = create_app(self.settings, backend="trio" if backend == "trio" else "asyncio")
        config = hypercorn_config(sock)
        self._shutdown = anyio.Event()
        self._stopped = anyio.Event()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            await tg.start(self._serve, config, backend)
        except BaseException:
            self._tg = None
            tg.cancel_scope.cancel()
            await tg.__aexit__(*sys.exc_info())
            raise
        return self._url

    async def _serve(self, config: Config, backend: str, *, task_status: TaskStatus[None]) -> None:
        assert self._shutdown is not None
        assert self._stopped is not None
        try:
            if backend == "trio":
                from hypercorn.trio import serve as trio_serve

                async def started(*, task_status: TaskStatus[None]) -> None:
                    await trio_serve(
                        self.app,
                        config,
                        shutdown_trigger=self._shutdown.wait,  # type: ignore[union-attr]
                        task_status=cast(Any, task_status),
                    )

                async with anyio.create_task_group() as inner:
                    await inner.start(started)
                    task_status.started()
            else:
                from hypercorn.asyncio import serve as asyncio_serve

                # The socket already listens, so connections made from now on queue until
                # hypercorn accepts them: the server is usable as soon as start() returns.
                task_status.started()
                await asyncio_serve(self.app, config, shutdown_trigger=self._shutdown.wait)
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Stop serving: let requests in progress finish for up to a second, then cut them."""
        tg, self._tg = self._tg, None
        if tg is None:
            return
        assert self._shutdown is not None
        assert self._stopped is not None
        self._shutdown.set()
        with anyio.move_on_after(2.0, shield=True):
            await self._stopped.wait()
        tg.cancel_scope.cancel()
        await tg.__aexit__(None, None, None)
        if self.app is not None:
            sim_state(self.app).store.close()
        self._url = None

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
    from hypercorn.run import run

    tmp: tempfile.TemporaryDirectory[str] | None = None
    if settings.workers > 1 and settings.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="sim-server-")
        settings = ServerSettings.from_dict(
            {**settings.to_dict(), "db": Path(tmp.name) / "jobs.db"}
        )
    sock = bind_socket(settings.host, settings.port)
    print(url_of(sock), flush=True)
    os.environ[SETTINGS_ENV] = json.dumps(settings.to_dict())
    config = hypercorn_config(sock)
    config.application_path = "sim_server._worker:app"
    config.workers = 0 if settings.workers == 1 else settings.workers
    config.errorlog = "-"
    try:
        return run(config)
    finally:
        if tmp is not None:
            tmp.cleanup()
