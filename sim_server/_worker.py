"""The app as hypercorn's worker processes import it: settings come from the environment.

A worker must not outlive its master: after a kill -9 of ``vtpoll serve --workers N``, orphaned
workers would go on serving and hold the port against a restart.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

from . import _protocol_errors as protocol_errors
from ._app import create_app
from ._server import PARENT_ENV, SETTINGS_ENV
from ._settings import ServerSettings

#: prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the master died before the line above took effect
        os._exit(1)


_die_with(int(os.environ[PARENT_ENV]))
protocol_errors.install()
app = create_app(ServerSettings.from_dict(json.loads(os.environ[SETTINGS_ENV])), backend="asyncio")
