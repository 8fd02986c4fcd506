"""The client, a facade: it checks what it is given, keeps one session open while it is
entered or any of its calls runs (:mod:`._session`, the scheduler every check goes through),
and runs each job's loop (:mod:`._job`) through that session. What it learns of the server
(:mod:`._state`) lives as long as the client.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from types import TracebackType

import anyio
import httpx
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import _validate as check
from ._backoff import default_random
from ._batch import MAX_URL
from ._budget import RetryBudget
from ._config import StatusPollingConfig
from ._decide import Schedule
from ._dialect import Dialect, as_dialect
from ._errors import VideoTranslationError
from ._http import StatusFetcher, redact_url
from ._job import JobPoll, StatusCallback, outcome_of
from ._models import ClientStatistics, JobResult, Outcome, StatusResponse
from ._ratelimit import Limiter, RateLimiter
from ._schedule import Hinted, Learned
from ._session import Limits, Session
from ._state import ServerState

#: What ``watch()`` yields: each status change, then each job's result.
WatchEvent = StatusResponse | JobResult

#: Largest answer read, decoded bytes: a status is a few hundred, a batch of 100 tens of KB.
MAX_RESPONSE_BYTES = 1 << 20
#: Jobs of one poll_many or watch polled at once; the rest start as these end.
MAX_ACTIVE = 100_000
#: Held requests (long-polls) in flight at once. One server process holds about 15,000 (see
#: load/results/server_ceiling.json); a client takes a fraction of that, and with batches one
#: held request covers up to 100 jobs.
MAX_HELD = 1_000


class VideoTranslationClient:
    """Polls job statuses on a video translation server.

    Enter it (``async with client:``) to keep one session open: its connection pools, and the
    scheduler through which every call's checks go, so that concurrent calls share batches,
    the rate limit and the in-flight bounds. A call made without entering it opens and closes
    a session of its own. Bring your own ``httpx.AsyncClient`` as ``http_client``: it is used
    as it is, and never closed.

    Args:
        base_url: The server's base URL, http:// or https://.
        config: How each job is polled (a :class:`StatusPollingConfig`).
        on_status_change: Called with each new status of each job, pending first.
        api_key: Sent as 'Authorization: Bearer KEY', to the base URL's origin only.
        rate_limit: Requests per second for all jobs together; None = none but the server's
            own, learnt from its 429s.
        burst: Requests allowed at once under the rate limit; None = one second's worth.
        rate_limiter: A rate limiter of your own instead of one made from rate_limit and
            burst (a fleet's, shared between processes): anything with the methods of
            :class:`Limiter`.
        max_in_flight: Short requests in flight at once (the connection pool's size).
        max_held: Held requests (long-polls) in flight at once, apart from the short ones.
        batch: Check many jobs per request (GET /jobs?ids=); None = when the server offers it.
        batch_window: Seconds a check waits for others to share its batch request.
        http_client: An httpx.AsyncClient of your own (TLS, proxies); used as it is.
        random: Source of jitter, returning floats in [0, 1).
        max_response_bytes: Largest answer read, bytes; a larger one is a failure.
        dialect: How the server is asked and its answers read: a Dialect, or the name of a
            built-in one (sim, original, elevenlabs, heygen).
    """

    def __init__(
        self,
        base_url: str,
        config: StatusPollingConfig | None = None,
        on_status_change: StatusCallback | None = None,
        *,
        api_key: str | None = None,
        rate_limit: float | None = None,
        burst: int | None = None,
        rate_limiter: Limiter | None = None,
        max_in_flight: int = 16,
        max_held: int = MAX_HELD,
        batch: bool | None = None,
        batch_window: float = 0.005,
        http_client: httpx.AsyncClient | None = None,
        random: Callable[[], float] | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        dialect: Dialect | str = "sim",
    ) -> None:
        url = _valid_base_url(base_url)
        self.dialect = as_dialect(dialect)
        check.integer("max_in_flight", max_in_flight, low=1)
        check.integer("max_held", max_held, low=1)
        check.optional_number("rate_limit", rate_limit, low=0, inclusive=False)
        if api_key is not None:
            check.visible_ascii("api_key", api_key)
        check.integer("max_response_bytes", max_response_bytes, low=1024)
        if check.number("batch_window", batch_window, low=0) > 1:
            raise check.InvalidArgument(
                "batch_window", "a number of seconds in [0, 1]", batch_window
            )
        check.one_of("batch", batch, (None, True, False))
        if config is not None and not isinstance(config, StatusPollingConfig):
            raise check.InvalidArgument("config", "a StatusPollingConfig", config)
        self.base_url = str(url).rstrip("/")
        self.config = config if config is not None else StatusPollingConfig()
        self.on_status_change = on_status_change
        self.max_in_flight = max_in_flight
        self.max_held = max_held
        self.batch = batch
        self.batch_window = batch_window
        if rate_limiter is not None and (rate_limit is not None or burst is not None):
            raise check.InvalidArgument(
                "rate_limiter", "given without rate_limit and burst", rate_limiter
            )
        # RateLimiter checks rate and burst, with messages naming them.
        limiter: Limiter = rate_limiter or RateLimiter(rate_limit, burst)
        # What the dialect says the service lacks is never asked for.
        self._state = ServerState(
            limiter,
            batch=batch if self.dialect.batch_url is not None else False,
            long_poll=self.config.long_poll > 0 and self.dialect.long_poll,
            budget=RetryBudget(),
        )
        self._fetcher = StatusFetcher(
            self.base_url, api_key, max_response_bytes=max_response_bytes, dialect=self.dialect
        )
        self._schedule: Schedule = (
            Learned(self.config) if self.config.schedule == "learn" else Hinted()
        )
        self._random = random if random is not None else default_random()
        self._user_http = http_client
        #: The session, while the client is entered or any call runs; and how many of them.
        self._open: Session | None = None
        self._users = 0
        self._entered = False

    @property
    def display_url(self) -> str:
        """The base URL fit to show: a password in it hidden."""
        return self._fetcher.shown_url

    def __repr__(self) -> str:
        return f"<VideoTranslationClient {self.display_url}>"

    # -- the session -------------------------------------------------------------------------

    async def __aenter__(self) -> VideoTranslationClient:
        if self._entered:
            raise RuntimeError("this client is already open")
        self._enter()
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Leave the client (its connection pools close once no call is using them; a user's
        ``http_client`` is left open)."""
        if self._entered:
            self._entered = False
            await self._leave()

    def _enter(self) -> Session:
        """One more user of the session, opened if there was none: every call made while
        another runs shares its batches, its pools and its bounds, entered or not. (Opening
        it awaits nothing: two calls starting together cannot both open one.)"""
        if self._open is None:
            limits = Limits(self.max_in_flight, self.max_held, self.batch_window)
            self._open = Session(
                self._state, self._fetcher, self.config, limits, http_client=self._user_http
            )
        self._users += 1
        return self._open

    async def _leave(self) -> None:
        self._users -= 1
        if self._users == 0 and self._open is not None:
            session, self._open = self._open, None
            await session.aclose()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Session]:
        session = self._enter()
        try:
            yield session
        finally:
            await self._leave()

    def _job(
        self,
        session: Session,
        job_id: str | None,
        *callbacks: StatusCallback,
        deadline: float | None = None,
        expected: float | None = None,
    ) -> JobPoll:
        return JobPoll(
            session,
            job_id,
            schedule=self._schedule,
            random=self._random,
            callbacks=(self.on_status_change, *callbacks),
            deadline=deadline,
            expected=expected,
        )

    # -- one job -----------------------------------------------------------------------------

    async def get_status(self, job_id: str) -> StatusResponse:
        """The job's current status, answered at once; transient failures retried (bounded by
        ``config.timeout``)."""
        self._check_id(job_id)
        async with self._session() as session:
            with session.polling():
                return await self._job(session, job_id).status()

    async def poll_until_complete(
        self, job_id: str | None = None, *, expected_duration: float | None = None
    ) -> StatusResponse:
        """Poll until the job is ``completed`` or ``error`` and return that status.

        With no job ID, polls the original ``GET /status`` endpoint. A job ending in ``error``
        is returned, not raised. Raises :class:`PollTimeout` (a ``TimeoutError``) when the
        deadline passes while the job is pending, :class:`ServerUnreachable` (a
        ``ConnectionError``) when the server answers nothing, :class:`RetriesExhausted` when
        its answers keep failing. ``expected_duration``, the seconds you expect the job to
        take (from the video's length, say), narrows the guess of when to check it against a
        server that gives no hint.
        """
        _check_expected(expected_duration)
        if job_id is not None:
            self._check_id(job_id)
        elif self.dialect.default_url is None:
            raise check.InvalidArgument(
                "job_id", f"given: the {self.dialect.name} dialect has no job-less route", None
            )
        async with self._session() as session:
            with session.polling():
                return await self._job(session, job_id, expected=expected_duration).run()

    async def poll_job(
        self,
        job_id: str,
        *,
        deadline: float | None = None,
        expected_duration: float | None = None,
    ) -> JobResult:
        """Poll one job until it ends, and return its :class:`JobResult` (a failure or a
        timeout is a result here, not an exception, as in :meth:`poll_many`).

        ``deadline`` is an instant on anyio's clock (``anyio.current_time()``) at which the
        job ends as a timeout, instead of ``config.timeout`` counted from now: a job handed
        over from elsewhere keeps the deadline it had. For jobs that come and go while a
        client runs: call it from a task per job inside ``async with client:`` (every call
        shares the client's batches, rate limit and bounds), and cancel a job's task (its
        cancel scope) to stop polling that job alone. ``expected_duration`` as in
        :meth:`poll_until_complete`.
        """
        self._check_id(job_id)
        _check_expected(expected_duration)
        if deadline is not None:
            check.number("deadline", deadline, low=-math.inf)
        async with self._session() as session:
            with session.polling():
                return await self._run_job(
                    session, job_id, deadline=deadline, expected=expected_duration
                )

    # -- many jobs ---------------------------------------------------------------------------

    async def poll_many(
        self, job_ids: Iterable[str], *, max_active: int = MAX_ACTIVE
    ) -> list[JobResult]:
        """Poll every job concurrently until each ends; one result per distinct ID, in order.

        Never raises because a job failed: its result says ``failed`` (with the exception) or
        ``timeout``. Cancelling the call cancels every job and leaves no task behind. At most
        ``max_active`` jobs are polled at once; the others start, in order, as jobs end (a
        job's ``timeout`` counts from its start). An exception raised by ``on_status_change``
        cancels the other jobs and is raised here, as it is.
        """
        ids = _distinct(job_ids)
        check.integer("max_active", max_active, low=1)
        results: dict[str, JobResult] = {}
        async with self._session() as session:

            async def run(job_id: str) -> None:
                results[job_id] = await self._run_job(session, job_id)

            with _unwrapped():
                async with anyio.create_task_group() as tg:
                    await _start_in_order(tg, ids, run, max_active, session)
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
        check.integer("max_active", max_active, low=1)
        send, receive = anyio.create_memory_object_stream[WatchEvent](buffer)
        # The receiving end closes last: closing it while jobs still run would hit them with
        # BrokenResourceError instead of the cancellation meant for them.
        with receive:
            async with self._session() as session:
                with _unwrapped():
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._watch_all, session, ids, send, max_active)
                        try:
                            yield receive
                        finally:
                            tg.cancel_scope.cancel()

    async def _watch_all(
        self,
        session: Session,
        ids: list[str],
        send: MemoryObjectSendStream[WatchEvent],
        max_active: int,
    ) -> None:
        async with send, anyio.create_task_group() as jobs:

            async def run(job_id: str) -> None:
                await send.send(await self._run_job(session, job_id, send.send))

            await _start_in_order(jobs, ids, run, max_active, session)

    async def _run_job(
        self,
        session: Session,
        job_id: str,
        listener: Callable[[StatusResponse], Awaitable[None]] | None = None,
        *,
        deadline: float | None = None,
        expected: float | None = None,
    ) -> JobResult:
        try:
            self._check_id(job_id)
        except check.InvalidArgument as exc:  # this job alone: the others go on
            session.state.counters.ended[Outcome.FAILED] += 1
            return JobResult(job_id=job_id, outcome=Outcome.FAILED, last_status=None, error=exc)
        listeners = [listener] if listener else []
        job = self._job(session, job_id, *listeners, deadline=deadline, expected=expected)
        error: VideoTranslationError | None = None
        try:
            final = await job.run()
        except VideoTranslationError as exc:
            error = exc
        return JobResult(
            job_id=job_id,
            outcome=outcome_of(final if error is None else error),
            last_status=final if error is None else job.last,
            error=_as_data(error),
            checks=job.record.checks,
            elapsed_time=anyio.current_time() - job.record.started,
        )

    def _check_id(self, job_id: object) -> None:
        """A job ID the status URL can carry: a non-empty string, and short enough."""
        valid = _check_string(job_id)
        if len(self.base_url) + len(self.dialect.status_path(valid)) > MAX_URL:
            shown = valid[:40] + "…"
            raise check.InvalidArgument(
                "job_id", f"an ID whose status URL fits in {MAX_URL} bytes", shown
            )

    def statistics(self) -> ClientStatistics:
        """A frozen snapshot of this client's counters."""
        state = self._state
        rate = state.limiter.statistics() if _in_async_context() else None
        counters = state.counters
        return ClientStatistics(
            requests=counters.requests,
            status_checks=counters.checks,
            retries=counters.retries,
            throttled=counters.throttled,
            retries_denied=state.budget.denied,
            current_rate=rate.current_rate if rate else state.limiter.rate,
            limiter_wait_time=rate.wait_time if rate else 0.0,
            jobs_pending=counters.pending,
            jobs_completed=counters.ended[Outcome.COMPLETED],
            jobs_error=counters.ended[Outcome.ERROR],
            jobs_timeout=counters.ended[Outcome.TIMEOUT],
            jobs_failed=counters.ended[Outcome.FAILED],
            server_silent_since=state.health.silent_since_wall,
        )


