"""The live display's numbers and the plain and summary output, without a terminal."""

from __future__ import annotations

from datetime import UTC, datetime
from io import StringIO

import pytest
from rich.console import Console

from video_translation_client import (
    ClientStatistics,
    JobNotFound,
    JobResult,
    JobStatus,
    Outcome,
    StatusResponse,
)
from vtpoll._display import (
    Tally,
    WatchDisplay,
    plain_line,
    summary_table,
    wants_live,
)


def _stats(requests: int = 0, silent_since: datetime | None = None) -> ClientStatistics:
    return ClientStatistics(
        requests=requests,
        status_checks=requests,
        retries=3,
        throttled=4,
        retries_denied=0,
        current_rate=35.0,
        limiter_wait_time=0.0,
        jobs_pending=0,
        jobs_completed=0,
        jobs_error=0,
        jobs_timeout=0,
        jobs_failed=0,
        server_silent_since=silent_since,
    )


def _pending(job_id: str, hint: float | None) -> StatusResponse:
    return StatusResponse(JobStatus.PENDING, job_id, 0.0, retry_after=hint)


def _done(job_id: str, outcome: Outcome = Outcome.COMPLETED) -> JobResult:
    return JobResult(job_id, outcome, None, checks=2, elapsed_time=4.25)


def test_time_left_follows_the_servers_hints():
    """With hints, time left is until the latest job the server expects to end."""
    tally = Tally(total=3, started=100.0)
    tally.status(_pending("a", 5.0), now=100.0)
    tally.status(_pending("b", 20.0), now=101.0)
    assert tally.time_left(110.0) == pytest.approx(11.0)
    tally.finished(_done("b"))
    assert tally.time_left(110.0) == 0.0  # a's expected end is past: any moment now


def test_time_left_without_hints_extrapolates_the_pace():
    """Without hints, the remaining jobs are assumed to go at the pace so far."""
    tally = Tally(total=4, started=0.0)
    assert tally.time_left(5.0) is None
    tally.finished(_done("a"))
    assert tally.time_left(10.0) == pytest.approx(30.0)
    for job_id in "bcd":
        tally.finished(_done(job_id))
    assert tally.time_left(12.0) == 0.0


def test_requests_per_second_over_a_sliding_window():
    """The rate is measured over the last couple of seconds, not since the start."""
    tally = Tally(total=1, started=0.0)
    assert tally.requests_per_second(0.0, 0) == 0.0
    assert tally.requests_per_second(1.0, 100) == pytest.approx(100.0)
    for second in range(2, 10):
        tally.requests_per_second(float(second), 100 + 10 * (second - 1))
    assert tally.requests_per_second(10.0, 190) == pytest.approx(10.0, rel=0.2)


def test_plain_line_names_the_job_and_the_error():
    """A plain line says ID, outcome, time, checks (not requests: one batch request checks
    many jobs), and the error when there is one."""
    assert plain_line(_done("a")) == "a completed after 4.2 s, 2 checks"
    failed = JobResult("b", Outcome.FAILED, None, JobNotFound("b"), checks=1)
    assert plain_line(failed).startswith("b failed after 0.0 s, 1 check: JobNotFound: ")


def test_summary_table_shows_counts_and_costs():
    """The summary has every outcome, requests per job, retries, 429s and wall time."""
    ended = {Outcome.COMPLETED: 7, Outcome.ERROR: 2, Outcome.TIMEOUT: 0, Outcome.FAILED: 1}
    out = StringIO()
    Console(file=out, width=60).print(summary_table(ended, _stats(25), 12.34, skipped=5))
    text = out.getvalue()
    for row in (
        ("completed", "7"),
        ("error", "2"),
        ("failed", "1"),
        ("already in results file", "5"),
        ("requests per job", "2.50"),
        ("retries", "3"),
        ("429 answers", "4"),
        ("wall time", "12.3 s"),
    ):
        line = next(line for line in text.splitlines() if f" {row[0]} " in line)
        assert row[1] in line, (row, line)


