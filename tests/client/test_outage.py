"""A server that answers nothing: ridden through up to outage_timeout, and the verdict true.

A job ends ``timeout`` only when its deadline passes while the server answers it pending; when
the server answers nothing, its outcome is not known: it ends ``failed`` with
ServerUnreachable, saying since when, at the latest at its deadline.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import httpx
import pytest
import trio

from video_translation_client import (
    Outcome,
    RetriesExhausted,
    ServerUnreachable,
    StatusPollingConfig,
    VideoTranslationClient,
)

from .scripted import Scripted, error, status

URL = "http://server.test"


def refused() -> httpx.ConnectError:
    """A connection refused as a real socket's is: the operating system's ECONNREFUSED in
    the transport error's chain (nothing listens at the address)."""
    error = httpx.ConnectError("all attempts to connect failed")
    error.__cause__ = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    return error


def down_between(
    start: float, down_from: float, up_at: float, completes_at: float, *, refusing: bool = False
) -> Callable[[httpx.Request], httpx.Response]:
    """A server answering pending (completed from ``completes_at``), with no answer at all
    from ``down_from`` to ``up_at`` seconds (connections refused, with ``refusing``)."""

    def answer(request: httpx.Request) -> httpx.Response:
        now = trio.current_time() - start
        if down_from <= now < up_at:
            raise refused() if refusing else httpx.ConnectError("connection refused")
        return status("completed" if now >= completes_at else "pending")

    return answer


def failing_between(
    start: float, down_from: float, up_at: float, completes_at: float
) -> Callable[[httpx.Request], httpx.Response]:
    """A server answering pending (completed from ``completes_at``), single checks and
    batches, with a 503 to every request from ``down_from`` to ``up_at`` seconds: a restart
    behind a proxy that answers meanwhile."""

    def answer(request: httpx.Request) -> httpx.Response:
        now = trio.current_time() - start
        if down_from <= now < up_at:
            return error(503)
        result = "completed" if now >= completes_at else "pending"
        if request.url.path != "/jobs":
            return status(result)
        ids = request.url.params["ids"].split(",")
        return httpx.Response(
            200, json={"jobs": [{"job_id": i, "result": result} for i in ids], "unknown": []}
        )

    return answer


async def test_a_server_never_reached_is_given_up_after_max_retries(autojump_clock):
    """A server that never answered since the client started (a wrong URL, most likely): each
    job fails as unreachable after its max_retries backoffs; the dead server sees about one
    request per job plus a probe a second, not max_retries + 1 per job."""
    jobs = 100
    server = Scripted([httpx.ConnectError("connection refused")])
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(
            URL,
            StatusPollingConfig(max_retries=10, jitter="none"),
            http_client=http,
            batch=False,
            rate_limit=None,
        )
        results = await client.poll_many([f"d{i}" for i in range(jobs)])
    took = trio.current_time() - start
    assert all(r.outcome is Outcome.FAILED for r in results)
    assert all(isinstance(r.error, ServerUnreachable) for r in results)
    assert "has not answered since the client started (11 requests failed)" in str(results[0].error)
    # Backoffs 1, 2, 4, 8, 16, then 30 s five times: 181 s to the eleventh failure.
    assert 181 <= took < 200
    assert len(server.log) < jobs + 10 + took * 1.0 + 5
    assert client.statistics().retries_denied > 0.8 * jobs


async def test_with_the_defaults_an_outage_of_60_s_loses_no_job(autojump_clock):
    """Every default: the server answers, goes silent for 60 s (its jobs finish meanwhile),
    and comes back: every job ends completed, and the outage cost about one probe a second.
    Held-back jobs sleep meanwhile (until the server answers, their own retry time or their
    turn to probe), rather than each waking every second to be denied; the first answer
    wakes them all. (30 jobs spend the retry budget as 100 do.)"""
    jobs = 30
    start = trio.current_time()
    server = Scripted([down_between(start, down_from=5, up_at=65, completes_at=30)])
    async with server.client() as http:
        client = VideoTranslationClient(URL, http_client=http)
        results = await client.poll_many([f"j{i}" for i in range(jobs)])
    took = trio.current_time() - start
    assert [r.outcome for r in results] == [Outcome.COMPLETED] * jobs
    during = [t for t, _ in server.log if 5 <= t - start < 65]
    assert len(during) < jobs + 60 + 10
    # Backoffs of 1 to 30 s: 7 or so retry times per job in 60 s, not 60 wake-ups.
    assert client.statistics().retries_denied < 15 * jobs
    # Woken by the first answer, not by their next retry time (up to 30 s later).
    assert took < 65 + 5


