"""``vtpoll fleet results``: the fleet's results as JSON Lines, the same as ``watch --output``."""

from __future__ import annotations

from contextlib import ExitStack, suppress
from functools import partial
from pathlib import Path

import click
from rich.console import Console

from .._errors import EXIT_OK, Problem
from .._jobfile import ResultWriter
from .._options import results_file_options
from .._watching import open_output, say
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
    files = ExitStack()
    file, previous = open_output(output, resume=resume, console=console, files=files)
    assert file is not None  # --output defaults to '-'
    writer = ResultWriter(file)
    seen = set(previous.outcomes)

    async def body(fleet: Fleet) -> None:
        cursor = "0"
        block = FOLLOW_BLOCK_MS if follow else None
        while True:
            # Each round: a fleet whose state was lost meanwhile has results of another epoch.
            await fleet.check_epoch()
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

    with files, suppress(KeyboardInterrupt):
        with_fleet(redis_url, fleet_name, body)
    say(console, f"{writer.written} results written ({len(previous.outcomes)} already there)")
    ctx.exit(EXIT_OK)
