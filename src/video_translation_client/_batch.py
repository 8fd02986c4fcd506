"""Coalescing status checks of different jobs into batch requests (``GET /jobs?ids=...``).

Checks that fall due within ``window`` seconds of the first one go out together, up to
``MAX_BATCH`` IDs a request; each job still keeps its own schedule and deadline, and only waits
for its own answer. A session has two batchers: one for checks answered at once, one for held
checks (long-poll), whose request the server holds until the first of its jobs finishes. A
batch takes the rate limiter's token itself, and stays open while it waits for it. The
flush timers and the requests run in the session's task group; a request whose every job has
stopped waiting (cancelled, past its deadline) is cancelled with them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from ._http import Answer, Transient
from ._models import JobStatus

MAX_BATCH = 100
#: A held batch answered pending sooner than this share of its wait, with none of its jobs
#: finished, was not really held (a proxy cutting it short, a server shutting down).
HELD_ENOUGH = 0.5

SendBatch = Callable[[list[str], int], Awaitable[dict[str, Answer | BaseException]]]


@dataclass(slots=True, eq=False)
class _Batch:
    """The checks that go out in one request. One event for all of them: a batch of 100 is
    one wake-up call, not 100 events made and set."""

    wait: int
    ids: list[str] = field(default_factory=list)
    done: anyio.Event = field(default_factory=anyio.Event)
    outcomes: dict[str, Answer | BaseException] = field(default_factory=dict)
    #: Set when it holds ``MAX_BATCH`` IDs: it goes without waiting out the window.
    full: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    waiting: int = 0


class Batcher:
    def __init__(
        self,
        task_group: TaskGroup,
        send: SendBatch,
        *,
        admit: Callable[[], Awaitable[None]],
        window: float,
    ) -> None:
        self._tg = task_group
        self._send = send
        self._admit = admit
        self.window = window
        self._open: _Batch | None = None

    async def fetch(self, job_id: str, wait: int) -> Answer:
        batch = self._open
        if batch is None:
            batch = self._open = _Batch(wait=wait)
            self._tg.start_soon(self._go, batch)
        batch.ids.append(job_id)
        # The hold is as long as the most impatient job allows.
        batch.wait = min(batch.wait, wait)
        if len(batch.ids) >= MAX_BATCH:
            self._close(batch)
            batch.full.set()
        batch.waiting += 1
        try:
            await batch.done.wait()
        finally:
            batch.waiting -= 1
            if batch.waiting == 0 and not batch.done.is_set():
                batch.scope.cancel()  # nobody left to answer
                self._close(batch)
        outcome = batch.outcomes.get(job_id)
        if outcome is None:  # the session closed under the request
            raise Transient("the batch request was cancelled")
        if isinstance(outcome, BaseException):
            raise _copy(outcome)
        return outcome

    def _close(self, batch: _Batch) -> None:
        if self._open is batch:
            self._open = None

    async def _go(self, batch: _Batch) -> None:
        """Gather checks for ``window`` seconds, and on until the rate limiter lets the
        request go: a batch waiting its turn takes in the checks that fall due meanwhile, so
        a tight rate makes fewer, fuller requests instead of a queue of small ones."""
        try:
            with batch.scope:
                with anyio.move_on_after(self.window):
                    await batch.full.wait()
                try:
                    await self._admit()
                    self._close(batch)
                    started = anyio.current_time()
                    batch.outcomes = await self._send(list(dict.fromkeys(batch.ids)), batch.wait)
                    if batch.wait and batch.outcomes:
                        _mark_cut_short(batch, anyio.current_time() - started)
                except Exception as exc:  # the limiter's too (a fleet's Redis gone)
                    batch.outcomes = dict.fromkeys(batch.ids, exc)
        finally:
            self._close(batch)
            batch.done.set()


def _mark_cut_short(batch: _Batch, held: float) -> None:
    answers = [a for a in batch.outcomes.values() if isinstance(a, Answer)]
    woken = any(a.status is not JobStatus.PENDING for a in answers)
    if woken or held >= HELD_ENOUGH * batch.wait:
        return
    for job_id, answer in batch.outcomes.items():
        if isinstance(answer, Answer):
            batch.outcomes[job_id] = dataclasses.replace(answer, cut_short=True)


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
