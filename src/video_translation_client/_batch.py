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

from ._http import Answer, Transient

MAX_BATCH = 100

SendBatch = Callable[[list[str], int], Awaitable[dict[str, Answer | BaseException]]]


class BatchUnsupported(Exception):
    """Check this job on its own: the server has no batch endpoint (``missing``), or it
    refused this particular batch (a 400, say for one ID it dislikes, which must not fail the
    other jobs of the batch)."""

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(slots=True)
class _Item:
    job_id: str
    wait: int
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: Answer | BaseException | None = None


class Batcher:
    def __init__(self, task_group: TaskGroup, send: SendBatch, *, window: float) -> None:
        self._tg = task_group
        self._send = send
        self.window = window
        self._queue: list[_Item] = []
        self._timer = False
        #: None until the server answers a batch; False once it turns out not to have one.
        self.supported: bool | None = None
        self.requests = 0

    async def fetch(self, job_id: str, wait: int) -> Answer:
        item = _Item(job_id, wait)
        self._queue.append(item)
        if len(self._queue) >= MAX_BATCH:
            self._flush()
        elif not self._timer:
            self._timer = True
            self._tg.start_soon(self._flush_later)
        await item.done.wait()
        outcome = item.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome

    async def _flush_later(self) -> None:
        await anyio.sleep(self.window)
        self._timer = False
        self._flush()

    def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            self._tg.start_soon(self._run, batch)

    async def _run(self, batch: list[_Item]) -> None:
        ids = list(dict.fromkeys(item.job_id for item in batch))
        # The hold is as long as the most impatient job allows.
        wait = min(item.wait for item in batch)
        self.requests += 1
        try:
            outcomes = await self._send(ids, wait)
        except BaseException as exc:
            for item in batch:
                item.outcome = _copy(exc)
                item.done.set()
            if not isinstance(exc, Exception):
                raise
            return
        for item in batch:
            item.outcome = outcomes[item.job_id]
            item.done.set()


def _copy(exc: BaseException) -> BaseException:
    """A fresh exception per waiting job: one instance raised in many tasks would share (and
    garble) a single traceback."""
    if isinstance(exc, BatchUnsupported):
        return BatchUnsupported(str(exc), missing=exc.missing)
    if isinstance(exc, Transient):
        new: BaseException = Transient(exc.description, status_code=exc.status_code, hint=exc.hint)
        new.__cause__ = exc.__cause__
        return new
    return exc
