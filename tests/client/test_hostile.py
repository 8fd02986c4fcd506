"""A hostile server, and hostile timing: whatever a server sends and however long anything
takes, a call ends in a status or in one of the library's own errors, memory stays bounded,
and nothing a result keeps holds the answer's body or the API key.

The server is an ``httpx.MockTransport`` (the wire does not matter to these rows), its bodies
streamed where their size is the point.
"""

from __future__ import annotations

import contextlib
import gc
import json
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from tests.hostile_server import hostile_server
from video_translation_client import (
    InvalidResponse,
    JobStatus,
    Outcome,
    PollTimeout,
    RetriesExhausted,
    StatusPollingConfig,
    StatusResponse,
    VideoTranslationClient,
    VideoTranslationError,
    WrongRoute,
)

from .scripted import Scripted, status

URL = "http://hostile.test"
KEY = "sk-live-5b2f0c7e9d"
MIB = 1 << 20


def cfg(**kwargs: Any) -> StatusPollingConfig:
    kwargs.setdefault("long_poll", 0)
    kwargs.setdefault("jitter", "none")
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("timeout", 60)
    return StatusPollingConfig(**kwargs)


class Chunks(httpx.AsyncByteStream):
    """A body sent chunk by chunk, never held whole; counts what was read of it."""

    def __init__(self, chunks: Callable[[], Iterator[bytes]]) -> None:
        self._chunks = chunks()
        self.sent = 0

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = next(self._chunks, None)
        if chunk is None:
            raise StopAsyncIteration
        self.sent += len(chunk)
        return chunk


def gzip_bomb(inflated: int) -> Callable[[], Iterator[bytes]]:
    """A gzip body inflating to ``inflated`` zero bytes, made chunk by chunk as it is read."""

    def chunks() -> Iterator[bytes]:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(MIB)
        for _ in range(inflated // MIB):
            if out := packer.compress(zeros):
                yield out
        yield packer.flush()

    return chunks


def reachable(root: object, limit: int = 200_000) -> list[object]:
    """Objects reachable from ``root`` through references the garbage collector knows of."""
    seen = {id(root)}
    queue: list[object] = [root]
    found: list[object] = []
    while queue and len(found) < limit:
        obj = queue.pop()
        found.append(obj)
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, type):
                seen.add(id(ref))
                queue.append(ref)
    return found


# -- high: one bad answer or a late task takes down nothing --------------------------------


async def test_deadline_passing_during_a_slow_callback_is_a_timeout(autojump_clock):
    """A callback that takes the job past its deadline (time passes while the task is busy):
    PollTimeout for that call, a timeout result in poll_many; no ValueError from a negative
    sleep."""
    server = Scripted([status("pending", headers={"Retry-After": "1"})])

    def slow_callback(response: StatusResponse) -> None:
        autojump_clock.jump(70)  # time passes inside the callback, with no checkpoint

    async with server.client() as http:
        client = VideoTranslationClient(
            URL, cfg(), on_status_change=slow_callback, http_client=http
        )
        with pytest.raises(PollTimeout):
            await client.poll_until_complete("j")
        [result] = await client.poll_many(["k"])
    assert result.outcome is Outcome.TIMEOUT


async def test_deadline_passing_during_a_slow_answer_is_a_timeout(autojump_clock):
    """An answer that arrives after the last-poll point, its handling running past the
    deadline: a timeout, not a crash."""

    def late(request: httpx.Request) -> httpx.Response:
        autojump_clock.jump(59.5)
        return status("pending")

    server = Scripted([late])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http, batch=False)
        results = await client.poll_many(["a", "b"])
    assert [r.outcome for r in results] == [Outcome.TIMEOUT, Outcome.TIMEOUT]


@pytest.mark.parametrize("digits", [20, 309, 400, 5000])
@pytest.mark.parametrize(
    ("code", "header"),
    [
        (200, "Retry-After"),
        (200, "Retry-After-Ms"),
        (429, "Retry-After"),
        (503, "Retry-After-Ms"),
    ],
)
async def test_retry_after_of_any_length_is_a_long_wait(autojump_clock, code, header, digits):
    """Retry-After of hundreds or thousands of digits is a wait of max_hint, not an
    OverflowError: every job still ends with its outcome."""
    huge = {header: "9" * digits}
    body = {"result": "pending"} if code == 200 else {"error": "x"}
    server = Scripted([httpx.Response(code, json=body, headers=huge), status("completed")])
    async with server.client() as http:
        client = VideoTranslationClient(
            URL, cfg(max_hint=5), http_client=http, batch=False, rate_limit=None
        )
        [result] = await client.poll_many(["j"])
    assert result.outcome is Outcome.COMPLETED
    assert server.times[1] - server.times[0] == pytest.approx(5)


