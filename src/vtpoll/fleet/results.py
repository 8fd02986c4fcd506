"""``vtpoll fleet results``: the fleet's results as JSON Lines, the same as ``watch --output``,
ended by Ctrl-C or SIGTERM as ``watch`` is: the summary, one line, 128 + the signal."""

from __future__ import annotations

import math
import secrets
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import click
import trio
from rich.console import Console

from .._errors import EXIT_OK, Problem, Terminations
from .._jobfile import ResultWriter
from .._options import results_file_options
from .._watching import Written, is_file, open_output, say, stop_on_signal
from ._options import fleet_options, with_fleet
from ._redis import Fleet, FleetError

#: Seconds an acknowledged job's done marker is kept by default: a week.
DEFAULT_RETENTION = 7 * 24 * 3600.0
#: Results read from Redis per call, and how long a --follow read waits for more (ms).
READ_COUNT = 1000
FOLLOW_BLOCK_MS = 1000
#: Seconds the one acknowledging reader's place lasts unrenewed (a reader killed leaves it
#: this long). It is renewed before each shard's read and acknowledgement once a third of it
#: has passed, so that a round over many shards cannot outlast it.
ACKER_TTL = 30.0


@click.command()
@results_file_options(default="-")
@click.option(
    "--follow", is_flag=True, help="Keep writing results as they come, until Ctrl-C or SIGTERM."
)
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
def results(ctx: click.Context, /, **options: Any) -> None:
    """Write the fleet's results, each job once, in the order they were recorded (in each
    shard: a fleet of several shards interleaves theirs).

    Exit status: 0 written; 2 bad input (or a results file another vtpoll is writing, a Redis
    that cannot be used); 3 the results could not be written (a full disk: nothing unwritten
    is removed from Redis); 130 on Ctrl-C, 143 on SIGTERM (128 + the signal, after the
    summary; what was written is on disk: rerun with --resume); 141 when the reader of '-o -'
    closed it.
    """
    with Terminations().installed() as noted:
        code = write_results(noted, **options)
    ctx.exit(code)


def write_results(
    noted: Terminations,
    *,
    output: Path,
    resume: bool,
    follow: bool,
    ack: bool,
    retention: float,
    redis_url: str,
    fleet_name: str,
) -> int:
    """Write the results as ``results`` is asked to, a signal ``noted`` before the reading
    too; the exit status."""
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
    held_at = -math.inf
    signum: int | None = None

    def stopped(sig: int) -> None:
        nonlocal signum
        signum = sig

    async def body(fleet: Fleet) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(stop_on_signal, nursery.cancel_scope, noted, stopped)
                await read(fleet)
                nursery.cancel_scope.cancel()
        finally:
            if ack:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await fleet.acker(token, hold=False)

    async def hold(fleet: Fleet, *, unless_within: float = 0.0) -> None:
        """With --ack, take or renew the one acknowledging reader's place, unless it was
        renewed less than ``unless_within`` seconds ago; :class:`FleetError` if another
        reader holds it."""
        nonlocal held_at
        asked = anyio.current_time()  # the place lasts ACKER_TTL from no earlier than this
        if not ack or asked - held_at < unless_within:
            return
        if not await fleet.acker(token, hold=True, ttl=ACKER_TTL):
            raise FleetError(
                f"another 'results --ack' is reading fleet {fleet_name!r}: one at a time, or"
                " each would remove results the other has not written"
            )
        held_at = asked

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
            await hold(fleet)
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
        await hold(fleet, unless_within=ACKER_TTL / 3)
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
            # Written and synced: removed even if a signal has come meanwhile, so that the
            # count said is what Redis removed.
            with anyio.CancelScope(shield=True):
                await hold(fleet, unless_within=ACKER_TTL / 3)  # writing may have been slow
                acked += await fleet.ack(taken, retention, shard)
        return len(entries)

    with files:
        noted.deferred = True  # from now on the reading stops at a signal, and says so
        with_fleet(redis_url, fleet_name, body)
        if not written.stopped:
            try:
                writer.sync()  # however it ended, what was written is on disk
            except OSError as exc:
                written.failed(exc)
        written.close(file)
    if not written.broken_pipe:  # its reader has gone: nothing more is said
        removed = f"; {acked} removed from Redis" if ack else ""
        already = len(previous.outcomes)
        say(console, f"{writer.written} results written ({already} already there){removed}")
    signum = noted.settle(signum)
    where = str(output) if is_file(output) else "standard output"
    code = written.ended(console, output, _go_on(output, f"once {where} can be written, "))
    if code is not None:
        return code
    if signum is not None:
        say(console, "interrupted: " + _go_on(output, ""))
        return 128 + signum
    return EXIT_OK


def _go_on(output: Path, when: str) -> str:
    """How to write what was not: ``when`` it can be."""
    if is_file(output):
        return f"{when}run the same command with --resume to write the others"
    return f"{when}run the same command again: what was not written is still in Redis"
