"""One job's polling as decisions apart from I/O.

Given what happened (an answer about the job, a failure, a retry held back by the retry
budget, the deadline) and the time, these functions say what comes next: check again after
a wait with a hold (:class:`Check`), end with the final status (:class:`Done`), or end with an
error (:class:`Fail`). They read the clock and the server's state only through their
arguments (``now``, a :class:`ServerView`), and touch nothing but the job's own
:class:`JobRecord`; a short async loop (:mod:`._job`) drives them. What to do after a pending
answer is the schedule's call (:mod:`._schedule`), a policy object the decisions ask.

As h11 keeps the protocol apart from the sockets and stamina the retry policy apart from the
loop, a verdict here is tested as a table, without a clock or a server.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from ._backoff import Backoff, clamp_hint
from ._config import StatusPollingConfig
from ._errors import (
    JobNotFound,
    PollTimeout,
    RetriesExhausted,
    ServerUnreachable,
    VideoTranslationError,
    WrongRoute,
)
from ._http import Answer, Transient, job_name
from ._models import StatusResponse
from ._ratelimit import unlikely

#: The last check before a deadline goes out this long before it (or request_timeout, or a
#: quarter of the timeout, if shorter), so that its answer can arrive in time.
LAST_POLL_MARGIN = 1.0
#: Seconds over which jobs held back by the retry budget are spread once the server answers.
HELD_BACK_SPREAD = 1.0
#: Seconds a server that has refused every connection since the client started (nothing
#: listens at the URL) is tried before the jobs fail as unreachable: time for a server that
#: is being started to listen, and the verdict within seconds rather than after every retry.
REFUSED_GIVE_UP = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    """Check the job after ``delay`` seconds, asking the server to hold the check up to
    ``hold`` seconds (0: answered at once). With ``until_recovery``, the server answering
    again (while the retry budget is spent) ends the wait early."""

    delay: float = 0.0
    hold: int = 0
    until_recovery: bool = False
    #: If, after ``delay``, the check cannot be held after all (the server turned out not to
    #: hold, or another check is finding out), wait this much longer and check at once.
    unheld_delay: float = 0.0
    #: With ``until_recovery``, this job's turn to be the retry budget's probe also ends the
    #: wait (held-back jobs take turns, one at a time waiting for the probe's time).
    until_probe: bool = False
    #: Do not check yet: wait for the outcome of another job's check (what the server offers
    #: is about to be known), then ask the schedule again.
    replan: bool = False
    #: Check this job on its own, at once, not in a batch: others are waiting for its answer.
    alone: bool = False
    #: What this check is, for the log: "retry 2 of 5", say.
    note: str = ""


@dataclass(frozen=True, slots=True)
class Done:
    """The job ended: its final status."""

    response: StatusResponse


@dataclass(frozen=True, slots=True)
class Fail:
    """Polling the job ended without a final status."""

    error: VideoTranslationError


Action = Check | Done | Fail


class ServerView(NamedTuple):
    """What a decision needs of the server's state, read at one instant. A named tuple, not a
    frozen dataclass: as unchangeable, and built in a third of the time (a frozen dataclass
    sets each of its fields through ``object.__setattr__``), once for nearly every
    decision."""

    #: Whether the server has answered anything since the client started.
    ever_answered: bool = True
    last_answer: float = -math.inf
    last_success: float = -math.inf
    silent_since: float | None = None
    silent_since_wall: datetime | None = None
    #: Whether a check may be held now.
    may_hold: bool = False
    #: Whether this job's checks ride batches now.
    batched: bool = False
    #: The base URL fit to show.
    url: str = ""
    #: Whether an answer of this client's has been read as a status: until then, a 404 or
    #: an answer that is no status may be the route's fault rather than the job's.
    route_known: bool = True
    #: The dialect's name, for messages.
    dialect: str = "sim"
    #: The server is known to neither hint nor hold checks.
    plain: bool = False
    #: Some request has had an outcome other than a 429 (an answer, or none at all) since the
    #: client began: what the server offers may show.
    heard: bool = True
    #: The 429s the client has had, and the requests it has sent.
    refused: int = 0
    requests: int = 0
    #: The retry budget is spent: retries are held back but for one probe a second.
    retries_spent: bool = False
    #: The first failure (an answer or none) since the last success, None after a success.
    failing_since: float | None = None

    def silent_for(self, now: float) -> float:
        return 0.0 if self.silent_since is None else now - self.silent_since

    def failing_for(self, now: float) -> float:
        return 0.0 if self.failing_since is None else now - self.failing_since


class JobRecord:
    """Everything about one job's polling, and nothing else: it ends with the job."""

    __slots__ = (
        "backoff",
        "budget",
        "checks",
        "config",
        "deadline",
        "expected",
        "failed_at",
        "failing",
        "failures",
        "job_id",
        "last",
        "misses",
        "pending_age",
        "random",
        "recovered",
        "refusals",
        "requests",
        "retry_at",
        "retry_backoff",
        "retrying",
        "started",
    )

    def __init__(
        self,
        job_id: str | None,
        config: StatusPollingConfig,
        *,
        started: float,
        random: Callable[[], float],
        deadline: float | None = None,
        expected: float | None = None,
    ) -> None:
        self.job_id = job_id
        #: What the caller expects the job to take, seconds, if it says.
        self.expected = expected
        #: The job's age at its last pending answer (None before one): its duration is longer.
        self.pending_age: float | None = None
        self.config = config
        self.started = started
        if deadline is None:
            deadline = math.inf if config.timeout is None else started + config.timeout
        self.deadline = deadline
        #: Seconds from the start to the deadline.
        self.budget = deadline - started
        self.random = random
        self.backoff = Backoff(config, random)
        # Retries never wait less than half their nominal delay: with full jitter, five retries
        # could otherwise all fall within a second.
        retry_jitter = "equal" if config.jitter == "full" else config.jitter
        self.retry_backoff = Backoff(config, random, jitter=retry_jitter)
        #: Requests sent for the job (failed ones too), and its checks: answers about it.
        self.requests = self.checks = 0
        #: Failures counted towards max_retries (not those of an outage, nor 429s).
        self.failures = 0
        #: 429s in a row since the job's last answer.
        self.refusals = 0
        #: Answers that may show a wrong route (see :func:`missed`).
        self.misses = 0
        #: The failure of the last request, until an answer comes; when it failed, and when
        #: its retry is due.
        self.failing: Transient | None = None
        self.failed_at = self.retry_at = -math.inf
        #: A request failed (a 429 included) and its retry, a short check, has not been
        #: answered yet; the last answer was such a retry's.
        self.retrying = self.recovered = False
        self.last: StatusResponse | None = None

    @property
    def margin(self) -> float:
        return min(LAST_POLL_MARGIN, self.config.request_timeout, max(0.0, self.budget) / 4)

    def hold(self, now: float, server: ServerView) -> int:
        """Seconds to ask the server to hold the next check, 0 for none: whole seconds
        (RFC 7240's delta-seconds), never past the last-check point."""
        if not server.may_hold:
            return 0
        return self.fit_hold(self.config.long_poll, now)

    def fit_hold(self, hold: float, now: float) -> int:
        """``hold`` shortened so that the held check ends by the last-check point."""
        return max(0, int(min(hold, self.deadline - now - self.margin)))

    def fit(self, delay: float, now: float) -> float | None:
        """``delay`` shortened so that no check goes past the last-check point before the
        deadline; None once that point has passed (the last check has been made: what is left
        is to wait for the deadline)."""
        last_at = self.deadline - self.margin
        if now >= last_at:
            return None
        return min(delay, last_at - now)


