"""Many jobs at once: poll_many, watch, batching, the retry budget, cancellation."""

from __future__ import annotations

import functools
import random
import re

import httpx
import pytest
import trio

from sim_server import Job
from sim_server._settings import FAULT_KINDS
from video_translation_client import (
    JobNotFound,
    JobResult,
    Outcome,
    PollTimeout,
    StatusPollingConfig,
    StatusResponse,
    VideoTranslationClient,
)

from .scripted import Scripted, error, status
from .test_ratelimit import OVERRUN_REFUSALS

URL = "http://sim"


def cfg(**kwargs) -> StatusPollingConfig:
    kwargs.setdefault("jitter", "none")
    return StatusPollingConfig(**kwargs)


def add_jobs(sim, specs: dict[str, tuple[float, str]]) -> None:
    now = trio.current_time()
    for job_id, (duration, outcome) in specs.items():
        sim.state.store.add(Job(job_id, now, duration, outcome))  # type: ignore[arg-type]


async def test_poll_many_results_in_input_order_deduplicated(autojump_clock, make_sim):
    """One result per distinct ID in input order; failures and timeouts are results, not raised."""
    sim = make_sim()
    add_jobs(sim, {"a": (5, "completed"), "b": (2, "error"), "slow": (500, "completed")})
    client = VideoTranslationClient(URL, cfg(timeout=60), http_client=sim.client)
    results = await client.poll_many(["slow", "a", "missing", "b", "a"])
    assert [r.job_id for r in results] == ["slow", "a", "missing", "b"]
    assert [r.outcome for r in results] == [
        Outcome.TIMEOUT,
        Outcome.COMPLETED,
        Outcome.FAILED,
        Outcome.ERROR,
    ]
    assert isinstance(results[0].error, PollTimeout)
    assert results[0].last_status is not None
    assert isinstance(results[2].error, JobNotFound)
    assert results[1].ok
    assert not results[3].ok
    stats = client.statistics()
    assert (stats.jobs_completed, stats.jobs_error, stats.jobs_timeout, stats.jobs_failed) == (
        1,
        1,
        1,
        1,
    )
    assert stats.jobs_pending == 0


async def test_each_job_has_its_own_deadline_and_schedule(autojump_clock, make_sim):
    """Jobs finish at their own times, seen exactly at completion thanks to their hints."""
    sim = make_sim(max_wait=0)
    add_jobs(sim, {f"j{i}": (1 + i, "completed") for i in range(10)})
    start = trio.current_time()
    seen: dict[str, float] = {}

    def on_change(resp: StatusResponse) -> None:
        if resp.is_final:
            seen[resp.job_id or ""] = trio.current_time() - start

    client = VideoTranslationClient(
        URL, cfg(), on_status_change=on_change, http_client=sim.client, batch=False
    )
    await client.poll_many([f"j{i}" for i in range(10)])
    assert seen == {f"j{i}": pytest.approx(1 + i) for i in range(10)}
    # Two per job, the first look and the hinted one (the first look's answer shows that
    # this server does not hold: it does not say it applied Prefer: wait=0).
    assert client.statistics().requests == 20


async def test_a_hundred_jobs_end_with_their_true_outcome(autojump_clock, make_sim):
    """100 jobs through the real app: every outcome true, about one request per job."""
    sim = make_sim(auto_create=True, completion_time=20, error_rate=0.1, seed=3)
    ids = [f"job-{i}" for i in range(100)]
    client = VideoTranslationClient(URL, cfg(timeout=120), http_client=sim.client)
    results = await client.poll_many(ids)
    truth = {job_id: sim.state.store.get(job_id).outcome for job_id in ids}
    assert {r.job_id: r.outcome.value for r in results} == truth
    stats = client.statistics()
    # Every job is checked at least twice, in batches; held batches wake at each completion,
    # so about one request per job.
    assert stats.requests < len(ids) * 1.1
    assert stats.status_checks >= len(ids) * 2


async def test_checks_due_together_go_out_as_one_batch(autojump_clock, make_sim):
    """250 jobs asked at once cost 3 batch requests of up to 100 IDs."""
    sim = make_sim(max_wait=0)
    add_jobs(sim, {f"b{i}": (10, "completed") for i in range(250)})
    client = VideoTranslationClient(URL, cfg(), http_client=sim.client, rate_limit=None)
    results = await client.poll_many([f"b{i}" for i in range(250)])
    assert all(r.outcome is Outcome.COMPLETED for r in results)
    # One job's look finds what the server offers, then 3 for the others at once, and 3 when
    # they complete.
    assert client.statistics().requests == 7
    assert client.statistics().status_checks == 500


