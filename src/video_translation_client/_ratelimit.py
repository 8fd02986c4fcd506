"""A shared, adaptive, FIFO token-bucket rate limiter for anyio (trio and asyncio).

No maintained limiter for trio/anyio does what many-job polling needs (a pause until a
server's ``Retry-After``, and a rate that finds the server's own), so this is written here.

**Pacing.** A token bucket: ``burst`` tokens refilled at the rate in force, one per request,
callers served in the order they came (anyio's ``Lock`` is fair). Over any interval of length
t at most ``burst + rate * t`` requests go. With no rate (``None``) nothing is paced until
the server shows a limit.

**What a refusal means** is decided by a test, not by thresholds. The limiter keeps the share
of requests the server refuses *at random* (a proxy's 429s, injected faults): a baseline p0
learnt from every stretch of answers not judged an overrun, from a weak prior of one refusal
in ``PRIOR`` requests. On each 429 it asks how likely the refusals among the last ``WINDOW``
answers (k of n) would be if they came at that baseline: an overrun is declared when the
binomial tail P(X >= k | n, p0) falls below ``ALPHA``. A random refusal only makes its own
request wait (the client sees to that); an overrun pauses every request until the 429's
``Retry-After`` and cuts the rate.

**Cut and climb: CUBIC** (Ha, Rhee, Xu 2008; RFC 9438), as botocore's adaptive retry mode
does for AWS throttling (``botocore/retries/adaptive.py``, ``CubicCalculator``). A cut sets
W_max, the rate the server was seen to accept, and the rate to ``BETA`` * W_max; it then
climbs back along W(n) = W_max * (1 - (1 - BETA) * (1 - n / RECOVERY)^3): concave up to
W_max after ``RECOVERY`` requests, where it lingers, then convex beyond it to find a limit
that was raised. Its clock counts requests the limiter held back, not seconds: a cycle is as
many requests long (and costs the same few 429s) at 2/s as at 2,000/s, and an application
that sends less than the rate allows does not grow it (RFC 9438, section 5.8, on
application-limited flows). At most one cut is on probation at a time, which is the
cooldown: the next cut waits for the verdict on this one.

**What the server accepts** is measured as BBR measures delivery rate (Cardwell et al., "BBR:
Congestion-Based Congestion Control", 2016; its app-limited samples): a sample counts only if
the client was not what held the rate back. Requests accepted after the first 429 of an
overrun, over the time since (the server's bucket empty from then, its burst spent before),
are the server's rate: the refusals show that more was offered than it took, whether the
limiter was pacing or not (unlimited, or set above the demand). Answers without refusals say
nothing of a limit and lower nothing; without a sample, a cut goes from the rate in force.
A ``RateLimit-Policy`` quota is not trusted: a wrong or stale one would pin the rate.

**Probation.** A limit's refusals depend on the client's rate, random ones do not. After a
cut, Wald's sequential probability ratio test weighs the answers that follow: at the lowered
rate a limit would leave only the baseline refused (or, when the cut was not measured, the
share the cut leaves over it), random refusals the share seen before the cut. If the share
did not fall, the cut was noise: the rate goes back to where it was, and the refusals fold
into the baseline, so that random 429s, even at 20% from the first second, are told apart
within a cut or two.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import anyio
from anyio.lowlevel import RunVar

from . import _validate as check

#: The test's level: the chance that refusals at the baseline's share are read as an overrun.
#: Low, because a false overrun pauses every request for a Retry-After (often a whole second)
#: while a late one costs only a 429 or two more.
ALPHA = 1e-3
#: CUBIC's multiplicative decrease (RFC 9438, and botocore's): deep enough that a rate cut
#: from a slightly high measure is still under the limit, shallow enough that the concave
#: climb back keeps the average above 0.9 of it.
BETA = 0.7
#: Requests, counted while the limiter held requests back, for CUBIC to climb back to W_max
#: after a cut. A probe past a steady limit costs about three 429s; a hundred requests
#: before it, and as many more on the convex side, keep that near 2% at any rate.
RECOVERY = 100
#: The baseline's prior: one refusal in this many requests. Weak (a few dozen answers
#: outweigh it), and low enough that three refusals in a row (or a fifth of a window)
#: against a new client are read as an overrun: a real limit is then met at its first 429s.
PRIOR = 20
#: The answers the test looks back over: enough for a refusal share of 15% to stand out from
#: a baseline of a few percent, few enough that the test sees the present.
WINDOW = 50
#: The answers the baseline remembers (older ones fade): random refusals that stopped (a
#: proxy mended) stop excusing a limit's after a few thousand requests.
MEMORY = 2000

#: Refusals in a row that a new client reads as an overrun (not a tuned number: the fewest
#: whose chance at the prior's share, (1 / PRIOR) ** k, is below ALPHA).
OVERRUN_REFUSALS = math.ceil(math.log(ALPHA) / math.log(1 / PRIOR))

# A refill of 0.02 s x 50/s sums to 0.99999...: waiting for the missing 1e-16 of a token
# would be a sleep too short for the clock to see, forever.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    #: The configured rate (requests/s), ``inf`` when unlimited.
    rate: float
    #: The rate in force now, lowered by throttling.
    current_rate: float
    burst: int
    #: Acquisitions granted.
    acquired: int
    #: Callers waiting right now.
    waiting: int
    #: Seconds the line of callers was held for the rate (a token, or a pause), summed: the
    #: time the rate cost, not the time callers spent queued behind one another.
    wait_time: float
    #: Times the rate was cut.
    decreases: int
    #: Seconds left of a pause, 0 if none.
    paused_for: float
    #: The rate the server was last seen to accept when it was overrun (CUBIC's W_max).
    server_rate: float | None
    #: The share of requests the server is taken to refuse at random (the test's baseline).
    random_refusals: float = 0.0


class Limiter(Protocol):
    """What a client asks of its rate limiter: :class:`RateLimiter`, or one of your own
    (``VideoTranslationClient(rate_limiter=...)``), such as a limit shared by many processes.

    The client reports each request's outcome and nothing else: whether a refusal means the
    server is overrun (and every request should wait out its ``Retry-After``) or is one at
    random (only the refused request waits, which the client sees to) is the limiter's call.
    """

    #: The configured rate (requests/s), ``inf`` when unlimited.
    rate: float

    async def acquire(self) -> None:
        """Return when the next request may go."""

    def accepted(self) -> None:
        """The server took a request (any answer but a 429)."""

    def refused(self, retry_after: float | None = None, quota: float | None = None) -> None:
        """The server refused a request with 429. ``retry_after`` is its hint (seconds,
        already bounded by the client's ``max_hint``), ``quota`` the rate its
        ``RateLimit-Policy`` declares, if it says."""

    def statistics(self) -> RateLimiterStatistics:
        """A snapshot, for ``client.statistics()``."""


@dataclass(slots=True)
class _Cut:
    """A cut on probation, and the likelihood ratio of "the refusals were random" to "they
    were a limit" over the answers since."""

    #: CUBIC's (W_max, clock) before the cut: where noise sends the rate back to.
    before: tuple[float | None, int]
    #: The refusals and answers of the window that showed the overrun.
    shown: tuple[int, int]
    #: The refused share if the refusals are random (as before), and if they are a limit.
    random: float
    limit: float
    #: Answers still due to requests sent before the cut: they say nothing of it.
    skip: int
    log_ratio: float = 0.0
    refused: int = 0
    answers: int = 0


class RateLimiter:
    """``await limiter.acquire()`` before each request; share one limiter among many tasks."""

    def __init__(self, rate: float | None, burst: int | None = None) -> None:
        check.optional_number("rate", rate, low=0, inclusive=False)
        self.rate = math.inf if rate is None else float(rate)
        if burst is None:
            burst = 1 if rate is None else max(1, math.ceil(self.rate))
        self.burst = check.integer("burst", burst, low=1)
        self._tokens = float(burst)
        self._updated: float | None = None
        self._paused_until = -math.inf
        #: CUBIC: the rate at the last cut (None: never cut) and requests held back since.
        self._w_max: float | None = None
        self._grown = 0
        #: The last ``WINDOW`` answers, (time, refused), outside a cut's probation.
        self._window: deque[tuple[float, bool]] = deque()
        #: The baseline: refusals and answers not judged an overrun (decayed to ``MEMORY``).
        self._base = (0.0, 0.0)
        self._cut: _Cut | None = None
        #: Requests granted and not answered yet (as far as anyone reports).
        self._outstanding = 0
        # Per event loop: one limiter may serve a trio run and later an asyncio one, and each
        # run's clock starts anywhere (see _now).
        self._lock: RunVar[anyio.Lock | None] = RunVar("RateLimiter lock", default=None)
        self._run: RunVar[bool] = RunVar("RateLimiter run", default=False)
        self._acquired = 0
        self._waiting = 0
        self._wait_time = 0.0
        self._decreases = 0

    def __repr__(self) -> str:
        return f"<RateLimiter rate={self.rate:g}/s burst={self.burst}>"

    # -- time ----------------------------------------------------------------------------------

    def _now(self) -> float:
        """The running loop's clock. A new run (a second ``trio.run``) has a clock of its own,
        started anywhere: what was timed on the last one (the bucket's refill, a pause, the
        answers of the window, requests in flight) is dropped; what was learnt (the rate, the
        baseline) is kept."""
        now = anyio.current_time()
        if not self._run.get():
            self._run.set(True)
            self._updated = None
            self._paused_until = -math.inf
            self._window.clear()
            self._cut = None
            self._outstanding = 0
        return now

    # -- pacing ----------------------------------------------------------------------------------

    def current_rate(self) -> float:
        """The rate in force: the configured one, or CUBIC's curve since the last cut."""
        if self._w_max is None:
            return self.rate
        ramp = 1 - self._grown / RECOVERY
        return min(self.rate, self._w_max * (1 - (1 - BETA) * ramp**3))

    def _burst_now(self, rate: float) -> float:
        """The bucket's size, shrunk in proportion to a lowered rate: a second's worth of the
        configured rate would overrun the server that made us lower it. (Without a configured
        rate, a lowered one allows no burst.)"""
        if self.rate == math.inf:
            return float(self.burst)
        return max(1.0, self.burst * rate / self.rate)

    def _refill(self, now: float, rate: float) -> None:
        if self._updated is None or rate == math.inf:
            self._tokens = max(self._tokens, 1.0) if rate < math.inf else float(self.burst)
            self._updated = now
            return
        # No tokens gather during a pause: the server's bucket is empty, and a burst at its
        # end would only be refused again.
        elapsed = now - max(self._updated, self._paused_until)
        self._updated = max(self._updated, now)
        if elapsed > 0:
            self._tokens = min(self._burst_now(rate), self._tokens + elapsed * rate)

    async def acquire(self) -> None:
        """Wait for a token, in FIFO order with the other callers."""
        lock = self._lock.get()
        if lock is None:
            lock = anyio.Lock()
            self._lock.set(lock)
        self._waiting += 1
        try:
            async with lock:
                held = False
                while True:
                    now = self._now()
                    rate = self.current_rate()
                    self._refill(now, rate)
                    wait = self._paused_until - now
                    if wait <= 0:
                        if self._tokens >= 1 - _EPSILON:
                            self._tokens = max(0.0, self._tokens - 1)
                            # Held back, or others behind: the rate, not the application, set
                            # the pace, and only such requests advance CUBIC's clock.
                            self._granted(held or self._waiting > 1)
                            return
                        wait = (1 - self._tokens) / rate
                    held = True
                    try:
                        await anyio.sleep(wait)
                    finally:
                        self._wait_time += anyio.current_time() - now
        finally:
            self._waiting -= 1

    def _granted(self, limited: bool) -> None:
        self._acquired += 1
        self._outstanding += 1
        if limited and self._w_max is not None:
            self._grown += 1

    # -- outcomes ----------------------------------------------------------------------------

    def accepted(self) -> None:
        """The server accepted a request (any answer but a 429)."""
        self._answered(self._now(), refused=False)

    def refused(self, retry_after: float | None = None, quota: float | None = None) -> None:
        """A 429. ``quota`` is not used: a server that misdeclares it, or a stale policy,
        would pin the rate far from what the server accepts, which is measured instead."""
        now = self._now()
        self._answered(now, refused=True)
        if self._cut is None and self._window and self._overrun():
            self._cut_rate(now, retry_after)

    def _answered(self, now: float, *, refused: bool) -> None:
        self._outstanding = max(0, self._outstanding - 1)
        cut = self._cut
        if cut is not None:
            if cut.skip:
                cut.skip -= 1
            else:
                self._weigh(cut, refused)
            return
        self._window.append((now, refused))
        if len(self._window) > WINDOW:
            _, old = self._window.popleft()
            self._fold(int(old), 1)

    def _baseline(self) -> float:
        refused, answers = self._base
        return (refused + 1) / (answers + PRIOR)

    def _fold(self, refused: int, answers: int) -> None:
        """Answers not judged an overrun join the baseline; the oldest fade past ``MEMORY``."""
        old_refused, old_answers = self._base
        total = old_answers + answers
        keep = min(1.0, MEMORY / total) if total else 1.0
        self._base = ((old_refused + refused) * keep, total * keep)

    def _overrun(self) -> bool:
        """Whether the window's refusals are too many for the baseline: the binomial test."""
        refused = sum(1 for _, r in self._window if r)
        return _binomial_tail(refused, len(self._window), self._baseline()) < ALPHA

    def _measure(self, now: float) -> float | None:
        """The rate the server accepted since the window's first refusal (its bucket empty
        from then), or None if too little was accepted to tell."""
        first = next(t for t, r in self._window if r)
        accepted = sum(1 for t, r in self._window if not r and t > first)
        return accepted / (now - first) if accepted >= 2 else None

    def _cut_rate(self, now: float, retry_after: float | None) -> None:
        """An overrun: every request waits out its ``retry_after``, and the rate is cut to
        ``BETA`` times what the server accepted (or the rate in force, unmeasured)."""
        refused = sum(1 for _, r in self._window if r)
        answers = len(self._window)
        measured = self._measure(now)
        self._window.clear()  # an overrun's answers are no baseline
        if retry_after is not None:
            self._paused_until = max(self._paused_until, now + retry_after)
        rate = self.current_rate()
        w_max = rate if measured is None else min(rate, measured)
        if w_max == math.inf:
            return  # unlimited, nothing measured yet: the pause alone, until a measure
        # The share of refusals a limit would leave at BETA * w_max: the baseline, or, if
        # unmeasured, what is left over a limit at the accepted share of w_max.
        shown = min(refused / answers, 1 - 0.5 / answers)
        known = measured if measured is not None else w_max * (1 - shown)
        limit = max(self._baseline(), 1 - known / (BETA * w_max))
        self._cut = _Cut(
            before=(self._w_max, self._grown),
            shown=(refused, answers),
            random=shown,
            limit=limit,
            skip=min(self._outstanding, WINDOW),
        )
        self._w_max, self._grown = w_max, 0
        self._decreases += 1
        # The burst was what got us refused: start again from an empty bucket (but for the
        # one request a pause lets go at its end: the server said it would take one then).
        self._tokens = min(self._tokens, 1.0 if retry_after else 0.0)
        if limit >= shown:
            self._cut = None  # nothing the answers could tell: the cut stands

    def _weigh(self, cut: _Cut, refused: bool) -> None:
        """Wald's SPRT on one answer after a cut: random refusals keep their share, a limit's
        fall to ``cut.limit``. Undecided after 4 windows of answers, the cut stands."""
        cut.answers += 1
        cut.refused += refused
        if refused:
            cut.log_ratio += math.log(cut.random / cut.limit)
        else:
            cut.log_ratio += math.log((1 - cut.random) / (1 - cut.limit))
        bound = math.log(1 / ALPHA)
        if cut.log_ratio >= bound:  # the share did not fall: noise
            self._cut = None
            self._w_max, self._grown = cut.before
            self._fold(cut.shown[0] + cut.refused, cut.shown[1] + cut.answers)
        elif cut.log_ratio <= -bound or cut.answers >= 4 * WINDOW:
            self._cut = None
            if cut.limit <= self._baseline():  # under the limit: what is left is random
                self._fold(cut.refused, cut.answers)

    def statistics(self) -> RateLimiterStatistics:
        now = self._now()
        return RateLimiterStatistics(
            rate=self.rate,
            current_rate=self.current_rate(),
            burst=self.burst,
            acquired=self._acquired,
            waiting=self._waiting,
            wait_time=self._wait_time,
            decreases=self._decreases,
            paused_for=max(0.0, self._paused_until - now),
            server_rate=self._w_max,
            random_refusals=self._baseline(),
        )


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed from the tail (exact for small values)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