class Schedule(Protocol):
    """When to check a job: first, and again after it was answered pending. One object per
    client, asked for every job; what it keeps of a job lives in the job's
    :class:`JobRecord`. It is told when a job's status became final (what it may learn from)
    and when the job's polling ended, however it ended."""

    def first(self, job: JobRecord, now: float, server: ServerView) -> Check: ...

    def after_pending(
        self, job: JobRecord, answer: Answer, now: float, server: ServerView
    ) -> Check: ...

    def finished(self, job: JobRecord, now: float) -> None: ...

    def ended(self, job: JobRecord) -> None: ...


# -- after an answer --------------------------------------------------------------------------


def answered(
    job: JobRecord, answer: Answer, now: float, server: ServerView, schedule: Schedule
) -> Action:
    """The server answered about the job. A held batch that came back because another of its
    jobs changed (``answer.woken``) is no check of this one: it is asked again at once, held
    as before (which needs nothing of ``server``: the loop skips building it)."""
    job.recovered = job.retrying
    job.retrying = False
    job.failing = None
    job.failures = job.refusals = 0
    job.retry_backoff.reset()
    if answer.woken:
        return Check(hold=job.fit_hold(answer.held, now))
    job.checks += 1
    job.last = response = StatusResponse(
        status=answer.status,
        job_id=job.job_id,
        elapsed_time=now - job.started,
        checks=job.checks,
        payload=answer.payload,
        retry_after=answer.hint,
        progress=answer.progress,
        eta=answer.eta,
        kept=answer.kept,
    )
    if response.is_final:
        schedule.finished(job, now)
        return Done(response)
    job.pending_age = now - job.started
    limit = job.config.max_attempts
    if limit is not None and job.checks >= limit:
        return Fail(timeout(job, f"still pending after {job.checks} checks (max_attempts)"))
    return schedule.after_pending(job, answer, now, server)


