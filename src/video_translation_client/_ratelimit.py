"""A shared, adaptive, FIFO token-bucket rate limiter for anyio (trio and asyncio).

No maintained limiter for trio/anyio does what many-job polling needs (a pause until a
server's ``Retry-After``, and a rate that backs off on 429s), so this is written here.

- **Token bucket**: ``burst`` tokens, refilled at ``rate`` per second; one token per request.
  Over any interval of length t, at most ``burst + rate * t`` acquisitions succeed.
- **FIFO**: callers are served in the order they asked (anyio's ``Lock`` is fair), so no job
  starves behind luckier ones.
- **Pause**: ``pause(seconds)`` stops everyone until then (a 429's ``Retry-After``).
- **Adaptive** (AIMD, as TCP congestion control and AWS SDKs' adaptive retry mode): each
  ``throttled()`` multiplies the rate by ``decrease`` (0.7, CUBIC's factor; at most once per
  ``cooldown``), and the rate climbs back linearly, by ``recovery`` (a tenth) of the configured
  rate per second, to the configured rate. A server that never throttles sees the full rate.
- **Declared quota**: ``throttled(quota)``, with the rate a 429's ``RateLimit-Policy`` allows,
  sets the rate to 95% of it and makes that the ceiling: a server that states its limit is not
  probed for it again and again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import anyio
from anyio.lowlevel import RunVar

_EPSILON = 1e-9
#: The share of a server's declared quota the limiter keeps to: its clock and ours differ.
QUOTA_MARGIN = 0.95


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


class RateLimiter:
    """``await limiter.acquire()`` before each request; share one limiter among many tasks."""

    def __init__(
        self,
        rate: float | None,
        burst: int | None = None,
        *,
        decrease: float = 0.7,
        recovery: float = 0.1,
        cooldown: float = 1.0,
        min_rate: float | None = None,
    ) -> None:
        if rate is not None and not (isinstance(rate, int | float) and 0 < rate < math.inf):
            raise ValueError(f"rate must be a finite number > 0 or None, got {rate!r}")
        self.rate = math.inf if rate is None else float(rate)
        if burst is None:
            burst = 1 if rate is None else max(1, math.ceil(self.rate))
        if not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an integer >= 1, got {burst!r}")
        if not 0 < decrease < 1:
            raise ValueError(f"decrease must be in (0, 1), got {decrease!r}")
        if not recovery > 0:
            raise ValueError(f"recovery must be > 0, got {recovery!r}")
        self.burst = burst
        self.decrease = decrease
        self.recovery = recovery
        self.cooldown = cooldown
        self.min_rate = min(self.rate, 1.0) if min_rate is None else min_rate
        self._tokens = float(burst)
        self._updated: float | None = None
        self._current = self.rate
        #: The highest rate allowed: the configured one, or less if the server said so.
        self._ceiling = self.rate
        self._floor_rate = self.rate  # the rate the last decrease left, recovery starts here
        self._decreased_at = -math.inf
        self._paused_until = -math.inf
        # Per event loop: one limiter may serve a trio run and later an asyncio one.
        self._lock: RunVar[anyio.Lock | None] = RunVar("RateLimiter lock", default=None)
        self._acquired = 0
        self._waiting = 0
        self._wait_time = 0.0
        self._decreases = 0

    def __repr__(self) -> str:
        return f"<RateLimiter rate={self.rate:g}/s burst={self.burst}>"

    def current_rate(self, now: float | None = None) -> float:
        if self.rate == math.inf:
            return self.rate
        now = anyio.current_time() if now is None else now
        if self._current >= self._ceiling:
            return self._ceiling
        climbed = self._floor_rate + self.recovery * self.rate * max(0.0, now - self._decreased_at)
        return min(self._ceiling, climbed)

    def _burst_now(self) -> float:
        """The bucket's size, shrunk in proportion when a server's quota lowered the ceiling:
        a second's worth of the configured rate would overrun the server's own bucket."""
        return max(1.0, self.burst * self._ceiling / self.rate)

    def _refill(self, now: float) -> None:
        if self._updated is None:
            self._updated = now
            return
        if self.rate == math.inf:
            self._tokens = float(self.burst)
        else:
            # Integrate the recovering rate over the elapsed time; the trapezoid is exact
            # for a linear climb and close enough where it meets the cap.
            elapsed = max(0.0, now - self._updated)
            mean = (self.current_rate(self._updated) + self.current_rate(now)) / 2
            self._tokens = min(self._burst_now(), self._tokens + elapsed * mean)
        self._current = self.current_rate(now)
        self._updated = now

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
        """Nobody acquires for ``seconds`` from now (extends, never shortens, a pause)."""
        self._paused_until = max(self._paused_until, anyio.current_time() + max(0.0, seconds))

    def throttled(self, quota: float | None = None) -> None:
        """The server said 429: lower the rate, at most once per ``cooldown``.

        With ``quota``, the rate the server's ``RateLimit-Policy`` allows, the rate drops to
        just under it and never climbs above it again, instead of being cut blindly: a
        server that says its limit is never asked to repeat it.
        """
        if self.rate == math.inf:
            return
        now = anyio.current_time()
        if quota is not None and quota * QUOTA_MARGIN < self._ceiling:
            self._refill(now)
            self._ceiling = max(self.min_rate, quota * QUOTA_MARGIN)
            self._floor_rate = self._current = min(self._current, self._ceiling)
            self._decreased_at = now
            self._decreases += 1
            self._tokens = min(self._tokens, 0.0)
            return
        if now - self._decreased_at < self.cooldown:
            return
        self._refill(now)
        self._floor_rate = max(self.min_rate, self._current * self.decrease)
        self._current = self._floor_rate
        self._decreased_at = now
        self._decreases += 1
        # The burst was what got us throttled: start again from an empty bucket.
        self._tokens = min(self._tokens, 0.0)

    def statistics(self) -> RateLimiterStatistics:
        now = anyio.current_time()
        return RateLimiterStatistics(
            rate=self.rate,
            current_rate=self.current_rate(now),
            burst=self.burst,
            acquired=self._acquired,
            waiting=self._waiting,
            wait_time=self._wait_time,
            decreases=self._decreases,
            paused_for=max(0.0, self._paused_until - now),
        )
