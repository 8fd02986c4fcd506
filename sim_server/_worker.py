"""The app as hypercorn's worker processes import it: settings come from the environment.

A worker must not outlive its master: after a kill -9 of ``vtpoll serve --workers N``, orphaned
workers would go on serving and hold the port against a restart.

Nor may a worker end on a signal of its own: its master stops it through a shared
``multiprocessing.Event`` it polls ten times a second, and a worker killed by a SIGTERM sent to
the whole process group (``timeout``, systemd) while it holds that event's lock leaves the master
waiting for the lock for ever. hypercorn's workers ignore SIGINT for this reason; they ignore
SIGTERM here too, and a dead master's workers get SIGKILL, which has no such window that matters
(the master, the only other user of the lock, is gone).
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
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the master died before the line above took effect
        os._exit(1)


_die_with(int(os.environ[PARENT_ENV]))
protocol_errors.install()
app = create_app(ServerSettings.from_dict(json.loads(os.environ[SETTINGS_ENV])), backend="asyncio")
