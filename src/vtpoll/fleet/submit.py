"""``vtpoll fleet submit``: add job IDs to the fleet, each once."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .._errors import EXIT_OK, Problem
from .._jobfile import InputError, id_sources, read_ids
from .._options import job_id_options
from ._options import fleet_options, with_fleet
from ._redis import Fleet

#: IDs per script call: one call is atomic, and blocks Redis while it runs.
CHUNK = 1000


@click.command()
@job_id_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds from now each job may be polled before it ends as 'timeout'; 0 = the"
    " worker's own --timeout, counted from when it takes the job.",
)
@fleet_options
@click.pass_context
def submit(
    ctx: click.Context,
    /,
    ids: tuple[str, ...],
    files: tuple[Path, ...],
    timeout: float,
    redis_url: str,
    fleet_name: str,
) -> None:
    """Add job IDs to the fleet (IDS, --file F, or '-' for standard input).

    Idempotent: an ID the fleet already has is not added again. Every invalid ID is reported
    together, before anything is written.
    """
    try:
        id_list = read_ids(id_sources(ids, files, sys.stdin))
    except InputError as exc:
        raise Problem(str(exc)) from None
    if not id_list.ids:
        raise Problem("no job IDs given: pass IDs, --file FILE, or '-' to read standard input")
    deadline = time.time() + timeout if timeout else None

    async def body(fleet: Fleet) -> int:
        await fleet.ensure_group()
        added = 0
        for start in range(0, len(id_list.ids), CHUNK):
            added += await fleet.submit(id_list.ids[start : start + CHUNK], deadline)
        return added

    added = with_fleet(redis_url, fleet_name, body)
    known = len(id_list.ids) - added
    click.echo(f"submitted {added} new jobs to fleet {fleet_name!r} ({known} already known)")
    ctx.exit(EXIT_OK)
