"""What ``vtpoll watch`` shows a person: a live display on a terminal, plain lines elsewhere,
and the summary table at the end. Everything goes to stderr; stdout stays for data."""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from video_translation_client import ClientStatistics, JobResult, Outcome, StatusResponse

#: Seconds of history behind the requests/s figure.
RATE_WINDOW = 2.0


def wants_live(console: Console, *, quiet: bool) -> bool:
    """Animate only for a person at a terminal who did not ask for quiet or for no colour."""
    if quiet or os.environ.get("NO_COLOR"):
        return False
    return console.is_terminal and not console.is_dumb_terminal


def _duration(seconds: float) -> str:
    # Floored, as the summary's wall time is rounded: the two never disagree by a second.
    seconds = max(0, math.floor(seconds))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"


@dataclass(slots=True)
class Tally:
    """Counts and estimates, independent of how they are drawn."""

    total: int
    started: float
    ended: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    #: Per unfinished job: when the server said it would end (from its hints).
    expected: dict[str, float] = field(default_factory=dict)
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    @property
    def done(self) -> int:
        return sum(self.ended.values())

    def status(self, event: StatusResponse, now: float) -> None:
        if event.job_id is not None and not event.is_final and event.retry_after is not None:
            self.expected[event.job_id] = now + event.retry_after

    def finished(self, result: JobResult) -> None:
        self.ended[result.outcome] += 1
        self.expected.pop(result.job_id, None)

    def requests_per_second(self, now: float, requests: int) -> float:
        self.samples.append((now, requests))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        first_time, first_requests = self.samples[0]
        return (requests - first_requests) / (now - first_time) if now > first_time else 0.0

    def time_left(self, now: float) -> float | None:
        """Seconds until the last job ends: from the server's hints when it gave them, else
        extrapolated from the pace so far."""
        remaining = self.total - self.done
        if remaining == 0:
            return 0.0
        if self.expected:
            return max(0.0, max(self.expected.values()) - now)
        if self.done:
            return (now - self.started) * remaining / self.done
        return None


class WatchDisplay:
    """Draws a watch: a live display (``live=True``) or one plain line per finished job."""

    def __init__(self, console: Console, total: int, now: float, *, live: bool) -> None:
        self.console = console
        self.live = live
        self.state = Tally(total=total, started=now)
        # Two lines, so that an 80-column terminal shows everything: the bar and times, then
        # the counts and rates. The progress object is only drawn, never started: refreshes
        # come from the caller's event loop, not from rich's own thread.
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("{task.fields[times]}"),
            console=console,
        )
        self._task: TaskID = self._progress.add_task("polling", total=total, times="")
        self._live: Live | None = None
        #: When the server went silent, as last told to a person (plain lines say it once).
        self._silent_since: datetime | None = None
        if live:
            self._live = Live(console=console, auto_refresh=False, redirect_stderr=False)

    def __enter__(self) -> WatchDisplay:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.stop()

    def status(self, event: StatusResponse, now: float) -> None:
        self.state.status(event, now)

    def finished(self, result: JobResult) -> None:
        self.state.finished(result)
        if not self.live:
            self.console.print(plain_line(result), highlight=False, markup=False, soft_wrap=True)

    def refresh(self, stats: ClientStatistics, now: float) -> None:
        silence = _silence(stats)
        if not self.live:
            # Plain output says it when the server falls silent and when it answers again.
            if stats.server_silent_since != self._silent_since:
                self._silent_since = stats.server_silent_since
                line = silence or "the server answers again"
                self.console.print(line, highlight=False, markup=False, soft_wrap=True)
            return
        assert self._live is not None
        state = self.state
        ended = state.ended
        states = Text.assemble(
            (f"{state.total - state.done} pending", "yellow"),
            " · ",
            (f"{ended[Outcome.COMPLETED]} completed", "green"),
            " · ",
            (f"{ended[Outcome.ERROR]} error", "red"),
            " · ",
            (f"{ended[Outcome.TIMEOUT]} timeout", "magenta"),
            " · ",
            (f"{ended[Outcome.FAILED]} failed", "red"),
        )
        rate = stats.current_rate
        rates = Text(
            f"{state.requests_per_second(now, stats.requests):.0f} req/s "
            f"(limit {'none' if math.isinf(rate) else f'{rate:.0f}/s'})"
        )
        left = state.time_left(now)
        times = f"{_duration(now - state.started)} elapsed, " + (
            f"~{_duration(left)} left" if left is not None else "? left"
        )
        self._progress.update(self._task, completed=state.done, times=times)
        # Counts and rates share a line when it is wide enough, else each has its own: a
        # narrow terminal crops, it does not wrap, what a live display draws.
        if len(states) + 3 + len(rates) <= self.console.width:
            lines = [Text.assemble(states, "   ", rates)]
        else:
            lines = [states, rates]
        if silence:
            lines.append(Text(silence, style="bold red"))
        self._live.update(Group(self._progress, *lines), refresh=True)


def _silence(stats: ClientStatistics) -> str | None:
    since = stats.server_silent_since
    if since is None:
        return None
    return f"no answer from the server since {since:%H:%M:%S} UTC; still retrying"


def plain_line(result: JobResult) -> str:
    """One finished job, for logs and pipes."""
    line = (
        f"{result.job_id} {result.outcome.value} after {result.elapsed_time:.1f} s, "
        f"{plural(result.checks, 'check')}"
    )
    if result.error is not None:
        line += f": {type(result.error).__name__}: {result.error}"
    return line


def summary_table(
    ended: dict[Outcome, int],
    stats: ClientStatistics,
    wall: float,
    *,
    skipped: int = 0,
    title: str = "vtpoll summary",
) -> Table:
    """Counts by outcome, then what it cost."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    styles = {
        Outcome.COMPLETED: "green",
        Outcome.ERROR: "red",
        Outcome.TIMEOUT: "magenta",
        Outcome.FAILED: "red",
    }
    for outcome in Outcome:
        table.add_row(outcome.value, str(ended[outcome]), style=styles[outcome])
    if skipped:
        table.add_row("already in results file", str(skipped))
    jobs = sum(ended.values())
    table.add_row("requests", str(stats.requests), end_section=False)
    per_job = f"{stats.requests / jobs:.2f}" if jobs else "-"
    table.add_row("requests per job", per_job)
    table.add_row("retries", str(stats.retries))
    table.add_row("429 answers", str(stats.throttled))
    table.add_row("wall time", f"{wall:.1f} s")
    return table


def plural(count: int, word: str) -> str:
    """``3 jobs``, ``1 job``: English plurals by adding an s, all vtpoll says needs."""
    return f"{count} {word}{'' if count == 1 else 's'}"
