"""What the client hands back: statuses and, for many jobs, results."""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class JobStatus(enum.StrEnum):
    """A job's state as the server reports it.

    A ``str``: ``status == "completed"`` holds, and ``f"{status}"`` is the value. The lower-case
    names of the original design are aliases: ``JobStatus.completed is JobStatus.COMPLETED``.
    """

    PENDING = "pending"
    COMPLETED = "completed"
    ERROR = "error"
    pending = "pending"
    completed = "completed"
    error = "error"

    @property
    def is_final(self) -> bool:
        return self is not JobStatus.PENDING


@dataclass(frozen=True, slots=True)
class StatusResponse:
    """One answer of the status endpoint, with what the client knows about it."""

    status: JobStatus
    #: The job's ID, or None for the original ``GET /status`` endpoint.
    job_id: str | None
    #: Seconds since this client started asking about the job (original design's field).
    elapsed_time: float
    #: The job's checks so far, this one included: answers about it ("Words" in the guide).
    checks: int = 1
    #: The decoded JSON body, as the server sent it.
    payload: dict[str, Any] = field(default_factory=dict, compare=False)
    #: The server's hint of when to ask again, in seconds, if it gave one.
    retry_after: float | None = None
    #: How far along the job is, 0 to 1, and the seconds it has left, if the server says.
    progress: float | None = None
    eta: float | None = None
    #: The fields the dialect keeps (the translated video's URL, say), by dotted path; None
    #: where the answer has none.
    kept: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_final(self) -> bool:
        return self.status.is_final

    @property
    def raw_response(self) -> dict[str, Any]:
        """Deprecated: ``payload``, the decoded body (the original design's name for it)."""
        _renamed("StatusResponse.raw_response", "payload")
        return self.payload

    @property
    def attempts(self) -> int:
        """Deprecated: ``checks``."""
        _renamed("StatusResponse.attempts", "checks")
        return self.checks


class Outcome(enum.Enum):
    """How the polling of one job ended."""

    COMPLETED = "completed"
    ERROR = "error"
    #: The job's deadline passed while it was still pending.
    TIMEOUT = "timeout"
    #: Polling failed: unknown job, refused credentials, retries exhausted...
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobResult:
    """The end of one job's polling in ``poll_many`` or ``watch``."""

    job_id: str
    outcome: Outcome
    #: The last status seen, if any: the final one for ``completed`` and ``error``.
    last_status: StatusResponse | None
    #: What made the job fail (``outcome`` FAILED or TIMEOUT), else None.
    error: Exception | None = field(default=None, compare=False)
    #: The job's checks: answers about it, whether alone or in a batch; a held batch woken
    #: by another job's completion and a failed request are none (``ClientStatistics``
    #: counts the requests).
    checks: int = 0
    #: Seconds from the start of polling to the outcome.
    elapsed_time: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.COMPLETED

    @property
    def kept(self) -> dict[str, Any]:
        """The fields the dialect keeps, from the last status seen (empty if none was)."""
        return self.last_status.kept if self.last_status is not None else {}

    @property
    def status(self) -> StatusResponse | None:
        """Deprecated: ``last_status`` (``result.status.status`` read as a stutter)."""
        _renamed("JobResult.status", "last_status")
        return self.last_status

    @property
    def attempts(self) -> int:
        """Deprecated: ``checks``."""
        _renamed("JobResult.attempts", "checks")
        return self.checks


def _renamed(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=3)


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """A snapshot of a client's counters (``client.statistics()``)."""

    #: HTTP requests sent (a batch counts once).
    requests: int
    #: Checks: answers about one job each (a batch answering n jobs counts n; the jobs a held
    #: batch was woken for another's completion are not counted).
    status_checks: int
    #: Requests that were retries after a transient failure (a batch counts once).
    retries: int
    #: Answers with status 429.
    throttled: int
    #: Retries refused by the client-wide retry budget.
    retries_denied: int
    #: The shared rate limiter's rate now (requests/s; ``inf`` if unlimited).
    current_rate: float
    #: Seconds requests spent waiting for the rate (a token, or a 429's pause), summed.
    limiter_wait_time: float
    #: Jobs being polled now, and jobs finished by outcome.
    jobs_pending: int
    jobs_completed: int
    jobs_error: int
    jobs_timeout: int
    jobs_failed: int
    #: When the server stopped answering at all (no HTTP response, not even an error), if it
    #: has not answered since; None while it answers. Jobs ride through it for
    #: ``outage_timeout``.
    server_silent_since: datetime | None = None
