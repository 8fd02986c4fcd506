"""Coalescing status checks of different jobs into batch requests (``GET /jobs?ids=...``).

Checks that fall due within ``window`` seconds of the first one go out together, up to
``MAX_BATCH`` IDs and ``MAX_URL`` bytes of URL a request; each job still keeps its own
schedule and deadline, and only waits for its own answer. A session has two batchers: one for
checks answered at once, one for held checks (long-poll), whose request the server holds until
the first of its jobs changes.

No task of its own: the first check of a batch leads it. Its task gathers the others for the
window, takes the rate limiter's token (the batch stays open meanwhile, so that a tight rate
makes fewer, fuller requests) and sends the request; the others wait for their answers. If the
leader stops waiting (its job cancelled, or past its deadline), the request goes with it, and
the checks still waiting ask again (one of them leads the next batch). So a batch never
outlives the tasks that asked for it, and a client works the same entered or not.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import anyio

from ._http import Answer, Transient

MAX_BATCH = 100
#: Longest request target a batch may have, bytes: servers commonly refuse request lines
#: past 8 KiB (nginx's default buffer; hypercorn's h11 caps a request head at 16 KiB), and
#: the base URL's path and the HTTP verb share the line.
MAX_URL = 6000

SendBatch = Callable[[list[str], int, bool], Awaitable[dict[str, Answer | BaseException]]]


@dataclass(slots=True, eq=False)
class _Batch:
    """The checks that go out in one request. One event for all of them: a batch of 100 is
    one wake-up, not 100 events made and set."""

    wait: int
    ids: list[str] = field(default_factory=list)
    length: int = 0
    #: Every check in it is a retry: the request is one (a batch that also carries others'
    #: checks would have gone anyway).
    retry: bool = True
    done: anyio.Event = field(default_factory=anyio.Event)
    outcomes: dict[str, Answer | BaseException] = field(default_factory=dict)
    #: Set when no other ID fits: it goes without waiting out the window.
    full: anyio.Event = field(default_factory=anyio.Event)
    #: The leader stopped waiting before the answer came: the others ask again.
    abandoned: bool = False


class Batcher:
    def __init__(
        self,
        send: SendBatch,
        *,
        admit: Callable[[], Awaitable[None]],
        window: float,
        room: int = MAX_URL,
    ) -> None:
        self._send = send
        self._admit = admit
        self.window = window
        #: Bytes of URL the IDs may take (``MAX_URL`` less the base URL's own).
        self.room = room
        self._open: _Batch | None = None

    async def fetch(self, job_id: str, wait: int, *, retry: bool = False) -> Answer:
        """This job's answer from a batch request, held up to ``wait`` seconds (the batch's
        hold is its most impatient job's). Raises what the request or the job's entry in
        the answer raised."""
        size = _encoded_size(job_id)
        while True:
            batch = self._open
            leader = batch is None or len(batch.ids) >= MAX_BATCH
            if batch is not None and not leader and batch.length + size > self.room:
                leader = True
            if leader:
                if batch is not None:
                    self._close(batch)
                batch = self._open = _Batch(wait=wait)
            assert batch is not None
            batch.ids.append(job_id)
            batch.length += size
            batch.wait = min(batch.wait, wait)
            batch.retry &= retry
            if len(batch.ids) >= MAX_BATCH:
                self._close(batch)
            if leader:
                await self._lead(batch)
            else:
                await batch.done.wait()
            if not batch.abandoned:
                break
        outcome = batch.outcomes.get(job_id)
        if outcome is None:  # an answer for other IDs only: the request's own bug
            raise Transient("the batch request answered nothing for this job")
        if isinstance(outcome, BaseException):
            raise _copy(outcome)
        return outcome

    def _close(self, batch: _Batch) -> None:
        """No more checks join it: it goes as soon as its leader has the token."""
        if self._open is batch:
            self._open = None
        batch.full.set()

    async def _lead(self, batch: _Batch) -> None:
        """Gather checks for ``window`` seconds, and on until the rate limiter lets the
        request go; send it; hand each waiting check its answer."""
        answered = False
        try:
            with anyio.move_on_after(self.window):
                await batch.full.wait()
            try:
                await self._admit()
                self._close(batch)
                ids = list(dict.fromkeys(batch.ids))
                batch.outcomes = await self._send(ids, batch.wait, batch.retry)
            except Exception as exc:  # the limiter's too (a fleet's Redis gone)
                batch.outcomes = dict.fromkeys(batch.ids, exc)
            answered = True
        finally:
            self._close(batch)
            batch.abandoned = not answered
            batch.done.set()


@functools.lru_cache(maxsize=1 << 16)
def _encoded_size(job_id: str) -> int:
    """Bytes the ID takes in a batch URL, its comma included (asked again at every wake-up of
    a held batch: cached)."""
    return len(quote(job_id, safe="")) + 1


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
