"""Fault injection: a reproducible sequence of failures, applied in front of the app.

Faults sit outside the app, where a proxy or a load balancer would fail, so they strike before
authentication and routing, and only on status reads (creating jobs and scraping metrics stay
reliable, which keeps load tests' bookkeeping honest).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from ._asgi import ASGIApp, Receive, Scope, Send, send_body
from ._dialects import status_path

GARBAGE_VARIANTS = ("truncated", "content_type", "unknown_result")


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    variant: str | None = None


class FaultInjector:
    """Decides, request by request, which fault (if any) to inject.

    Every call draws exactly two numbers from one ``random.Random(seed)``, whatever the rates,
    so the n-th request of two runs with the same seed meets the same fate.
    """

    def __init__(self, rates: dict[str, float], seed: int) -> None:
        self._rng = random.Random(seed)
        self._bounds: list[tuple[float, str]] = []
        edge = 0.0
        for kind, rate in rates.items():
            if rate > 0:
                edge += rate
                self._bounds.append((edge, kind))
        self.enabled = bool(self._bounds)

    def next(self) -> Fault | None:
        pick, variant = self._rng.random(), self._rng.random()
        for edge, kind in self._bounds:
            if pick < edge:
                if kind == "garbage":
                    return Fault(kind, GARBAGE_VARIANTS[int(variant * len(GARBAGE_VARIANTS))])
                return Fault(kind)
        return None


def is_status_read(scope: Scope) -> bool:
    """The requests that faults strike: GETs of job status, single, batch or original format,
    in any dialect."""
    return scope.get("method") == "GET" and status_path(scope.get("path", ""))


class FaultMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        injector: FaultInjector,
        *,
        slow_delay: float,
        on_fault: Callable[[str], None],
        retry_after: bool = True,
    ) -> None:
        self.app = app
        self.injector = injector
        self.slow_delay = slow_delay
        self.on_fault = on_fault
        #: Whether a 429 or 503 says when to come back (ElevenLabs' 429 does not).
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.injector.enabled or not is_status_read(scope):
            await self.app(scope, receive, send)
            return
        fault = self.injector.next()
        if fault is None:
            await self.app(scope, receive, send)
            return
        self.on_fault(fault.kind)
        if fault.kind == "slow":
            await anyio.sleep(self.slow_delay)
            await self.app(scope, receive, send)
        elif fault.kind == "drop":
            # Promise a body, send part of it, and end: hypercorn closes the connection, and the
            # client sees a response cut short, as when a proxy dies mid-response.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
                }
            )
            await send({"type": "http.response.body", "body": b'{"job_id": ', "more_body": True})
        elif fault.kind == "garbage":
            await _send_garbage(send, fault.variant or "truncated")
        else:
            status = int(fault.kind)
            hint = status in (429, 503) and self.retry_after
            headers = [(b"retry-after", b"1")] if hint else []
            body = json.dumps({"error": "injected_fault", "detail": f"injected {status}"})
            await send_body(send, status, body.encode(), headers=headers)


async def _send_garbage(send: Send, variant: str) -> None:
    if variant == "truncated":
        await send_body(send, 200, b'{"job_id": "x", "result": "pend')
    elif variant == "content_type":
        await send_body(
            send, 200, b"<html><body>502 Bad Gateway</body></html>", content_type=b"text/html"
        )
    else:
        await send_body(send, 200, b'{"job_id": "x", "result": "exploded"}')