# -- after a failure --------------------------------------------------------------------------


def failed(job: JobRecord, failure: Transient, now: float, server: ServerView) -> Action:
    """A request for the job failed transiently: when to try again, and how; or, when the
    job must end (too many failures of its own, the server silent too long), why."""
    config = job.config
    job.retrying = True
    if failure.miss and not server.route_known:
        url = failure.error.url if failure.error is not None else None
        what = failure.description.partition(": ")[2] or failure.description
        return missed(job, now, server, url=url, what=f"no status ({what})")
    last = job.failing
    if last is not None and last.status_code is None and server.last_success > job.failed_at:
        # The server answered others since this job's last failure, which had no answer: the
        # outage it backed off from is over, and this failure starts a backoff of its own
        # (carried on, it waited up to max_delay after the server came back).
        job.retry_backoff.reset()
    # The retry is held as the check was, while the server may hold (a job's first look is
    # answered at once): a failure now and then says nothing of holding. Held checks that
    # keep failing where short ones get through (a proxy cutting them) are set aside by the
    # server's state, and the retries go short from then on.
    hold = job.hold(now, server) if job.checks else 0
    if failure.status_code == 429:
        # Flow control: not counted.
        job.refusals += 1
        delay = _refusal_wait(job, failure, server)
        return Check(delay=delay, hold=hold, note="asking again (throttled)")
    if failure.hint is not None:
        delay = clamp_hint(failure.hint, config)
    else:
        delay = job.retry_backoff.next_delay()
    if failure.status_code is not None or server.last_answer > job.failed_at:
        # The server answers (this failure, or others since this job's last one).
        if _servers_trouble(job, server):
            job.failures = 0  # the server's trouble breaks the job's own run of failures
            ended = _failing_too_long(job, failure, now, server)
            note = f"retry (every request failing for {_failing_for(job, now, server):.1f} s)"
        else:
            job.failures += 1
            ended = exhausted(job, failure) if job.failures > config.max_retries else None
            note = f"retry {job.failures} of {config.max_retries}"
        if ended is not None:
            return Fail(ended)
    else:
        error = _silence(job, failure, now, server)
        if error is not None:
            return Fail(error)
        delay = _fit_refused(delay, failure, now, server)
        note = f"retry (no answer from the server for {server.silent_for(now):.1f} s)"
    job.failing, job.failed_at, job.retry_at = failure, now, now + delay
    return Check(delay=delay, hold=hold, until_recovery=True, note=note)


def _refusal_wait(job: JobRecord, failure: Transient, server: ServerView) -> float:
    """How long a job waits after a 429: its ``Retry-After``, if it says. Without one, nothing
    while the refusals look random (fewer of the client's requests refused than not, and
    this job's run of them in a row as likely at that share as the rate limiter's binomial
    test allows): the limiter paces every request and finds an overrun, and a refusal at
    random is as likely to pass now as later. Waits growing at each refusal in a row made
    1,000 jobs of 0.5 s take 3.1 times as long at 20% refused (a job or two refused four or
    five times in a row waited 8-15 s). Otherwise the retry backoff, as after a failure: a
    server refusing most requests (a quota spent), or this job over and over."""
    if failure.hint is not None:
        return clamp_hint(failure.hint, job.config)
    share = server.refused / max(1, server.requests)
    if 0 < share < 0.5 and not unlikely(job.refusals, job.refusals, share):
        return 0.0
    return job.retry_backoff.next_delay()


