"""Coalescing status checks of different jobs into batch requests (``GET /jobs?ids=...``).

Checks that fall due within ``window`` seconds of the first one go out together, up to
``MAX_BATCH`` IDs a request; each job still keeps its own schedule and deadline, and only
waits for its own answer. The flusher and the requests run in the task group of the
``poll_many``/``watch`` call that owns the batcher, so they end with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from ._http import Answer

MAX_BATCH = 100

SendBatch = Callable[[list[str], int], Awaitable[dict[str, Answer | BaseException]]]


@dataclass(slots=True)
class _Batch:
    """The checks that go out in one request. One event for all of them: a batch of 100 is
    one wake-up call, not 100 events made and set."""

    ids: list[str] = field(default_factory=list)
    wait: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)
    outcomes: dict[str, Answer | BaseException] = field(default_factory=dict)


class Batcher:
    def __init__(self, task_group: TaskGroup, send: SendBatch, *, window: float) -> None:
        self._tg = task_group
        self._send = send
        self.window = window
        self._open: _Batch | None = None
        #: None until the server answers a batch; False once it turns out not to have one.
        self.supported: bool | None = None

    async def fetch(self, job_id: str, wait: int) -> Answer:
        batch = self._open
        if batch is None:
            batch = self._open = _Batch(wait=wait)
            self._tg.start_soon(self._flush_later, batch)
        batch.ids.append(job_id)
        # The hold is as long as the most impatient job allows.
        batch.wait = min(batch.wait, wait)
        if len(batch.ids) >= MAX_BATCH:
            self._flush(batch)
        await batch.done.wait()
        outcome = batch.outcomes[job_id]
        if isinstance(outcome, BaseException):
            raise _copy(outcome)
        return outcome

    async def _flush_later(self, batch: _Batch) -> None:
        await anyio.sleep(self.window)
        self._flush(batch)

    def _flush(self, batch: _Batch) -> None:
        if self._open is batch:
            self._open = None
            self._tg.start_soon(self._run, batch)

    async def _run(self, batch: _Batch) -> None:
        try:
            batch.outcomes = await self._send(list(dict.fromkeys(batch.ids)), batch.wait)
        except BaseException as exc:
            batch.outcomes = dict.fromkeys(batch.ids, exc)
            batch.done.set()
            if not isinstance(exc, Exception):
                raise
            return
        batch.done.set()


def _copy(exc: BaseException) -> BaseException:
    """A fresh exception per waiting job: one instance raised in many tasks would share (and
    garble) a single traceback. Copied whole, without calling ``__init__``: every attribute
    comes along, whatever the class and whatever fields it gains later."""
    if not isinstance(exc, Exception):
        return exc
    new = exc.__class__.__new__(exc.__class__, *exc.args)
    new.__dict__.update(exc.__dict__)
    new.__cause__ = exc.__cause__
    new.__suppress_context__ = exc.__suppress_context__
    return new
