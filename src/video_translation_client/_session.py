"""The scheduler: every check of every job of a client goes through one :class:`Session`.

::

    job loops (one per job, in the callers' tasks)
        │ check(job_id, hold)
        ▼
    Session ── the hold decided (once, carried in the answer)
        ├─ batch queues: checks answered at once / held checks (long-poll), ≤ 100 IDs
        │   (led by the first check of each batch, in its own task)
        ├─ rate limiter token (one per request)
        ├─ in-flight bounds: max_in_flight short requests, max_held held ones, apart, so
        │  that a held request never makes another job's check wait
        ▼
    StatusFetcher (_http): one attempt, classified  ──►  ServerState.record (_state)

A session is open while the client is entered or any of its calls runs, and the same one
serves every call meanwhile: whatever calls the client (get_status, poll_until_complete from a
thousand tasks, entered or not, poll_many, watch), checks that fall due together share
requests. It has no task of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio
import httpx

from ._backoff import clamp_hint
from ._batch import MAX_URL, Batcher
from ._config import StatusPollingConfig
from ._decide import ServerView
from ._errors import VideoTranslationError
from ._http import Answer, BatchUnsupported, MalformedBatch, StatusFetcher, Transient
from ._pool import new_http_client
from ._state import Result, ServerState

logger = logging.getLogger("video_translation_client")

T = TypeVar("T")

#: A held check answered pending sooner than this share of its hold, nothing in it having
#: changed, was not really held (a proxy cutting it short, a server shutting down).
HELD_ENOUGH = 0.5


@dataclass(frozen=True, slots=True)
class Limits:
    """How a session may use the connection: settings of the client, checked by it."""

    max_in_flight: int
    max_held: int
    batch_window: float


def held_outcome(hold: int, took: float, *, changed: bool) -> tuple[bool, bool]:
    """What a held request's timing says: whether it was cut short (answered pending well
    before its hold with nothing changed), and whether it was woken (something in it changed
    before the hold ran out, so its pending answers are no checks of their jobs)."""
    if not hold:
        return False, False
    early = took < HELD_ENOUGH * hold
    return early and not changed, changed and took < hold


class Session:
    """One client's scheduler while it is in use (see the module's docstring)."""

    def __init__(
        self,
        state: ServerState,
        fetcher: StatusFetcher,
        config: StatusPollingConfig,
        limits: Limits,
        *,
        http_client: httpx.AsyncClient | None,
    ) -> None:
        self.state, self.fetcher, self.config = state, fetcher, config
        self._limits = limits
        self._user_http = http_client
        self._own: list[httpx.AsyncClient] = []
        self._short_http = http_client
        self._held_http = http_client
        self._short = anyio.CapacityLimiter(limits.max_in_flight)
        self._held = anyio.CapacityLimiter(limits.max_held)
        room = MAX_URL - len(str(fetcher.base))
        admit = state.limiter.acquire
        self._batchers = (
            Batcher(self._send_batch, admit=admit, window=limits.batch_window, room=room),
            Batcher(self._send_batch, admit=admit, window=limits.batch_window, room=room),
        )
        state.new_run()

    async def aclose(self) -> None:
        """Close the connection pools it made (a user's ``http_client`` is left open)."""
        with anyio.CancelScope(shield=True):
            for http in self._own:
                await http.aclose()

    def _http(self, held: bool) -> httpx.AsyncClient:
        """The pool for short or held requests, made when first needed: a client whose jobs
        are all answered at once never builds the pool of a thousand held connections."""
        http = self._held_http if held else self._short_http
        if http is None:
            size = self._limits.max_held if held else self._limits.max_in_flight
            http = new_http_client(size, self.config.request_timeout, self.fetcher.base.scheme)
            self._own.append(http)
            if held:
                self._held_http = http
            else:
                self._short_http = http
        return http

    # -- what a job asks ---------------------------------------------------------------------

    @contextmanager
    def polling(self) -> Iterator[None]:
        """Count a job as being polled for as long as the block lasts (its checks are
        batched while others are polled too)."""
        self.join()
        try:
            yield
        finally:
            self.leave()

    def join(self) -> None:
        """One more job being polled (see :meth:`polling`)."""
        self.state.counters.pending += 1

    def leave(self) -> None:
        self.state.counters.pending -= 1

    def batched(self, job_id: str | None, now: float) -> bool:
        """Whether this job's check goes into a batch: the server may have the route, and
        other jobs are being polled (a lone job's check goes out at once, unbatched)."""
        state = self.state
        return job_id is not None and state.counters.pending > 1 and state.may_batch(now)

    def view(self, job_id: str | None, now: float) -> ServerView:
        """What the job's decision at ``now`` needs of the server's state."""
        health = self.state.health
        return ServerView(
            ever_answered=health.ever_answered,
            last_answer=health.last_answer,
            last_success=health.last_success,
            silent_since=health.silent_since,
            silent_since_wall=health.silent_since_wall,
            may_hold=self.config.long_poll > 0 and self.state.may_hold(now),
            batched=self.batched(job_id, now),
            url=self.fetcher.shown_url,
            route_known=self.state.route_known,
            dialect=self.fetcher.dialect.name,
            plain=self._plain(now),
            heard=self.state.told,
            refused=self.state.counters.throttled,
            requests=self.state.counters.requests,
            retries_spent=self.state.budget.spent,
            failing_since=health.failing_since,
        )

    def _plain(self, now: float) -> bool:
        """The server neither hints (or its hints are not followed) nor holds checks."""
        state = self.state
        unhinted = not self.config.hints or state.hints.known(now) is False
        return unhinted and state.holds.known(now) is False

    async def check(
        self, job_id: str | None, hold: int, *, retry: bool = False, alone: bool = False
    ) -> Answer:
        """One status check of ``job_id``, held up to ``hold`` seconds (0: answered at once),
        batched with other jobs' checks when the server allows. The answer carries the hold
        actually asked. Raises :class:`Transient` or a permanent
        :class:`VideoTranslationError`."""
        state = self.state
        now = anyio.current_time()
        probe = False
        if hold and not state.may_hold(now):
            hold = 0
        elif hold and state.holds.known(now) is None:
            probe = state.probing_hold = True  # this check finds out whether the server holds
        try:
            if not alone and self.batched(job_id, now):
                assert job_id is not None
                try:
                    return await self._batchers[hold > 0].fetch(job_id, hold, retry=retry)
                except BatchUnsupported as exc:
                    logger.debug("checking %r alone: %s", job_id, exc)
            await state.limiter.acquire()  # (a batch takes its own, once)
            if hold and self._held.available_tokens < 1:
                hold = 0  # every held slot is taken: this check is answered at once instead
            return await self._single(job_id, hold, retry)
        finally:
            if probe:
                state.probing_hold = False

    def reserve_retry(self, job_id: str | None) -> bool | None:
        """Whether the retry budget lets this job's retry go out now: None if not; True if it
        holds a slot of the budget until :meth:`retried` (a single request's retry); False if
        it rides a batch, a request charged once, and holds none."""
        now = anyio.current_time()
        single = not self.batched(job_id, now)
        if self.state.budget.allows_retry(now, reserve=single):
            return single
        return None

    def retried(self, reserved: bool) -> None:
        if reserved:
            self.state.budget.release()

    # -- requests ----------------------------------------------------------------------------

    def _prefer(self, hold: int) -> int | None:
        """The ``Prefer: wait`` to send: the hold; or, for a check answered at once while it is
        not known whether the server holds, ``wait=0``, which a server that does says it
        applied (``Preference-Applied: wait=0``) without holding anything."""
        if hold:
            return hold
        if self.config.long_poll > 0 and self.state.holds.known(anyio.current_time()) is None:
            return 0
        return None

    async def _single(self, job_id: str | None, hold: int, retry: bool) -> Answer:
        prefer = self._prefer(hold)
        limit = self.config.request_timeout + hold
        started = anyio.current_time()
        answer = await self._send(
            lambda http: self.fetcher.fetch(http, job_id, wait=prefer, limit=limit),
            hold=hold,
            retry=retry,
        )
        self._learn_offers(answer, asked=prefer)
        self.state.route_known = True
        took = anyio.current_time() - started
        cut_short, _ = held_outcome(hold, took, changed=answer.is_final)
        answer.held = hold
        answer.cut_short = cut_short and answer.wait_applied is not None
        return answer

    async def _send_batch(
        self, ids: list[str], hold: int, retry: bool
    ) -> dict[str, Answer | BaseException]:
        """A batch's request (the batcher has taken its rate limiter token). A batch route
        that misbehaves is set aside (tried again later) and its jobs checked alone."""
        if len(ids) == 1:  # a batch of one is a single check
            return {ids[0]: await self._single(ids[0], hold, retry)}
        prefer = self._prefer(hold)
        limit = self.config.request_timeout + hold
        started = anyio.current_time()
        state = self.state
        try:
            outcomes = await self._send(
                lambda http: self.fetcher.fetch_batch(http, ids, wait=prefer, limit=limit),
                hold=hold,
                retry=retry,
            )
        except MalformedBatch as exc:
            if not state.batch_malformed(anyio.current_time()):
                raise  # once may be a glitch: a transient failure of the batch's jobs
            logger.info("the batch route misbehaves (%s); checking jobs one by one", exc)
            return dict.fromkeys(ids, BatchUnsupported(str(exc), missing=False))
        except BatchUnsupported as exc:
            if exc.missing:
                state.batch.missing()
                logger.info("the server has no batch route; checking jobs one by one")
            return dict.fromkeys(ids, exc)
        state.batch_answered()
        state.route_known = True
        answers = [a for a in outcomes.values() if isinstance(a, Answer)]
        if answers:
            self._learn_offers(answers[0], asked=prefer)
        took = anyio.current_time() - started
        changed = any(a.is_final for a in answers)
        cut_short, woken = held_outcome(hold, took, changed=changed)
        for answer in answers:
            answer.held = hold
            answer.cut_short = cut_short
            answer.woken = woken and not answer.is_final
        return outcomes

    async def _send(
        self, attempt: Callable[[httpx.AsyncClient], Awaitable[T]], *, hold: int, retry: bool
    ) -> T:
        """One request through its in-flight bound (its rate limiter token taken by the
        caller: :meth:`check`, or the batcher), its outcome recorded in the server state."""
        state = self.state
        counters = state.counters
        slots = self._held if hold else self._short
        async with slots:
            counters.requests += 1
            counters.retries += retry
            try:
                result = await attempt(self._http(hold > 0))
            except Transient as failure:
                self._failed(failure, held=hold > 0)
                raise
            except (BatchUnsupported, VideoTranslationError):
                # A refusal is an answer: the server works.
                state.record(Result.ANSWERED, anyio.current_time(), held=hold > 0)
                raise
        state.record(Result.ANSWERED, anyio.current_time(), held=hold > 0)
        return result

    def _learn_offers(self, answer: Answer, *, asked: int | None) -> None:
        self.state.learnt(
            applied=answer.wait_applied is not None,
            asked=asked,
            final=answer.is_final,
            hint=answer.hint is not None,
        )

    def _failed(self, failure: Transient, *, held: bool) -> None:
        now = anyio.current_time()
        if failure.status_code == 429:
            hint = None if failure.hint is None else clamp_hint(failure.hint, self.config)
            self.state.record(Result.REFUSED, now, retry_after=hint, quota=failure.quota)
        elif failure.status_code is None:
            self.state.record(Result.SILENT, now, held=held)
        else:
            self.state.record(Result.FAILED, now, held=held)