async def test_a_failure_after_an_outage_backs_off_anew(autojump_clock):
    """Down from 5 s to 65 s, then the first request of one job in five fails (a 503): its
    retry comes after a first backoff, not after the one the job had reached through the
    outage (up to max_delay, 30 s: the last jobs ended 25 s after the server was back)."""
    start = trio.current_time()
    outage = down_between(start, down_from=5, up_at=65, completes_at=30)
    failed_once: set[str] = set()

    def answer(request: httpx.Request) -> httpx.Response:
        job_id = request.url.path.rsplit("/", 1)[-1]
        unlucky = int(job_id[1:]) % 5 == 0
        if unlucky and trio.current_time() - start >= 65 and job_id not in failed_once:
            failed_once.add(job_id)
            return error(503)
        return outage(request)

    server = Scripted([answer])
    async with server.client() as http:
        client = VideoTranslationClient(URL, http_client=http, batch=False)
        results = await client.poll_many([f"j{i}" for i in range(30)])
    took = trio.current_time() - start
    assert [r.outcome for r in results] == [Outcome.COMPLETED] * 30
    assert len(failed_once) == 6
    assert took < 65 + 5


async def test_a_restart_loses_no_job(autojump_clock):
    """Down for 10 s from the start, then back: every job completes soon after, and the outage
    costs few requests."""
    jobs = 30
    start = trio.current_time()
    server = Scripted([down_between(start, down_from=0, up_at=10, completes_at=0)])
    async with server.client() as http:
        client = VideoTranslationClient(
            URL,
            StatusPollingConfig(max_retries=5, jitter="none"),
            http_client=http,
            batch=False,
            rate_limit=None,
        )
        results = await client.poll_many([f"r{i}" for i in range(jobs)])
    took = trio.current_time() - start
    assert all(r.outcome is Outcome.COMPLETED for r in results)
    # Found back by a probe within about a second, not by the next retries' backoff (15 s).
    assert took < 10 + 3
    failed = [t for t, _ in server.log if t - start < 10]
    # The first check of each job, then the budget's probes: nowhere near jobs x 5 retries.
    assert len(failed) < jobs + 10 + 10 + 5
    assert len(server.log) - len(failed) == jobs


@pytest.mark.parametrize("fault", ["silence", "503"])
async def test_a_server_down_for_good_fails_every_job_after_outage_timeout(autojump_clock, fault):
    """After answering, the server goes silent (or answers 503 to every request) and stays
    so: every job ends failed once that has lasted outage_timeout; none as a timeout (the
    jobs' state is not known), and none held up waiting for a probe. Silent: unreachable
    since the silence began. 503s: RetriesExhausted saying so (the server answers)."""
    start = trio.current_time()
    down = down_between if fault == "silence" else failing_between
    server = Scripted([down(start, down_from=5, up_at=10**9, completes_at=10**9)])
    async with server.client() as http:
        client = VideoTranslationClient(
            URL,
            StatusPollingConfig(outage_timeout=30, initial_delay=1, max_delay=4),
            http_client=http,
            batch=False,
        )
        results = await client.poll_many([f"s{i}" for i in range(30)])
    took = trio.current_time() - start
    assert [r.outcome for r in results] == [Outcome.FAILED] * 30
    if fault == "silence":
        assert all(isinstance(r.error, ServerUnreachable) for r in results)
        assert all(isinstance(r.error, ConnectionError) for r in results)
        assert "has answered nothing since " in str(results[0].error)
        assert results[0].error.since is not None  # type: ignore[union-attr]
    else:
        assert all(type(r.error) is RetriesExhausted for r in results)
        assert "every request has failed for " in str(results[0].error)
        assert "(outage_timeout), the last: HTTP 503" in str(results[0].error)
    assert 35 <= took < 45  # down from about 5 s, 30 s of outage_timeout, a backoff


