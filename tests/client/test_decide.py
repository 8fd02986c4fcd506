"""A job's decisions as tables: given what happened, the time and the server's state, what
comes next. No clock, no server, no event loop."""

from __future__ import annotations

import math

import pytest

from video_translation_client import (
    JobStatus,
    PollTimeout,
    RetriesExhausted,
    ServerUnreachable,
    StatusPollingConfig,
)
from video_translation_client._decide import (
    Action,
    Check,
    Done,
    Fail,
    JobRecord,
    ServerView,
    answered,
    failed,
    held_back,
    verdict,
)
from video_translation_client._http import Answer, Transient
from video_translation_client._schedule import Hinted

CONFIG = StatusPollingConfig(jitter="none", timeout=100, max_retries=2, outage_timeout=30)
UP = ServerView(ever_answered=True, last_answer=0.0, last_success=0.0)


def job(config: StatusPollingConfig = CONFIG, **fields: object) -> JobRecord:
    record = JobRecord("j", config, started=0.0, random=lambda: 0.5)
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def pending(**fields: object) -> Answer:
    base: dict[str, object] = {
        "status": JobStatus.PENDING,
        "payload": {},
        "hint": None,
        "wait_applied": None,
    }
    return Answer(**{**base, **fields})  # type: ignore[arg-type]


FAIL_500 = Transient("HTTP 500", status_code=500)
FAIL_429 = Transient("HTTP 429", status_code=429, hint=3.0)
#: A 429 that says nothing of when to come back (ElevenLabs', a proxy's).
BARE_429 = Transient("HTTP 429", status_code=429)
THROTTLED = "asking again (throttled)"
NO_ANSWER = Transient("ConnectError")
NOTE_1_5 = "retry (no answer from the server for 1.5 s)"
NOTE_2_0 = "retry (no answer from the server for 2.0 s)"


@pytest.mark.parametrize(
    ("failing", "server", "expected", "words"),
    [
        (None, UP, PollTimeout, "did not finish within 100 s; no status seen"),
        (FAIL_500, UP, RetriesExhausted, "passed while retrying; the last failure: HTTP 500"),
        (
            NO_ANSWER,
            ServerView(silent_since=50.0, url="http://x"),
            ServerUnreachable,
            "has answered nothing since ? (50.0 s)",
        ),
    ],
)
def test_the_verdict_at_the_deadline(failing, server, expected, words):
    """Pending at the deadline is a timeout; failing, retries exhausted; a silent server,
    unreachable."""
    error = verdict(job(failing=failing), 100.0, server)
    assert type(error) is expected
    assert words in str(error)


def _assert_action(action: Action, expected: Check | type[Exception]) -> None:
    """The action a table row expects: this check, or a failure of this type."""
    if isinstance(expected, Check):
        assert action == expected
    else:
        assert isinstance(action, Fail)
        assert type(action.error) is expected


@pytest.mark.parametrize(
    ("failure", "failures", "server", "now", "expected"),
    [
        # A 429 is flow control: its hint, and no failure counted.
        (FAIL_429, 0, UP, 1.0, Check(delay=3.0, note=THROTTLED)),
        # Without one: at once while refusals look random (the limiter paces every request)...
        (BARE_429, 0, ServerView(refused=1, requests=100), 1.0, Check(note=THROTTLED)),
        # ...the retry backoff when the server refuses most requests.
        (BARE_429, 0, ServerView(refused=60, requests=100), 1.0, Check(delay=1.0, note=THROTTLED)),
        # An HTTP failure counts; the retry waits the retry backoff, and sleeps until recovery.
        (FAIL_500, 0, UP, 1.0, Check(delay=1.0, until_recovery=True, note="retry 1 of 2")),
        (FAIL_500, 2, UP, 1.0, RetriesExhausted),
        # The server fails most requests and every one since this job's last failure: its
        # trouble, not the job's, ridden through up to outage_timeout since its last success.
        (
            FAIL_500,
            2,
            ServerView(last_answer=2.0, last_success=0.0, retries_spent=True, failing_since=0.0),
            29.0,
            Check(delay=1.0, until_recovery=True, note="retry (every request failing for 29.0 s)"),
        ),
        (
            FAIL_500,
            2,
            ServerView(last_answer=2.0, last_success=0.0, retries_spent=True, failing_since=0.0),
            30.0,
            RetriesExhausted,
        ),
        # No answer from a server that never answered: counted as a failure.
        (
            NO_ANSWER,
            2,
            ServerView(ever_answered=False, last_answer=-math.inf),
            1.0,
            ServerUnreachable,
        ),
        # No answer during an outage: ridden through until outage_timeout...
        (
            NO_ANSWER,
            5,
            ServerView(last_answer=-1.0, silent_since=0.0),
            29.0,
            Check(
                delay=1.0,
                until_recovery=True,
                note="retry (no answer from the server for 29.0 s)",
            ),
        ),
        # ...and no longer.
        (NO_ANSWER, 0, ServerView(last_answer=-1.0, silent_since=0.0), 30.0, ServerUnreachable),
    ],
)
def test_what_follows_a_failure(failure, failures, server, now, expected):
    """The table of failures: flow control, the job's own failures, the server's silence."""
    record = job(failures=failures, failed_at=0.0)
    _assert_action(failed(record, failure, now, server), expected)


