"""Waits between polls: exponential backoff with jitter, and the bounds on a server's hints.

Jitter modes follow "Exponential Backoff and Jitter" (AWS Architecture Blog, 2015), with
``t = min(max_delay, initial_delay * backoff_factor ** n)`` the un-jittered wait of step n:

- ``none``: t
- ``full``: uniform(0, t)
- ``equal``: t/2 + uniform(0, t/2)
- ``decorrelated``: min(max_delay, uniform(initial_delay, previous * backoff_factor))
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ._config import Jitter, StatusPollingConfig


class Backoff:
    """The wait sequence of one job. ``random`` returns uniform floats in [0, 1)."""

    __slots__ = ("_config", "_jitter", "_previous", "_random", "step")

    def __init__(
        self,
        config: StatusPollingConfig,
        random: Callable[[], float],
        *,
        jitter: Jitter | None = None,
    ) -> None:
        self._config = config
        self._jitter = jitter or config.jitter
        self._random = random
        self.step = 0
        self._previous = config.initial_delay

    def reset(self) -> None:
        self.step = 0
        self._previous = self._config.initial_delay

    def next_delay(self) -> float:
        c = self._config
        # Exponent capped: past ~64 steps the float would overflow long after the cap applies.
        t = min(c.max_delay, c.initial_delay * c.backoff_factor ** min(self.step, 64))
        self.step += 1
        if self._jitter == "none":
            return t
        if self._jitter == "full":
            return t * self._random()
        if self._jitter == "equal":
            return t / 2 + (t / 2) * self._random()
        low = c.initial_delay
        high = max(low, self._previous * c.backoff_factor)
        self._previous = min(c.max_delay, low + (high - low) * self._random())
        return self._previous


def default_random() -> Callable[[], float]:
    return random.Random().random


#: Shortest wait a hint can impose. A server repeating "Retry-After: 0" must not turn the
#: client into a busy loop; 20 ms is well under the detection lag anyone would notice.
MIN_HINT = 0.02


def clamp_hint(hint: float, config: StatusPollingConfig) -> float:
    """A server hint within sane bounds: at least ``MIN_HINT``, at most ``max_hint``."""
    return min(max(hint, MIN_HINT), max(config.max_hint, MIN_HINT))
