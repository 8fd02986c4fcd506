"""One watch from start to summary, for ``watch`` and ``demo``: open the results file, poll
the jobs not in it yet with ``client.watch``, write each result the moment it is known, draw
it, and print the summary. SIGINT and SIGTERM cancel the polling; every result already
received is written before the run returns."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import trio
from rich.console import Console

from video_translation_client import (
    ClientStatistics,
    JobResult,
    Outcome,
    StatusResponse,
    VideoTranslationClient,
    WrongRoute,
)

from ._display import WatchDisplay, summary_table, wants_live
from ._errors import Problem
from ._jobfile import InputError, Previous, ResultWriter, open_results

#: Live display refreshes per second.
REFRESH_HZ = 8


@dataclass(slots=True)
class WatchRun:
    """What one run of the watch loop saw: counts, not the results themselves, which go to
    the results file as they come (a run of a million jobs must not keep a million)."""

    ended: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    stats: ClientStatistics | None = None
    wall: float = 0.0
    #: The signal that stopped the run early, if one did.
    signal: int | None = None
    #: Jobs found in the results file of an earlier run, and their outcomes.
    done_before: dict[str, str] = field(default_factory=dict)
    #: Why the run stopped at once: no job answered at this route.
    wrong_route: WrongRoute | None = None


async def run_watch(
    client: VideoTranslationClient,
    ids: list[str],
    *,
    console: Console,
    live: bool,
    writer: ResultWriter | None,
    on_result: Callable[[JobResult], None] | None = None,
) -> WatchRun:
    """Poll every job with ``client.watch``, writing each result the moment it is known."""
    started = trio.current_time()
    display = WatchDisplay(console, len(ids), started, live=live)
    # The display counts the outcomes; the run reports the same counts.
    run = WatchRun(ended=display.state.ended)

    def take(event: StatusResponse | JobResult) -> None:
        if isinstance(event, JobResult):
            if isinstance(event.error, WrongRoute):
                # No job has been answered at this route: nothing of the run is worth going
                # on with, and nothing is written (a later run asks these jobs again).
                run.wrong_route = event.error
                polling.cancel()
                return
            if writer is not None:
                writer.write(event)
            if on_result is not None:
                on_result(event)
            display.finished(event)
        else:
            display.status(event, trio.current_time())

    async def until_signal(scope: trio.CancelScope) -> None:
        # Leaving the receiver restores the default handler: a second Ctrl-C during the
        # cleanup raises KeyboardInterrupt instead of being ignored.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                run.signal = signum
                scope.cancel()
                return

    async def tick() -> None:
        while True:
            display.refresh(client.statistics(), trio.current_time())
            await trio.sleep(1 / REFRESH_HZ if live else 0.25)

    polling = trio.CancelScope()
    async with client:
        with display, polling:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(until_signal, nursery.cancel_scope)
                nursery.start_soon(tick)
                async with client.watch(ids) as events:
                    try:
                        async for event in events:
                            take(event)
                    finally:
                        _drain(events, take)
                nursery.cancel_scope.cancel()
            # One instant for the display's last frame and the summary's wall time.
            ended = trio.current_time()
            run.stats = client.statistics()
            run.wall = ended - started
            display.refresh(run.stats, ended)
    return run


def wrong_route(error: WrongRoute) -> str:
    """The one line that says the route, not the jobs, is wrong, in the command's terms."""
    asked = f"GET {error.url}" if error.url else "the status route"
    return (
        f"{asked} answered {error.answered} for every job (dialect {error.dialect}): "
        "is --base-url or --dialect right?"
    )


def _drain(events: Any, take: Callable[[Any], None]) -> None:
    while True:
        try:
            take(events.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return


def watch_and_report(
    client: VideoTranslationClient,
    ids: list[str],
    *,
    console: Console,
    quiet: bool,
    output: Path | None,
    resume: bool,
    on_result: Callable[[JobResult], None] | None = None,
) -> WatchRun:
    """Open the results file, watch the jobs not in it yet, print the summary."""
    files = ExitStack()
    file, previous = open_output(output, resume=resume, console=console, files=files)
    done_before = {i: previous.outcomes[i] for i in ids if i in previous.outcomes}
    todo = [i for i in ids if i not in done_before]
    if done_before:
        say(
            console,
            f"{len(done_before)} of {len(ids)} jobs already in {output}; "
            f"polling the other {len(todo)}",
        )
    live = wants_live(console, quiet=quiet)
    run = WatchRun()
    with files:
        if todo:
            if not live:
                say(console, f"watching {len(todo)} jobs on {client.display_url}")
            writer = ResultWriter(file) if file is not None else None
            run = trio.run(
                lambda: run_watch(
                    client, todo, console=console, live=live, writer=writer, on_result=on_result
                )
            )
    run.done_before = done_before
    if run.wrong_route is not None:
        raise Problem(wrong_route(run.wrong_route))
    if run.stats is not None:
        console.print(summary_table(run.ended, run.stats, run.wall, skipped=len(done_before)))
    return run


def open_output(
    output: Path | None, *, resume: bool, console: Console, files: ExitStack
) -> tuple[IO[str] | None, Previous]:
    """The results file the options name, open for appending (standard output for '-', None
    for none; a file is closed with ``files``), and what it already held. A torn last line
    cut off and any odd record are said on ``console``."""
    if output is None:
        return None, Previous()
    if str(output) == "-":
        return sys.stdout, Previous()
    try:
        file, previous = open_results(output, resume=resume)
    except InputError as exc:
        raise Problem(str(exc)) from None
    files.enter_context(file)
    if previous.repaired:
        say(
            console,
            f"warning: {output}: cut a torn last line ({previous.repaired} bytes) left by an "
            "interrupted run; that job's result is written again",
        )
    for warning in previous.warnings:
        say(console, f"warning: {warning}")
    return file, previous


def say(console: Console, text: str) -> None:
    """One line for a person: text as it is, never read as markup (it may hold a file name
    or what a server said)."""
    console.print(text, highlight=False, markup=False)