@pytest.mark.parametrize("batch", [False, True])
async def test_with_the_defaults_60_s_of_503s_to_every_request_lose_no_job(autojump_clock, batch):
    """Every default: the server answers 503 to every request for 60 s (its jobs finish
    meanwhile), then comes back: every job ends completed, as after 60 s of silence. Retries
    held back by the budget are no failures of the job's: counted, 30 jobs through 30 s of
    503s all ended RetriesExhausted ("6 failures in a row") after 2 requests each."""
    jobs = 30
    start = trio.current_time()
    server = Scripted([failing_between(start, down_from=5, up_at=65, completes_at=30)])
    async with server.client() as http:
        client = VideoTranslationClient(URL, http_client=http, batch=batch)
        results = await client.poll_many([f"j{i}" for i in range(jobs)])
    assert [r.outcome for r in results] == [Outcome.COMPLETED] * jobs
    during = [t for t, _ in server.log if 5 <= t - start < 65]
    assert len(during) < jobs + 60 + 10  # the budget's probes, not each job's retries


@pytest.mark.parametrize("before", ["pending", "503"])
@pytest.mark.parametrize("batch", [False, True])
async def test_the_deadline_in_an_outage_is_a_failure_not_a_timeout(autojump_clock, batch, before):
    """The deadline passes while the server answers nothing: failed, unreachable (its state is
    not known), at the deadline; a timeout is only for a server that answered pending. Whatever
    the job's last failure: one answered 503 before the outage, its retries since held back by
    it, is unreachable too."""
    start = trio.current_time()
    outage = down_between(start, down_from=5, up_at=10**9, completes_at=10**9)

    def answer(request: httpx.Request) -> httpx.Response:
        if before == "503" and trio.current_time() - start < 5:
            return error(503)
        return outage(request)

    server = Scripted([answer])
    config = StatusPollingConfig(timeout=20)
    async with server.client() as http:
        client = VideoTranslationClient(URL, config, http_client=http, batch=batch)
        results = await client.poll_many([f"t{i}" for i in range(20)])
        [alone] = await client.poll_many(["pending-only"])  # answered pending till the end
    assert [r.outcome for r in results] == [Outcome.FAILED] * 20
    assert all(isinstance(r.error, ServerUnreachable) for r in results)
    assert all(r.elapsed_time == pytest.approx(20) for r in results)
    assert alone.outcome is Outcome.FAILED  # the server was still silent


async def test_a_job_answered_pending_to_its_deadline_times_out(autojump_clock):
    """The other side: the server answers, pending, until the deadline passes: timeout."""
    server = Scripted([status("pending")])
    async with server.client() as http:
        client = VideoTranslationClient(URL, StatusPollingConfig(timeout=20), http_client=http)
        [result] = await client.poll_many(["p"])
    assert result.outcome is Outcome.TIMEOUT
    assert result.elapsed_time == pytest.approx(20)


@pytest.mark.parametrize("batch", [None, False])
async def test_connections_refused_from_the_start_fail_within_seconds(autojump_clock, batch):
    """Nothing listens at the URL (every connection refused, none ever answered): every job
    fails as unreachable within five seconds, naming the URL, not after all its retries."""
    server = Scripted([refused()])
    ids = [f"n{i}" for i in range(100)]
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(URL, http_client=http, batch=batch)
        results = await client.poll_many(ids)
    took = trio.current_time() - start
    assert all(r.outcome is Outcome.FAILED for r in results)
    assert all(isinstance(r.error, ServerUnreachable) for r in results)
    assert f"the server at {URL} refused every connection since the client started" in str(
        results[0].error
    )
    assert took <= 5.0
    # A look a job and a few retries (with no retry budget, 3 a job): the margin is not a
    # share of the jobs, and 100 show that as well as 300 did.
    assert len(server.log) < len(ids) + 20


async def test_connections_refused_after_an_answer_are_ridden_through(autojump_clock):
    """Once the server has answered, refused connections are an outage like any other
    (a restart): ridden through with the defaults, every job completed."""
    start = trio.current_time()
    server = Scripted([down_between(start, 5, 65, completes_at=30, refusing=True)])
    async with server.client() as http:
        client = VideoTranslationClient(URL, http_client=http)
        results = await client.poll_many([f"j{i}" for i in range(30)])
    assert [r.outcome for r in results] == [Outcome.COMPLETED] * 30