async def test_a_batch_waiting_for_the_rate_limiter_takes_in_checks_due_meanwhile(
    autojump_clock, make_sim
):
    """200 jobs ending over 10 s, 20 a second, through a rate of 2 requests/s: a batch
    stays open while it waits its turn, so each request carries every check due by then,
    and no job waits behind a queue of small batches (which would take 100 s to drain)."""
    sim = make_sim(max_wait=0)
    add_jobs(sim, {f"r{i}": (0.05 * (i + 1), "completed") for i in range(200)})
    client = VideoTranslationClient(URL, cfg(), http_client=sim.client, rate_limit=2, burst=1)
    results = await client.poll_many([f"r{i}" for i in range(200)])
    assert all(r.outcome is Outcome.COMPLETED for r in results)
    assert max(r.elapsed_time for r in results) <= 12
    stats = client.statistics()
    assert stats.requests <= 2 * 12 + 1
    assert stats.status_checks >= 15 * stats.requests


async def test_a_full_batch_goes_without_waiting_out_the_window(autojump_clock):
    """100 IDs fill a batch: it goes at once, not after ``batch_window`` (after the first
    job's look, alone, at once, which shows what the server offers)."""
    sent: list[tuple[float, int]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if "ids" not in request.url.params:
            sent.append((trio.current_time(), 1))
            return httpx.Response(200, json={"result": "completed"})
        ids = request.url.params["ids"].split(",")
        sent.append((trio.current_time(), len(ids)))
        jobs = [{"job_id": i, "result": "completed"} for i in ids]
        return httpx.Response(200, json={"jobs": jobs, "unknown": []})

    start = trio.current_time()
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http, batch_window=1.0)
        await client.poll_many([f"f{i}" for i in range(101)])
    assert sent == [(start, 1), (start, 100)]


async def test_server_without_batch_endpoint_gets_single_requests(autojump_clock):
    """A 404 on GET /jobs?ids= turns batching off: each job is checked on its own."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/jobs":
            return error(404)
        return status("completed")

    server = Scripted([answer])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http)
        results = await client.poll_many(["x", "y", "z"])
    assert [r.outcome for r in results] == [Outcome.COMPLETED] * 3
    paths = [r.url.path for _, r in server.log]
    assert paths.count("/jobs") == 1
    assert sorted(p for p in paths if p != "/jobs") == ["/jobs/x", "/jobs/y", "/jobs/z"]


async def test_failed_batch_is_retried_like_a_single_request(autojump_clock, make_sim):
    """A batch answered 503 is retried after its Retry-After, and every job still ends."""
    sim = make_sim(fault_503=0.5, seed=1)
    add_jobs(sim, {f"r{i}": (3, "error") for i in range(30)})
    client = VideoTranslationClient(URL, cfg(max_retries=10), http_client=sim.client)
    results = await client.poll_many([f"r{i}" for i in range(30)])
    assert all(r.outcome is Outcome.ERROR for r in results)
    assert client.statistics().retries > 0


async def test_retry_after_of_an_overrun_pauses_every_job(autojump_clock):
    """Once 429s come thick (an overrun), a Retry-After: 5 stops all the client's jobs
    until it passes."""
    refusal = error(429, {"Retry-After": "5"})
    jobs = OVERRUN_REFUSALS + 1
    times = await _first_answers_then_completed([refusal] * OVERRUN_REFUSALS, jobs=jobs)
    # Until they were thick, each refusal delayed only its own job: the next one went.
    assert times[:OVERRUN_REFUSALS] == list(range(OVERRUN_REFUSALS))
    assert times[OVERRUN_REFUSALS] >= times[OVERRUN_REFUSALS - 1] + 5


async def test_a_lone_429_delays_only_its_job(autojump_clock):
    """A 429 on its own (a proxy's, a fault's) is no overrun: its Retry-After delays its
    own job, as a 503's does, not every job."""
    times = await _first_answers_then_completed([error(429, {"Retry-After": "5"})])
    assert times == [0, 1, 2, 5]


async def test_retry_after_on_503_delays_only_its_job(autojump_clock):
    """A 503's Retry-After delays its own job: a 503 may come from one overloaded path, and
    the retry budget, not a client-wide pause, answers widespread ones."""
    times = await _first_answers_then_completed([error(503, {"Retry-After": "5"})])
    assert times == [0, 1, 2, 5]