async def test_a_huge_eta_in_a_batch_spoils_nothing(autojump_clock):
    """A batch answer whose eta for one job is a 400-digit integer: that job goes on polling
    (the eta is no hint), the other job in the same answer ends completed."""
    eta = int("9" * 400)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/jobs":  # job a, alone once b has ended
            return status("completed")
        body = {
            "jobs": [
                {"job_id": "a", "result": "pending", "eta": eta},
                {"job_id": "b", "result": "completed"},
            ],
            "unknown": [],
        }
        return httpx.Response(200, content=json.dumps(body).encode())

    server = Scripted([answer])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http, batch=True)
        results = await client.poll_many(["a", "b"])
    assert [r.outcome for r in results] == [Outcome.COMPLETED, Outcome.COMPLETED]


async def test_a_gzip_bomb_is_read_no_further_than_the_limit(autojump_clock):
    """4 MB of gzip inflating to 4 GiB (here: 64 MiB, the same ratio): decoding stops at the
    limit, memory stays near it, and the job fails with InvalidResponse naming the limit."""
    bodies: list[Chunks] = []

    def bomb(request: httpx.Request) -> httpx.Response:
        bodies.append(Chunks(gzip_bomb(64 * MIB)))
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=bodies[-1])

    server = Scripted([bomb])
    tracemalloc.start()
    try:
        async with server.client() as http:
            client = VideoTranslationClient(URL, cfg(), http_client=http)
            [result] = await client.poll_many(["j"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.outcome is Outcome.FAILED
    assert isinstance(result.error, RetriesExhausted)
    cause = result.error.__cause__
    assert isinstance(cause, InvalidResponse)
    assert "more than 1,048,576 bytes once decoded (max_response_bytes)" in str(cause)
    assert len(bodies) == 3
    assert peak < 8 * MIB


async def test_an_endless_body_is_read_no_further_than_the_limit(autojump_clock):
    """A body that never ends: the client stops reading just past the limit."""
    bodies: list[Chunks] = []

    def endless() -> Iterator[bytes]:
        while True:
            yield b'{"result": "pending", "padding": "' + b"x" * 65536

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(Chunks(endless))
        return httpx.Response(200, stream=bodies[-1])

    server = Scripted([answer])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http, max_response_bytes=4096)
        with pytest.raises(RetriesExhausted) as info:
            await client.poll_until_complete("j")
    assert "more than 4,096 bytes" in str(info.value.__cause__)
    assert all(body.sent <= 4096 + 65600 for body in bodies)


async def test_a_declared_oversize_body_is_not_read(autojump_clock):
    """A Content-Length over the limit fails before the body is read."""
    stream = Chunks(lambda: iter([b"x" * 5000]))

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "5000"}, stream=stream)

    server = Scripted([answer])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http, max_response_bytes=4096)
        with pytest.raises(RetriesExhausted, match="an answer of 5,000 bytes"):
            await client.poll_until_complete("j")
    assert stream.sent == 0


async def test_an_encoding_not_asked_for_is_an_invalid_response(autojump_clock):
    """The client asks for gzip and deflate only; brotli it cannot bound is refused."""

    def brotli(request: httpx.Request) -> httpx.Response:
        body = Chunks(lambda: iter([b"\x1b\x00"]))
        return httpx.Response(200, headers={"Content-Encoding": "br"}, stream=body)

    server = Scripted([brotli])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http)
        with pytest.raises(RetriesExhausted) as info:
            await client.poll_until_complete("j")
    assert "content-encoding 'br'" in str(info.value.__cause__)
    assert server.log[0][1].headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_answers_within_the_limit_are_read(autojump_clock, encoding):
    """A status sent gzip- or deflate-encoded (zlib-wrapped or raw) is read as usual."""
    wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[encoding]
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    body = packer.compress(b'{"result": "completed"}') + packer.flush()
    header = "gzip" if encoding == "gzip" else "deflate"

    def answer(request: httpx.Request) -> httpx.Response:
        stream = Chunks(lambda: iter([body[:5], body[5:]]))
        return httpx.Response(200, headers={"Content-Encoding": header}, stream=stream)

    server = Scripted([answer])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http)
        done = await client.poll_until_complete("j")
    assert done.status is JobStatus.COMPLETED


# -- medium: what results keep, cookies --------------------------------------------------


async def test_a_failed_result_keeps_neither_the_body_nor_the_key(autojump_clock):
    """A job failed by 512 KiB answers that are not JSON: nothing reachable from its result
    is a large string or bytes, and nothing holds the API key (not through the exception
    chain, a request's headers or a traceback's frames)."""
    junk = b"<html>" + b"x" * (512 * 1024)
    server = Scripted([httpx.Response(200, content=junk)])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http, api_key=KEY)
        [result] = await client.poll_many(["j"])
    assert isinstance(result.error, WrongRoute)  # no answer was ever a status
    assert server.log[0][1].headers["authorization"] == f"Bearer {KEY}"
    objects = reachable(result)
    assert not [o for o in objects if isinstance(o, bytes | str) and len(o) > 10_000]
    assert not [o for o in objects if isinstance(o, str | bytes) and KEY in str(o)]
    assert not [o for o in objects if isinstance(o, httpx.Request | httpx.Response)]


