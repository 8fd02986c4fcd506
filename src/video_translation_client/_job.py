"""One job's polling: a short loop driving the decisions of :mod:`._decide` through the
session. It waits, checks, tells the callbacks, and asks the decisions what comes next; it
decides nothing itself.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

import anyio

from ._decide import (
    HELD_BACK_SPREAD,
    Action,
    Check,
    Done,
    Fail,
    JobRecord,
    Schedule,
    ServerView,
    answered,
    failed,
    held_back,
    not_found,
)
from ._decide import verdict as deadline_verdict
from ._errors import JobNotFound, PollTimeout, VideoTranslationError
from ._http import Answer, Transient, job_name
from ._models import JobStatus, Outcome, StatusResponse
from ._session import Session

logger = logging.getLogger("video_translation_client")
_UNUSED = ServerView()

StatusCallback = Callable[[StatusResponse], Awaitable[None] | None]


class JobPoll:
    """Polls one job until it ends, through ``session``. :meth:`run` returns the final status
    or raises: :class:`PollTimeout` at the deadline while the server answered pending,
    :class:`ServerUnreachable` or :class:`RetriesExhausted` when it did not."""

    __slots__ = ("_callbacks", "_schedule", "_seen", "record", "session")

    def __init__(
        self,
        session: Session,
        job_id: str | None,
        *,
        schedule: Schedule,
        random: Callable[[], float],
        callbacks: tuple[StatusCallback | None, ...] = (),
        deadline: float | None = None,
        expected: float | None = None,
    ) -> None:
        self.session = session
        self.record = JobRecord(
            job_id,
            session.config,
            started=anyio.current_time(),
            random=random,
            deadline=deadline,
            expected=expected,
        )
        self._schedule = schedule
        self._callbacks = callbacks
        self._seen: JobStatus | None = None

    @property
    def last(self) -> StatusResponse | None:
        return self.record.last

    # -- the loops ---------------------------------------------------------------------------

    async def run(self) -> StatusResponse:
        """Until the job ends; its outcome counted in the client's statistics."""
        counters = self.session.state.counters
        try:
            with anyio.CancelScope(deadline=self.record.deadline) as scope:
                response = await self._until(final=True)
            if scope.cancelled_caught:
                raise self.verdict()
        except VideoTranslationError as exc:
            counters.ended[outcome_of(exc)] += 1
            raise
        finally:
            self._schedule.ended(self.record)
        counters.ended[outcome_of(response)] += 1
        return response

    async def status(self) -> StatusResponse:
        """One status, answered at once, transient failures retried (within the deadline)."""
        try:
            with anyio.CancelScope(deadline=self.record.deadline) as scope:
                return await self._until(final=False)
        finally:
            self._schedule.ended(self.record)
        assert scope.cancelled_caught
        raise self.verdict()

    async def _until(self, *, final: bool) -> StatusResponse:
        """Check, wait and check again as the decisions say: until the job ends, or (not
        ``final``) until the first answer about it."""
        action: Action = Check() if not final else self._first()
        while True:
            if isinstance(action, Done):
                return action.response
            if isinstance(action, Fail):
                raise action.error
            if action.replan:
                if action.delay:
                    await self._sleep(action.delay, False)
                else:
                    # Another job is finding out what the server offers: its answer decides.
                    with anyio.move_on_after(self.session.config.request_timeout):
                        await self.session.state.heard()
                action = self._first()
                continue
            await self._wait(action)
            action = await self._check(action.hold, alone=action.alone)
            if not final and self.record.failing is None and self.record.last is not None:
                return self.record.last

    def _first(self) -> Check:
        return self._schedule.first(self.record, *self._at_now())

    def verdict(self) -> VideoTranslationError:
        return deadline_verdict(self.record, *self._at_now())

    async def _wait(self, check: Check) -> None:
        """Wait as ``check`` says, never past the last-check point before the deadline; past
        it, the last check has been made: wait for the deadline's cancel scope."""
        await self._sleep(check.delay, check.until_recovery, check.until_probe)
        if check.hold and check.unheld_delay and not self._at_now()[1].may_hold:
            await self._sleep(check.unheld_delay, False)

    def _view(self, now: float) -> ServerView:
        return self.session.view(self.record.job_id, now)

    def _at_now(self) -> tuple[float, ServerView]:
        """The time and the server's state at this instant: what a decision is given."""
        now = anyio.current_time()
        return now, self._view(now)

    async def _sleep(self, delay: float, until_recovery: bool, until_probe: bool = False) -> None:
        if not delay:
            return
        now = anyio.current_time()
        fitted = self.record.fit(delay, now)
        if fitted is None:
            # The deadline may already have passed while this task was busy (a slow answer, a
            # slow callback): its cancel scope ends this at the next checkpoint.
            await anyio.sleep(max(0.0, self.record.deadline - now))
            await anyio.sleep_forever()
            return
        if not until_recovery:
            await anyio.sleep(fitted)
            return
        with anyio.move_on_after(fitted):
            if until_probe:
                if not await self.session.state.probe_turn():
                    return  # this job's turn to probe: at once
            else:
                await self.session.state.recovered()
            # Spread at random: the jobs it wakes do not come back in one wave.
            await anyio.sleep(HELD_BACK_SPREAD * self.record.random())

    # -- one check ---------------------------------------------------------------------------

    async def _check(self, hold: int, *, alone: bool = False) -> Action:
        session, record = self.session, self.record
        job_id = record.job_id
        retry = record.failing is not None
        reserved = session.reserve_retry(job_id) if retry else False
        if reserved is None:
            # The server fails most requests: this retry is held back, not sent.
            return held_back(record, *self._at_now())
        if hold:  # fitted to the deadline as it stands now, after the wait
            hold = record.fit_hold(hold, anyio.current_time())
        record.requests += 1
        try:
            try:
                answer = await session.check(job_id, hold, retry=retry, alone=alone)
            finally:
                session.retried(reserved)
        except JobNotFound as error:
            return not_found(record, error, *self._at_now())
        except Transient as failure:
            action = failed(record, failure, *self._at_now())
            if isinstance(action, Check):
                logger.debug(
                    "%s: %s; %s in %.3f s",
                    job_name(job_id),
                    failure.description,
                    action.note,
                    action.delay,
                )
            return action
        return await self._answered(answer)

    async def _answered(self, answer: Answer) -> Action:
        record = self.record
        now = anyio.current_time()
        # A woken batch's answer is decided without the server's state: skip building it (a
        # thousand jobs in held batches are woken a hundred thousand times).
        view = _UNUSED if answer.woken else self._view(now)
        action = answered(record, answer, now, view, self._schedule)
        if not answer.woken:
            self.session.state.counters.checks += 1
            assert record.last is not None
            await self._notify(record.last)
        return action

    async def _notify(self, response: StatusResponse) -> None:
        """Call the callbacks once per change of this job's status, the first one included."""
        previous, self._seen = self._seen, response.status
        if previous is response.status:
            return
        logger.info(
            "%s: %s -> %s after %.3f s",
            job_name(self.record.job_id),
            previous.value if previous else "(first seen)",
            response.status.value,
            response.elapsed_time,
        )
        for callback in self._callbacks:
            if callback is not None:
                result = callback(response)
                if inspect.isawaitable(result):
                    await result


def outcome_of(end: StatusResponse | VideoTranslationError) -> Outcome:
    """How a job's polling ended, from its final status or the error that ended it."""
    if isinstance(end, PollTimeout):
        return Outcome.TIMEOUT
    if isinstance(end, VideoTranslationError):
        return Outcome.FAILED
    return Outcome.COMPLETED if end.status is JobStatus.COMPLETED else Outcome.ERROR
