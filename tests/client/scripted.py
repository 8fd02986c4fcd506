"""A scripted server for client tests: a queue of answers, and a log of what was asked when."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import trio


def status(
    result: str, *, code: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(code, json={"result": result}, headers=headers)


def error(code: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(code, json={"error": "x", "detail": "y"}, headers=headers)


Step = httpx.Response | Exception | Callable[[httpx.Request], Any]


class Scripted:
    """Answers requests from ``steps`` in order; the last step repeats forever."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps: list[Step] = list(steps)
        self.log: list[tuple[float, httpx.Request]] = []

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.log]

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.log.append((trio.current_time(), request))
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        if callable(step) and not isinstance(step, httpx.Response):
            result = step(request)
            if hasattr(result, "__await__"):
                result = await result
            return result  # type: ignore[no-any-return]
        # A fresh copy each time: a Response's body stream can be read once.
        return httpx.Response(step.status_code, headers=step.headers, content=step.content)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def body(r: httpx.Response) -> Any:
    return json.loads(r.content)
