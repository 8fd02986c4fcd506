"""What one client knows of its server, kept for as long as the client lives.

One :class:`ServerState` per client, whatever calls it and whether it is entered or not: the
server's health, the rate limiter, the retry budget, what the server offers (a batch route,
held checks) and the counters. Every request's outcome reaches it through one method,
:meth:`ServerState.record`, which updates all of them; nothing else writes them.

What the server offers is learnt once and relearnt when it changes (:class:`Offer`): a route
that is missing stays off; one that misbehaves (a batch route whose answers are not batches,
held checks that fail while short ones succeed) is set aside and tried again later, after a
pause that doubles each time it misbehaves again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

import anyio

from ._budget import RetryBudget
from ._models import Outcome
from ._ratelimit import Limiter

#: Seconds a misbehaving route is set aside before it is tried again; doubled each time it
#: misbehaves again, up to ``RETRY_ROUTE_MAX``. A minute: a proxy's hiccup is over by then,
#: and a route that really is broken costs one failed request a minute at most, then fewer.
RETRY_ROUTE_AFTER = 60.0
RETRY_ROUTE_MAX = 3600.0
#: Batch answers in a row that are not batches before the route counts as misbehaving: one
#: now and then is a glitch (a proxy's hiccup, an injected fault) for a retry to get past.
MALFORMED_IN_A_ROW = 3
#: Held checks failing with no held one succeeding between them, while a short one does,
#: before held checks count as misbehaving: a server failing a few percent of requests at
#: random fails a held one now and then, and that says nothing of holding.
HELD_FAILURES = 3


class Result(Enum):
    """What became of one request, as far as the server's state is concerned."""

    #: An answer that is no failure: a status, or a refusal that is the job's own (404, 401).
    ANSWERED = "answered"
    #: An HTTP answer that is a transient failure (5xx, a malformed body).
    FAILED = "failed"
    #: A 429.
    REFUSED = "refused"
    #: No HTTP answer at all (connection refused or dropped, a time-out).
    SILENT = "silent"


@dataclass(slots=True)
class Counters:
    """A client's running counts, snapshotted by ``statistics()``. Each word is defined once,
    in the library guide's glossary: a *request* is one HTTP request (a batch is one); a *check* is
    one job's status asked in a request that answered about it; a *retry* is a request sent
    again after a failure."""

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

    __slots__ = (
        "failing_since",
        "last_answer",
        "last_success",
        "silent_since",
        "silent_since_wall",
    )

    def __init__(self) -> None:
        self.last_answer = -math.inf
        self.last_success = -math.inf
        self.silent_since: float | None = None
        self.silent_since_wall: datetime | None = None
        #: The first failure since the last success (a 429 is none: flow control).
        self.failing_since: float | None = None

    @property
    def ever_answered(self) -> bool:
        return self.last_answer > -math.inf

    def answered(self, now: float, *, success: bool) -> None:
        self.last_answer = now
        if success:
            self.last_success = now
            self.failing_since = None
        self.silent_since = self.silent_since_wall = None

    def failed(self, now: float) -> None:
        if self.failing_since is None:
            self.failing_since = now

    def no_answer(self, now: float) -> None:
        self.failed(now)
        if self.silent_since is None:
            self.silent_since = now
            self.silent_since_wall = datetime.now(UTC)

    def silent_for(self, now: float) -> float:
        return 0.0 if self.silent_since is None else now - self.silent_since


class Offer:
    """Whether the server offers something (a batch route, held checks): None while unknown,
    then True or False. False because it is missing lasts; False because it misbehaved lasts
    until :attr:`retry_at`, after which it is unknown again and relearnt."""

    __slots__ = ("_known", "_pause", "retry_at")

    def __init__(self, known: bool | None = None) -> None:
        self._known = known
        self.retry_at = math.inf
        self._pause = RETRY_ROUTE_AFTER

    def known(self, now: float) -> bool | None:
        if self._known is False and now >= self.retry_at:
            self._known, self.retry_at = None, math.inf  # set aside long enough: try again
        return self._known

    def works(self) -> None:
        self._known = True
        self._pause = RETRY_ROUTE_AFTER

    def missing(self) -> None:
        self._known, self.retry_at = False, math.inf

    def misbehaves(self, now: float) -> None:
        """Set it aside for a while; each time again, for twice as long."""
        if self._known is False:
            return
        self._known, self.retry_at = False, now + self._pause
        self._pause = min(RETRY_ROUTE_MAX, self._pause * 2)


