"""Polling settings, validated once at construction."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Literal

from . import _validate as check

Jitter = Literal["full", "equal", "decorrelated", "none"]
JITTERS: tuple[Jitter, ...] = ("full", "equal", "decorrelated", "none")


@dataclass(frozen=True, slots=True)
class StatusPollingConfig:
    """How one job is polled.

    The first four fields may be given by position, as in the original design. The config is
    frozen: make a changed copy with ``dataclasses.replace(config, timeout=2.0)``.
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
    #: Randomisation of each wait: "full", "equal", "decorrelated" or "none" (True and False,
    #: as the original design had it, mean "full" and "none").
    jitter: Jitter = "full"
    #: Limit on one HTTP attempt, seconds (a long-poll adds its wait to it).
    request_timeout: float = 10.0
    #: Consecutive transient failures of one job, while the server answers others, tolerated
    #: before the job fails.
    max_retries: int = 5
    #: Seconds a job rides through a server that answers nothing at all (a restart, an outage)
    #: before it fails as unreachable; its deadline still bounds it.
    outage_timeout: float = 120.0
    #: Polls of one job before it ends as a timeout while still pending (the original design's
    #: ``max_attempts``); None for no limit but the deadline.
    max_attempts: int | None = None
    #: Ask the server to hold a pending check up to this many seconds; 0 turns it off.
    long_poll: float = 25.0
    #: Longest wait a server hint (Retry-After) may impose, seconds.
    max_hint: float = 300.0
    #: Follow the server's hint on a pending answer; False polls on the backoff schedule alone
    #: (a 429 or 503 ``Retry-After`` is obeyed either way: that is flow control).
    hints: bool = True

    def __post_init__(self) -> None:
        jitter: object = self.jitter
        if isinstance(jitter, bool):
            object.__setattr__(self, "jitter", "full" if jitter else "none")
        # Zero would poll in a tight loop: every later wait is a multiple of the first.
        check.number("initial_delay", self.initial_delay, low=0, inclusive=False)
        check.number("max_delay", self.max_delay, low=0)
        if self.max_delay < self.initial_delay:
            raise ValueError(
                f"max_delay must be >= initial_delay ({self.initial_delay!r}), "
                f"got {self.max_delay!r}"
            )
        check.number("backoff_factor", self.backoff_factor, low=1)
        check.optional_number("timeout", self.timeout, low=0, inclusive=False)
        check.one_of("jitter", self.jitter, JITTERS)
        check.number("request_timeout", self.request_timeout, low=0, inclusive=False)
        check.integer("max_retries", self.max_retries, low=0)
        check.number("outage_timeout", self.outage_timeout, low=0)
        check.optional_integer("max_attempts", self.max_attempts, low=1)
        check.number("long_poll", self.long_poll, low=0)
        check.number("max_hint", self.max_hint, low=0)
        if not isinstance(self.hints, bool):
            raise ValueError(f"hints must be True or False, got {self.hints!r}")
