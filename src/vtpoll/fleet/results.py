"""``vtpoll fleet results``: the fleet's results as JSON Lines, the same as ``watch --output``."""

from __future__ import annotations

import secrets
from contextlib import ExitStack, suppress
from functools import partial
from pathlib import Path

import anyio
import click
from rich.console import Console

from .._errors import EXIT_BROKEN_PIPE, EXIT_OK, Problem
from .._jobfile import ResultWriter
from .._options import results_file_options
from .._watching import Written, is_file, open_output, say
from ._options import fleet_options, with_fleet
from ._redis import Fleet, FleetError

#: Seconds an acknowledged job's done marker is kept by default: a week.
DEFAULT_RETENTION = 7 * 24 * 3600.0
#: Results read from Redis per call, and how long a --follow read waits for more (ms).
READ_COUNT = 1000
FOLLOW_BLOCK_MS = 1000


@click.command()
@results_file_options(default="-")
@click.option("--follow", is_flag=True, help="Keep writing results as they come, until Ctrl-C.")
@click.option(
    "--ack",
    is_flag=True,
    help="Remove from Redis the results written (once on disk: flushed and synced), keeping a"
    " small done marker of each job for --retention, so that a resubmitted ID is not polled"
    " again meanwhile.",
)
@click.option(
    "--retention",
    type=click.FloatRange(min=0),
    default=DEFAULT_RETENTION,
    show_default=True,
    help="Seconds an acknowledged job's done marker is kept (after the hour it was"
    " acknowledged in); 0 keeps none.",
)
@fleet_options
@click.pass_context
def results(
    ctx: click.Context,
    /,
    output: Path,
    resume: bool,
    follow: bool,
    ack: bool,
    retention: float,
    redis_url: str,
    fleet_name: str,
) -> None:
    """Write the fleet's results, each job once, in the order they were recorded (in each
    shard: a fleet of several shards interleaves theirs).

    Exit status: 0 written; 2 bad input (or a results file another vtpoll is writing, a Redis
    that cannot be used); 3 the results could not be written (a full disk: nothing unwritten
    is removed from Redis); 141 when the reader of '-o -' closed it.
    """
    if resume and str(output) == "-":
        raise Problem("--resume cannot continue standard output; give --output a file")
    console = Console(stderr=True, soft_wrap=True)
    files = ExitStack()
    file, previous = open_output(output, resume=resume, console=console, files=files)
    assert file is not None  # --output defaults to '-'
    writer = ResultWriter(file)
    # Each job is recorded once in the stream: only what the file had before needs skipping,
    # and nothing grows with the results read.
    seen = previous.outcomes
    acked = 0
    written = Written()
    token = secrets.token_hex(8)

    async def body(fleet: Fleet) -> None:
        try:
            await read(fleet)
        finally:
            if ack:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await fleet.acker(token, hold=False)

    async def read(fleet: Fleet) -> None:
        """Round after round over the shards, each read from its own cursor; a round that
        found nothing ends the reading, or, following, makes the next round's reads wait
        for more (a shard's results stream is in its own slot, so they are read one by
        one: a round waits at most FOLLOW_BLOCK_MS in all)."""
        cursors = ["0"] * fleet.count
        block: int | None = None
        while True:
            # Each round: a fleet whose state was lost meanwhile has results of another epoch.
            await fleet.check_epoch()
            if ack and not await fleet.acker(token, hold=True):
                raise FleetError(
                    f"another 'results --ack' is reading fleet {fleet_name!r}: one at a time, or"
                    " each would remove results the other has not written"
                )
            if fleet.shards is None:  # following a fleet not submitted yet: it may be now
                await fleet.load_shards()
                cursors += ["0"] * (fleet.count - len(cursors))
            found = 0
            for shard in range(fleet.count):
                read_now = await read_shard(fleet, shard, cursors, block)
                if read_now is None:
                    return
                found += read_now
            if not found and not follow:
                return
            block = None if found else max(1, FOLLOW_BLOCK_MS // fleet.count)

    async def read_shard(
        fleet: Fleet, shard: int, cursors: list[str], block: int | None
    ) -> int | None:
        """Write the next results of ``shard`` (and acknowledge them): how many were read;
        None if they could not be written."""
        nonlocal acked
        stream = fleet.shard(shard).results
        more = partial(fleet.redis.xread, {stream: cursors[shard]}, count=READ_COUNT, block=block)
        got = await fleet.call(more)
        entries = got[stream] if got else ()
        taken = []
        try:
            for entry in entries:
                job_id = str(entry.field_values["id"])
                if job_id not in seen:
                    writer.write_line(str(entry.field_values["record"]))
                taken.append((str(entry.identifier), job_id))
            if ack and taken:
                writer.sync()  # on disk before Redis forgets it
        except OSError as exc:
            # Stop: nothing of this round is removed from Redis, so that a later run writes
            # what this one could not (with --resume, skipping what it did).
            written.failed(exc)
            return None
        if taken:
            cursors[shard] = taken[-1][0]
        if ack and taken:
            acked += await fleet.ack(taken, retention, shard)
        return len(entries)

    with files:
        with suppress(KeyboardInterrupt):
            with_fleet(redis_url, fleet_name, body)
        written.close(file)
    if written.broken_pipe:
        ctx.exit(EXIT_BROKEN_PIPE)
    removed = f"; {acked} removed from Redis" if ack else ""
    say(
        console,
        f"{writer.written} results written ({len(previous.outcomes)} already there){removed}",
    )
    go_on = (
        f"once {output} can be written, run the same command with --resume to write the others"
        if is_file(output)
        else "once standard output can be written, run the same command again: what was not"
        " written is still in Redis"
    )
    ctx.exit(written.ended(console, output, go_on) or EXIT_OK)
