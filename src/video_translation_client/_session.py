"""The scheduler: every check of every job of an open client goes through one :class:`Session`.

::

    job loops (one per job, in the callers' tasks)
        │ check(job_id, hold)
        ▼
    Session ── batch queues: checks answered at once / held checks (long-poll), ≤ 100 IDs
        │       (flushers and requests run in the session's task group)
        ├─ rate limiter (client-wide, adaptive)
        ├─ in-flight bounds: max_in_flight short requests, max_held held ones, apart, so
        │  that a held request never makes another job's check wait
        ├─ retry budget and server health (answers, successes, silence), statistics
        ▼
    StatusFetcher (_http): one attempt, classified

Whatever calls the client (get_status, poll_until_complete from a thousand tasks, poll_many,
watch), checks that fall due together share requests.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

import anyio
import httpx
from anyio.abc import TaskGroup

from ._backoff import clamp_hint
from ._batch import HELD_ENOUGH, Batcher
from ._budget import RetryBudget
from ._config import StatusPollingConfig
from ._errors import VideoTranslationError
from ._http import Answer, BatchUnsupported, MalformedBatch, StatusFetcher, Transient
from ._models import Outcome
from ._pool import new_http_client
from ._ratelimit import Limiter

logger = logging.getLogger("video_translation_client")

T = TypeVar("T")


@dataclass(slots=True)
class Counters:
    """A client's running counts, snapshotted by ``statistics()``."""

    requests: int = 0
    checks: int = 0
    retries: int = 0
    throttled: int = 0
    pending: int = 0
    ended: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))


class Health:
    """What the client knows of the server's condition, for riding through an outage and for
    the verdict on a job when the server does not answer.

    An *answer* is any HTTP response (a 503 too); a *success* is an answer that is not a
    failure. The server is *silent* from the first attempt that got no answer at all until the
    next answer.
    """

    __slots__ = ("last_answer", "last_success", "silent_since", "silent_since_wall")

    def __init__(self) -> None:
        self.last_answer = -math.inf
        self.last_success = -math.inf
        self.silent_since: float | None = None
        self.silent_since_wall: datetime | None = None

    @property
    def ever_answered(self) -> bool:
        return self.last_answer > -math.inf

    def answered(self, now: float, *, success: bool) -> None:
        self.last_answer = now
        if success:
            self.last_success = now
        self.silent_since = self.silent_since_wall = None

    def no_answer(self, now: float) -> None:
        if self.silent_since is None:
            self.silent_since = now
            self.silent_since_wall = datetime.now(UTC)

    def silent_for(self, now: float) -> float:
        return 0.0 if self.silent_since is None else now - self.silent_since


@dataclass(frozen=True, slots=True)
class Limits:
    """How a session may use the connection: settings of the client, checked by it."""

    max_in_flight: int
    max_held: int
    batch: bool | None
    batch_window: float


@dataclass(frozen=True, slots=True)
class Shared:
    """What every session of one client works with: its settings and the client-wide state
    that outlives a session (the limiter, the retry budget, the server's health, counters)."""

    fetcher: StatusFetcher
    config: StatusPollingConfig
    limits: Limits
    limiter: Limiter
    budget: RetryBudget
    health: Health
    counters: Counters


