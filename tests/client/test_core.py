"""The client core against the defects of its last shape: counts that tell the truth, one
session for calls made without ``async with``, routes that misbehave routed around, and bad
input kept typed and local. Each test failed on the core before it (commit 01a65ef).
"""

from __future__ import annotations

import json
import random
import ssl
import subprocess
import sys

import httpx
import pytest
import trio

from sim_server._jobs import Job
from video_translation_client import (
    InvalidArgument,
    JobNotFound,
    JobStatus,
    Outcome,
    PollTimeout,
    RequestRejected,
    StatusPollingConfig,
    VideoTranslationClient,
    WrongRoute,
)
from video_translation_client import _pool as pool_module
from video_translation_client._batch import Batcher
from video_translation_client._http import Answer
from video_translation_client._state import MALFORMED_IN_A_ROW, RETRY_ROUTE_AFTER

from .scripted import Scripted

URL = "http://sim"

#: The original design's settings, with its max_attempts of 10.
ORIGINAL = StatusPollingConfig(
    initial_delay=1, max_delay=8, backoff_factor=2, timeout=60, max_attempts=10
)


def add_jobs(sim, specs: dict[str, tuple[float, str]]) -> None:
    now = trio.current_time()
    for job_id, (duration, outcome) in specs.items():
        sim.state.store.add(Job(job_id, now, duration, outcome))  # type: ignore[arg-type]


def durations(n: int, low: float, high: float, seed: int = 1) -> dict[str, tuple[float, str]]:
    rng = random.Random(seed)
    return {f"j{i}": (rng.uniform(low, high), "completed") for i in range(n)}


# -- counts ----------------------------------------------------------------------------------


async def test_max_attempts_does_not_count_batch_wake_ups(autojump_clock, make_sim):
    """30 jobs of 5-15 s under the original design's max_attempts=10, batched and held: a
    held batch woken by another job's completion is no check of the others, so every job
    completes (20 of 30 ended as timeouts when wake-ups counted: a job times out once ten
    others complete during its hold, so 30 jobs are enough)."""
    sim = make_sim()
    add_jobs(sim, durations(30, 5, 15))
    client = VideoTranslationClient(URL, ORIGINAL, http_client=sim.client)
    results = await client.poll_many([f"j{i}" for i in range(30)])
    assert {r.outcome for r in results} == {Outcome.COMPLETED}
    assert max(r.checks for r in results) <= 10


async def test_max_attempts_counts_checks_from_many_tasks_too(autojump_clock, make_sim):
    """The same through 30 tasks each awaiting poll_until_complete on one entered client."""
    sim = make_sim()
    add_jobs(sim, durations(30, 5, 15))
    timeouts = 0
    async with VideoTranslationClient(URL, ORIGINAL, http_client=sim.client) as client:

        async def one(job_id: str) -> None:
            nonlocal timeouts
            try:
                await client.poll_until_complete(job_id)
            except PollTimeout:
                timeouts += 1

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(one, f"j{i}")
    assert timeouts == 0


async def test_a_jobs_attempts_are_its_checks_not_the_batches_it_rode(autojump_clock, make_sim):
    """Jobs of 3-6 s among 30 polled together: a handful of checks each (up to 30 when every
    batch wake-up counted), and the client's status_checks is the sum of them."""
    sim = make_sim()
    add_jobs(sim, durations(30, 3, 6))
    client = VideoTranslationClient(URL, http_client=sim.client)
    results = await client.poll_many([f"j{i}" for i in range(30)])
    assert max(r.checks for r in results) <= 4
    assert client.statistics().status_checks == sum(r.checks for r in results)