class ServerState:
    """One client's knowledge of its server (see the module's docstring)."""

    def __init__(
        self, limiter: Limiter, *, batch: bool | None, long_poll: bool, budget: RetryBudget
    ) -> None:
        self.limiter = limiter
        self.budget = budget
        self.health = Health()
        self.counters = Counters()
        #: ``batch=False`` turns the route off for good; True or None start from what is said.
        self.batch = Offer(batch)
        if batch is False:
            self.batch.missing()
        self.holds = Offer()
        if not long_poll:
            self.holds.missing()
        #: Whether the server hints when to ask again on a pending job.
        self.hints = Offer()
        #: A check is finding out whether the server holds checks (one at a time).
        self.probing_hold = False
        #: An answer has been read as a status: the route and the dialect fit.
        self.route_known = False
        #: Some request has had an outcome other than a 429 (an answer, or none at all): a
        #: refusal shows nothing of what the server offers.
        self.told = False
        #: Batch answers in a row that were no batches.
        self._malformed = 0
        #: Held checks failed with an HTTP answer (a proxy's 504) since one last succeeded,
        #: and when the last did: short checks that succeed meanwhile show that the held route
        #: is the trouble. (No answer at all is an outage, not the route.)
        self._held_failures = 0
        self._held_failed = -math.inf
        self._recovered: anyio.Event | None = None
        self._heard: anyio.Event | None = None
        #: Held-back jobs waiting for the recovery or their turn to probe (see
        #: :meth:`probe_turn`), and the turn they take one at a time.
        self._held: set[anyio.CancelScope] = set()
        self._turn: anyio.Lock | None = None

    # -- what the next check may do ----------------------------------------------------------

    def may_hold(self, now: float) -> bool:
        """Whether a check may ask the server to hold it: the server holds (or it is not known
        yet and no other check is finding out)."""
        known = self.holds.known(now)
        return known is True or (known is None and not self.probing_hold)

    def may_batch(self, now: float) -> bool:
        return self.batch.known(now) is not False

    def batch_malformed(self, now: float) -> bool:
        """A batch answer was no batch: whether the route now counts as misbehaving (and is
        set aside for a while)."""
        self._malformed += 1
        if self._malformed < MALFORMED_IN_A_ROW:
            return False
        self._malformed = 0
        self.batch.misbehaves(now)
        return True

    def batch_answered(self) -> None:
        self._malformed = 0
        self.batch.works()

    # -- outcomes ----------------------------------------------------------------------------

    def record(
        self,
        result: Result,
        now: float,
        *,
        held: bool = False,
        retry_after: float | None = None,
        quota: float | None = None,
    ) -> None:
        """The one place a request's outcome updates the limiter, the retry budget, the
        server's health, what it offers and the counters."""
        if self._heard is not None:
            self._heard.set()
            self._heard = None
        if result is Result.REFUSED:
            self.counters.throttled += 1
            self.limiter.refused(retry_after, quota)
            self.health.answered(now, success=False)
            return
        self.told = True
        if result is Result.SILENT:
            self.budget.record_failure()
            self.health.no_answer(now)
            return
        self.limiter.accepted()
        if result is Result.FAILED:
            self.budget.record_failure()
            self.health.answered(now, success=False)
            self.health.failed(now)
            if held:
                self._held_failures += 1
                self._held_failed = now
            return
        if self.budget.spent:
            if self._recovered is not None:
                self._recovered.set()
                self._recovered = None
            for waiting in self._held:
                waiting.cancel()
            self._held.clear()
        self.budget.record_success()
        self.health.answered(now, success=True)
        if held:
            self._held_failures = 0
        elif self._held_failures >= HELD_FAILURES and self._held_failed <= now:
            # Held checks keep failing where short ones get through (a proxy cutting held
            # requests): check at once for a while, and try holding again later.
            self._held_failures = 0
            self.holds.misbehaves(now)

    def learnt(self, *, applied: bool, asked: int | None, final: bool, hint: bool) -> None:
        """Learn from an answer what the server offers. Whether it honours ``Prefer: wait``:
        it says so when it applied it (RFC 7240's Preference-Applied, ``wait=0`` included); a
        pending answer that does not say so means it does not hold (a final one may simply
        not mention it). Whether it hints: a pending answer says when to ask again, or not."""
        if asked is not None:
            if applied:
                self.holds.works()
            elif not final:
                self.holds.missing()
        if not final:
            if hint:
                self.hints.works()
            elif self.hints.known(-math.inf) is None:
                self.hints.missing()

    async def heard(self) -> None:
        """Until the next request's outcome."""
        if self._heard is None:
            self._heard = anyio.Event()
        await self._heard.wait()

    async def recovered(self) -> None:
        """Until the server answers again while the retry budget is spent."""
        if self._recovered is None:
            self._recovered = anyio.Event()
        await self._recovered.wait()

    async def probe_turn(self) -> bool:
        """Until this held-back job's turn to be the retry budget's next probe, False; or until
        the server answers again while the budget is spent, True. Held-back jobs take turns in
        the order they came, one at a time waiting for the probe's time: the others sleep
        until then (or until their own retry time, which their caller's scope sets)."""
        if self._turn is None:
            self._turn = anyio.Lock()
        with anyio.CancelScope() as scope:
            self._held.add(scope)
            try:
                async with self._turn:
                    await anyio.sleep_until(self.budget.next_probe)
            finally:
                self._held.discard(scope)
        return scope.cancel_called

    def new_run(self) -> None:
        """A session opens, maybe under another event loop: an event made under the last one
        cannot be waited on here."""
        self._recovered = self._heard = None
        self._turn = None
        self._held.clear()
        # Times on the last loop's clock, which this one does not share.
        self.health.failing_since = None
