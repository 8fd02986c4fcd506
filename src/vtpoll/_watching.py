"""One watch from start to summary, for ``watch`` and ``demo``: open the results file, poll
the jobs not in it yet with ``client.watch``, write each result the moment it is known, draw
it, and print the summary. SIGINT and SIGTERM cancel the polling (:func:`stop_on_signal`,
which ``fleet results`` shares); every result already received is written before the run
returns. A SIGTERM before the polling ends the command at once, one after it is said at the
end (:class:`Terminations`). A results file that cannot be written stops the polling (what
was not written is polled again by ``--resume``), and so does a reader closing standard
output."""

from __future__ import annotations

import os
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
    ServerUnreachable,
    StatusResponse,
    VideoTranslationClient,
    WrongRoute,
)

from ._display import WatchDisplay, plural, summary_table, wants_live
from ._errors import EXIT_BROKEN_PIPE, EXIT_WRITE_FAILED, Problem, Terminations, WriteFailed
from ._jobfile import InputError, Previous, ResultWriter, open_results

#: Live display refreshes per second.
REFRESH_HZ = 8


@dataclass(slots=True)
class Written:
    """Whether the results could all be written, for every command that writes them (watch,
    demo, fleet results): the first failure stops the command, and is said by :meth:`ended`."""

    #: Why the results could not be written (a full disk, a closed file), if they could not.
    error: OSError | None = None
    #: Standard output, where the results went, was closed by its reader: nothing more is
    #: said.
    broken_pipe: bool = False

    @property
    def stopped(self) -> bool:
        return self.error is not None or self.broken_pipe

    def failed(self, exc: OSError) -> None:
        """Note a write (or a flush, a sync, a close) that failed; after the first failure
        a later one only repeats it."""
        if isinstance(exc, BrokenPipeError):
            self.broken_pipe = True
        elif not self.stopped:
            self.error = exc

    def close(self, file: IO[str] | None) -> None:
        """Close the results file (flush standard output): a failure here, such as a full
        disk reported only now, is a write failure too."""
        if file is None:
            return
        try:
            if file is sys.stdout:
                file.flush()
            else:
                file.close()
        except OSError as exc:
            self.failed(exc)
        if self.stopped and file is sys.stdout:
            _quiet_stdout()

    def ended(self, console: Console, output: Path | None, go_on: str) -> int | None:
        """Say why the results could not be written, in one line, then ``go_on`` (what was
        kept and how to go on); the exit status. Nothing is said of a reader that closed
        standard output. None if every result was written."""
        if self.broken_pipe:
            return EXIT_BROKEN_PIPE
        if self.error is None:
            return None
        where = str(output) if is_file(output) else "standard output"
        say(console, f"vtpoll: error: cannot write {where}: {self.error.strerror or self.error}")
        say(console, go_on)
        return EXIT_WRITE_FAILED


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
    #: Why the run stopped at once: no job answered at this route, or the server never
    #: answered at all.
    wrong_route: WrongRoute | ServerUnreachable | None = None
    #: Whether the results could all be written: if not, the polling stopped there.
    written: Written = field(default_factory=Written)


async def run_watch(
    client: VideoTranslationClient,
    ids: list[str],
    *,
    console: Console,
    live: bool,
    writer: ResultWriter | None,
    on_result: Callable[[JobResult], None] | None = None,
    noted: Terminations | None = None,
) -> WatchRun:
    """Poll every job with ``client.watch``, writing each result the moment it is known.
    A result that cannot be written stops the polling."""
    started = trio.current_time()
    display = WatchDisplay(console, len(ids), started, live=live)
    # The display counts the outcomes; the run reports the same counts.
    run = WatchRun(ended=display.state.ended)

    def take(event: StatusResponse | JobResult) -> None:
        if isinstance(event, JobResult):
            error = event.error
            if isinstance(error, WrongRoute) or (
                isinstance(error, ServerUnreachable) and not error.reached
            ):
                # No job has been answered at this route, or nothing answers there at all:
                # nothing of the run is worth going on with, and nothing is written (the
                # jobs' outcomes are not known: a later run asks them again).
                run.wrong_route = error
                polling.cancel()
                return
            if run.written.stopped:
                return  # stopping: a later run polls this job again
            if writer is not None:
                try:
                    writer.write(event)
                except OSError as exc:
                    run.written.failed(exc)
                    polling.cancel()
                    return
            if on_result is not None:
                on_result(event)
            display.finished(event)
        else:
            display.status(event, trio.current_time())

    def stopped(signum: int) -> None:
        run.signal = signum

    async def tick() -> None:
        while True:
            display.refresh(client.statistics(), trio.current_time())
            await trio.sleep(1 / REFRESH_HZ if live else 0.25)

    polling = trio.CancelScope()
    async with client:
        with display:
            with polling:  # cancelled when the run must stop: the summary is still made
                async with trio.open_nursery() as nursery:
                    await nursery.start(stop_on_signal, nursery.cancel_scope, noted, stopped)
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