def test_live_only_on_a_terminal_without_quiet_or_no_color(monkeypatch: pytest.MonkeyPatch):
    """Animation needs a terminal; --quiet or NO_COLOR turn it off."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = Console(file=StringIO(), force_terminal=True)
    assert wants_live(terminal, quiet=False)
    assert not wants_live(terminal, quiet=True)
    assert not wants_live(Console(file=StringIO()), quiet=False)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_live(terminal, quiet=False)


def test_plain_display_prints_one_line_per_finished_job():
    """Off a terminal: nothing for status changes, one line per finished job."""
    out = StringIO()
    with WatchDisplay(Console(file=out, width=200), 2, 0.0, live=False) as display:
        display.status(_pending("a", 1.0), 0.0)
        display.finished(_done("a"))
        display.refresh(_stats(3), 1.0)
        display.finished(_done("b", Outcome.ERROR))
    assert out.getvalue().splitlines() == [
        "a completed after 4.2 s, 2 checks",
        "b error after 4.2 s, 2 checks",
    ]


def test_live_display_draws_counts_rates_and_times():
    """On a terminal the display shows progress, counts by state, req/s, limit and times."""
    out = StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with WatchDisplay(console, 4, 0.0, live=True) as display:
        display.status(_pending("a", 9.0), 0.0)
        display.finished(_done("b"))
        display.finished(_done("c", Outcome.ERROR))
        display.refresh(_stats(0), 0.0)
        display.refresh(_stats(40), 2.0)
    text = out.getvalue()
    for piece in (
        "2/4",
        "2 pending",
        "1 completed",
        "1 error",
        "20 req/s",
        "limit 35/s",
        "0:02 elapsed",
        "~0:07 left",
    ):
        assert piece in text, piece


def test_a_narrow_terminal_still_shows_the_rates():
    """At 60 columns the counts and the rates take a line each instead of the rates being
    cropped away."""
    out = StringIO()
    console = Console(file=out, force_terminal=True, width=60)
    with WatchDisplay(console, 4, 0.0, live=True) as display:
        display.refresh(_stats(0), 0.0)
        display.refresh(_stats(40), 2.0)
    assert "20 req/s (limit 35/s)" in out.getvalue()


def test_a_silent_server_is_shown_at_once_and_its_return_too():
    """The display says the server does not answer as soon as the client knows it, in red on
    a terminal and as one plain line elsewhere, and says when it answers again."""
    since = datetime(2026, 11, 26, 3, 4, 5, tzinfo=UTC)
    out = StringIO()
    with WatchDisplay(Console(file=out, width=200), 2, 0.0, live=False) as display:
        display.refresh(_stats(1), 0.2)
        display.refresh(_stats(2, since), 0.4)
        display.refresh(_stats(3, since), 0.6)
        display.refresh(_stats(4), 0.8)
    assert out.getvalue().splitlines() == [
        "no answer from the server since 03:04:05 UTC; still retrying",
        "the server answers again",
    ]
    live = StringIO()
    console = Console(file=live, force_terminal=True, width=100)
    with WatchDisplay(console, 2, 0.0, live=True) as display:
        display.refresh(_stats(2, since), 0.4)
    assert "no answer from the server since 03:04:05 UTC" in live.getvalue()


def test_elapsed_time_agrees_with_the_summary():
    """The display floors its seconds as the summary rounds them: 12.9 s shows 0:12 and
    12.9 s, never 0:13 beside 12.9 s."""
    out = StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with WatchDisplay(console, 1, 0.0, live=True) as display:
        display.refresh(_stats(3), 12.9)
    assert "0:12 elapsed" in out.getvalue()


def test_server_text_in_the_status_table_is_shown_not_interpreted():
    """What a server said, as markup ("[/x]" broke the table, links and styles took effect),
    is printed as it is; numbers the server sent that are not numbers are shown as '-'."""
    from vtpoll.status import _status_row, status_table

    hostile = StatusResponse(
        JobStatus.PENDING,
        "j",
        0.0,
        payload={"result": "pending", "progress": "[/x]", "eta": int("9" * 400)},
    )
    rows = [
        {
            "job_id": "k",
            "status": None,
            "progress": None,
            "eta_s": None,
            "error": "RetriesExhausted: unknown result '[/x]' [link=http://evil.test]x[/link]",
        },
        _status_row("j", hostile),
    ]
    out = StringIO()
    Console(file=out, width=200).print(status_table(rows))
    text = out.getvalue()
    assert "unknown result '[/x]' [link=http://evil.test]x[/link]" in text
    assert "\x1b]8;" not in text  # no terminal hyperlink was made
    assert rows[1]["progress"] is None
    assert rows[1]["eta_s"] is None