class Session:
    """One open client's scheduler. Made by :class:`SessionScope`; closed with it."""

    def __init__(
        self,
        shared: Shared,
        *,
        short_http: httpx.AsyncClient,
        held_http: Callable[[], httpx.AsyncClient],
        task_group: TaskGroup,
    ) -> None:
        self.fetcher, self.config, self.limiter = shared.fetcher, shared.config, shared.limiter
        self.budget, self.health, self.counters = shared.budget, shared.health, shared.counters
        limits = shared.limits
        self._short_http = short_http
        self._held_http = held_http
        #: None until the server answers a batch (or the client's ``batch`` says).
        self.batch_supported: bool | None = limits.batch
        #: None until a held check tells whether the server honours ``Prefer: wait``.
        self.long_poll_ok: bool | None = None
        #: Jobs being polled through this session now, counted from when they are started
        #: (see :meth:`polling`): the first of many jobs started together is batched too.
        self.active = 0
        self._probing_hold = False
        self._short = anyio.CapacityLimiter(limits.max_in_flight)
        self._held = anyio.CapacityLimiter(limits.max_held)
        admit = self.limiter.acquire
        self._batchers = (
            Batcher(task_group, self._send_batch, admit=admit, window=limits.batch_window),
            Batcher(task_group, self._send_batch, admit=admit, window=limits.batch_window),
        )
        #: Set (and replaced) when the server answers while the retry budget is spent: jobs
        #: sleeping off failures may come back early.
        self._recovered = anyio.Event()

    # -- what a job asks ---------------------------------------------------------------------

    @contextmanager
    def polling(self) -> Iterator[None]:
        """Count a job as active for as long as the block lasts."""
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def may_hold(self) -> bool:
        """Whether a check may ask the server to hold it: long-poll is on, and the server has
        not shown that it ignores it. Until it has shown either, one held check at a time finds
        out, so that a server without long-poll costs one request, not one per job."""
        if self.config.long_poll <= 0 or self.long_poll_ok is False:
            return False
        return self.long_poll_ok is True or not self._probing_hold

    def batched(self, job_id: str | None) -> bool:
        """Whether this job's check goes into a batch: the server may have the endpoint, and
        other jobs are being polled (a lone job's check goes out at once, unbatched)."""
        return job_id is not None and self.batch_supported is not False and self.active > 1

    async def check(self, job_id: str | None, hold: int, *, retry: bool = False) -> Answer:
        """One status check of ``job_id``, held up to ``hold`` seconds (0: answered at once),
        batched with other jobs' checks when the server allows. Raises :class:`Transient` or a
        permanent :class:`VideoTranslationError`."""
        if retry:
            self.counters.retries += 1
        probe = False
        if hold and self.long_poll_ok is not True:
            if self.long_poll_ok is False or self._probing_hold:
                hold = 0  # another check is finding out whether the server holds
            else:
                probe = self._probing_hold = True
        try:
            if self.batched(job_id):
                assert job_id is not None
                try:
                    return await self._batchers[hold > 0].fetch(job_id, hold)
                except BatchUnsupported as exc:
                    if exc.missing and self.batch_supported is not False:
                        self.batch_supported = False
                        logger.info("the server has no batch endpoint; checking jobs one by one")
            await self.limiter.acquire()  # (a batch takes its own, once)
            return await self._single(job_id, hold)
        finally:
            if probe:
                self._probing_hold = False

    def reserve_retry(self, job_id: str | None) -> bool | None:
        """Whether the retry budget lets this job's retry go out now: None if not; True if it
        holds a slot of the budget until :meth:`retried` (a single request's retry); False if
        it rides a batch, a request charged once, and holds none."""
        single = not self.batched(job_id)
        if self.budget.allows_retry(anyio.current_time(), reserve=single):
            return single
        return None

    def retried(self, reserved: bool) -> None:
        if reserved:
            self.budget.release()

    async def recovered(self) -> None:
        """Until the server answers again while the retry budget is spent."""
        await self._recovered.wait()

    # -- requests ----------------------------------------------------------------------------

    def _limit(self, hold: int) -> float:
        return self.config.request_timeout + hold

    def _prefer(self, hold: int) -> int | None:
        """The ``Prefer: wait`` to send: the hold; or, for a check answered at once while it is
        not known whether the server holds, ``wait=0``, which a server that does says it
        applied (``Preference-Applied: wait=0``) without holding anything."""
        if hold or (self.config.long_poll > 0 and self.long_poll_ok is None):
            return hold
        return None

    async def _single(self, job_id: str | None, hold: int) -> Answer:
        if hold and self._held.available_tokens < 1:
            hold = 0  # every held slot is taken: this check is answered at once instead
        started = anyio.current_time()
        prefer = self._prefer(hold)
        answer = await self._send(
            lambda http: self.fetcher.fetch(http, job_id, wait=prefer, limit=self._limit(hold)),
            checks=1,
            hold=hold,
        )
        self._saw_hold(answer, asked=prefer)
        if not hold or answer.is_final:
            return answer
        if answer.wait_applied is not None and anyio.current_time() - started < HELD_ENOUGH * hold:
            return replace(answer, cut_short=True)
        return answer

    async def _send_batch(self, ids: list[str], hold: int) -> dict[str, Answer | BaseException]:
        """A batch's request (the batcher has taken its rate limiter token)."""
        if len(ids) == 1:  # a batch of one is a single check
            return {ids[0]: await self._single(ids[0], hold)}
        prefer = self._prefer(hold)
        try:
            outcomes = await self._send(
                lambda http: self.fetcher.fetch_batch(
                    http, ids, wait=prefer, limit=self._limit(hold)
                ),
                checks=len(ids),
                hold=hold,
            )
        except MalformedBatch:
            if self.batch_supported is not True:  # not a batch endpoint after all
                raise BatchUnsupported("no batch answer", missing=True) from None
            raise
        self.batch_supported = True
        answers = (a for a in outcomes.values() if isinstance(a, Answer))
        self._saw_hold(next(answers, None), asked=prefer)
        return outcomes

    async def _send(
        self, attempt: Callable[[httpx.AsyncClient], Awaitable[T]], *, checks: int, hold: int
    ) -> T:
        """One request through its in-flight bound (its rate limiter token taken by the
        caller: :meth:`check`, or the batcher), its outcome recorded for the limiter, the
        retry budget and the server's health."""
        slots, http = (self._held, self._held_http()) if hold else (self._short, self._short_http)
        async with slots:
            self.counters.requests += 1
            self.counters.checks += checks
            try:
                result = await attempt(http)
            except Transient as failure:
                self._failed(failure)
                raise
            except (BatchUnsupported, VideoTranslationError):
                self._answered()  # a refusal is an answer: the server works
                raise
        self._answered()
        return result

    def _saw_hold(self, answer: Answer | None, *, asked: int | None) -> None:
        """Learn from an answer whether the server honours ``Prefer: wait``: it says so when
        it applied it; a pending answer to a held check that does not say so means it does not
        hold (a final answer, or one to ``wait=0``, may simply not mention it)."""
        if answer is None or asked is None or self.long_poll_ok is not None:
            return
        if answer.wait_applied is not None:
            self.long_poll_ok = True
        elif asked > 0 and not answer.is_final:
            self.long_poll_ok = False

    def _answered(self) -> None:
        """The server answered, with a status or a refusal that is no failure."""
        self.limiter.accepted()
        if self.budget.spent:
            self._recovered.set()
            self._recovered = anyio.Event()
        self.budget.record_success()
        self.health.answered(anyio.current_time(), success=True)

    def _failed(self, failure: Transient) -> None:
        now = anyio.current_time()
        if failure.status_code == 429:
            # A rate limit speaks for the whole client: while the limiter finds the server
            # overrun, every job waits, not just this one. (A 429 at random, like a 503's
            # hint, delays only its own job: its retry waits the hint.)
            self.counters.throttled += 1
            hint = None if failure.hint is None else clamp_hint(failure.hint, self.config)
            self.limiter.refused(hint, failure.quota)
            self.health.answered(now, success=False)
            return
        self.budget.record_failure()
        if failure.status_code is None:
            self.health.no_answer(now)
        else:
            self.limiter.accepted()
            self.health.answered(now, success=False)