async def test_statistics_count_jobs_retries_and_checks_on_every_call_path(
    autojump_clock, make_sim
):
    """50 poll_until_complete calls on one entered client: each counted as completed; a
    failed batch is one retry (a request), not one per job in it."""
    sim = make_sim(fault_503=0.2, seed=3)
    add_jobs(sim, durations(50, 1, 4))
    async with (
        VideoTranslationClient(
            URL, StatusPollingConfig(max_retries=10), http_client=sim.client
        ) as client,
        trio.open_nursery() as nursery,
    ):
        for i in range(50):
            nursery.start_soon(client.poll_until_complete, f"j{i}")
    stats = client.statistics()
    assert stats.jobs_completed == 50
    assert stats.jobs_pending == 0
    assert 0 < stats.retries < stats.requests
    assert stats.status_checks <= 3 * 50
    assert stats.limiter_wait_time == 0  # no rate was set: nothing waited for one


# -- one session, entered or not ------------------------------------------------------------


async def test_calls_on_an_unentered_client_share_one_session(autojump_clock, make_sim):
    """50 tasks on a client not entered with ``async with`` share one session: their checks
    ride requests together, so there are more checks than requests (155 in 126). A session
    per call batches nothing across calls, one check a request at most: 54 in 54 when each
    unentered call opened a session of its own. (Requests per job, compared with an entered
    client's, no longer told the two apart: 1.02 for sessions of their own, 1.8 shared.)"""
    # A server that batches but neither holds checks nor hints: checks fall due at their
    # own times, and only a session shared by the calls gathers them into batches.
    sim = make_sim(max_wait=0.0, hints=False)
    add_jobs(sim, durations(50, 4, 8))
    client = VideoTranslationClient(URL, http_client=sim.client)
    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(client.poll_until_complete, f"j{i}")
    stats = client.statistics()
    assert stats.jobs_completed == 50
    assert stats.status_checks > stats.requests


async def test_a_batch_whose_leader_is_cancelled_still_answers_the_others(autojump_clock):
    """The check that leads a batch is cancelled while its request is out: the request goes
    with it, and the checks still waiting ask again, one of them leading the next batch."""
    sent: list[list[str]] = []
    release = trio.Event()

    async def send(ids: list[str], hold: int, retry: bool) -> dict[str, Answer | BaseException]:
        sent.append(ids)
        await release.wait()
        return {i: Answer(JobStatus.COMPLETED, {}, None, None) for i in ids}

    async def admit() -> None:
        pass

    batcher = Batcher(send, admit=admit, window=0.005)
    answers: dict[str, JobStatus] = {}

    async def one(job_id: str, scope: trio.CancelScope) -> None:
        with scope:
            answers[job_id] = (await batcher.fetch(job_id, 0)).status

    scopes = {job_id: trio.CancelScope() for job_id in ("x", "y", "z")}
    async with trio.open_nursery() as nursery:
        for job_id, scope in scopes.items():
            nursery.start_soon(one, job_id, scope)
        await trio.sleep(0.01)  # past the window: the request is out
        assert len(sent) == 1
        assert sorted(sent[0]) == ["x", "y", "z"]
        leader = sent[0][0]  # the first check of a batch leads it
        scopes[leader].cancel()
        await trio.sleep(0.01)
        release.set()
    others = sorted(set(scopes) - {leader})
    assert len(sent) == 2
    assert sorted(sent[1]) == others
    assert answers == dict.fromkeys(others, JobStatus.COMPLETED)


# -- routes that misbehave ------------------------------------------------------------------


class Proxy(httpx.AsyncBaseTransport):
    """In front of the app: answers what ``rewrite`` returns for a request, else forwards."""

    def __init__(self, inner: httpx.AsyncBaseTransport, rewrite) -> None:
        self.inner = inner
        self.rewrite = rewrite
        self.seen = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        answer: httpx.Response | None = self.rewrite(request, self.seen)
        if answer is not None:
            return answer
        response = await self.inner.handle_async_request(request)
        after = getattr(self.rewrite, "after", None)
        if after is not None:
            rewritten: httpx.Response = await after(request, response)
            return rewritten
        return response


def proxied(sim, rewrite) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=Proxy(sim.client._transport, rewrite), base_url=URL)


