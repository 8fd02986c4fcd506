"""Waits between polls: exponential backoff with jitter, and the server's hints.

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
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

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


def parse_retry_after(
    retry_after: str | None,
    retry_after_ms: str | None,
    *,
    now: Callable[[], datetime] | None = None,
) -> float | None:
    """Seconds the server asks us to wait, from ``Retry-After-Ms`` or ``Retry-After``.

    ``Retry-After-Ms`` (integer milliseconds) wins when valid; ``Retry-After`` may be
    delay-seconds or an HTTP-date (RFC 9110 10.2.3). Anything unparseable is None; a date in the
    past is 0. Never raises.
    """
    if retry_after_ms is not None:
        text = retry_after_ms.strip()
        if text.isascii() and text.isdigit():
            return int(text) / 1000
    if retry_after is None:
        return None
    text = retry_after.strip()
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now() if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


#: Shortest wait a hint can impose. A server repeating "Retry-After: 0" must not turn the
#: client into a busy loop; 20 ms is well under the detection lag anyone would notice.
MIN_HINT = 0.02


def clamp_hint(hint: float, config: StatusPollingConfig) -> float:
    """A server hint within sane bounds: at least ``MIN_HINT``, at most ``max_hint``."""
    return min(max(hint, MIN_HINT), max(config.max_hint, MIN_HINT))
