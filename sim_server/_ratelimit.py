"""Server-side rate limit: one token bucket per API key, else per client address."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

#: Above this many tracked clients, buckets that have refilled completely are forgotten:
#: a full bucket is the same as no bucket, so forgetting loses nothing.
_PRUNE_ABOVE = 10_000


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int
    #: Seconds until the next token (when refused) or until the bucket is full again.
    reset: float


class TokenBuckets:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def take(self, key: str) -> Decision:
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        # max(0, ...): a wall clock stepped backwards must not drain the bucket.
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) > _PRUNE_ABOVE:
            self._prune(now)
        self._buckets[key] = (tokens, now)
        # Refused: time to the next whole token. Allowed: time until the bucket is full again.
        reset = ((self.burst - tokens) if allowed else (1.0 - tokens)) / self.rate
        return Decision(allowed, math.floor(tokens), reset)

    def _prune(self, now: float) -> None:
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]

    def policy_header(self) -> str:
        """``RateLimit-Policy`` (draft-ietf-httpapi-ratelimit-headers): the quota, requests
        per window of ``w`` seconds, is the rate (the burst is how far it may be run ahead)."""
        window = max(1, math.ceil(1 / self.rate))
        return f'"default";q={max(1, round(self.rate * window))};w={window}'

    @staticmethod
    def state_header(decision: Decision) -> str:
        """``RateLimit``: remaining quota and seconds until it resets."""
        return f'"default";r={decision.remaining};t={max(0, math.ceil(decision.reset))}'
