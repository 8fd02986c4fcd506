"""Poll the status of many long-running video translation jobs, quickly and gently.

How the modules stack, each on those before it: ``_validate`` (argument checks), ``_config``
(settings), ``_models`` (what calls return) and ``_errors`` (the exception tree) depend on
nothing else; ``_dialect`` says how a service is asked and its answers read; ``_backoff`` is
the wait arithmetic, ``_headers`` reads what a server's headers and numbers say,
``_ratelimit`` (the shared adaptive limiter) and ``_budget`` (the retry budget) stand alone;
``_read`` bounds a body and ``_http`` makes one attempt and classifies it (``_pool`` builds
the connection pools); ``_state`` is what a client knows of its server; ``_decide`` is one
job's polling as pure decisions, ``_schedule`` the policies they ask after a pending answer;
``_batch`` coalesces checks into batch requests; ``_session`` is the scheduler every check
goes through; ``_job`` is the loop that drives one job's decisions; ``_client`` is the facade.
All of it on anyio, so that it runs under trio and asyncio alike.
"""

import logging as _logging

from ._client import VideoTranslationClient as VideoTranslationClient
from ._config import StatusPollingConfig as StatusPollingConfig
from ._dialect import DIALECTS as DIALECTS
from ._dialect import Dialect as Dialect
from ._dialect import load_dialect as load_dialect
from ._errors import AuthenticationError as AuthenticationError
from ._errors import InvalidResponse as InvalidResponse
from ._errors import JobNotFound as JobNotFound
from ._errors import PollTimeout as PollTimeout
from ._errors import RequestRejected as RequestRejected
from ._errors import RetriesExhausted as RetriesExhausted
from ._errors import ServerUnreachable as ServerUnreachable
from ._errors import UnknownStatus as UnknownStatus
from ._errors import VideoTranslationError as VideoTranslationError
from ._errors import WrongRoute as WrongRoute
from ._models import ClientStatistics as ClientStatistics
from ._models import JobResult as JobResult
from ._models import JobStatus as JobStatus
from ._models import Outcome as Outcome
from ._models import StatusResponse as StatusResponse
from ._ratelimit import Limiter as Limiter
from ._ratelimit import RateLimiter as RateLimiter
from ._ratelimit import RateLimiterStatistics as RateLimiterStatistics
from ._validate import InvalidArgument as InvalidArgument

__all__ = [
    "DIALECTS",
    "AuthenticationError",
    "ClientStatistics",
    "Dialect",
    "InvalidArgument",
    "InvalidResponse",
    "JobNotFound",
    "JobResult",
    "JobStatus",
    "Limiter",
    "Outcome",
    "PollTimeout",
    "RateLimiter",
    "RateLimiterStatistics",
    "RequestRejected",
    "RetriesExhausted",
    "ServerUnreachable",
    "StatusPollingConfig",
    "StatusResponse",
    "UnknownStatus",
    "VideoTranslationClient",
    "VideoTranslationError",
    "WrongRoute",
    "load_dialect",
]

# A library logs, an application decides where logs go.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
