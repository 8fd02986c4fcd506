"""A shared, adaptive, FIFO token-bucket rate limiter for anyio (trio and asyncio).

No maintained limiter for trio/anyio does what many-job polling needs (a pause until a
server's ``Retry-After``, and a rate that finds the server's own), so this is written here.

- **Token bucket**: ``burst`` tokens, refilled at the current rate; one token per request.
  Over any interval of length t, at most ``burst + rate * t`` acquisitions succeed. With no
  rate (``None``) nothing is paced until the server throttles: from then on, its own rate.
- **FIFO**: callers are served in the order they asked (anyio's ``Lock`` is fair), so no job
  starves behind luckier ones.
- **Pause**: ``pause(seconds)`` stops everyone until then (a 429's ``Retry-After``).
- **Adaptive**: the limiter counts the answers the server accepts (``answered()``) and the
  429s it gets (``throttled()``). Refusals thick enough (``OVERRUN_REFUSALS``, at least
  ``OVERRUN_SHARE`` of requests) show an overrun, and while it lasts the answers accepted per
  second *are* the server's rate, whatever its headers say: at most every ``cooldown``
  seconds the limiter settles just under that measure. A 429 that comes alone is no overrun:
  it lowers nothing and pauses only its own request, unless a probe has gone past the last
  measure (then back under it), or it refutes that measure (refused at the very rate settled
  under it: the measure was taken from refusals at random, or the limit fell; forgotten).
  Without 429s the rate probes upwards, slowly at first and faster the longer no 429 comes
  (``probe`` times the square of the seconds since the last decrease), up to the configured
  rate; each probe that finds the limit where it was makes the next one half as steep. A
  stale or wrong ``RateLimit-Policy`` cannot pin it low, nor can random 429s, and a server
  that raises its limit is found.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import anyio
from anyio.lowlevel import RunVar

from . import _validate as check

_EPSILON = 1e-9
#: The share of the measured server rate the limiter settles at: clocks differ.
MARGIN = 0.97
#: Seconds without a 429 after which an overrun is over: the next 429 starts a new one, whose
#: rate is measured afresh (between overruns the server's bucket refills, and answers then
#: say nothing of its rate). The shortest span a rate is measured over.
OVERRUN_GAP = 2.0
MIN_MEASURE = 0.1
#: Seconds of answers remembered for measuring.
ANSWERS_MEMORY = 5.0
#: A rate climbing past this many requests a second is no limit any more.
UNLIMITED = 1e6
#: A measure within this share of the last one finds the server's rate unchanged.
STABLE = 0.1
#: Refusals that show an overrun, where the measure begins: at least this many in it, and
#: this share of its requests. Random 429s at a few percent of requests rarely come so thick.
OVERRUN_REFUSALS = 5
OVERRUN_SHARE = 0.3
#: How far above the rate it settled at a probe has climbed while it still counts as there.
SETTLED = 0.005


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
    #: Seconds callers spent waiting, summed.
    wait_time: float
    #: Times the rate was lowered.
    decreases: int
    #: Seconds left of a pause, 0 if none.
    paused_for: float
    #: The rate the server was last measured to accept when it throttled, if it has.
    server_rate: float | None


class Limiter(Protocol):
    """What a client asks of its rate limiter: :class:`RateLimiter`, or one of your own
    (``VideoTranslationClient(rate_limiter=...)``), such as a limit shared by many processes."""

    #: The configured rate (requests/s), ``inf`` when unlimited.
    rate: float

    async def acquire(self) -> None:
        """Return when the next request may go."""

    def pause(self, seconds: float) -> None:
        """The server said to wait (a 429's Retry-After): no request for ``seconds``."""

    def answered(self) -> None:
        """The server accepted a request (any answer but a 429)."""

    def throttled(self, quota: float | None = None) -> bool:
        """The server refused a request with 429; ``quota`` is what its policy declares.
        True if every request should wait out the refusal's ``Retry-After`` (``pause``), as
        when the server is overrun; False if only the refused one should (a 429 at random)."""

    def statistics(self) -> RateLimiterStatistics:
        """A snapshot, for ``client.statistics()``."""


class RateLimiter:
    """``await limiter.acquire()`` before each request; share one limiter among many tasks."""

    def __init__(
        self,
        rate: float | None,
        burst: int | None = None,
        *,
        probe: float = 0.002,
        cooldown: float = 0.25,
        min_rate: float | None = None,
    ) -> None:
        check.optional_number("rate", rate, low=0, inclusive=False)
        self.rate = math.inf if rate is None else float(rate)
        if burst is None:
            burst = 1 if rate is None else max(1, math.ceil(self.rate))
        self.burst = check.integer("burst", burst, low=1)
        self.probe = check.number("probe", probe, low=0, inclusive=False)
        #: The probe now: it slows each time a probe finds the server's rate where it was.
        self._probe = self.probe
        self.cooldown = check.number("cooldown", cooldown, low=0)
        self.min_rate = min(self.rate, 1.0) if min_rate is None else min_rate
        self._tokens = float(burst)
        self._updated: float | None = None
        self._current = self.rate
        #: Where the rate climbs back to quickly after a decrease, and probes on from.
        self._target = self.rate
        self._server_rate: float | None = None
        self._decreased_at = -math.inf
        self._paused_until = -math.inf
        #: The first 429 of the current overrun, and the last one.
        self._overrun_since = self._last_throttled = -math.inf
        #: Whether the current overrun has shown itself one (its refusals thick enough to
        #: measure), and whether a probe past the last measure was ended in it.
        self._overrun_shown = self._probe_ended = False
        self._refused: deque[float] = deque()
        #: The rate in force when the current overrun began, and when the one measured
        #: first did: where to go back to if that measure proves no limit.
        self._rate_before = self._before_measure = self.rate
        self._answers: deque[float] = deque()
        # Per event loop: one limiter may serve a trio run and later an asyncio one.
        self._lock: RunVar[anyio.Lock | None] = RunVar("RateLimiter lock", default=None)
        self._acquired = 0
        self._waiting = 0
        self._wait_time = 0.0
        self._decreases = 0

    def __repr__(self) -> str:
        return f"<RateLimiter rate={self.rate:g}/s burst={self.burst}>"

    def current_rate(self) -> float:
        self._refill(anyio.current_time())
        return self._current

    def _burst_now(self) -> float:
        """The bucket's size, shrunk in proportion to a lowered rate: a second's worth of the
        configured rate would overrun the server that made us lower it. (Without a configured
        rate, a lowered one allows no burst.)"""
        if self.rate == math.inf:
            return float(self.burst)
        return max(1.0, self.burst * self._current / self.rate)

    def _refill(self, now: float) -> None:
        if self._current == math.inf:  # no limit, configured or learnt
            self._tokens = float(self.burst)
            self._updated = now
            return
        if self._updated is None:
            self._updated = now
            return
        elapsed = now - max(self._updated, self._paused_until)
        self._updated = max(self._updated, now)
        if elapsed <= 0:
            return
        before = self._current
        if self._current < self._target:
            # Back to just under the server's rate within a cooldown...
            self._current += (self._target - self._current) * min(1.0, elapsed / self.cooldown)
        else:
            # ...then beyond it, slowly at first, faster the longer no 429 comes.
            since = now - self._decreased_at
            self._current = max(self._current, self._target * (1 + self._probe * since * since))
        self._current = min(self.rate, self._current)
        if self._current > UNLIMITED:
            self._current = self.rate
        # The trapezoid: exact for a linear climb, close enough for the rest.
        self._tokens = min(self._burst_now(), self._tokens + elapsed * (before + self._current) / 2)

    async def acquire(self) -> None:
        """Wait for a token, in FIFO order with the other callers."""
        lock = self._lock.get()
        if lock is None:
            lock = anyio.Lock()
            self._lock.set(lock)
        started = anyio.current_time()
        self._waiting += 1
        try:
            async with lock:
                while True:
                    now = anyio.current_time()
                    self._refill(now)
                    wait = self._paused_until - now
                    if wait <= 0:
                        # The tolerance: a refill of 0.02 s x 50/s sums to 0.99999...; waiting
                        # for the missing 1e-16 of a token would be a sleep too short for the
                        # clock to see, forever.
                        if self._tokens >= 1 - _EPSILON:
                            self._tokens = max(0.0, self._tokens - 1)
                            self._acquired += 1
                            return
                        wait = (1 - self._tokens) / self._current
                    await anyio.sleep(wait)
        finally:
            self._waiting -= 1
            self._wait_time += anyio.current_time() - started

    def pause(self, seconds: float) -> None:
        """Nobody acquires for ``seconds`` from now (extends, never shortens, a pause), and no
        tokens gather meanwhile: the server's own bucket is empty, and a burst at the end of
        the pause would only be refused again."""
        now = anyio.current_time()
        self._refill(now)
        self._paused_until = max(self._paused_until, now + max(0.0, seconds))
        # One request goes as the pause ends: the server said it would take one then.
        self._tokens = 1.0

    def answered(self) -> None:
        """The server accepted a request (any answer but a 429): what the rate is measured by."""
        now = anyio.current_time()
        self._answers.append(now)
        _forget_before(self._answers, now - ANSWERS_MEMORY)

    def throttled(self, quota: float | None = None) -> bool:
        """The server said 429: if it is overrun, settle just under the rate it accepts, at
        most once per ``cooldown``; True if it is (every request waits out the pause).

        ``quota``, the rate a ``RateLimit-Policy`` declares, is not trusted: a server that
        misdeclares (or a stale policy) would pin the rate far below what it accepts. The rate
        the server is seen to accept while refusing is the measure, taken while the refusals
        are thick (``OVERRUN_REFUSALS``, ``OVERRUN_SHARE``): a 429 now and then (a proxy's,
        an injected fault's) says nothing of the server's rate, and taking the client's own
        pace at that moment for it would pin the client there. Nor does such a 429 stop every
        request for its ``Retry-After``: only the refused one waits.
        """
        now = anyio.current_time()
        self._refill(now)
        self._refused.append(now)
        _forget_before(self._refused, now - ANSWERS_MEMORY)
        if now - self._last_throttled > OVERRUN_GAP:
            self._overrun_since = now
            self._overrun_shown = self._probe_ended = False
            self._rate_before = self._current
        self._last_throttled = now
        known = self._server_rate
        if known is not None and self._refutes(now, known):
            # Refused while sending at the rate settled under the measure, after a quiet
            # spell: the measure was no limit (the refusals come at random), or the limit
            # fell. Forget it and go back to where the rate was: a limit that fell shows
            # itself again, and is measured afresh.
            self._server_rate = None
            self._probe = self.probe
            self._target = max(self._current, self._before_measure)
            return False
        measured = self._accepted_rate(now)
        if now - self._decreased_at < self.cooldown:
            return self._overrun
        if measured is not None:
            if known is not None and abs(measured - known) <= STABLE * known:
                # Found where it was: probe half as fast next time (cycles grow by sqrt 2).
                self._probe = max(self.probe / 1000, self._probe / 2)
            else:
                self._probe = self.probe
            if known is None:
                self._before_measure = self._rate_before
            self._server_rate = measured
            self._decrease(now, measured * MARGIN)
            return True
        if known is not None and not self._probe_ended:
            # A probe went past the server's rate: back under the last measure, and probe
            # half as fast next time (the limit is most likely where it was).
            self._probe_ended = True
            self._probe = max(self.probe / 1000, self._probe / 2)
            self._decrease(now, known * MARGIN)
        elif known is None and self._overrun_shown and self._current < math.inf:
            # Overrun, and nothing accepted to measure yet: halve, and measure.
            self._decrease(now, self._current / 2)
        return self._overrun

    @property
    def _overrun(self) -> bool:
        """Whether the current overrun is one: refusals thick enough, or past a measure."""
        return self._overrun_shown or self._probe_ended

    def _refutes(self, now: float, known: float) -> bool:
        """Whether this 429, the first after a quiet spell, came while the rate had not moved
        from just under the measure (a limit found there would have refused nothing)."""
        return (
            now == self._overrun_since
            and now - self._decreased_at > OVERRUN_GAP
            and self._current <= known * MARGIN * (1 + SETTLED)
        )

    def _decrease(self, now: float, lowered: float) -> None:
        self._current = max(self.min_rate, min(self._current, lowered))
        self._target = self._current
        self._decreased_at = now
        self._decreases += 1
        # The burst was what got us throttled: start again from an empty bucket (but for the
        # one request a pause lets go at its end).
        self._tokens = min(self._tokens, 1.0 if self._paused_until > now else 0.0)

    def _accepted_rate(self, now: float) -> float | None:
        """Answers per second since the current overrun began, or the rate was last lowered
        in it (the server's bucket empty all along, so this is its rate), over at most the
        last ``ANSWERS_MEMORY`` seconds; None unless the refusals over that time are thick
        enough to say the server is still overrun, and time enough has passed to measure.
        (Thin refusals after a decrease say little: while a pause holds every request, say,
        the answers would measure the pause.)"""
        if not self._overrun_shown:
            self._overrun_shown = self._thick(max(self._overrun_since, now - ANSWERS_MEMORY))
        since = max(self._overrun_since, self._decreased_at, now - ANSWERS_MEMORY)
        if not self._thick(since) or now - since < MIN_MEASURE:
            return None
        # Strictly after: the answers that came with the first 429 were the server's burst.
        accepted = sum(1 for t in self._answers if t > since)
        return accepted / (now - since) if accepted else None

    def _thick(self, since: float) -> bool:
        """Whether the refusals since then are thick enough to show an overrun."""
        refused = sum(1 for t in self._refused if t >= since)
        accepted = sum(1 for t in self._answers if t > since)
        return refused >= OVERRUN_REFUSALS and refused >= OVERRUN_SHARE * (accepted + refused)

    def statistics(self) -> RateLimiterStatistics:
        now = anyio.current_time()
        return RateLimiterStatistics(
            rate=self.rate,
            current_rate=self.current_rate(),
            burst=self.burst,
            acquired=self._acquired,
            waiting=self._waiting,
            wait_time=self._wait_time,
            decreases=self._decreases,
            paused_for=max(0.0, self._paused_until - now),
            server_rate=self._server_rate,
        )


def _forget_before(times: deque[float], oldest: float) -> None:
    while times and times[0] < oldest:
        times.popleft()
