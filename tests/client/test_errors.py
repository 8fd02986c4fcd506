"""Every row of the error classification, and what the caller sees of it."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import subprocess
import sys

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import strategies
from video_translation_client import (
    DIALECTS,
    AuthenticationError,
    InvalidResponse,
    JobNotFound,
    JobStatus,
    PollTimeout,
    RequestRejected,
    RetriesExhausted,
    ServerUnreachable,
    StatusPollingConfig,
    VideoTranslationClient,
    VideoTranslationError,
)
from video_translation_client._dialect import StatusFieldError
from video_translation_client._headers import parse_ratelimit_policy, parse_retry_after

from .scripted import Scripted, error, status

#: An API key a hostile server echoes back in its reason for refusing.
KEY_ECHO = "sk-secret-0123"

URL = "http://server.test"


def cfg(**kwargs) -> StatusPollingConfig:
    """Waits on the backoff schedule, exactly: these tests are about failures."""
    kwargs.setdefault("long_poll", 0)
    kwargs.setdefault("jitter", "none")
    kwargs.setdefault("max_retries", 3)
    kwargs.setdefault("schedule", "backoff")
    return StatusPollingConfig(**kwargs)


@pytest.mark.parametrize(
    ("code", "exc", "message"),
    [
        (400, RequestRejected, "the server rejected the request for job 'j' (400)"),
        (401, AuthenticationError, "the server refused the credentials for job 'j' (401)"),
        (403, AuthenticationError, "the server refused the credentials for job 'j' (403)"),
        (404, JobNotFound, "the server does not know job 'j' (404)"),
        (410, JobNotFound, "the server does not know job 'j' (410)"),
        (422, RequestRejected, "the server rejected the request for job 'j' (422)"),
    ],
)
async def test_permanent_errors_raise_at_once(autojump_clock, code, exc, message):
    """4xx answers raise their typed error after one request, no retry (once another job's
    answer has shown the route right: see test_core's wrong routes)."""
    server = Scripted([status("pending"), error(code)])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http)
        await client.get_status("other")
        with pytest.raises(exc, match=re.escape(message)) as info:
            await client.poll_until_complete("j")
    assert len(server.log) == 2
    assert info.value.status_code == code
    assert info.value.job_id == "j"


TRANSIENT = [
    pytest.param(error(500), "HTTP 500", id="500"),
    pytest.param(error(502), "HTTP 502", id="502"),
    pytest.param(error(503), "HTTP 503", id="503"),
    pytest.param(error(504), "HTTP 504", id="504"),
    pytest.param(httpx.ConnectError("refused"), "ConnectError: refused", id="connect"),
    pytest.param(httpx.ReadError("reset"), "ReadError: reset", id="read"),
    pytest.param(httpx.WriteError("broken pipe"), "WriteError: broken pipe", id="write"),
    pytest.param(httpx.ReadTimeout("slow"), "ReadTimeout: slow", id="read-timeout"),
    pytest.param(
        httpx.RemoteProtocolError("peer closed"), "RemoteProtocolError: peer closed", id="dropped"
    ),
    pytest.param(httpx.Response(200, content=b'{"result": "pen'), "not valid JSON", id="json"),
    pytest.param(httpx.Response(200, content=b"<html>"), "not valid JSON", id="html"),
    pytest.param(
        httpx.Response(200, json={"result": "exploded"}),
        "'result' holds 'exploded', which the sim dialect does not list",
        id="unknown",
    ),
    pytest.param(
        httpx.Response(200, json={"status": "done"}), "has no status field 'result'", id="no-result"
    ),
    pytest.param(
        httpx.Response(200, json=["completed"]), "has no status field 'result'", id="not-object"
    ),
]


@pytest.mark.parametrize(("step", "description"), TRANSIENT)
async def test_transient_failures_retried_then_exhausted(autojump_clock, step, description):
    """Transient failures are retried max_retries times, then RetriesExhausted with the cause:
    the last failure described, not the transport's own exception (which holds the request,
    and so the Authorization header)."""
    # An answer that is no status, before any was read, may be a wrong route (below): here
    # the route has shown itself right first.
    miss = description in ("not valid JSON", "has no status field 'result'")
    server = Scripted([status("pending"), step] if miss else [step])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(max_retries=3), http_client=http)
        with pytest.raises(RetriesExhausted) as info:
            await client.poll_until_complete("j")
    assert len(server.log) == 4 + miss
    if isinstance(step, Exception):
        # No answer at all, from a server never reached: ServerUnreachable, a ConnectionError.
        assert isinstance(info.value, ServerUnreachable)
        assert isinstance(info.value, ConnectionError)
        assert "has not answered since the client started (4 requests failed)" in str(info.value)
    else:
        assert "4 transient failures in a row" in str(info.value)
    assert description in str(info.value)
    cause = info.value.__cause__
    assert cause is not None
    assert description in str(cause)
    assert not isinstance(cause, httpx.HTTPError)
    assert cause.__cause__ is None
    assert cause.__context__ is None
    if isinstance(step, httpx.Response) and step.status_code == 200:
        assert isinstance(cause, InvalidResponse)