class SessionScope:
    """``async with SessionScope(...) as session``: a session with its connection pools (the
    caller's ``http_client`` for both, if given, and never closed here) and its task group.

    Leaving it cancels what is still in flight. The body's own exception passes through as
    it is: the task group is told of none, so that an error in the caller's code does not come
    out wrapped in an ExceptionGroup (the session's tasks never raise one of their own).
    """

    def __init__(self, shared: Shared, http_client: httpx.AsyncClient | None) -> None:
        self._shared = shared
        self._user_http = http_client
        self._own: list[httpx.AsyncClient] = []
        self._tg: TaskGroup | None = None

    def _held_http(self) -> httpx.AsyncClient:
        if self._user_http is not None:
            return self._user_http
        if len(self._own) < 2:
            timeout = self._shared.config.request_timeout
            self._own.append(new_http_client(self._shared.limits.max_held, timeout))
        return self._own[1]

    async def __aenter__(self) -> Session:
        shared = self._shared
        if self._user_http is None:
            timeout = shared.config.request_timeout
            self._own.append(new_http_client(shared.limits.max_in_flight, timeout))
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return Session(
            shared,
            short_http=self._user_http or self._own[0],
            held_http=self._held_http,
            task_group=self._tg,
        )

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._tg is not None
        try:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                for http in self._own:
                    await http.aclose()
