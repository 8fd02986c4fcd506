"""The client: one job's polling loop, and the session that all of a client's jobs share."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType

import anyio
import httpx

from ._backoff import Backoff, clamp_hint, default_random
from ._config import StatusPollingConfig
from ._errors import PollTimeout, RetriesExhausted
from ._http import Answer, StatusFetcher, Transient
from ._models import JobStatus, StatusResponse

logger = logging.getLogger("video_translation_client")

StatusCallback = Callable[[StatusResponse], Awaitable[None] | None]

#: The last poll before a deadline is sent this long before it (or request_timeout, if
#: shorter), so that its answer can arrive in time.
LAST_POLL_MARGIN = 1.0
#: A long-poll answered pending sooner than this share of the applied wait did not really
#: hold (a server shutting down, a proxy cutting it short): back off instead of asking again.
HELD_ENOUGH = 0.5


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
    last: StatusResponse | None = field(default=None)


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
        max_in_flight: int = 16,
        http_client: httpx.AsyncClient | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        url = httpx.URL(base_url) if isinstance(base_url, str) else None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an integer >= 1, got {max_in_flight!r}")
        if api_key is not None and (not api_key or "\n" in api_key or "\r" in api_key):
            raise ValueError("api_key must be a non-empty string without line breaks")
        self.base_url = str(url).rstrip("/")
        self.config = config if config is not None else StatusPollingConfig()
        self.on_status_change = on_status_change
        self.max_in_flight = max_in_flight
        self._fetcher = StatusFetcher(self.base_url, api_key)
        self._random = random if random is not None else default_random()
        self._user_http = http_client
        self._http: httpx.AsyncClient | None = None
        self._in_flight: anyio.CapacityLimiter | None = None
        self._seen: dict[str | None, JobStatus] = {}
        #: None until a server's answer tells whether it honours ``Prefer: wait``.
        self._long_poll_ok: bool | None = None

    def __repr__(self) -> str:
        return f"<VideoTranslationClient {self.base_url}>"

    # -- session -----------------------------------------------------------------------------

    def _new_http(self) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight
        )
        return httpx.AsyncClient(
            limits=limits, timeout=self.config.request_timeout, follow_redirects=False
        )

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
        if self._in_flight is None:
            self._in_flight = anyio.CapacityLimiter(self.max_in_flight)
        return self._in_flight

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
            retry_backoff=Backoff(self.config, self._random),
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
            asked = anyio.current_time()
            response = await self._check(http, job, wait=wait)
            if response.is_final:
                return response
            held = anyio.current_time() - asked
            if wait and self._long_poll_ok and held >= HELD_ENOUGH * wait:
                delay = 0.0  # the server held it: ask again at once, it will hold again
                job.backoff.reset()
            elif response.retry_after is not None:
                delay = clamp_hint(response.retry_after, self.config)  # server hints win
            else:
                delay = job.backoff.next_delay()
            await self._sleep_within_deadline(job, delay)

    def _long_poll_wait(self, job: _Job) -> int:
        """Seconds to ask the server to hold this check, 0 for none.

        Whole seconds (RFC 7240's delta-seconds), never past the last-poll point.
        """
        if self.config.long_poll <= 0 or self._long_poll_ok is False:
            return 0
        left = job.deadline - anyio.current_time() - self._margin()
        return max(0, int(min(self.config.long_poll, left)))

    def _margin(self) -> float:
        return min(LAST_POLL_MARGIN, self.config.request_timeout)

    async def _sleep_within_deadline(self, job: _Job, delay: float) -> None:
        """Sleep ``delay``, but never past the last-poll point before the deadline.

        Already past it, the last poll has been made: wait for the deadline's cancel scope.
        """
        now = anyio.current_time()
        last_poll_at = job.deadline - self._margin()
        if now + delay <= last_poll_at:
            await anyio.sleep(delay)
        elif now < last_poll_at:
            await anyio.sleep(last_poll_at - now)
        else:
            await anyio.sleep(job.deadline - now)
            await anyio.sleep_forever()  # the deadline cancels this: PollTimeout

    async def _check(self, http: httpx.AsyncClient, job: _Job, *, wait: int) -> StatusResponse:
        """One status, transient failures retried up to ``max_retries`` consecutive times."""
        while True:
            job.attempts += 1
            try:
                async with self._limiter():
                    answer = await self._fetcher.fetch(
                        http, job.job_id, wait=wait, limit=self.config.request_timeout + wait
                    )
            except Transient as failure:
                job.failures += 1
                if job.failures > self.config.max_retries:
                    raise RetriesExhausted(
                        f"{_name(job.job_id)}: {job.failures} transient failures in a row, "
                        f"the last: {failure.description}",
                        job_id=job.job_id,
                        attempts=job.attempts,
                    ) from (failure.__cause__ or failure)
                delay = (
                    clamp_hint(failure.hint, self.config)
                    if failure.hint is not None
                    else job.retry_backoff.next_delay()
                )
                logger.debug(
                    "%s: %s; retry %d of %d in %.3f s",
                    _name(job.job_id),
                    failure.description,
                    job.failures,
                    self.config.max_retries,
                    delay,
                )
                await self._sleep_within_deadline(job, delay)
                wait = min(wait, self._long_poll_wait(job))
                continue
            job.failures = 0
            job.retry_backoff.reset()
            if wait and answer.status is JobStatus.PENDING:
                self._long_poll_ok = answer.wait_applied is not None
            response = self._response(job, answer)
            await self._notify(response)
            return response

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

    async def _notify(self, response: StatusResponse) -> None:
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


def _check_id(job_id: object) -> None:
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"job_id must be a non-empty string, got {job_id!r}")


def _name(job_id: str | None) -> str:
    return "the default job" if job_id is None else f"job {job_id!r}"