@pytest.mark.parametrize(
    ("step", "description"), [*TRANSIENT, pytest.param(error(429), "HTTP 429", id="429")]
)
async def test_transient_failure_then_success(autojump_clock, step, description):
    """One transient failure, then an answer: the caller sees only the answer."""
    server = Scripted([step, status("completed")])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http)
        done = await client.poll_until_complete("j")
    assert done.checks == 1  # the failed request told nothing of the job: no check
    assert client.statistics().requests == 2


async def test_throttling_is_bounded_by_the_deadline_not_max_retries(autojump_clock):
    """Persistent 429s are flow control: they slow the job down until the deadline, each
    waiting out its own backoff. (A server that accepts nothing at all is overrun as far as
    the client can tell: the client-wide rate halves, down to its floor.)"""
    server = Scripted([error(429)])
    async with server.client() as http:
        client = VideoTranslationClient(
            URL, cfg(max_retries=1, timeout=20), http_client=http, rate_limit=10
        )
        with pytest.raises(PollTimeout):
            await client.poll_until_complete("j")
        stats = client.statistics()
    assert stats.throttled == len(server.log) > 2
    assert 1 <= stats.current_rate < 10


async def test_request_timeout_is_a_cancel_scope(autojump_clock):
    """A request that hangs is cut at request_timeout even if the transport never times out."""

    async def hang(request):
        await trio.sleep_forever()

    server = Scripted([hang, status("completed")])
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(request_timeout=2.5), http_client=http)
        done = await client.get_status("j")
    assert [round(t - start, 6) for t in server.times] == [0, 3.5]  # 2.5 s cut + 1 s backoff
    assert done.checks == 1


async def test_failures_counted_consecutively(autojump_clock):
    """A success resets the count: 3 failures, success, 3 failures is fine with max_retries=3."""
    bad = error(500)
    server = Scripted([bad, bad, bad, status("pending"), bad, bad, bad, status("completed")])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(max_retries=3), http_client=http)
        done = await client.poll_until_complete("j")
    assert done.checks == 2  # two answers about the job, among eight requests
    assert client.statistics().requests == 8


@pytest.mark.parametrize(
    ("job_id", "raw_path"),
    [
        ("../admin", b"/jobs/..%2Fadmin"),
        ("a/b?c", b"/jobs/a%2Fb%3Fc"),
        ("..", b"/jobs/%2E%2E"),
        (".", b"/jobs/%2E"),
        ("x#y", b"/jobs/x%23y"),
        ("caf\u00e9 1", b"/jobs/caf%C3%A9%201"),
    ],
)
async def test_job_id_is_one_encoded_segment(autojump_clock, job_id, raw_path):
    """IDs travel percent-encoded as one path segment: no ID can reach another route."""
    server = Scripted([status("completed")])
    async with server.client() as http:
        client = VideoTranslationClient(URL + "/api/v1/", cfg(), http_client=http)
        await client.get_status(job_id)
    request = server.log[0][1]
    assert request.url.raw_path == b"/api/v1" + raw_path
    assert request.url.host == "server.test"


async def test_api_key_sent_but_never_shown(autojump_clock, caplog):
    """The key goes in the Authorization header and nowhere else: not repr, errors or logs."""
    caplog.set_level(logging.DEBUG)
    server = Scripted([error(500), error(401)])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), api_key="sk-very-secret", http_client=http)
        with pytest.raises(AuthenticationError) as info:
            await client.get_status("j")
    assert server.log[0][1].headers["authorization"] == "Bearer sk-very-secret"
    assert "sk-very-secret" not in repr(client)
    assert "sk-very-secret" not in str(info.value)
    assert "sk-very-secret" not in caplog.text


async def test_redirect_to_another_origin_not_followed(autojump_clock):
    """A redirect elsewhere is refused before anything (the key above all) is sent there."""
    server = Scripted([httpx.Response(302, headers={"Location": "http://evil.test/jobs/j"})])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), api_key="k", http_client=http)
        with pytest.raises(RequestRejected, match=r"another origin \(http://evil.test\)"):
            await client.get_status("j")
    assert [r.url.host for _, r in server.log] == ["server.test"]


async def test_same_origin_redirect_followed(autojump_clock):
    """A redirect within the same origin is followed."""
    server = Scripted(
        [httpx.Response(307, headers={"Location": "/v2/jobs/j"}), status("completed")]
    )
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http)
        done = await client.get_status("j")
    assert done.status.value == "completed"
    assert server.log[1][1].url.path == "/v2/jobs/j"