async def stop_on_signal(
    scope: trio.CancelScope,
    noted: Terminations | None,
    stopped: Callable[[int], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``scope`` at the first SIGINT or SIGTERM, telling ``stopped`` which; at once
    for a SIGTERM ``noted`` before the receiver was in place. Started with
    ``nursery.start``: from then on no signal can land in the middle of a write."""
    # Leaving the receiver restores the handler from before it (the default for SIGINT): a
    # second Ctrl-C during the cleanup raises KeyboardInterrupt instead of being ignored.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        if noted is not None and noted.signum is not None:
            stopped(noted.signum)
            scope.cancel()
            return
        async for signum in signals:
            stopped(signum)
            scope.cancel()
            return


def wrong_route(error: WrongRoute | ServerUnreachable) -> str:
    """The one line that says the route, not the jobs, is wrong, in the command's terms."""
    if isinstance(error, ServerUnreachable):
        # Its message names the URL and asks whether it is right; the job is any of them.
        return str(error).partition(": ")[2] + " (no result written)"
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
    noted: Terminations | None = None,
) -> WatchRun:
    """Open the results file, watch the jobs not in it yet, print the summary (not after a
    reader closed standard output). ``noted``: the SIGTERM handler installed around the
    command, told here when the polling begins."""
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
                say(console, f"watching {plural(len(todo), 'job')} on {client.display_url}")
            writer = ResultWriter(file) if file is not None else None
            if noted is not None:
                noted.deferred = True
            run = trio.run(
                lambda: run_watch(
                    client,
                    todo,
                    console=console,
                    live=live,
                    writer=writer,
                    on_result=on_result,
                    noted=noted,
                )
            )
        run.written.close(file)
    run.done_before = done_before
    if run.wrong_route is not None:
        raise Problem(wrong_route(run.wrong_route))
    if run.written.broken_pipe:
        return run
    if run.stats is not None:
        console.print(summary_table(run.ended, run.stats, run.wall, skipped=len(done_before)))
    return run


def _quiet_stdout() -> None:
    """Standard output's reader is gone: point it at /dev/null, so that what is still
    buffered in it does not fail again, noisily, as the interpreter exits."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing flushes it at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def abnormal_end(
    console: Console,
    run: WatchRun,
    output: Path | None,
    total: int,
    noted: Terminations | None = None,
) -> int | None:
    """Say how a run that did not finish its polling ended, after the summary, and return
    its exit status; None if it finished. ``total``: the jobs asked for, earlier ones too.
    ``noted``: a SIGTERM that came after the polling is the run's too."""
    if noted is not None:
        run.signal = noted.settle(run.signal)
    saved = len(run.done_before) + sum(run.ended.values())
    left = total - saved
    to_file = is_file(output)
    go_on = _resume_hint(output, saved, left, "once it can be written, ")
    code = run.written.ended(console, output, go_on)
    if code is not None:
        return code
    if run.signal is not None:
        if left and to_file:
            say(console, "interrupted: " + _resume_hint(output, saved, left, ""))
        elif left:
            say(console, "interrupted with " + _resume_hint(output, saved, left, ""))
        else:
            kept = f"; all {saved} results are in {output}" if to_file else ""
            say(console, f"interrupted after the last job ended{kept}")
        return 128 + run.signal
    return None


def _resume_hint(output: Path | None, saved: int, left: int, when: str) -> str:
    if is_file(output):
        return (
            f"{saved} results are in {output}; {when}"
            f"run the same command with --resume to poll the other {left} jobs"
        )
    return f"{left} jobs unfinished; use --output FILE to keep results across runs"


def is_file(output: Path | None) -> bool:
    """Whether ``--output`` names a file (not standard output, ``-``, nor nothing)."""
    return output is not None and str(output) != "-"


def open_output(
    output: Path | None, *, resume: bool, console: Console, files: ExitStack
) -> tuple[IO[str] | None, Previous]:
    """The results file the options name, open for appending (standard output for '-', None
    for none; a file is closed with ``files``), and what it already held. A torn last line
    cut off and any odd record are said on ``console``."""
    if output is None:
        return None, Previous()
    if str(output) == "-":
        if sys.stdout is None or sys.stdout.closed:  # started with its descriptor closed
            raise WriteFailed("cannot write standard output: it is closed")
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