def held(request: httpx.Request) -> bool:
    prefer: str = request.headers.get("prefer", "")
    return prefer.startswith("wait=") and prefer != "wait=0"


async def test_held_checks_that_fail_fall_back_to_short_checks(autojump_clock, make_sim):
    """A proxy answers 504 to every held request while short checks pass: the client checks
    at once instead, and every job completes (all 20 failed in 4.9 s when a failed held
    check was always retried as a held check)."""
    sim = make_sim()
    add_jobs(sim, durations(20, 5, 15))
    gateway = proxied(sim, lambda r, n: httpx.Response(504) if held(r) else None)
    async with gateway:
        client = VideoTranslationClient(URL, http_client=gateway)
        results = await client.poll_many([f"j{i}" for i in range(20)])
    assert {r.outcome for r in results} == {Outcome.COMPLETED}


async def test_a_batch_route_that_turns_bad_is_set_aside(autojump_clock, make_sim):
    """After one good batch answer, the batch route answers ``{"jobs": "x"}``: after a few
    such answers it is set aside (for a minute, longer than this run), and the jobs are
    checked one by one and all complete (292 of 300 failed when it was retried as a batch;
    retried as a batch now, it is asked 14 times, not 3, before these 50 jobs end)."""
    sim = make_sim()
    add_jobs(sim, durations(50, 2, 10))
    bad_answers = 0

    def garbage_after_first(request: httpx.Request, seen: int) -> httpx.Response | None:
        nonlocal bad_answers
        if "ids" in request.url.params and seen > 1:
            bad_answers += 1
            return httpx.Response(200, json={"jobs": "x"})
        return None

    start = trio.current_time()
    async with proxied(sim, garbage_after_first) as gateway:
        client = VideoTranslationClient(URL, http_client=gateway)
        results = await client.poll_many([f"j{i}" for i in range(50)])
    assert {r.outcome for r in results} == {Outcome.COMPLETED}
    assert trio.current_time() - start < RETRY_ROUTE_AFTER
    assert 0 < bad_answers <= MALFORMED_IN_A_ROW