def not_found(job: JobRecord, error: JobNotFound, now: float, server: ServerView) -> Action:
    """The server answered 404 (or 410) for the job: it does not know it, unless no job of
    this client has been answered at this route yet (see :func:`missed`)."""
    if server.route_known:
        return Fail(error)
    return missed(job, now, server, url=error.url, what=str(error.status_code or 404))


def missed(job: JobRecord, now: float, server: ServerView, *, url: str | None, what: str) -> Action:
    """A 404, or an answer that is no status, while no answer of this client has been read as
    a status: the route may be wrong rather than the job (a base URL without its /v1, a
    dialect that does not fit). Asked once more after a short wait (another job's answer may
    meanwhile show the route right, and a passing glitch passes); a second such answer, with
    still no status read from any job, ends the job with :class:`WrongRoute`, within seconds
    rather than after all its retries."""
    job.misses += 1
    if job.misses < 2:
        return Check(delay=job.retry_backoff.next_delay(), note="asking once more")
    asked = f"GET {url}" if url else f"the status route at {server.url}"
    return Fail(
        WrongRoute(
            f"{asked} answered {what} for every job asked (dialect {server.dialect}): "
            "is the base URL or the dialect right?",
            job_id=job.job_id,
            url=url,
            answered=what,
            dialect=server.dialect,
        )
    )


def held_back(job: JobRecord, now: float, server: ServerView) -> Action:
    """The retry budget held the job's retry back (the server fails most requests): when to
    ask again. No request goes unless the budget allows: one probe a second gets through, and
    the first answer wakes every held-back job. While the budget is spent, a held-back job
    sleeps until that answer, its own retry time or its turn to probe (held-back jobs take
    turns), rather than waking every second to ask."""
    if server.last_success >= job.failed_at:
        # The server answers again and the budget is refilling: wait a moment, spread at
        # random so that held-back jobs do not return in one wave.
        return Check(delay=HELD_BACK_SPREAD * job.random(), until_recovery=True)
    failing = job.failing
    assert failing is not None
    if now >= job.retry_at:
        # Nothing has succeeded since this job failed, and its whole backoff has passed that
        # way: an outage, silent or answering failures, ridden through up to outage_timeout.
        if failing.status_code is None and server.silent_since is not None:
            error = _silence(job, failing, now, server)
        else:
            error = _failing_too_long(job, failing, now, server)
        if error is not None:
            return Fail(error)
        job.retry_at = now + _fit_refused(job.retry_backoff.next_delay(), failing, now, server)
    if server.retries_spent:
        # Until the server answers again, this job's own retry time, or its turn to be the
        # probe, whichever comes first: nothing else can let its retry go out.
        return Check(delay=job.retry_at - now, until_recovery=True, until_probe=True)
    # Held back by the retries in flight: room may free up any moment.
    delay = min(job.retry_at - now, HELD_BACK_SPREAD * (0.5 + job.random()))
    return Check(delay=delay, until_recovery=True)


def _servers_trouble(job: JobRecord, server: ServerView) -> bool:
    """Whether a failure answered to the job's request is the server's trouble rather than
    the job's, and so not counted towards ``max_retries``: the server fails most requests
    (the retry budget is spent) and has failed every one since this job's last failure (a
    restart behind a proxy that answers 503 meanwhile). The job rides through it as through
    a silent server (see :func:`_failing_too_long`). A job failing alone spends the budget
    only at 10 failures more than successes, and its failures count until then: one polled
    alone with ``max_retries`` of 10 or more (or a few failing alike) cannot be told from a
    server failing everyone, and rides through as well."""
    return server.retries_spent and server.last_success <= job.failed_at


def _failing_for(job: JobRecord, now: float, server: ServerView) -> float:
    """How long every request has failed, since the job began at most: a failure an hour
    before it (the last jobs of an outage, then an idle client) says nothing of how long the
    server has been failing it."""
    return min(server.failing_for(now), now - job.started)


def _failing_too_long(
    job: JobRecord, failure: Transient, now: float, server: ServerView
) -> RetriesExhausted | None:
    """Every request has failed for ``outage_timeout``: the job ends. Until then it rides
    through, and a retry held back meanwhile counts no failure (it sent nothing). Counted at
    each backoff that passed, 30 jobs held back by the budget through 30 s of 503s all ended
    "6 failures in a row" after 2 requests each."""
    failing_for = _failing_for(job, now, server)
    if failing_for < job.config.outage_timeout:
        return None
    why = f"every request has failed for {failing_for:.1f} s (outage_timeout)"
    return exhausted(job, failure, why=why)


