"""Every exception the library raises.

::

    VideoTranslationError             base of everything raised here
    ├── PollTimeout                   the job's deadline passed (also a builtin TimeoutError)
    ├── JobNotFound                   404 / 410: the server does not know the job
    │   └── WrongRoute                no job asked has been answered at this route (404s, or
    │                                 answers that are no statuses): the base URL or the
    │                                 dialect is wrong; ``url`` is what was asked
    ├── AuthenticationError           401 / 403: missing or wrong API key
    ├── RequestRejected               any other 4xx, or a redirect to another origin
    ├── RetriesExhausted              too many consecutive transient failures while the server
    │   │                             answered other requests; ``__cause__`` is the last one
    │   └── ServerUnreachable         the server answered nothing for ``outage_timeout`` (or
    │                                 until the job's deadline), or refused every connection
    │                                 since the client started; also a builtin ConnectionError
    └── InvalidResponse               a body that is not a status (transient: retried first)
        └── UnknownStatus             the status field holds a value the dialect does not list

Transport failures (httpx, h11) are turned into these at the boundary with ``raise ... from``;
none of them reaches the caller undressed.
"""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import StatusResponse


class VideoTranslationError(Exception):
    """Base class of the library's exceptions."""

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class PollTimeout(VideoTranslationError, TimeoutError):
    """The job did not reach a final state before its deadline."""

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        timeout: float | None = None,
        last_status: StatusResponse | None = None,
    ) -> None:
        super().__init__(message, job_id=job_id)
        self.timeout = timeout
        #: The last status seen before the deadline, or None if no poll succeeded.
        self.last_status = last_status


class _HTTPError(VideoTranslationError):
    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        status_code: int | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, job_id=job_id)
        self.status_code = status_code
        #: The URL asked (a password in it hidden), where it tells something.
        self.url = url


class JobNotFound(_HTTPError):
    """The server answered 404 or 410 for this job."""


class AuthenticationError(_HTTPError):
    """The server answered 401 or 403: the API key is missing or wrong."""


class RequestRejected(_HTTPError):
    """The server refused the request for good (a 4xx other than 401/403/404/410/429)."""


class WrongRoute(JobNotFound):
    """Every job asked got a 404, or an answer that is no status, and none an answer at
    all: the route is wrong, not the jobs (the base URL, or the dialect). ``url`` is what
    was asked, ``answered`` what came back ("404", "no status (...)"), ``dialect`` the name
    of the dialect that asked."""

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        url: str | None = None,
        answered: str = "",
        dialect: str = "",
    ) -> None:
        super().__init__(message, job_id=job_id, status_code=404, url=url)
        self.answered = answered
        self.dialect = dialect


class InvalidResponse(_HTTPError):
    """The server's answer was not a status: bad JSON, no or unknown ``result``."""


class UnknownStatus(InvalidResponse):
    """The status field holds a value the dialect does not list (a state the service added,
    or a dialect that does not fit). Transient, like any malformed answer: a service in the
    middle of a deploy may answer oddly for a moment, and a value that persists ends the job
    after ``max_retries`` with this error naming it, instead of being guessed at."""


class RetriesExhausted(VideoTranslationError):
    """The job failed transiently too many times in a row (``max_retries``), or the server
    failed every request for ``outage_timeout``; ``__cause__`` is the last failure.
    ``requests`` counts the requests sent for the job."""

    def __init__(self, message: str, *, job_id: str | None = None, requests: int = 0) -> None:
        super().__init__(message, job_id=job_id)
        self.requests = requests

    @property
    def attempts(self) -> int:
        """Deprecated: ``requests``."""
        warnings.warn(
            "RetriesExhausted.attempts is deprecated: use requests",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.requests


class ServerUnreachable(RetriesExhausted, ConnectionError):
    """The server has answered nothing since ``since`` (a wall-clock time), for longer than
    the job could wait, or has refused every connection since the client started (nothing
    listens at the URL): the job's outcome is not known. ``__cause__`` is the last failure.
    ``reached`` is False when the server never answered this client (a wrong URL, or a
    server not running, most likely)."""

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        requests: int = 0,
        since: datetime | None = None,
        reached: bool = True,
    ) -> None:
        super().__init__(message, job_id=job_id, requests=requests)
        self.since = since
        self.reached = reached