class LeaveOut:
    """Drops one job from every batch answer."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.singles: list[float] = []

    def __call__(self, request: httpx.Request, seen: int) -> None:
        if request.url.path.endswith(f"/{self.job_id}"):
            self.singles.append(trio.current_time())

    async def after(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if "ids" not in request.url.params or response.status_code != 200:
            return response
        body = json.loads(await response.aread())
        body["jobs"] = [j for j in body["jobs"] if j["job_id"] != self.job_id]
        return httpx.Response(200, json=body, headers={"Preference-Applied": "wait=0"})


async def test_a_job_left_out_of_a_batch_answer_is_checked_alone_at_once(autojump_clock, make_sim):
    """A batch answer that leaves a job out: that job is checked on its own at once, not
    failed after max_retries."""
    sim = make_sim(max_wait=0)
    add_jobs(sim, durations(10, 3, 6))
    leave_out = LeaveOut("j3")
    async with proxied(sim, leave_out) as gateway:
        client = VideoTranslationClient(
            URL, StatusPollingConfig(max_retries=1), http_client=gateway
        )
        start = trio.current_time()
        results = await client.poll_many([f"j{i}" for i in range(10)])
    assert {r.outcome for r in results} == {Outcome.COMPLETED}
    assert leave_out.singles
    assert leave_out.singles[0] - start < 0.1


# -- bad input, typed and local -------------------------------------------------------------


async def test_long_ids_are_split_into_batches_whose_urls_fit(autojump_clock, make_sim):
    """20 IDs of 1,900 bytes in a URL (three fill one) among 40 good ones: the batches are
    split so that their URLs fit, and every job gets a result: the good ones their true one,
    the long ones (which this server refuses) a typed failure. A raw httpx.InvalidURL escaped
    before."""
    sim = make_sim(auto_create=True, completion_time=3, error_rate=0)
    long_ids = [f"{i:03d}" + "x" * 97 for i in range(20)]
    long_ids = [i + "é" * 300 for i in long_ids]  # é is six bytes encoded: %C3%A9
    ids = long_ids + [f"good-{i}" for i in range(40)]
    seen: list[int] = []

    def record(request: httpx.Request, n: int) -> None:
        seen.append(len(str(request.url)))

    async with proxied(sim, record) as gateway:
        client = VideoTranslationClient(URL, http_client=gateway)
        results = await client.poll_many(ids)
    assert {r.outcome for r in results[20:]} == {Outcome.COMPLETED}
    assert all(isinstance(r.error, RequestRejected) for r in results[:20])
    assert max(seen) <= 6000


async def test_an_id_that_fits_no_url_fails_alone(autojump_clock, make_sim):
    """An ID too long for any URL fails alone, with InvalidArgument; the others go on. A
    single call for it raises InvalidArgument at once."""
    sim = make_sim(auto_create=True, completion_time=1, error_rate=0)
    huge = "h" * 7000
    client = VideoTranslationClient(URL, http_client=sim.client)
    results = await client.poll_many(["a", huge, "b"])
    assert [r.outcome for r in results] == [Outcome.COMPLETED, Outcome.FAILED, Outcome.COMPLETED]
    assert isinstance(results[1].error, InvalidArgument)
    with pytest.raises(InvalidArgument, match="job_id must be an ID whose status URL fits"):
        await client.poll_until_complete(huge)


def test_no_ca_bundle_is_loaded_for_an_http_server(monkeypatch):
    """A plain http:// server needs no TLS: its pools load no CA bundle (the first client of
    a process paid 20-60 ms for one); an https:// one does."""
    loads: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(args or kwargs)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    pool_module.tls_context.cache_clear()
    try:
        for size in (16, 1000):
            pool_module.new_http_client(size, 10.0, "http")
        assert loads == []
        pool_module.new_http_client(16, 10.0, "https")
        assert loads
    finally:
        pool_module.tls_context.cache_clear()


def test_the_library_imports_httpx_s_transport_up_front():
    """httpx imports httpcore (with h11, h2 and trio's pieces) only when its first client is
    made; the library imports it with itself, so that the first client of a process does not
    pay for it between entering and its first answers."""
    probe = "import sys, video_translation_client; print('httpcore' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout.strip() == "True"


# -- a wrong route said at once -------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        (httpx.Response(404, json={"detail": "Not Found"}), "answered 404"),
        (httpx.Response(200, text="<html>hello</html>"), "answered no status (not valid JSON"),
        (httpx.Response(200, json={"status": "dubbed"}), "no status field 'result'"),
    ],
)
async def test_a_wrong_route_is_said_within_seconds(autojump_clock, answer, what):
    """Every job asked answered 404 (or with no status at all) and none with one: each ends
    after one more look with WrongRoute (a JobNotFound) naming the URL asked and the dialect,
    within seconds, not after its retries."""
    server = Scripted([answer])
    async with server.client() as http:
        client = VideoTranslationClient(URL, http_client=http, batch=False)
        start = trio.current_time()
        results = await client.poll_many(["abc", "def"])
    assert {type(r.error) for r in results} == {WrongRoute}
    assert what in str(results[0].error)
    assert "GET http://sim/jobs/abc" in str(results[0].error)
    assert "(dialect sim): is the base URL or the dialect right?" in str(results[0].error)
    assert trio.current_time() - start < 5
    assert len(server.log) == 4


async def test_a_404_for_one_job_while_others_answer_is_an_unknown_job(autojump_clock, make_sim):
    """The route answers other jobs: a 404 is that job unknown, at once."""
    sim = make_sim()
    add_jobs(sim, {"known": (5, "completed")})
    client = VideoTranslationClient(URL, http_client=sim.client, batch=False)
    known, unknown = await client.poll_many(["known", "nope"])
    assert known.outcome is Outcome.COMPLETED
    assert type(unknown.error) is JobNotFound
