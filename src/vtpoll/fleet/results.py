"""``vtpoll fleet results``: the fleet's results as JSON Lines, the same as ``watch --output``."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import IO

import click
from rich.console import Console

from .._errors import EXIT_OK, Problem
from .._jobfile import InputError, Previous, ResultWriter, open_results
from .._options import results_file_options
from .._watching import say
from ._options import fleet_options, with_fleet
from ._redis import Fleet

#: Results read from Redis per call, and how long a --follow read waits for more (ms).
READ_COUNT = 1000
FOLLOW_BLOCK_MS = 1000


@click.command()
@results_file_options(default="-")
@click.option("--follow", is_flag=True, help="Keep writing results as they come, until Ctrl-C.")
@fleet_options
@click.pass_context
def results(
    ctx: click.Context,
    /,
    output: Path,
    resume: bool,
    follow: bool,
    redis_url: str,
    fleet_name: str,
) -> None:
    """Write the fleet's results, each job once, in the order they were recorded."""
    if resume and str(output) == "-":
        raise Problem("--resume cannot continue standard output; give --output a file")
    console = Console(stderr=True, soft_wrap=True)
    file: IO[str] = sys.stdout
    previous = Previous()
    if str(output) != "-":
        try:
            file, previous = open_results(output, resume=resume)
        except InputError as exc:
            raise Problem(str(exc)) from None
    for warning in previous.warnings:
        say(console, f"warning: {warning}")
    writer = ResultWriter(file)
    seen = set(previous.outcomes)

    async def body(fleet: Fleet) -> None:
        cursor = "0"
        block = FOLLOW_BLOCK_MS if follow else None
        while True:
            read = partial(
                fleet.redis.xread, {fleet.keys.results: cursor}, count=READ_COUNT, block=block
            )
            got = await fleet.call(read)
            entries = got[fleet.keys.results] if got else ()
            for entry in entries:
                cursor = str(entry.identifier)
                job_id = str(entry.field_values["id"])
                if job_id not in seen:
                    seen.add(job_id)
                    writer.write_line(str(entry.field_values["record"]))
            if not entries and not follow:
                return

    try:
        with_fleet(redis_url, fleet_name, body)
    except KeyboardInterrupt:
        pass
    finally:
        if file is not sys.stdout:
            file.close()
    say(console, f"{writer.written} results written ({len(previous.outcomes)} already there)")
    ctx.exit(EXIT_OK)
