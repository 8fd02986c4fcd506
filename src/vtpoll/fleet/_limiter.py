"""The fleet's one rate limit toward the status API, shared by every worker through Redis.

Each request takes one of the fleet's slots (a GCRA kept in Redis: a slot is never denied, the
caller waits for it), so N workers together never exceed the rate. A worker reserves its slots
in blocks, as many as it used in the last ``BLOCK_SPAN`` seconds or has callers waiting for (at
most the fleet's rate over that span): one Redis call serves many requests at a high rate (at
1,000 requests/s a worker reserves up to 100 at once), and a slot reserved but not used is lost
to the fleet only within a block. A 429's Retry-After pauses every worker, and a quota the
server declares lowers the fleet's rate, both written to Redis by
:meth:`FleetRateLimiter.publish` (the client reports them synchronously; Redis is reached from
a task of the worker's own).
"""

from __future__ import annotations

import math
from collections import deque

import anyio

from video_translation_client import RateLimiterStatistics

from ._redis import Fleet

#: Seconds of this worker's demand a block of slots covers.
BLOCK_SPAN = 0.1


class FleetRateLimiter:
    """A client's rate limiter (``VideoTranslationClient(rate_limiter=...)``) for a fleet."""

    def __init__(self, fleet: Fleet, rate: float, burst: int | None = None) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        self.fleet = fleet
        self.rate = float(rate)
        # Evenly spaced slots by default: requests delayed on their way (a busy worker, a
        # slow network) bunch up at the server, and a burst of the fleet's own would add to
        # that; the server's bucket then absorbs the bunching.
        self.burst = burst if burst is not None else 1
        self._paused_until = -math.inf
        self._to_publish: tuple[float | None, float | None] | None = None
        self._wake = anyio.Event()
        self._acquired = self._waiting = 0
        self._wait_time = 0.0
        #: Slots reserved and not used yet (times on this worker's clock).
        self._slots: deque[float] = deque()
        #: When the last acquisitions were granted, for the next block's size.
        self._recent: deque[float] = deque()
        self.reservations = 0
        self._interval = 1 / self.rate
        self._lock = anyio.Lock()

    async def acquire(self) -> None:
        started = anyio.current_time()
        self._waiting += 1
        try:
            # In order: a block's slots go to the callers in the order they came.
            async with self._lock:
                # A pause this worker learnt of holds it at once, before Redis has heard of it.
                await anyio.sleep(max(0.0, self._paused_until - started))
                # Slots left over from a block while demand paused have passed: used now, they
                # would all go at once, over the rate. (Those a span late at most are used: a
                # worker busy with its own CPU wakes late for each, and dropping them would
                # cost a Redis call for each few requests.)
                stale = anyio.current_time() - BLOCK_SPAN
                while self._slots and self._slots[0] < stale:
                    self._slots.popleft()
                if not self._slots:
                    await self._reserve()
                await anyio.sleep(max(0.0, self._slots.popleft() - anyio.current_time()))
                self._acquired += 1
                now = anyio.current_time()
                self._recent.append(now)
                while self._recent[0] < now - BLOCK_SPAN:
                    self._recent.popleft()
        finally:
            self._waiting -= 1
            self._wait_time += anyio.current_time() - started

    async def _reserve(self) -> None:
        # Demand is what was used in the last span, or the callers waiting now, whichever is
        # more: a worker slowed by its own CPU uses fewer slots a span than it has callers for,
        # and blocks sized by use alone would shrink into a Redis call a request.
        demand = max(len(self._recent), self._waiting)
        size = max(1, min(demand, math.ceil(self.rate * BLOCK_SPAN)))
        wait, interval = await self.fleet.reserve(self.rate, self.burst, size)
        self._interval = interval
        self.reservations += 1
        first = anyio.current_time() + wait
        self._slots.extend(first + k * interval for k in range(size))

    def refused(self, retry_after: float | None = None, quota: float | None = None) -> None:
        """Every worker waits out a 429's pause: the fleet's rate is set, not measured, so it
        has nothing to tell a refusal at random from an overrun by."""
        if retry_after is not None:
            self._paused_until = max(self._paused_until, anyio.current_time() + retry_after)
        if retry_after is not None or quota is not None:
            self._publish(pause=retry_after, quota=quota)

    def accepted(self) -> None:
        """Nothing to learn: the fleet's rate is set, not measured."""

    def _publish(self, *, pause: float | None = None, quota: float | None = None) -> None:
        old_pause, old_quota = self._to_publish or (None, None)
        if old_pause is not None and (pause is None or old_pause > pause):
            pause = old_pause
        self._to_publish = (pause, quota if quota is not None else old_quota)
        self._wake.set()

    async def publish(self) -> None:
        """Run for the worker's life: hand each pause and quota learnt to the whole fleet."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            if self._to_publish is not None:
                (pause, quota), self._to_publish = self._to_publish, None
                await self.fleet.throttled(pause, quota)

    def statistics(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(
            rate=self.rate,
            current_rate=self.rate,
            burst=self.burst,
            acquired=self._acquired,
            waiting=self._waiting,
            wait_time=self._wait_time,
            decreases=0,
            paused_for=max(0.0, self._paused_until - anyio.current_time()),
            server_rate=None,
        )