def test_failures_from_before_a_job_began_do_not_end_it():
    """The server has failed every request since long before this job began (the last jobs
    of an outage, then an idle client): the job's ride-through is measured from its own
    start, not from the server's first failure, and it rides on."""
    record = job(started=3600.0, failing=FAIL_500, failed_at=3600.5)
    server = ServerView(last_success=-1.0, retries_spent=True, failing_since=0.0)
    action = failed(record, FAIL_500, 3601.0, server)
    assert action == Check(
        delay=1.0, until_recovery=True, note="retry (every request failing for 1.0 s)"
    )


def test_a_job_refused_in_a_row_more_often_than_chance_explains_backs_off():
    """429s that say nothing of when to come back: a job asks again at once while its run of
    them is as likely as the limiter's test allows at the client's share of refusals (5%
    here: 2 in a row), then backs off as after a failure (4 in a row at 5%: 6e-6); an
    answer ends the run."""
    record = job()
    server = ServerView(refused=5, requests=100)
    delays = [failed(record, BARE_429, 1.0, server).delay for _ in range(4)]  # type: ignore[union-attr]
    assert delays[:2] == [0.0, 0.0]
    assert delays[2:] == [1.0, 2.0]
    answered(record, pending(), 2.0, server, Hinted())
    assert failed(record, BARE_429, 3.0, server) == Check(note=THROTTLED)


def test_an_answer_that_woke_for_another_job_is_no_check():
    """A held batch woken by another job's change: no check of this one, asked again at once
    with the same hold."""
    record = job()
    server = ServerView(may_hold=True)
    action = answered(record, pending(held=25, woken=True), 10.0, server, Hinted())
    assert action == Check(hold=25)
    assert record.checks == 0
    assert record.last is None


def test_a_final_answer_ends_the_job():
    record = job()
    action = answered(record, pending(status=JobStatus.COMPLETED), 7.0, UP, Hinted())
    assert isinstance(action, Done)
    assert action.response.status is JobStatus.COMPLETED
    assert action.response.elapsed_time == 7.0
    assert action.response.checks == 1


def test_max_attempts_counts_checks():
    """The tenth pending check of a job with max_attempts=10 ends it as a timeout."""
    config = StatusPollingConfig(jitter="none", max_attempts=10)
    record = job(config, checks=9)
    action = answered(record, pending(), 5.0, UP, Hinted())
    assert isinstance(action, Fail)
    assert isinstance(action.error, PollTimeout)
    assert "still pending after 10 checks (max_attempts)" in str(action.error)


@pytest.mark.parametrize(
    ("checks", "answer", "server", "expected"),
    [
        # Hints win: ask again when the server says.
        (3, pending(hint=4.0), UP, Check(delay=4.0)),
        # No hint, no hold: the backoff (jitter none: 1, 2, 4...).
        (3, pending(), UP, Check(delay=1.0)),
        # A server that held this check holds the next: ask again at once.
        (
            3,
            pending(held=25, wait_applied=25.0),
            ServerView(may_hold=True),
            Check(hold=25),
        ),
        # A held check cut short (a proxy): back to the backoff, not a spin.
        (
            3,
            pending(held=25, wait_applied=25.0, cut_short=True),
            ServerView(may_hold=True),
            Check(delay=1.0),
        ),
        # A lone job's first answer with an ETA: wait half of it, then a held check.
        (
            0,
            pending(hint=10.0),
            ServerView(may_hold=True),
            Check(delay=5.0, hold=25, unheld_delay=5.0),
        ),
        # The same job riding batches: hold at once.
        (0, pending(hint=10.0), ServerView(may_hold=True, batched=True), Check(hold=25)),
    ],
)
def test_the_hinted_schedule(checks, answer, server, expected):
    """Hints, held checks and backoff, as a table."""
    record = job(checks=checks)
    assert answered(record, answer, 0.0, server, Hinted()) == expected