def _silence(
    job: JobRecord, failure: Transient, now: float, server: ServerView
) -> VideoTranslationError | None:
    """The server answers nothing: ride through it, up to ``outage_timeout``; a server never
    reached since the client started (a wrong URL, most likely) is given up on after
    ``max_retries`` retries, as a failing one would be, or after ``REFUSED_GIVE_UP`` seconds
    if it refused every connection (nothing listens there: no use waiting for a time-out)."""
    if not server.ever_answered:
        if failure.refused and server.silent_for(now) >= REFUSED_GIVE_UP:
            return unreachable(job, failure, now, server, never=True, refused=True)
        job.failures += 1
        if job.failures > job.config.max_retries:
            return unreachable(job, failure, now, server, never=True)
    elif server.silent_for(now) >= job.config.outage_timeout:
        return unreachable(job, failure, now, server)
    return None


def _fit_refused(delay: float, failure: Transient, now: float, server: ServerView) -> float:
    """``delay`` cut so that, while no request has ever been answered and connections are
    refused, the next try falls no later than ``REFUSED_GIVE_UP`` after the first failure:
    the try that gives up on the server is made on time."""
    if server.ever_answered or not failure.refused or server.silent_since is None:
        return delay
    return max(0.0, min(delay, server.silent_since + REFUSED_GIVE_UP - now))


# -- verdicts ---------------------------------------------------------------------------------


def verdict(job: JobRecord, now: float, server: ServerView) -> VideoTranslationError:
    """What the deadline means for the job: a timeout if the server's last word on it was
    pending; if its last request failed, that it failed (its status is not known)."""
    failing = job.failing
    if failing is None:
        return timeout(job, f"did not finish within {job.budget:g} s")
    if server.silent_since is not None:
        # The server answers nothing now: whatever this job's last failure was, its retries
        # since met (or were held back by) the silence, and its state is not known.
        return unreachable(job, failing, now, server)
    error = RetriesExhausted(
        f"{job_name(job.job_id)}: the deadline ({job.budget:g} s) passed while "
        f"retrying; the last failure: {failing.description}",
        job_id=job.job_id,
        requests=job.requests,
    )
    error.__cause__ = failing.error or failing
    return error


def timeout(job: JobRecord, why: str) -> PollTimeout:
    last = f"; last status {job.last.status.value}" if job.last else "; no status seen"
    return PollTimeout(
        f"{job_name(job.job_id)} {why}{last}",
        job_id=job.job_id,
        timeout=job.budget if math.isfinite(job.budget) else None,
        last_status=job.last,
    )


def exhausted(job: JobRecord, failure: Transient, *, why: str | None = None) -> RetriesExhausted:
    if why is None:
        why = f"{job.failures} transient failures in a row"
    error = RetriesExhausted(
        f"{job_name(job.job_id)}: {why}, the last: {failure.description}",
        job_id=job.job_id,
        requests=job.requests,
    )
    error.__cause__ = failure.error or failure
    return error


def unreachable(
    job: JobRecord,
    failure: Transient,
    now: float,
    server: ServerView,
    *,
    never: bool = False,
    refused: bool = False,
) -> ServerUnreachable:
    if refused:
        when = (
            f"refused every connection since the client started ({job.requests} "
            f"request{'s' if job.requests != 1 else ''} in "
            f"{server.silent_for(now):.1f} s, the last: {failure.description}): "
            "is the server running, and is the URL right?"
        )
    elif never:
        when = f"has not answered since the client started ({job.failures} requests failed)"
    else:
        since = server.silent_since_wall
        shown = since.astimezone(UTC).strftime("%H:%M:%S UTC") if since else "?"
        when = f"has answered nothing since {shown} ({server.silent_for(now):.1f} s)"
    last = "" if refused else f"; the last failure: {failure.description}"
    error = ServerUnreachable(
        f"{job_name(job.job_id)}: the server at {server.url} {when}{last}",
        job_id=job.job_id,
        requests=job.requests,
        since=server.silent_since_wall,
        reached=not never,
    )
    error.__cause__ = failure.error or failure
    return error
