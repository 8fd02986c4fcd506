"""Polling settings, validated once at construction."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Literal

from . import _validate as check

Jitter = Literal["full", "equal", "decorrelated", "none"]
JITTERS: tuple[Jitter, ...] = ("full", "equal", "decorrelated", "none")
Schedule = Literal["learn", "backoff"]
SCHEDULES: tuple[Schedule, ...] = ("learn", "backoff")


@dataclass(frozen=True, slots=True)
class StatusPollingConfig:
    """How one job is polled.

    The first four fields may be given by position, as in the original design. The config is
    frozen: make a changed copy with ``dataclasses.replace(config, timeout=2.0)``. ``vtpoll``
    makes an option of each field, with the text below as its help. ``jitter=True`` and
    ``jitter=False``, as the original design had it, mean "full" and "none".

    Attributes:
        initial_delay: First wait between two checks of a job, seconds.
        max_delay: Longest wait between two checks, seconds (a server's hint may exceed it,
            up to max_hint).
        backoff_factor: Each wait is this many times the last.
        timeout: Seconds a job may stay pending before it ends as a timeout; None = never.
        jitter: How waits are randomised so that jobs do not poll in step: full, equal,
            decorrelated or none.
        request_timeout: Seconds one HTTP request may take (a long-poll adds its wait).
        max_retries: Transient failures of one job in a row, while the server answers others,
            before the job fails.
        outage_timeout: Seconds a job rides through a server that answers nothing at all (a
            restart, an outage) before it fails as unreachable, or that fails every request
            (a proxy's 503s meanwhile) before it fails as retries exhausted; its deadline
            still bounds it.
        max_attempts: Checks of one job before it ends as a timeout while still pending (the
            original design's max_attempts); None = no limit but the deadline.
        long_poll: Let the server hold a pending check open up to this many seconds (Prefer:
            wait); 0 turns it off.
        max_hint: Longest wait a server's hint (Retry-After) may impose, seconds.
        hints: Follow the server's hint of when to ask again; off, checks follow the backoff
            alone (a 429 or 503 Retry-After is obeyed either way: that is flow control).
        checks_per_job: Against a server that neither hints nor holds checks, the checks a
            job costs on average: the client learns how long jobs take and places that many
            where completions are likely (more: completions seen sooner).
        schedule: Against a server that neither hints nor holds checks: learn (how long
            jobs take, and check where completions are likely) or backoff (exponential, from
            initial_delay).
    """

    initial_delay: float = 1.0
    max_delay: float = 30.0
    backoff_factor: float = 2.0
    timeout: float | None = 300.0
    _: KW_ONLY
    jitter: Jitter = "full"
    request_timeout: float = 10.0
    max_retries: int = 5
    outage_timeout: float = 120.0
    max_attempts: int | None = None
    long_poll: float = 25.0
    max_hint: float = 300.0
    hints: bool = True
    checks_per_job: float = 3.0
    schedule: Schedule = "learn"

    def __post_init__(self) -> None:
        jitter: object = self.jitter
        if isinstance(jitter, bool):
            object.__setattr__(self, "jitter", "full" if jitter else "none")
        # Zero would poll in a tight loop: every later wait is a multiple of the first.
        check.number("initial_delay", self.initial_delay, low=0, inclusive=False)
        check.number("max_delay", self.max_delay, low=0)
        if self.max_delay < self.initial_delay:
            raise check.InvalidArgument(
                "max_delay", f">= initial_delay ({self.initial_delay!r})", self.max_delay
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
            raise check.InvalidArgument("hints", "True or False", self.hints)
        check.number("checks_per_job", self.checks_per_job, low=1)
        check.one_of("schedule", self.schedule, SCHEDULES)
