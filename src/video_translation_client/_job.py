"""One job's polling: when to check it, how to retry it, and what to say at its deadline.

Everything about a job lives in its :class:`JobPoll` and ends with it: its backoff, its retry
state, the status last seen (so a second poll of the same job sees its first status again).
What the job shares with the others (requests, rate, budget, the server's health) it asks of
the :class:`~._session.Session`.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC

import anyio

from ._backoff import Backoff, clamp_hint
from ._errors import PollTimeout, RetriesExhausted, ServerUnreachable, VideoTranslationError
from ._http import Answer, Transient, _name
from ._models import JobStatus, StatusResponse
from ._session import Session

logger = logging.getLogger("video_translation_client")

StatusCallback = Callable[[StatusResponse], Awaitable[None] | None]

#: The last poll before a deadline goes out this long before it (or request_timeout, or a
#: quarter of the timeout, if shorter), so that its answer can arrive in time.
LAST_POLL_MARGIN = 1.0
#: Seconds over which jobs held back by the retry budget are spread once the server answers.
HELD_BACK_SPREAD = 1.0


class JobPoll:
    """Polls one job until it ends, through ``session``. :meth:`run` returns the final status
    or raises: :class:`PollTimeout` at the deadline while the server answered pending,
    :class:`ServerUnreachable` or :class:`RetriesExhausted` when it did not."""

    __slots__ = (
        "_backoff",
        "_callbacks",
        "_failed_at",
        "_failing",
        "_random",
        "_retry_at",
        "_retry_backoff",
        "_seen",
        "attempts",
        "budget",
        "config",
        "deadline",
        "failures",
        "job_id",
        "last",
        "polls",
        "session",
        "started",
    )

    def __init__(
        self,
        session: Session,
        job_id: str | None,
        *,
        random: Callable[[], float],
        callbacks: tuple[StatusCallback | None, ...] = (),
        deadline: float | None = None,
    ) -> None:
        self.session = session
        self.config = config = session.config
        self.job_id = job_id
        self.started = anyio.current_time()
        if deadline is None:
            deadline = math.inf if config.timeout is None else self.started + config.timeout
        self.deadline = deadline
        #: Seconds from the start to the deadline (the config's timeout, unless a deadline of
        #: its own was given).
        self.budget = deadline - self.started
        self._random = random
        self._backoff = Backoff(config, random)
        # Retries never wait less than half their nominal delay: with full jitter, five retries
        # could otherwise all fall within a second.
        retry_jitter = "equal" if config.jitter == "full" else config.jitter
        self._retry_backoff = Backoff(config, random, jitter=retry_jitter)
        self._callbacks = callbacks
        #: Requests sent for the job, and answers received from it.
        self.attempts = self.polls = 0
        #: Failures counted towards max_retries (not those of an outage, nor 429s).
        self.failures = 0
        #: The failure of the last attempt, until an answer comes; when it failed, and when
        #: its retry is due.
        self._failing: Transient | None = None
        self._failed_at = self._retry_at = -math.inf
        self.last: StatusResponse | None = None
        self._seen: JobStatus | None = None

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> StatusResponse:
        with anyio.CancelScope(deadline=self.deadline) as scope:
            return await self._poll()
        assert scope.cancelled_caught
        raise self.verdict()

    async def status(self) -> StatusResponse:
        """One status, answered at once, transient failures retried (within the deadline)."""
        with anyio.CancelScope(deadline=self.deadline) as scope:
            response, _ = await self._check(0)
            return response
        assert scope.cancelled_caught
        raise self.verdict()

    async def _poll(self) -> StatusResponse:
        hold = 0  # the first check is answered at once: the caller sees pending, and the ETA
        while True:
            response, answer = await self._check(hold)
            if response.is_final:
                return response
            if self.config.max_attempts is not None and self.polls >= self.config.max_attempts:
                raise self._timeout(f"still pending after {self.polls} polls (max_attempts)")
            was_held = hold > 0 and answer.wait_applied is not None and not answer.cut_short
            first = self.polls == 1 and not answer.cut_short
            hint = None
            if response.retry_after is not None and self.config.hints:
                hint = clamp_hint(response.retry_after, self.config)  # server hints win
            if first and hint is not None and self._holds_alone():
                # A held check that rides no batch takes a connection of its own, at both
                # ends, for as long as it is held. With the server's estimate of when the job
                # ends, wait half of it first: the answer comes as soon if the estimate holds,
                # and a thousand jobs started together do not open a thousand connections
                # while their first checks are still going out.
                await self._sleep(hint / 2)
                if not self.session.may_hold():  # another job found that the server does not
                    await self._sleep(hint / 2)
                hold = self._hold()
                self._backoff.reset()
                continue
            hold = self._hold()
            if hold and (was_held or first):
                # The server holds checks: ask again at once, and it holds this one too. (After
                # the first answer, which was not held, long-poll starts.)
                self._backoff.reset()
                continue
            await self._sleep(hint if hint is not None else self._backoff.next_delay())

    def _holds_alone(self) -> bool:
        return self.session.may_hold() and not self.session.batched(self.job_id)

    def _hold(self) -> int:
        """Seconds to ask the server to hold the next check, 0 for none: whole seconds
        (RFC 7240's delta-seconds), never past the last-poll point."""
        if not self.session.may_hold():
            return 0
        left = self.deadline - anyio.current_time() - self._margin()
        return max(0, int(min(self.config.long_poll, left)))

    def _margin(self) -> float:
        return min(LAST_POLL_MARGIN, self.config.request_timeout, max(0.0, self.budget) / 4)

    async def _sleep(self, delay: float, *, until_recovery: bool = False) -> None:
        """Sleep ``delay``, never past the last-poll point before the deadline; already past
        it, the last poll has been made: wait for the deadline's cancel scope.

        With ``until_recovery``, the server answering again ends the sleep early, after a
        random moment within ``HELD_BACK_SPREAD`` so that the waiting jobs do not come back at
        once.
        """
        now = anyio.current_time()
        last_poll_at = self.deadline - self._margin()
        if now >= last_poll_at:
            # The deadline may already have passed while this task was busy (a slow answer, a
            # slow callback): its cancel scope ends this at the next checkpoint.
            await anyio.sleep(max(0.0, self.deadline - now))
            await anyio.sleep_forever()
        delay = min(delay, last_poll_at - now)
        if not until_recovery:
            await anyio.sleep(delay)
            return
        with anyio.move_on_after(delay):
            await self.session.recovered()
            await anyio.sleep(HELD_BACK_SPREAD * self._random())

    # -- one check, transient failures retried -----------------------------------------------

    async def _check(self, hold: int) -> tuple[StatusResponse, Answer]:
        """One status: transient failures retried while they are this job's own (up to
        ``max_retries`` in a row), or while the server answers nothing at all (up to
        ``outage_timeout``). 429s are flow control: they do not count."""
        session, job_id = self.session, self.job_id
        while True:
            retry = self._failing is not None
            reserved = session.reserve_retry(job_id) if retry else False
            if reserved is None:
                # The server fails most requests: this retry is held back, not sent.
                await self._sleep(self._held_back_delay(), until_recovery=True)
                continue
            self.attempts += 1
            try:
                try:
                    answer = await session.check(job_id, hold, retry=retry)
                finally:
                    session.retried(reserved)
            except Transient as failure:
                delay, which = self._failed(failure)
                logger.debug(
                    "%s: %s; %s in %.3f s", _name(job_id), failure.description, which, delay
                )
                await self._sleep(delay, until_recovery=failure.status_code != 429)
                hold = min(hold, self._hold())
                continue
            self._failing = None
            self.failures = 0
            self._retry_backoff.reset()
            self.polls += 1
            response = self._response(answer)
            await self._notify(response)
            return response, answer

    def _failed(self, failure: Transient) -> tuple[float, str]:
        """Record a failed attempt; the wait before the next one, and what the next one is.
        Raises when the job must end: too many failures of its own, or the server silent too
        long."""
        now = anyio.current_time()
        if failure.hint is not None:
            delay = clamp_hint(failure.hint, self.config)
        else:
            delay = self._retry_backoff.next_delay()
        if failure.status_code == 429:
            return delay, "asking again (throttled)"
        health = self.session.health
        if failure.status_code is not None or health.last_answer > self._failed_at:
            # The server answers (this failure, or others since our last one): this job's own
            # trouble, or an intermittent one.
            self.failures += 1
            self._give_up_if_exhausted(failure)
            which = f"retry {self.failures} of {self.config.max_retries}"
        else:
            self._give_up_if_silent(failure, now)
            which = f"retry (no answer from the server for {health.silent_for(now):.1f} s)"
        self._failing, self._failed_at, self._retry_at = failure, now, now + delay
        return delay, which

    def _held_back_delay(self) -> float:
        """How long a job whose retry the budget held back waits before asking again."""
        now = anyio.current_time()
        health = self.session.health
        if health.last_success >= self._failed_at:
            # The server answers again and the budget is refilling: wait a moment, spread at
            # random so that held-back jobs do not return in one wave.
            return HELD_BACK_SPREAD * self._random()
        assert self._failing is not None
        if now >= self._retry_at:
            # Nothing has succeeded since this job failed, and its whole backoff has passed
            # that way: a silent server is an outage (ridden through, up to outage_timeout),
            # failing answers count as one more failure.
            if self._failing.status_code is None and health.silent_since is not None:
                self._give_up_if_silent(self._failing, now)
            else:
                self.failures += 1
                self._give_up_if_exhausted(self._failing, held_back=True)
            self._retry_at = now + self._retry_backoff.next_delay()
        # Ask again within a second or so (no request unless the budget allows): one probe a
        # second goes through, and the first answer wakes every held-back job.
        return min(self._retry_at - now, HELD_BACK_SPREAD * (0.5 + self._random()))

    def _give_up_if_exhausted(self, failure: Transient, *, held_back: bool = False) -> None:
        if self.failures <= self.config.max_retries:
            return
        why = f"{self.failures} transient failures in a row"
        if held_back:
            why += " (the last retries held back: the server fails most requests)"
        raise RetriesExhausted(
            f"{_name(self.job_id)}: {why}, the last: {failure.description}",
            job_id=self.job_id,
            attempts=self.attempts,
        ) from failure.error or failure

    def _give_up_if_silent(self, failure: Transient, now: float) -> None:
        """The server answers nothing: ride through it, up to ``outage_timeout``; a server
        never reached since the client started (a wrong URL, most likely) is given up on after
        ``max_retries`` retries, as a failing one would be."""
        health = self.session.health
        if not health.ever_answered:
            self.failures += 1
            if self.failures > self.config.max_retries:
                raise self._unreachable(failure, never=True)
        elif health.silent_for(now) >= self.config.outage_timeout:
            raise self._unreachable(failure)

    # -- the verdict -------------------------------------------------------------------------

    def verdict(self) -> VideoTranslationError:
        """What the deadline means for this job: a timeout if the server's last word on it was
        pending; if its last attempt failed, that it failed (its status is not known)."""
        failing = self._failing
        if failing is None:
            return self._timeout(f"did not finish within {self.budget:g} s")
        if self.session.health.silent_since is not None:
            # The server answers nothing now: whatever this job's last failure was, its retries
            # since met (or were held back by) the silence, and its state is not known.
            return self._unreachable(failing)
        error = RetriesExhausted(
            f"{_name(self.job_id)}: the deadline ({self.budget:g} s) passed while "
            f"retrying; the last failure: {failing.description}",
            job_id=self.job_id,
            attempts=self.attempts,
        )
        error.__cause__ = failing.error or failing
        return error

    def _timeout(self, why: str) -> PollTimeout:
        last = f"; last status {self.last.status.value}" if self.last else "; no status seen"
        return PollTimeout(
            f"{_name(self.job_id)} {why}{last}",
            job_id=self.job_id,
            timeout=self.budget if math.isfinite(self.budget) else None,
            last_status=self.last,
        )

    def _unreachable(self, failure: Transient, *, never: bool = False) -> ServerUnreachable:
        health = self.session.health
        if never:
            when = f"has not answered since the client started ({self.failures} attempts)"
        else:
            since = health.silent_since_wall
            shown = since.astimezone(UTC).strftime("%H:%M:%S UTC") if since else "?"
            silent = health.silent_for(anyio.current_time())
            when = f"has answered nothing since {shown} ({silent:.1f} s)"
        error = ServerUnreachable(
            f"{_name(self.job_id)}: the server at {self.session.fetcher.shown_url} {when}; "
            f"the last attempt: {failure.description}",
            job_id=self.job_id,
            attempts=self.attempts,
            since=health.silent_since_wall,
        )
        error.__cause__ = failure.error or failure
        return error

    # -- answers -----------------------------------------------------------------------------

    def _response(self, answer: Answer) -> StatusResponse:
        response = StatusResponse(
            status=answer.status,
            job_id=self.job_id,
            elapsed_time=anyio.current_time() - self.started,
            attempts=self.attempts,
            payload=answer.payload,
            retry_after=answer.hint,
        )
        self.last = response
        return response

    async def _notify(self, response: StatusResponse) -> None:
        """Call the callbacks once per change of this job's status, the first one included."""
        previous, self._seen = self._seen, response.status
        if previous is response.status:
            return
        logger.info(
            "%s: %s -> %s after %.3f s",
            _name(self.job_id),
            previous.value if previous else "(first seen)",
            response.status.value,
            response.elapsed_time,
        )
        for callback in self._callbacks:
            if callback is not None:
                result = callback(response)
                if inspect.isawaitable(result):
                    await result
