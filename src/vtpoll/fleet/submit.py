"""``vtpoll fleet submit``: add job IDs to the fleet, each once."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .._errors import EXIT_OK
from .._options import given_job_ids, job_id_options
from ._options import fleet_options, with_fleet
from ._redis import Fleet
from ._shards import MAX_SHARDS


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
@click.option(
    "--shards",
    type=click.IntRange(min=1, max=MAX_SHARDS),
    help="The fleet's shards, fixed by its first submit: its keys spread over this many hash"
    " tags, so over the nodes of a Redis Cluster (where the first submit must give it). Default"
    " 1 on one Redis; later submits may repeat the count, not change it.",
)
@fleet_options
@click.pass_context
def submit(
    ctx: click.Context,
    /,
    ids: tuple[str, ...],
    files: tuple[Path, ...],
    timeout: float,
    shards: int | None,
    redis_url: str,
    fleet_name: str,
) -> None:
    """Add job IDs to the fleet (IDS, --file F, or '-' for standard input).

    Idempotent: an ID the fleet already has is not added again. Every invalid ID is reported
    together, before anything is written.
    """
    id_list = given_job_ids(ids, files)
    deadline = time.time() + timeout if timeout else None

    async def body(fleet: Fleet) -> tuple[int, int]:
        added = await fleet.submit(id_list.ids, deadline, shards)
        return added, fleet.count

    added, count = with_fleet(redis_url, fleet_name, body)
    known = len(id_list.ids) - added
    over = f", over {count} shards" if count > 1 else ""
    click.echo(f"submitted {added} new jobs to fleet {fleet_name!r} ({known} already known{over})")
    ctx.exit(EXIT_OK)
