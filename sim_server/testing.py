"""Helpers for testing clients against the app in process (no sockets, virtual time welcome)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from ._asgi import ASGIApp, Message, Receive, Scope, Send


def wait_healthy(url: str, timeout: float = 15.0) -> None:
    """Block until ``url``'s ``/healthz`` answers 200 (a server process, or its workers, may
    still be importing the app); ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not healthy within {timeout} s")
        time.sleep(0.05)


class SimTransport(httpx.ASGITransport):
    """``httpx.ASGITransport`` that turns a response cut short into what a socket would give.

    Over a real socket, the ``drop`` fault closes the connection mid-body and httpx raises
    ``RemoteProtocolError``; ASGITransport would instead trip an assertion. This raises the
    same error as the real thing, so clients see identical failures in process and on the wire.
    """

    def __init__(self, app: Any, *, client: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        super().__init__(app=_CutShortAware(app), client=client)


class _CutShortAware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = finished = False

        async def watching_send(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        await self.app(scope, receive, watching_send)
        if started and not finished:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body"
            )
