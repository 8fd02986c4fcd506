"""``vtpoll fleet pause`` and ``resume``: workers stop taking new jobs, and take them again."""

from __future__ import annotations

import click

from .._errors import EXIT_OK
from ._options import fleet_options, with_fleet
from ._redis import Fleet


def _set(paused: bool, redis_url: str, fleet_name: str) -> None:
    async def body(fleet: Fleet) -> None:
        await fleet.check_epoch()
        await fleet.pause(paused)

    with_fleet(redis_url, fleet_name, body)


@click.command()
@fleet_options
@click.pass_context
def pause(ctx: click.Context, /, redis_url: str, fleet_name: str) -> None:
    """Workers take no new jobs (within a second); they keep polling the ones they hold, and
    still take over a dead worker's, which were taken already."""
    _set(True, redis_url, fleet_name)
    click.echo(f"fleet {fleet_name!r} paused: workers take no new jobs")
    ctx.exit(EXIT_OK)


@click.command()
@fleet_options
@click.pass_context
def resume(ctx: click.Context, /, redis_url: str, fleet_name: str) -> None:
    """Workers take new jobs again."""
    _set(False, redis_url, fleet_name)
    click.echo(f"fleet {fleet_name!r} resumed")
    ctx.exit(EXIT_OK)
