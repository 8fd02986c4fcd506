"""``vtpoll fleet``: many poller processes on Redis Streams, for more jobs than one process
holds or pollers that must survive a machine dying.

``_scripts`` holds the keys and the atomic steps (Lua), ``_redis`` reaches Redis, ``_limiter``
is the fleet's one rate limit, ``_worker`` one worker's loops; one module per command:
``submit``, ``worker``, ``results``, ``status``, ``cancel``, ``pause``/``resume``. Only these
commands import coredis.
"""

from __future__ import annotations

import click

from .cancel import cancel
from .pause import pause, resume
from .results import results
from .status import status
from .submit import submit
from .worker import worker


@click.group()
def fleet() -> None:
    """Poll with many worker processes sharing jobs through Redis (or Valkey) Streams.

    'vtpoll fleet submit' adds job IDs, 'vtpoll fleet worker' (on as many hosts as you like)
    polls them, 'vtpoll fleet results' writes the results, 'vtpoll fleet status' tells how far
    it got, 'cancel', 'pause' and 'resume' steer it.
    """


for command in (submit, worker, results, status, cancel, pause, resume):
    fleet.add_command(command)
