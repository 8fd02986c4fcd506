"""A simulation of the video translation backend, for tests, demos and load tests.

``_settings`` holds the one validated settings record; ``_jobs`` the job model (state is a pure
function of creation time, duration and outcome) and its store; ``_faults``, ``_ratelimit`` and
``_metrics`` the behaviours layered around the Quart app built in ``_app``; ``_server`` serves it
with hypercorn, embedded (:class:`TranslationServer`) or in the foreground (``run_server``).
"""

from ._app import create_app as create_app
from ._jobs import Job as Job
from ._server import TranslationServer as TranslationServer
from ._server import run_server as run_server
from ._settings import ServerSettings as ServerSettings

__all__ = ["Job", "ServerSettings", "TranslationServer", "create_app", "run_server"]
