"""The client: one job's polling loop, and the session that all of a client's jobs share."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from types import TracebackType

import anyio
import httpx
from anyio.lowlevel import RunVar
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._backoff import Backoff, clamp_hint, default_random
from ._batch import Batcher
from ._budget import RetryBudget
from ._config import StatusPollingConfig
from ._errors import PollTimeout, RetriesExhausted, VideoTranslationError
from ._http import Answer, BatchUnsupported, StatusFetcher, Transient, _name, redact_url
from ._models import ClientStatistics, JobResult, JobStatus, Outcome, StatusResponse
from ._pool import SHARD_SIZE, sharded_transport
from ._ratelimit import RateLimiter

logger = logging.getLogger("video_translation_client")

StatusCallback = Callable[[StatusResponse], Awaitable[None] | None]
#: What ``watch()`` yields: each status change, then each job's result.
WatchEvent = StatusResponse | JobResult

#: The last poll before a deadline is sent this long before it (or request_timeout, if
#: shorter), so that its answer can arrive in time.
LAST_POLL_MARGIN = 1.0
#: A long-poll answered pending sooner than this share of the applied wait did not really
#: hold (a server shutting down, a proxy cutting it short): back off instead of asking again.
HELD_ENOUGH = 0.5
#: Seconds over which retries held back by the retry budget are spread once the server
#: answers again.
HELD_BACK_SPREAD = 1.0
#: Largest answer read, decoded bytes: a status is a few hundred, a batch of 100 tens of KB.
MAX_RESPONSE_BYTES = 1 << 20
#: Jobs of one poll_many or watch polled at once; the rest start as these end.
MAX_ACTIVE = 100_000


@dataclass(slots=True)
class _Job:
    """Everything the client knows about one job while it polls it."""

    job_id: str | None
    started: float
    deadline: float
    backoff: Backoff
    retry_backoff: Backoff
    attempts: int = 0
    failures: int = 0
    #: When the job's last request failed, and when its retry is due (for the retry budget's
    #: held-back retries).
    failed_at: float = float("-inf")
    retry_at: float = float("-inf")
    last: StatusResponse | None = field(default=None)
    batcher: Batcher | None = None
    long_poll: bool = True
    listener: Callable[[StatusResponse], Awaitable[None]] | None = None


class VideoTranslationClient:
    """Polls job statuses on a video translation server.

    Use it as an async context manager, which owns one ``httpx.AsyncClient`` (or uses the one
    given as ``http_client``, which it never closes); or call a method without entering it,
    which opens and closes a connection pool for that one call.
    """

    def __init__(
        self,
        base_url: str,
        config: StatusPollingConfig | None = None,
        on_status_change: StatusCallback | None = None,
        *,
        api_key: str | None = None,
        rate_limit: float | None = 50.0,
        burst: int | None = None,
        max_in_flight: int = 16,
        batch: bool | None = None,
        batch_window: float = 0.005,
        http_client: httpx.AsyncClient | None = None,
        random: Callable[[], float] | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        url = _valid_base_url(base_url)
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an integer >= 1, got {max_in_flight!r}")
        if rate_limit is not None and not (
            isinstance(rate_limit, int | float) and 0 < rate_limit < math.inf
        ):
            raise ValueError(f"rate_limit must be a finite number > 0 or None, got {rate_limit!r}")
        _check_api_key(api_key)
        if (
            not isinstance(max_response_bytes, int)
            or isinstance(max_response_bytes, bool)
            or max_response_bytes < 1024
        ):
            raise ValueError(
                f"max_response_bytes must be an integer >= 1024, got {max_response_bytes!r}"
            )
        if not (isinstance(batch_window, int | float) and 0 <= batch_window <= 1):
            raise ValueError(
                f"batch_window must be a number of seconds in [0, 1], got {batch_window!r}"
            )
        if batch not in (None, True, False):
            raise ValueError(f"batch must be True, False or None, got {batch!r}")
        # RateLimiter validates rate and burst, with messages naming them.
        self._rate = RateLimiter(rate_limit, burst)
        self.base_url = str(url).rstrip("/")
        self.batch = batch
        self.batch_window = batch_window
        self._budget = RetryBudget()
        #: Set (and replaced) when a request succeeds while the budget is spent: the server is
        #: back, and jobs sleeping off failures may come back early. Made on first use, as
        #: an anyio Event belongs to the running event loop.
        self._recovered: RunVar[anyio.Event | None] = RunVar("recovery", default=None)
        self._requests = self._checks = self._retries = self._throttled = 0
        self._pending = 0
        self._ended = dict.fromkeys(Outcome, 0)
        self.config = config if config is not None else StatusPollingConfig()
        self.on_status_change = on_status_change
        self.max_in_flight = max_in_flight
        self._fetcher = StatusFetcher(self.base_url, api_key, max_response_bytes=max_response_bytes)
        self._random = random if random is not None else default_random()
        self._user_http = http_client
        self._http: httpx.AsyncClient | None = None
        # Event-loop objects are made on first use, per loop: a client may serve a trio run
        # and later an asyncio one.
        self._in_flight: RunVar[anyio.CapacityLimiter | None] = RunVar("in flight", default=None)
        self._seen: dict[str | None, JobStatus] = {}
        #: None until a server's answer tells whether it honours ``Prefer: wait``.
        self._long_poll_ok: bool | None = None

    def __repr__(self) -> str:
        return f"<VideoTranslationClient {redact_url(self.base_url)}>"

    # -- session -----------------------------------------------------------------------------

    def _new_http(self) -> httpx.AsyncClient:
        if self.max_in_flight > SHARD_SIZE:
            # One large httpcore pool costs CPU per request in proportion to its size.
            http = httpx.AsyncClient(
                transport=sharded_transport(self.max_in_flight),
                timeout=self.config.request_timeout,
                follow_redirects=False,
            )
        else:
            limits = httpx.Limits(
                max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight
            )
            http = httpx.AsyncClient(
                limits=limits, timeout=self.config.request_timeout, follow_redirects=False
            )
        # A status client has no use for cookies, and a server setting new ones on every
        # answer would grow the jar (and each request's Cookie header) without end.
        http.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        return http

    async def __aenter__(self) -> VideoTranslationClient:
        if self._http is not None:
            raise RuntimeError("this client is already open")
        self._http = self._user_http or self._new_http()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool this client made (a user's ``http_client`` is left open)."""
        http, self._http = self._http, None
        if http is not None and http is not self._user_http:
            with anyio.CancelScope(shield=True):
                await http.aclose()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._http is not None:
            yield self._http
            return
        if self._user_http is not None:
            yield self._user_http
            return
        async with self._new_http() as http:
            yield http

    def _limiter(self) -> anyio.CapacityLimiter:
        # Made on first use: an anyio limiter belongs to the event loop that runs it.
        limiter = self._in_flight.get()
        if limiter is None:
            limiter = anyio.CapacityLimiter(self.max_in_flight)
            self._in_flight.set(limiter)
        return limiter

    # -- public calls ------------------------------------------------------------------------

    async def get_status(self, job_id: str) -> StatusResponse:
        """The job's current status, transient failures retried (bounded by ``config.timeout``)."""
        _check_id(job_id)
        job = self._new_job(job_id)
        async with self._session() as http:
            with anyio.CancelScope(deadline=job.deadline) as scope:
                return await self._check(http, job, wait=0)
        raise self._timeout(job, scope)

    async def poll_until_complete(self, job_id: str | None = None) -> StatusResponse:
        """Poll until the job is ``completed`` or ``error`` and return that status.

        With no job ID, polls the original ``GET /status`` endpoint. A job ending in ``error``
        is returned, not raised. Raises :class:`PollTimeout` (a ``TimeoutError``) when
        ``config.timeout`` passes first, carrying the last status seen.
        """
        if job_id is not None:
            _check_id(job_id)
        job = self._new_job(job_id)
        async with self._session() as http:
            with anyio.CancelScope(deadline=job.deadline) as scope:
                return await self._poll(http, job)
        raise self._timeout(job, scope)

    # -- the polling loop, shared with many-job polling ------------------------------------

    def _new_job(self, job_id: str | None) -> _Job:
        now = anyio.current_time()
        timeout = self.config.timeout
        return _Job(
            job_id=job_id,
            started=now,
            deadline=math.inf if timeout is None else now + timeout,
            backoff=Backoff(self.config, self._random),
            # Retries never wait less than half their nominal delay: with full jitter, five
            # retries could otherwise all fall within a second and a server restart would
            # exhaust them. Equal jitter keeps max_retries spanning initial_delay * (2**n - 1) / 2
            # seconds at least (15.5 s by default).
            retry_backoff=Backoff(
                self.config,
                self._random,
                jitter="equal" if self.config.jitter == "full" else self.config.jitter,
            ),
        )

    def _timeout(self, job: _Job, scope: anyio.CancelScope) -> PollTimeout:
        assert scope.cancelled_caught
        last = f"; last status {job.last.status.value}" if job.last else "; no status seen"
        return PollTimeout(
            f"{_name(job.job_id)} did not finish within {self.config.timeout:g} s{last}",
            job_id=job.job_id,
            timeout=self.config.timeout,
            last_status=job.last,
        )

    async def _poll(self, http: httpx.AsyncClient, job: _Job) -> StatusResponse:
        while True:
            wait = self._long_poll_wait(job)
            asked = anyio.current_time() if wait else 0.0
            response = await self._check(http, job, wait=wait)
            if response.is_final:
                return response
            if wait and self._long_poll_ok and anyio.current_time() - asked >= HELD_ENOUGH * wait:
                delay = 0.0  # the server held it: ask again at once, it will hold again
                job.backoff.reset()
            elif response.retry_after is not None and self.config.hints:
                delay = clamp_hint(response.retry_after, self.config)  # server hints win
            else:
                delay = job.backoff.next_delay()
            await self._sleep_within_deadline(job, delay)

    def _long_poll_wait(self, job: _Job) -> int:
        """Seconds to ask the server to hold this check, 0 for none.

        Whole seconds (RFC 7240's delta-seconds), never past the last-poll point.
        """
        if self.config.long_poll <= 0 or self._long_poll_ok is False or not job.long_poll:
            return 0
        left = job.deadline - anyio.current_time() - self._margin()
        return max(0, int(min(self.config.long_poll, left)))

    def _margin(self) -> float:
        return min(LAST_POLL_MARGIN, self.config.request_timeout)

    async def _sleep_within_deadline(
        self, job: _Job, delay: float, *, until_recovery: bool = False
    ) -> None:
        """Sleep ``delay``, but never past the last-poll point before the deadline.

        Already past it, the last poll has been made: wait for the deadline's cancel scope.
        With ``until_recovery``, a server coming back ends the sleep early, after a random
        moment within ``HELD_BACK_SPREAD`` so that the waiting jobs do not return at once.
        """
        now = anyio.current_time()
        last_poll_at = job.deadline - self._margin()
        if now >= last_poll_at:
            # The deadline may already have passed while this task was busy (a slow answer,
            # a slow callback): its cancel scope ends this at the next checkpoint.
            await anyio.sleep(max(0.0, job.deadline - now))
            await anyio.sleep_forever()  # the deadline cancels this: PollTimeout
        delay = min(delay, last_poll_at - now)
        if not until_recovery:
            await anyio.sleep(delay)
            return
        recovered = self._recovery_event()
        with anyio.move_on_after(delay):
            await recovered.wait()
            await anyio.sleep(HELD_BACK_SPREAD * self._random())

    def _recovery_event(self) -> anyio.Event:
        event = self._recovered.get()
        if event is None:
            event = anyio.Event()
            self._recovered.set(event)
        return event

    def _record_success(self) -> None:
        if self._budget.spent:
            event = self._recovered.get()
            if event is not None:
                event.set()
                self._recovered.set(None)
        self._budget.record_success(anyio.current_time())

    async def _check(self, http: httpx.AsyncClient, job: _Job, *, wait: int) -> StatusResponse:
        """One status, transient failures retried up to ``max_retries`` consecutive times.

        429s do not count towards ``max_retries``: they are flow control, answered by the
        shared limiter's pause and lower rate, and the job's deadline still bounds them.
        """
        last_failure: Transient | None = None
        while True:
            retry = job.failures > 0
            now = anyio.current_time() if retry else 0.0
            # A batched retry rides a request shared with other jobs: it holds no slot of the
            # budget's own (the batch request is charged once, as one request).
            batched = job.batcher is not None and job.batcher.supported is not False
            if retry and not self._budget.allows_retry(now, reserve=not batched):
                # The server fails most requests: this retry is held back, not sent.
                assert last_failure is not None
                delay = self._held_back_delay(job, now, last_failure)
                await self._sleep_within_deadline(job, delay, until_recovery=True)
                continue
            job.attempts += 1
            if retry:
                self._retries += 1
            try:
                try:
                    answer = await self._fetch(http, job, wait)
                finally:
                    if retry and not batched:
                        self._budget.release()
            except Transient as failure:
                throttled = failure.status_code == 429
                if failure.hint is not None and throttled:
                    # A rate limit speaks for the whole client: every job waits, not just this
                    # one. A 503's hint delays only its job: it may come from one overloaded
                    # path, and the retry budget answers widespread failures.
                    self._rate.pause(clamp_hint(failure.hint, self.config))
                if throttled:
                    self._throttled += 1
                    self._rate.throttled(failure.quota)
                failed = anyio.current_time()
                if not throttled:
                    job.failures += 1
                    job.failed_at = failed
                    last_failure = failure
                    self._give_up_if_exhausted(job, failure, held_back=False)
                delay = (
                    clamp_hint(failure.hint, self.config)
                    if failure.hint is not None
                    else job.retry_backoff.next_delay()
                )
                job.retry_at = failed + delay
                logger.debug(
                    "%s: %s; retry %d of %d in %.3f s",
                    _name(job.job_id),
                    failure.description,
                    job.failures,
                    self.config.max_retries,
                    delay,
                )
                await self._sleep_within_deadline(job, delay, until_recovery=not throttled)
                wait = min(wait, self._long_poll_wait(job))
                continue
            job.failures = 0
            job.retry_backoff.reset()
            if wait and answer.status is JobStatus.PENDING:
                self._long_poll_ok = answer.wait_applied is not None
            response = self._response(job, answer)
            await self._notify(response, job)
            return response

    def _held_back_delay(self, job: _Job, now: float, last_failure: Transient) -> float:
        """How long a job whose retry the budget held back waits before asking again."""
        if self._budget.answering_since(job.failed_at):
            # The server answers again and the budget is refilling: wait a moment, spread at
            # random so that held-back jobs do not come back in one wave. (A success that
            # came before later failures says nothing: the server may have died since.)
            return HELD_BACK_SPREAD * self._random()
        # Nothing has succeeded since this job failed. Once its whole backoff has passed that
        # way, it counts as one more failure: a server that stays down still ends the job
        # after max_retries backoffs.
        if now >= job.retry_at:
            job.failures += 1
            self._give_up_if_exhausted(job, last_failure, held_back=True)
            job.retry_at = now + job.retry_backoff.next_delay()
        # Ask again within a second or so (no request unless the budget allows): one probe a
        # second goes through, and the first that succeeds wakes every held-back job.
        return min(job.retry_at - now, HELD_BACK_SPREAD * (0.5 + self._random()))

    def _give_up_if_exhausted(self, job: _Job, failure: Transient, *, held_back: bool) -> None:
        if job.failures <= self.config.max_retries:
            return
        why = f"{job.failures} transient failures in a row"
        if held_back:
            why += " (the last retries held back: the server fails most requests)"
        raise RetriesExhausted(
            f"{_name(job.job_id)}: {why}, the last: {failure.description}",
            job_id=job.job_id,
            attempts=job.attempts,
        ) from (failure.error or failure)

    async def _fetch(self, http: httpx.AsyncClient, job: _Job, wait: int) -> Answer:
        batcher = job.batcher
        if batcher is not None and batcher.supported is not False and job.job_id is not None:
            try:
                return await batcher.fetch(job.job_id, wait)
            except BatchUnsupported as exc:
                if exc.missing:
                    batcher.supported = False
                    logger.info("the server has no batch endpoint; checking jobs one by one")
        await self._rate.acquire()
        async with self._limiter():
            self._requests += 1
            self._checks += 1
            with self._budgeted():
                return await self._fetcher.fetch(
                    http, job.job_id, wait=wait, limit=self.config.request_timeout + wait
                )

    @contextmanager
    def _budgeted(self) -> Iterator[None]:
        """Charge the retry budget per request: a failed batch is one failure, not n."""
        try:
            yield
        except Transient as failure:
            if failure.status_code != 429:
                self._budget.record_failure(anyio.current_time())
            raise
        self._record_success()

    async def _send_batch(
        self, http: httpx.AsyncClient, ids: list[str], wait: int
    ) -> dict[str, Answer | BaseException]:
        await self._rate.acquire()
        async with self._limiter():
            self._requests += 1
            self._checks += len(ids)
            with self._budgeted():
                return await self._fetcher.fetch_batch(
                    http, ids, wait=wait, limit=self.config.request_timeout + wait
                )

    # -- many jobs ---------------------------------------------------------------------------

    async def poll_many(
        self, job_ids: Iterable[str], *, max_active: int = MAX_ACTIVE
    ) -> list[JobResult]:
        """Poll every job concurrently until each ends; one result per distinct ID, in order.

        Never raises because a job failed: its result says ``failed`` (with the exception) or
        ``timeout``. Cancelling the call cancels every job and leaves no task behind. At most
        ``max_active`` jobs are polled at once; the others start, in order, as jobs end (a
        job's ``timeout`` counts from its start).
        """
        ids = _distinct(job_ids)
        _check_max_active(max_active)
        results: dict[str, JobResult] = {}
        async with self._session() as http, anyio.create_task_group() as tg:
            active = min(len(ids), max_active)
            batcher = self._batcher(tg, http, active)
            long_poll = self._long_poll_fits(batcher, active)

            async def run(job_id: str) -> None:
                results[job_id] = await self._run_job(http, job_id, batcher, long_poll, None)

            await _start_in_order(tg, ids, run, max_active)
        return [results[job_id] for job_id in ids]

    @asynccontextmanager
    async def watch(
        self, job_ids: Iterable[str], *, buffer: int = 256, max_active: int = MAX_ACTIVE
    ) -> AsyncIterator[MemoryObjectReceiveStream[WatchEvent]]:
        """Poll every job; yield each status change and each final :class:`JobResult` as it
        happens.

        ``async with client.watch(ids) as events: async for event in events: ...``. The
        stream is bounded (``buffer`` events): a slow reader slows the polling down rather than
        letting events pile up. Leaving the block early cancels the jobs still running. At most
        ``max_active`` jobs are polled at once, as in :meth:`poll_many`.
        """
        ids = _distinct(job_ids)
        _check_max_active(max_active)
        send, receive = anyio.create_memory_object_stream[WatchEvent](buffer)
        # The receiving end closes last: closing it while jobs still run would hit them with
        # BrokenResourceError instead of the cancellation meant for them.
        with receive:
            async with self._session() as http, anyio.create_task_group() as tg:
                tg.start_soon(self._watch_all, http, ids, send, max_active)
                try:
                    yield receive
                finally:
                    tg.cancel_scope.cancel()

    async def _watch_all(
        self,
        http: httpx.AsyncClient,
        ids: list[str],
        send: MemoryObjectSendStream[WatchEvent],
        max_active: int,
    ) -> None:
        async with send, anyio.create_task_group() as jobs:
            active = min(len(ids), max_active)
            batcher = self._batcher(jobs, http, active)
            long_poll = self._long_poll_fits(batcher, active)

            async def run(job_id: str) -> None:
                await self._watch_job(http, job_id, batcher, long_poll, send)

            await _start_in_order(jobs, ids, run, max_active)

    async def _watch_job(
        self,
        http: httpx.AsyncClient,
        job_id: str,
        batcher: Batcher | None,
        long_poll: bool,
        send: MemoryObjectSendStream[WatchEvent],
    ) -> None:
        result = await self._run_job(http, job_id, batcher, long_poll, send.send)
        await send.send(result)

    def _long_poll_fits(self, batcher: Batcher | None, jobs: int) -> bool:
        """Whether many jobs may long-poll: only if every job can hold a request at once.

        A held request keeps its in-flight slot; with more jobs than slots, held requests
        would starve the rest. Batched jobs re-ask at scattered times and would each hold a
        small batch, so they rely on per-job hints (the ``eta`` of each job) instead.
        """
        return batcher is None and jobs <= self.max_in_flight

    def _batcher(
        self, tg: anyio.abc.TaskGroup, http: httpx.AsyncClient, jobs: int
    ) -> Batcher | None:
        if self.batch is False or (self.batch is None and jobs < 2):
            return None

        async def send(ids: list[str], wait: int) -> dict[str, Answer | BaseException]:
            return await self._send_batch(http, ids, wait)

        return Batcher(tg, send, window=self.batch_window)

    async def _run_job(
        self,
        http: httpx.AsyncClient,
        job_id: str,
        batcher: Batcher | None,
        long_poll: bool,
        listener: Callable[[StatusResponse], Awaitable[None]] | None,
    ) -> JobResult:
        job = self._new_job(job_id)
        job.batcher, job.long_poll, job.listener = batcher, long_poll, listener
        self._pending += 1
        try:
            with anyio.CancelScope(deadline=job.deadline) as scope:
                try:
                    final = await self._poll(http, job)
                except VideoTranslationError as exc:
                    result = self._result(job, Outcome.FAILED, job.last, exc)
                else:
                    outcome = (
                        Outcome.COMPLETED if final.status is JobStatus.COMPLETED else Outcome.ERROR
                    )
                    result = self._result(job, outcome, final, None)
            if scope.cancelled_caught:
                result = self._result(job, Outcome.TIMEOUT, job.last, self._timeout(job, scope))
        finally:
            self._pending -= 1
        self._ended[result.outcome] += 1
        return result

    def _result(
        self, job: _Job, outcome: Outcome, status: StatusResponse | None, error: Exception | None
    ) -> JobResult:
        assert job.job_id is not None
        return JobResult(
            job_id=job.job_id,
            outcome=outcome,
            status=status,
            error=_as_data(error),
            attempts=job.attempts,
            elapsed_time=anyio.current_time() - job.started,
        )

    def statistics(self) -> ClientStatistics:
        """A frozen snapshot of this client's counters."""
        rate = self._rate.statistics() if _in_async_context() else None
        return ClientStatistics(
            requests=self._requests,
            status_checks=self._checks,
            retries=self._retries,
            throttled=self._throttled,
            retries_denied=self._budget.denied,
            current_rate=rate.current_rate if rate else self._rate.rate,
            limiter_wait_time=rate.wait_time if rate else 0.0,
            jobs_pending=self._pending,
            jobs_completed=self._ended[Outcome.COMPLETED],
            jobs_error=self._ended[Outcome.ERROR],
            jobs_timeout=self._ended[Outcome.TIMEOUT],
            jobs_failed=self._ended[Outcome.FAILED],
        )

    def _response(self, job: _Job, answer: Answer) -> StatusResponse:
        response = StatusResponse(
            status=answer.status,
            job_id=job.job_id,
            elapsed_time=anyio.current_time() - job.started,
            attempts=job.attempts,
            payload=answer.payload,
            retry_after=answer.hint,
        )
        job.last = response
        return response

    async def _notify(self, response: StatusResponse, job: _Job) -> None:
        previous = self._seen.get(response.job_id)
        if previous is response.status:
            return
        self._seen[response.job_id] = response.status
        logger.info(
            "%s: %s -> %s after %.3f s",
            _name(response.job_id),
            previous.value if previous else "(first seen)",
            response.status.value,
            response.elapsed_time,
        )
        if self.on_status_change is not None:
            result = self.on_status_change(response)
            if inspect.isawaitable(result):
                await result
        if job.listener is not None:
            await job.listener(response)