async def _start_in_order(
    tg: TaskGroup,
    ids: list[str],
    run: Callable[[str], Awaitable[None]],
    max_active: int,
    session: Session,
) -> None:
    """Start ``run(job_id)`` in ``tg`` for each ID in order, at most ``max_active`` at once:
    memory stays bounded and results flow from the start, however many IDs there are. A job
    counts as polled from the moment it is started, so that the first of many jobs started
    together is batched too."""
    slots = anyio.Semaphore(max_active)

    async def one(job_id: str) -> None:
        try:
            await run(job_id)
        finally:
            session.leave()
            slots.release()

    for job_id in ids:
        try:
            # Without a checkpoint while there is room: jobs started together all count as
            # polled before the first of them asks (and so share its batch).
            slots.acquire_nowait()
        except anyio.WouldBlock:
            await slots.acquire()
        session.join()
        tg.start_soon(one, job_id)


class _unwrapped:
    """An exception from one job's task (a callback that raised) leaves as it was raised, not
    in the ExceptionGroup the task group wraps it in; several stay grouped."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            raise exc.exceptions[0] from None


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
            shown = redact_url(value)
            raise check.InvalidArgument("base_url", f"a valid URL ({exc})", shown) from None
        if url.scheme in ("http", "https") and url.host:
            return url
    given = redact_url(value) if isinstance(value, str) else value
    raise check.InvalidArgument("base_url", "an http:// or https:// URL", given)


def _check_expected(expected: float | None) -> None:
    check.optional_number("expected_duration", expected, low=0, inclusive=False)


def _distinct(job_ids: Iterable[str]) -> list[str]:
    if isinstance(job_ids, str):
        raise TypeError("job_ids must be an iterable of IDs, not one string")
    ids = list(dict.fromkeys(job_ids))
    for job_id in ids:
        _check_string(job_id)
    return ids


def _check_string(job_id: object) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise check.InvalidArgument("job_id", "a non-empty string", job_id)
    return job_id


def _in_async_context() -> bool:
    try:
        anyio.current_time()
    except Exception:  # no event loop running: statistics() called from sync code
        return False
    return True