async def test_logging_one_line_per_retry_and_change(autojump_clock, caplog):
    """A retry logs one DEBUG line, a status change one INFO line, under the library's name."""
    caplog.set_level(logging.DEBUG, logger="video_translation_client")
    server = Scripted([error(503), status("pending"), status("completed")])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http)
        await client.poll_until_complete("j")
    ours = [r for r in caplog.records if r.name == "video_translation_client"]
    assert [(r.levelname, r.getMessage()) for r in ours] == [
        ("DEBUG", "job 'j': HTTP 503 for job 'j'; retry 1 of 3 in 1.000 s"),
        ("INFO", "job 'j': (first seen) -> pending after 1.000 s"),
        ("INFO", "job 'j': pending -> completed after 2.000 s"),
    ]


def test_nothing_logged_at_import():
    """Importing the library writes nothing, even with logging at DEBUG."""
    code = (
        "import logging; logging.basicConfig(level=logging.DEBUG);import video_translation_client"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout == proc.stderr == ""


@given(st.one_of(st.none(), strategies.text()), st.one_of(st.none(), strategies.text()))
def test_retry_after_parsing_never_raises(retry_after, retry_after_ms):
    """Any header values give None or a non-negative number of seconds."""
    hint = parse_retry_after(retry_after, retry_after_ms)
    assert hint is None or hint >= 0


def test_retry_after_forms():
    """delay-seconds, HTTP-date and milliseconds, Retry-After-Ms preferred."""
    from datetime import UTC, datetime

    def now():
        return datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    assert parse_retry_after("7", None) == 7
    assert parse_retry_after("7", "1500") == 1.5
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", None, now=now) == 30
    assert parse_retry_after("soon", "-5") is None
    assert parse_retry_after(" 3 ", None) == 3


@given(st.binary(max_size=300))
def test_reading_a_status_gives_a_status_or_a_field_error(body):
    """Any body read by a dialect gives a status or a StatusFieldError, never another
    exception."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return
    for dialect in DIALECTS.values():
        with contextlib.suppress(StatusFieldError):
            assert dialect.status_of(data) in set(JobStatus)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | strategies.text()
    | st.sampled_from(["pending", "completed", "error"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["result", "job_id", "x"]), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    code=st.sampled_from([200, 201, 204, 301, 400, 404, 418, 429, 500, 501, 503, 599]),
    payload=st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=50)),
)
def test_any_answer_gives_a_status_or_a_typed_error(code, payload):
    """Whatever the server answers, the caller gets a status or a VideoTranslationError."""
    from trio.testing import MockClock

    async def main() -> None:
        server = Scripted([httpx.Response(code, content=payload)])
        async with server.client() as http:
            client = VideoTranslationClient(URL, cfg(max_retries=1), http_client=http)
            with contextlib.suppress(VideoTranslationError):
                await client.get_status("j")

    trio.run(main, clock=MockClock(autojump_threshold=0))


@pytest.mark.parametrize(
    ("header", "rate"),
    [
        ('"default";q=25;w=1', 25.0),
        ('"default";q=100;w=60, "burst";q=10;w=1', 100 / 60),
        ('"default";q=5', 5.0),
        (None, None),
        ("", None),
        ('"default";w=1', None),
        ('"default";q=abc;w=1', None),
        ('"default";q=0;w=1', None),
        ('"default";q=inf;w=1', None),
    ],
)
def test_ratelimit_policy_parsing(header: str | None, rate: float | None):
    """RateLimit-Policy gives the strictest quota per second; anything unreadable is None."""
    assert parse_ratelimit_policy(header) == (pytest.approx(rate) if rate else None)


@given(strategies.text(max_size=80))
def test_ratelimit_policy_parser_never_raises(value: str):
    """Whatever the header says, the parser answers a positive rate or None."""
    rate = parse_ratelimit_policy(value)
    assert rate is None or 0 < rate < math.inf


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        pytest.param(
            httpx.Response(400, json={"error": "invalid_job_id", "detail": "no spaces"}),
            "(400): no spaces",
            id="json-detail",
        ),
        pytest.param(
            httpx.Response(422, json={"error": {"message": "bad\nid"}}),
            "(422): bad id",
            id="nested-message",
        ),
        pytest.param(httpx.Response(400, text="  nope\x1b[31m  "), "(400): nope [31m", id="text"),
        pytest.param(httpx.Response(400, text="x" * 5000), f"(400): {'x' * 200}…", id="long"),
        pytest.param(
            httpx.Response(403, json={"error": f"key {KEY_ECHO} refused"}),
            "(403): key *** refused",
            id="key",
        ),
        pytest.param(httpx.Response(400, text="<html><b>Bad</b></html>"), "(400)", id="html"),
    ],
)
async def test_a_refusal_says_the_servers_reason(autojump_clock, answer, said):
    """A 4xx error's message ends with the reason the server gave (a JSON error body's detail,
    message or error, or a short text), on one line, bounded, without the API key."""
    server = Scripted([status("pending"), answer])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http, api_key=KEY_ECHO)
        await client.get_status("other")
        with pytest.raises(VideoTranslationError) as info:
            await client.get_status("j")
    assert str(info.value).endswith(said)