async def _first_answers_then_completed(first: list[httpx.Response], jobs: int = 3) -> list[float]:
    answers = iter(first)

    def answer(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or status("completed")

    server = Scripted([answer])
    start = trio.current_time()
    async with server.client() as http:
        # One request a second, so that the order of the jobs' requests shows.
        client = VideoTranslationClient(
            URL, cfg(), http_client=http, batch=False, rate_limit=1, burst=1
        )
        await client.poll_many([f"j{i}" for i in range(jobs)])
    return [t - start for t, _ in server.log]


async def test_watch_streams_changes_then_results(autojump_clock, make_sim):
    """watch() yields each job's status changes, then its result, as they happen."""
    sim = make_sim(max_wait=0)
    add_jobs(sim, {"w1": (3, "completed"), "w2": (1, "error")})
    client = VideoTranslationClient(URL, cfg(), http_client=sim.client)
    events: list[tuple[str, str]] = []
    async with client.watch(["w1", "w2"]) as stream:
        async for event in stream:
            if isinstance(event, JobResult):
                events.append((event.job_id, "result:" + event.outcome.value))
            else:
                events.append((event.job_id or "", event.status.value))
    assert [e for e in events if e[0] == "w1"] == [
        ("w1", "pending"),
        ("w1", "completed"),
        ("w1", "result:completed"),
    ]
    assert [e for e in events if e[0] == "w2"] == [
        ("w2", "pending"),
        ("w2", "error"),
        ("w2", "result:error"),
    ]
    assert events.index(("w2", "result:error")) < events.index(("w1", "completed"))


async def test_watch_back_pressure_and_early_exit(autojump_clock, make_sim):
    """A reader that stops reading stops the polling; leaving early cancels the jobs."""
    sim = make_sim(max_wait=0)
    add_jobs(sim, {f"s{i}": (5 + i, "completed") for i in range(50)})
    client = VideoTranslationClient(URL, cfg(), http_client=sim.client, batch=False)
    async with client.watch([f"s{i}" for i in range(50)], buffer=1) as stream:
        first = await stream.receive()
        await trio.sleep(100)  # not reading: jobs block on the full stream
        checks = client.statistics().status_checks
        await trio.sleep(100)
        assert client.statistics().status_checks == checks
    assert isinstance(first, StatusResponse)
    assert client.statistics().jobs_pending == 0


def count_tasks() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


async def test_cancelling_poll_many_leaves_nothing_behind(autojump_clock, make_sim):
    """Cancelling the caller cancels every job; no task outlives the call."""
    sim = make_sim()
    add_jobs(sim, {f"c{i}": (1000, "completed") for i in range(300)})
    before = count_tasks()
    client = VideoTranslationClient(URL, cfg(timeout=None), http_client=sim.client)
    with trio.move_on_after(30) as scope:
        await client.poll_many([f"c{i}" for i in range(300)])
    assert scope.cancelled_caught
    await trio.testing.wait_all_tasks_blocked()
    assert count_tasks() == before
    assert client.statistics().jobs_pending == 0


async def test_one_request_in_flight_per_slot(autojump_clock):
    """No more than max_in_flight requests are ever outstanding."""
    in_flight = peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.sleep(1)
        in_flight -= 1
        return status("completed")

    server = Scripted([slow])
    async with server.client() as http:
        client = VideoTranslationClient(
            URL, cfg(), http_client=http, max_in_flight=4, batch=False, rate_limit=None
        )
        await client.poll_many([f"f{i}" for i in range(40)])
    assert peak == 4
    assert len(server.log) == 40


def metric(text: str, name: str, labels: str = "") -> float:
    """The sum of a Prometheus metric's samples whose labels contain ``labels`` (labels may
    hold braces: route="/jobs/{id}")."""
    pattern = rf"^{re.escape(name)}(?:{{.*{re.escape(labels)}.*}})? (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.M))


async def test_true_outcomes_through_five_percent_of_every_fault(autojump_clock, make_sim):
    """100 jobs polled one after another through 5% of each fault kind: each ends with its
    true outcome, and every kind of fault really struck."""
    sim = make_sim(
        **{f"fault_{k}": 0.05 for k in FAULT_KINDS}, slow_delay=0.05, max_wait=1, seed=11
    )
    rng = random.Random(5)
    truth = {f"job-{i}": rng.choice(["completed", "error"]) for i in range(100)}
    add_jobs(sim, {job_id: (rng.uniform(0, 0.05), outcome) for job_id, outcome in truth.items()})
    config = StatusPollingConfig(
        initial_delay=0.01,
        max_delay=0.2,
        timeout=30,
        request_timeout=2,
        max_retries=20,
        long_poll=1,
        max_hint=0.05,
    )
    client = VideoTranslationClient(URL, config, http_client=sim.client, rate_limit=None)
    seen = {job_id: (await client.poll_until_complete(job_id)).status.value for job_id in truth}
    assert seen == truth
    metrics = (await sim.client.get("/metrics")).text
    for kind in FAULT_KINDS:
        assert metric(metrics, "sim_faults_injected_total", f'kind="{kind}"') > 0, kind


async def test_true_outcomes_through_faults_and_a_server_rate_limit(autojump_clock, make_sim):
    """150 jobs, 5% of every fault, a server limit below the client's: every outcome true,
    fewer requests than jobs (batches), and few answered 429."""
    sim = make_sim(
        **{f"fault_{k}": 0.05 for k in FAULT_KINDS},
        slow_delay=0.05,
        rate_limit=100,
        burst=20,
        seed=4,
    )
    rng = random.Random(8)
    truth = {f"job-{i}": rng.choice(["completed"] * 9 + ["error"]) for i in range(150)}
    add_jobs(sim, {job_id: (rng.uniform(0.2, 2), outcome) for job_id, outcome in truth.items()})
    config = StatusPollingConfig(
        initial_delay=0.1, max_delay=1, timeout=60, request_timeout=3, max_retries=10, max_hint=0.5
    )
    client = VideoTranslationClient(
        URL, config, http_client=sim.client, rate_limit=150, batch_window=0.02
    )
    results = await client.poll_many(list(truth))
    assert {r.job_id: r.outcome.value for r in results} == truth
    stats = client.statistics()
    metrics = (await sim.client.get("/metrics")).text
    assert stats.requests < len(truth)
    # The server saw exactly the client's requests (this metrics read is not counted yet).
    assert metric(metrics, "sim_requests_total") == stats.requests
    assert metric(metrics, "sim_rate_limited_total") / stats.requests < 0.05


async def test_jobs_start_as_earlier_ones_end(autojump_clock, make_sim):
    """With max_active=5, at most 5 of 20 jobs are polled at once; the others start in order
    as jobs end, and the first results come before the last job has started."""
    sim = make_sim(max_wait=0)
    add_jobs(sim, {f"w{i}": (1 + i % 7, "completed") for i in range(20)})
    client = VideoTranslationClient(URL, cfg(), http_client=sim.client, batch=False)
    first_seen: dict[str, float] = {}
    results: list[tuple[float, str]] = []
    peak = 0

    async with client.watch([f"w{i}" for i in range(20)], max_active=5) as events:
        async for event in events:
            peak = max(peak, client.statistics().jobs_pending)
            if isinstance(event, JobResult):
                results.append((trio.current_time(), event.job_id))
            else:
                first_seen.setdefault(event.job_id or "", trio.current_time())
    assert len(results) == 20
    assert peak == 5
    assert set(list(first_seen)[:5]) == {f"w{i}" for i in range(5)}
    assert results[0][0] < first_seen["w19"]


def test_max_active_is_checked():
    """max_active must be a whole number of jobs."""
    client = VideoTranslationClient(URL)
    with pytest.raises(ValueError, match="max_active must be an integer >= 1, got 0"):
        trio.run(functools.partial(client.poll_many, ["a"], max_active=0))


async def test_a_callback_that_raises_ends_the_call_as_it_was_raised(autojump_clock, make_sim):
    """on_status_change raising in poll_many: the other jobs are cancelled (structured, like
    any task group), no task is left behind, and the caller gets the exception as raised, not
    wrapped in an ExceptionGroup. A second call on the same client works as before."""

    class Boom(Exception):
        pass

    sim = make_sim(max_wait=0)
    add_jobs(sim, {"x": (1, "completed"), **{f"o{i}": (100, "completed") for i in range(20)}})

    def explode(response: StatusResponse) -> None:
        if response.job_id == "x" and response.is_final:
            raise Boom("x finished")

    before = count_tasks()
    client = VideoTranslationClient(URL, cfg(), on_status_change=explode, http_client=sim.client)
    with pytest.raises(Boom, match="x finished"):
        await client.poll_many(["x", *(f"o{i}" for i in range(20))])
    assert trio.current_time() < 50  # the others did not run to their end
    await trio.testing.wait_all_tasks_blocked()
    assert count_tasks() == before
    client.on_status_change = None
    assert [r.outcome for r in await client.poll_many(["o1", "o2"])] == [Outcome.COMPLETED] * 2


async def test_a_callback_that_raises_ends_only_its_own_call(autojump_clock, make_sim):
    """Two tasks on one entered client: the callback raising for task A's job ends A's call
    with that exception; task B's call, sharing the scheduler, goes on to its job's end."""

    class Boom(Exception):
        pass

    sim = make_sim(max_wait=30)
    add_jobs(sim, {"a": (5, "completed"), "b": (60, "completed")})

    def explode(response: StatusResponse) -> None:
        if response.job_id == "a" and response.is_final:
            raise Boom("a finished")

    outcomes: dict[str, object] = {}
    client = VideoTranslationClient(URL, cfg(), on_status_change=explode, http_client=sim.client)

    async def poll(job_id: str) -> None:
        try:
            outcomes[job_id] = (await client.poll_until_complete(job_id)).status.value
        except Boom as exc:
            outcomes[job_id] = exc

    start = trio.current_time()
    async with client, trio.open_nursery() as nursery:
        nursery.start_soon(poll, "a")
        nursery.start_soon(poll, "b")
    assert isinstance(outcomes["a"], Boom)
    assert outcomes["b"] == "completed"
    assert trio.current_time() - start == pytest.approx(60)
