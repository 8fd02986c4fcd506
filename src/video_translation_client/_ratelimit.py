"""A shared, adaptive, FIFO token-bucket rate limiter for anyio (trio and asyncio).

No maintained limiter for trio/anyio does what many-job polling needs (a pause until a
server's ``Retry-After``, and a rate that finds the server's own), so this is written here.

- **Token bucket**: ``burst`` tokens, refilled at the current rate; one token per request.
  Over any interval of length t, at most ``burst + rate * t`` acquisitions succeed. With no
  rate (``None``) nothing is paced until the server throttles: from then on, its own rate.
- **FIFO**: callers are served in the order they asked (anyio's ``Lock`` is fair), so no job
  starves behind luckier ones.
- **Pause**: ``pause(seconds)`` stops everyone until then (a 429's ``Retry-After``).
- **Adaptive**: the limiter counts the answers the server accepts (``answered()``). While it
  overruns the server (429s, ``throttled()``), the answers accepted per second since the first
  429 *are* the server's rate, whatever its headers say: at most every ``cooldown`` seconds the
  limiter settles just under that measure (halving instead when it knows nothing yet; going
  back to the last measure when a new overrun begins). Without 429s it then probes upwards,
  slowly at first and faster the longer no 429 comes (``probe`` times the square of the
  seconds since the last decrease), up to the configured rate; each probe that finds the limit
  where it was makes the next one half as steep. A stale or wrong ``RateLimit-Policy`` cannot
  pin it low, and a server that raises its limit is found.
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

    def throttled(self, quota: float | None = None) -> None:
        """The server refused a request with 429; ``quota`` is what its policy declares."""

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
        while self._answers[0] < now - ANSWERS_MEMORY:
            self._answers.popleft()

    def throttled(self, quota: float | None = None) -> None:
        """The server said 429: settle just under the rate it accepts, at most once per
        ``cooldown``.

        ``quota``, the rate a ``RateLimit-Policy`` declares, is not trusted: a server that
        misdeclares (or a stale policy) would pin the rate far below what it accepts. The rate
        the server is seen to accept while refusing is the measure.
        """
        now = anyio.current_time()
        if now - self._last_throttled > OVERRUN_GAP:
            self._overrun_since = now  # a new overrun begins
        self._last_throttled = now
        if now - self._decreased_at < self.cooldown:
            return
        self._refill(now)
        measured = self._accepted_rate(now)
        if measured is not None:
            known = self._server_rate
            if known is not None and abs(measured - known) <= STABLE * known:
                # Found where it was: probe half as fast next time (cycles grow by sqrt 2).
                self._probe = max(self.probe / 1000, self._probe / 2)
            else:
                self._probe = self.probe
            self._server_rate = measured
            lowered = measured * MARGIN
        elif self._server_rate is not None:
            # A new overrun, nothing measured yet: back to the last measure, and probe half as
            # fast next time (the limit is most likely where it was).
            lowered = self._server_rate * MARGIN
            self._probe = max(self.probe / 1000, self._probe / 2)
        elif self._current < math.inf:
            lowered = self._current / 2  # nothing known yet: halve, and measure
        else:
            # No limit, and nothing known: the 429's pause paces the client until the next
            # 429 of this overrun measures the server's rate.
            return
        self._current = max(self.min_rate, min(self._current, lowered))
        self._target = self._current
        self._decreased_at = now
        self._decreases += 1
        # The burst was what got us throttled: start again from an empty bucket (but for the
        # one request a pause lets go at its end).
        self._tokens = min(self._tokens, 1.0 if self._paused_until > now else 0.0)

    def _accepted_rate(self, now: float) -> float | None:
        """Answers per second since the current overrun began (the server's bucket was empty
        all along, so this is its rate); None with too little to go on yet."""
        span = now - self._overrun_since
        if not MIN_MEASURE <= span <= ANSWERS_MEMORY:
            return None
        # Strictly after: the answers that came with the first 429 were the server's burst.
        accepted = sum(1 for t in self._answers if t > self._overrun_since)
        return accepted / span if accepted else None

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
