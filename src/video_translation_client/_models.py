"""What the client hands back: statuses and, for many jobs, results."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class JobStatus(enum.Enum):
    """A job's state as the server reports it."""

    PENDING = "pending"
    COMPLETED = "completed"
    ERROR = "error"

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
    #: Requests sent for the job so far, this one included.
    attempts: int = 1
    #: The decoded JSON body, as the server sent it.
    payload: dict[str, Any] = field(default_factory=dict, compare=False)
    #: The server's hint of when to ask again, in seconds, if it gave one.
    retry_after: float | None = None

    @property
    def is_final(self) -> bool:
        return self.status.is_final
