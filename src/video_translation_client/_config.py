"""Polling settings, validated once at construction."""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import Literal

Jitter = Literal["full", "equal", "decorrelated", "none"]
JITTERS: tuple[Jitter, ...] = ("full", "equal", "decorrelated", "none")


def _finite(name: str, value: object, *, low: float, inclusive: bool = True) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if inclusive else value > low)  # type: ignore[operator]
    if not ok:
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True, slots=True)
class StatusPollingConfig:
    """How one job is polled.

    The first four fields may be given by position, as in the original design.
    """

    #: First wait between polls, seconds.
    initial_delay: float = 1.0
    #: Cap on one wait between polls, seconds (server hints may exceed it, up to ``max_hint``).
    max_delay: float = 30.0
    #: Growth of the wait from one poll to the next.
    backoff_factor: float = 2.0
    #: Whole-job deadline, seconds; None for no deadline.
    timeout: float | None = 300.0
    _: KW_ONLY
    #: Randomisation of each wait: "full", "equal", "decorrelated" or "none".
    jitter: Jitter = "full"
    #: Limit on one HTTP attempt, seconds (a long-poll adds its wait to it).
    request_timeout: float = 10.0
    #: Consecutive transient failures of one job tolerated before it fails.
    max_retries: int = 5
    #: Ask the server to hold a pending check up to this many seconds; 0 turns it off.
    long_poll: float = 25.0
    #: Longest wait a server hint (Retry-After) may impose, seconds.
    max_hint: float = 300.0
    #: Follow the server's hint on a pending answer; False polls on the backoff schedule alone
    #: (a 429 or 503 ``Retry-After`` is obeyed either way: that is flow control).
    hints: bool = True

    def __post_init__(self) -> None:
        # Zero would poll in a tight loop: every later wait is a multiple of the first.
        _finite("initial_delay", self.initial_delay, low=0, inclusive=False)
        _finite("max_delay", self.max_delay, low=0)
        if self.max_delay < self.initial_delay:
            raise ValueError(
                f"max_delay must be >= initial_delay ({self.initial_delay!r}), "
                f"got {self.max_delay!r}"
            )
        _finite("backoff_factor", self.backoff_factor, low=1)
        if self.timeout is not None:
            _finite("timeout", self.timeout, low=0, inclusive=False)
        if self.jitter not in JITTERS:
            raise ValueError(f"jitter must be one of {', '.join(JITTERS)}, got {self.jitter!r}")
        _finite("request_timeout", self.request_timeout, low=0, inclusive=False)
        if (
            not isinstance(self.max_retries, int)
            or isinstance(self.max_retries, bool)
            or self.max_retries < 0
        ):
            raise ValueError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        _finite("long_poll", self.long_poll, low=0)
        _finite("max_hint", self.max_hint, low=0)
        if not isinstance(self.hints, bool):
            raise ValueError(f"hints must be True or False, got {self.hints!r}")