async def _start_in_order(
    tg: anyio.abc.TaskGroup,
    ids: list[str],
    run: Callable[[str], Awaitable[None]],
    max_active: int,
) -> None:
    """Start ``run(job_id)`` in ``tg`` for each ID in order, at most ``max_active`` at once:
    memory stays bounded and results flow from the start, however many IDs there are."""
    slots = anyio.Semaphore(max_active)

    async def one(job_id: str) -> None:
        try:
            await run(job_id)
        finally:
            slots.release()

    for job_id in ids:
        await slots.acquire()
        tg.start_soon(one, job_id)


def _check_max_active(max_active: object) -> None:
    if not isinstance(max_active, int) or isinstance(max_active, bool) or max_active < 1:
        raise ValueError(f"max_active must be an integer >= 1, got {max_active!r}")


def _as_data(error: Exception | None) -> Exception | None:
    """An error kept in a result, without the tracebacks along its chain: their frames would
    keep alive whatever the attempt held (an answer's body, the client and its key) for as long
    as the caller keeps the result."""
    seen: set[int] = set()
    links: list[BaseException | None] = [error]
    while links:
        link = links.pop()
        if link is not None and id(link) not in seen:
            seen.add(id(link))
            link.__traceback__ = None
            links += (link.__cause__, link.__context__)
    return error