def test_a_held_back_retry_waits_for_the_server_or_its_backoff():
    """A retry the budget held back: within about a second, no request; after its whole
    backoff with nothing succeeding, a new retry time, and no failure counted: the job sent
    nothing."""
    record = job(failing=FAIL_500, failed_at=10.0, retry_at=12.0)
    server = ServerView(last_answer=10.0, last_success=5.0, failing_since=10.0)
    assert held_back(record, 11.0, server) == Check(delay=1.0, until_recovery=True)
    assert held_back(record, 12.0, server) == Check(delay=1.0, until_recovery=True)
    assert record.retry_at > 12.0
    assert record.failures == 0


def test_a_retry_held_back_by_a_spent_budget_sleeps_till_its_backoff_or_its_turn():
    """While the budget is spent, a held-back retry does not wake every second to ask: it
    waits for the server's answer, its whole backoff or its turn to be the probe. A backoff
    passed so is no failure of the job's (it sent nothing, and the server fails everyone):
    the job rides through, up to outage_timeout since the server's last success."""
    record = job(failing=FAIL_500, failed_at=10.0, retry_at=14.0)
    server = ServerView(last_answer=10.0, last_success=5.0, retries_spent=True, failing_since=6.0)
    expected = Check(delay=3.0, until_recovery=True, until_probe=True)
    assert held_back(record, 11.0, server) == expected
    assert record.failures == 0
    assert held_back(record, 14.0, server) == Check(
        delay=record.retry_at - 14.0, until_recovery=True, until_probe=True
    )
    assert record.retry_at > 14.0
    assert record.failures == 0
    record.retry_at = 36.0  # outage_timeout (30 s) after the first failure
    action = held_back(record, 36.0, server)
    assert isinstance(action, Fail)
    assert type(action.error) is RetriesExhausted
    assert "every request has failed for 30.0 s (outage_timeout)" in str(action.error)


REFUSED = Transient("ConnectError: refused", refused=True)
NEVER = ServerView(ever_answered=False, silent_since=0.0, url="http://x")


@pytest.mark.parametrize(
    ("failure", "server", "now", "expected"),
    [
        # Refused since the start: the retry is fitted to the give-up point (backoff says 2 s)...
        (REFUSED, NEVER, 1.5, Check(delay=0.5, until_recovery=True, note=NOTE_1_5)),
        # ...where the server is given up on, whatever max_retries says.
        (REFUSED, NEVER, 2.0, ServerUnreachable),
        # No answer but no refusal (a time-out): the retries of a server never reached.
        (NO_ANSWER, NEVER, 2.0, Check(delay=2.0, until_recovery=True, note=NOTE_2_0)),
        # A server that has answered before and refuses now is ridden through, as any outage.
        (
            REFUSED,
            ServerView(last_answer=-1.0, silent_since=0.0),
            2.0,
            Check(delay=2.0, until_recovery=True, note=NOTE_2_0),
        ),
    ],
)
def test_a_server_refusing_since_the_start_is_given_up_within_seconds(
    failure, server, now, expected
):
    """Connections refused by a server that never answered end the job as unreachable two
    seconds after the first (not after every retry); any other silence is waited out."""
    record = job(failures=1, failed_at=0.0)
    record.retry_backoff.next_delay()  # the first retry's 1 s is past: the next backoff is 2 s
    action = failed(record, failure, now, server)
    _assert_action(action, expected)
    if isinstance(action, Fail):
        assert str(action.error) == (
            "job 'j': the server at http://x refused every connection since the client "
            "started (0 requests in 2.0 s, the last: ConnectError: refused): is the server "
            "running, and is the URL right?"
        )


def test_a_held_back_retry_of_a_refusing_server_still_gives_up_in_time():
    """A retry held back by the budget while connections are refused wakes at the give-up
    point at the latest, and gives up there."""
    record = job(failing=REFUSED, failed_at=0.0, retry_at=1.0)
    action = held_back(record, 1.0, NEVER)
    assert action == Check(delay=1.0, until_recovery=True)  # retry_at fitted to 2.0
    assert record.retry_at == 2.0
    action = held_back(record, 2.0, NEVER)
    assert isinstance(action, Fail)
    assert isinstance(action.error, ServerUnreachable)