@pytest.mark.parametrize(
    "failure", [httpx.ConnectError("refused"), httpx.Response(503, json={"error": "down"})]
)
async def test_the_key_is_not_reachable_from_a_transport_failure(autojump_clock, failure):
    """RetriesExhausted's cause is the failure described, without the request (and so the
    Authorization header) that httpx's exception carries."""
    server = Scripted([failure])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http, api_key=KEY)
        [result] = await client.poll_many(["j"])
    assert isinstance(result.error, RetriesExhausted)
    objects = reachable(result)
    assert not [o for o in objects if isinstance(o, str | bytes) and KEY in str(o)]
    assert not [o for o in objects if isinstance(o, httpx.Request | httpx.Response)]


async def test_cookies_are_not_kept():
    """A server setting twenty new 4 kB cookies on every answer: no request of the client's
    own connection pool carries any (over a real socket: the pool is the client's)."""
    counter = 0

    def answer(path: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        nonlocal counter
        cookies = []
        for _ in range(20):
            counter += 1
            cookies.append(("Set-Cookie", f"c{counter}={'v' * 4000}; Path=/"))
        # Done at the fifth request, however fast the machine: four answers set cookies first.
        result = "completed" if counter > 80 else "pending"
        return 200, cookies, json.dumps({"result": result}).encode()

    config = cfg(initial_delay=0.02, max_delay=0.02, hints=False, timeout=None)
    with trio.fail_after(20), hostile_server(answer) as (url, seen):
        async with VideoTranslationClient(url, config, rate_limit=None) as client:
            await client.poll_until_complete("j")
    assert len(seen) == 5
    assert all("cookie" not in headers for headers in seen)


# -- the property: any answer -------------------------------------------------------------

header_values = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    st.integers(min_value=0).map(str),
    st.sampled_from(["9" * 400, "9" * 5000, "-1", "nan", "inf", "1e400", " 3 ", "Thu, 01 Jan"]),
)
headers = st.dictionaries(
    st.sampled_from(
        [
            "Retry-After",
            "Retry-After-Ms",
            "RateLimit-Policy",
            "Preference-Applied",
            "Content-Encoding",
            "Location",
            "Content-Type",
        ]
    ),
    header_values,
    max_size=4,
)
numbers = st.one_of(
    st.integers(), st.floats(allow_nan=True), st.just(int("9" * 400)), st.booleans(), st.none()
)
entry = st.fixed_dictionaries(
    {
        "job_id": st.sampled_from(["a", "b", "zz", 7]),
        "result": st.sampled_from(["pending", "completed", "error", "x", None, 3]),
    },
    optional={"eta": numbers, "progress": numbers},
)
bodies = st.one_of(
    st.binary(max_size=60),
    st.builds(lambda e: json.dumps(e).encode(), entry),
    st.builds(
        lambda jobs, unknown: json.dumps({"jobs": jobs, "unknown": unknown}).encode(),
        st.lists(entry, max_size=3),
        st.one_of(st.lists(st.sampled_from(["a", "b", 1]), max_size=2), st.none()),
    ),
    st.builds(lambda n: json.dumps({"result": "pending", "eta": n}).encode(), numbers),
)
codes = st.sampled_from([200, 204, 301, 302, 400, 401, 404, 410, 418, 429, 500, 501, 503, 599])
HUGE = int("9" * 400)


# The hostile values the strategies single out, each once where the client reads it, on every
# run. Drawn, they came up rarely (a huge eta in a 200: about one answer in 280), and whether
# they did hung on the modules imported before (Hypothesis draws constants from them): alone,
# the test missed an unguarded OverflowError that it caught after other tests had run.
@example(answers=[(200, {}, json.dumps({"result": "pending", "eta": HUGE}).encode())])
@example(answers=[(429, {"Retry-After": "9" * 5000}, b"")])
@example(answers=[(429, {"Retry-After": "Thu, 01 Jan"}, b"")])
@example(answers=[(429, {"RateLimit-Policy": '"d";q=x;w=1e400'}, b"")])
@example(answers=[(200, {}, b"\xff{")])
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers=st.lists(st.tuples(codes, headers, bodies), min_size=1, max_size=4))
def test_any_answer_ends_in_a_status_or_a_typed_error(answers):
    """For any status codes, headers and bodies, one at a time, through poll_many or in
    batches: every call ends in a status, a JobResult or a VideoTranslationError."""

    async def main() -> None:
        responses = [
            httpx.Response(code, headers=list(head.items()), content=body)
            for code, head, body in answers
        ]
        for batch in (False, True):
            server = Scripted([*responses, status("completed")])
            async with server.client() as http:
                client = VideoTranslationClient(
                    URL, cfg(max_hint=2, timeout=30), http_client=http, batch=batch
                )
                with contextlib.suppress(VideoTranslationError):
                    await client.get_status("a")
                with trio.fail_after(600):
                    results = await client.poll_many(["a", "b"])
            assert [r.job_id for r in results] == ["a", "b"]

    trio.run(main, clock=MockClock(autojump_threshold=0))