def _valid_base_url(value: object) -> httpx.URL:
    if isinstance(value, str):
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(
                f"base_url is not a valid URL ({exc}): {redact_url(value)!r}"
            ) from None
        if url.scheme in ("http", "https") and url.host:
            return url
    shown = redact_url(value) if isinstance(value, str) else value
    raise ValueError(f"base_url must be an http:// or https:// URL, got {shown!r}")


def _check_api_key(api_key: object) -> None:
    """A key goes into an HTTP header, whose values are ASCII: refuse anything else here, with
    a message that names the problem but not the key."""
    if api_key is None:
        return
    if not isinstance(api_key, str) or not api_key:
        raise ValueError("api_key must be a non-empty string")
    for position, char in enumerate(api_key, 1):
        if not "!" <= char <= "~":
            kind = "a non-ASCII" if not char.isascii() else "a space or control"
            raise ValueError(
                f"api_key must be visible ASCII characters (HTTP headers are ASCII); "
                f"it has {kind} character at position {position}"
            )


def _check_id(job_id: object) -> None:
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"job_id must be a non-empty string, got {job_id!r}")


def _distinct(job_ids: Iterable[str]) -> list[str]:
    if isinstance(job_ids, str):
        raise TypeError("job_ids must be an iterable of IDs, not one string")
    ids = list(dict.fromkeys(job_ids))
    for job_id in ids:
        _check_id(job_id)
    return ids


def _in_async_context() -> bool:
    try:
        anyio.current_time()
    except Exception:  # no event loop running: statistics() called from sync code
        return False
    return True
