"""Poll the status of many long-running video translation jobs, quickly and gently.

How the modules stack: ``_config`` (settings) and ``_models`` (what calls return) depend on
nothing; ``_errors`` is the exception tree; ``_backoff`` is the wait arithmetic and the parsing
of server hints; ``_ratelimit`` (the shared adaptive limiter) and ``_budget`` (the retry
budget) stand alone; ``_http`` is the one module that speaks HTTP, turning every answer or
failure into a status, a transient failure or a typed error; ``_batch`` coalesces checks of
many jobs into batch requests; ``_client`` builds the polling of one job and of many on top of
them, on anyio, so that it runs under trio and asyncio alike.
"""

import logging as _logging

from ._client import VideoTranslationClient as VideoTranslationClient
from ._config import StatusPollingConfig as StatusPollingConfig
from ._errors import AuthenticationError as AuthenticationError
from ._errors import InvalidResponse as InvalidResponse
from ._errors import JobNotFound as JobNotFound
from ._errors import PollTimeout as PollTimeout
from ._errors import RequestRejected as RequestRejected
from ._errors import RetriesExhausted as RetriesExhausted
from ._errors import VideoTranslationError as VideoTranslationError
from ._models import ClientStatistics as ClientStatistics
from ._models import JobResult as JobResult
from ._models import JobStatus as JobStatus
from ._models import Outcome as Outcome
from ._models import StatusResponse as StatusResponse
from ._ratelimit import RateLimiter as RateLimiter
from ._ratelimit import RateLimiterStatistics as RateLimiterStatistics

__all__ = [
    "AuthenticationError",
    "ClientStatistics",
    "InvalidResponse",
    "JobNotFound",
    "JobResult",
    "JobStatus",
    "Outcome",
    "PollTimeout",
    "RateLimiter",
    "RateLimiterStatistics",
    "RequestRejected",
    "RetriesExhausted",
    "StatusPollingConfig",
    "StatusResponse",
    "VideoTranslationClient",
    "VideoTranslationError",
]

# A library logs, an application decides where logs go.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
