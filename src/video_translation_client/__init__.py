"""Poll the status of many long-running video translation jobs, quickly and gently.

How the modules stack: ``_config`` (settings) and ``_models`` (what calls return) depend on
nothing; ``_errors`` is the exception tree; ``_backoff`` is the wait arithmetic and the
parsing of server hints; ``_http`` is the one module that speaks HTTP, turning every answer
or failure into a status, a transient failure or a typed error; ``_client`` builds polling on
top of them, on anyio, so it runs under trio and asyncio alike.
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
from ._models import JobStatus as JobStatus
from ._models import StatusResponse as StatusResponse

__all__ = [
    "AuthenticationError",
    "InvalidResponse",
    "JobNotFound",
    "JobStatus",
    "PollTimeout",
    "RequestRejected",
    "RetriesExhausted",
    "StatusPollingConfig",
    "StatusResponse",
    "VideoTranslationClient",
    "VideoTranslationError",
]

# A library logs, an application decides where logs go.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
