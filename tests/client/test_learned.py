"""The learning schedule: against a server that neither hints nor holds, the client learns how
long jobs take and checks where completions are likely (Keller's checking density on a
censored lognormal fit)."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from sim_server import ServerSettings
from sim_server._jobs import Job
from sim_server._state import SimState
from tests.client.scripted import Scripted, error, status
from tests.sim import Sim
from video_translation_client import (
    InvalidArgument,
    JobStatus,
    Outcome,
    StatusPollingConfig,
    VideoTranslationClient,
)
from video_translation_client._backoff import MIN_HINT
from video_translation_client._decide import Check, JobRecord, ServerView
from video_translation_client._durations import (
    PRIOR_SIGMA,
    TAIL_HELD,
    DurationModel,
    Lognormal,
    Plan,
    _binned,
)
from video_translation_client._http import Answer
from video_translation_client._schedule import (
    BUDGET_SHARE,
    FIRST_RANGE,
    GUESS_DELAYS,
    REPLAN,
    Learned,
)

URL = "http://sim"
PLAIN: dict[str, Any] = {"hints": False, "batch": False, "max_wait": 0}
ANSWER = Answer(JobStatus.PENDING, {}, hint=None, wait_applied=None)


# -- the plan and the fit, without a server -------------------------------------------------


@pytest.mark.parametrize(
    ("sigma", "checks", "lag_p99"),
    [
        (0.5, 3.0, 2.5),
        (1.0, 3.0, 4.7),
        (0.5, 2.4, 3.1),
        (1.0, 4.0, 3.4),
        # Wide spreads: the tail held past TAIL_HELD is paid for within the budget.
        (1.5, 3.0, 10.0),
        (2.0, 3.0, 24.0),
    ],
)
def test_the_plan_spends_its_budget_and_bounds_the_lag(sigma, checks, lag_p99):
    """On the true distribution (median 6 s), the plan costs its budget of checks per job and
    its lag's p99 is the figure Keller's density gives (the issue's simulation: 2.4 s at sigma 0.5
    and 4.6 s at sigma 1 for 3 checks)."""
    plan = Plan(sigma, checks)
    rng = random.Random(7)
    spent, lags = [], []
    for _ in range(4000):
        duration = 6 * math.exp(rng.gauss(0, sigma))
        age, n = 0.0, 0
        while age < duration:
            age, n = plan.next(age, 6.0), n + 1
        spent.append(n)
        lags.append(age - duration)
    lags.sort()
    assert sum(spent) / len(spent) == pytest.approx(checks, abs=0.1)
    assert lags[int(0.99 * len(lags))] <= lag_p99


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.5])
def test_past_the_tail_quantile_the_plan_checks_no_less_often(sigma):
    """Keller's density follows the hazard, which falls in a lognormal's tail: the gaps
    between checks of the longest jobs grew with their age (at sigma 1, 6-9 s for jobs of
    20-60 s) and were a run's worst lags. Past TAIL_HELD of F they grow no more."""
    plan = Plan(sigma, 3.0)
    tail = Lognormal(0.0, sigma).quantile(TAIL_HELD)
    ages = [0.0]
    while ages[-1] < 10 * tail:
        ages.append(plan.next(ages[-1], 1.0))
    gaps = [later - age for age, later in itertools.pairwise(ages) if age >= tail]
    assert len(gaps) >= 3
    assert max(gaps) <= gaps[0] * 1.01


def _censored(durations: list[float], now: float, step: float) -> tuple[DurationModel, list[float]]:
    model = DurationModel(guess=1.0)
    pending = []
    for d in durations:
        if d <= now:
            last = math.floor(d / step) * step
            model.add(last, last + step)
        else:
            pending.append(now)
    return model, pending


@pytest.mark.parametrize("now", [6.0, 30.0])
def test_the_fit_finds_the_distribution_from_censored_data(now):
    """Interval-censored finished jobs and right-censored pending ones (half of them still
    pending at 6 s): the fit's median and spread are the true ones, from a guess six times
    too short."""
    rng = random.Random(3)
    durations = [6 * math.exp(rng.gauss(0, 0.5)) for _ in range(300)]
    model, pending = _censored(durations, now, step=1.0)
    fit = model.fitted(lambda: pending)
    assert fit.median == pytest.approx(6.0, rel=0.12)
    assert fit.sigma == pytest.approx(0.5, abs=0.1)
    assert not model.poor


def test_a_bimodal_run_is_a_poor_fit():
    """One job in ten ten times longer: no lognormal fits, and the model says so."""
    rng = random.Random(4)
    durations = [6 * math.exp(rng.gauss(0, 0.3)) * (10 if i % 10 == 0 else 1) for i in range(300)]
    model, pending = _censored(durations, 100.0, step=0.5)
    model.fitted(lambda: pending)
    assert model.poor


def test_the_pending_jobs_are_listed_only_for_a_refit():
    """Every job asks for the fit at each of its checks: the pending jobs' ages are listed
    only when it is refreshed, not at each ask (listing them each time cost time quadratic
    in the jobs)."""
    model = DurationModel(guess=1.0)
    for _ in range(5):
        model.add(1.0, 2.0)
    listed = []

    def pending() -> list[float]:
        listed.append(1)
        return [0.5]

    for _ in range(100):
        model.fitted(pending)
    assert len(listed) == 1
    model.add(1.0, 2.0)
    model.fitted(pending)  # 6 seen: fewer than 5 more than the last fit's 5
    assert len(listed) == 1


def test_pending_ages_are_binned_where_they_are():
    """Many pending jobs of one age are one group at that age, not a bin's edge."""
    [(age, count)] = _binned([6.0] * 100)
    assert age == pytest.approx(6.0)
    assert count == 100
    groups = _binned([1.0 + i / 100 for i in range(1000)])
    assert sum(count for _, count in groups) == 1000
    assert all(1.0 <= age <= 11.0 for age, _ in groups)


def _checked_at(schedule: Learned, job: JobRecord, now: float, action: Check) -> float:
    """When the job's next check goes out, ``action`` decided at ``now``: the job's loop
    asks the schedule again at each replan, as at its start."""
    while action.replan:
        now += action.delay
        action = schedule.first(job, now, ServerView(plain=True))
    return now + action.delay


def test_a_first_look_is_brought_forward_never_put_off():
    """Jobs started together, none finished yet: jobs pending at growing ages move the fit's
    median up, and with it where the plan would first check the others; a job not yet checked
    still looks no later than its plan said when it started (else the early finishers are seen
    as late as the pending jobs keep the fit wrong)."""
    config = StatusPollingConfig()
    schedule = Learned(config)
    server = ServerView(plain=True)

    earliest, latest = FIRST_RANGE
    at_plan = (1 - earliest) / (latest - earliest)  # the draw that puts it at the plan's point

    def record(job_id: str) -> JobRecord:
        return JobRecord(job_id, config, started=0.0, random=lambda: at_plan)

    others = [record(f"other{i}") for i in range(5)]
    for other in others:
        schedule.first(other, 0.0, server)
    job = record("job")
    now, action = 0.0, schedule.first(job, 0.0, server)
    assert action.replan  # far off: planned again as the fit changes
    while action.replan:
        now += action.delay
        for other in others:
            other.pending_age = now
            schedule.after_pending(other, ANSWER, now, server)
        action = schedule.first(job, now, server)
    first_look = now + action.delay
    at_start = Plan(PRIOR_SIGMA, config.checks_per_job * BUDGET_SHARE).next(0.0, GUESS_DELAYS)
    assert schedule.model.fit.median > 2 * GUESS_DELAYS  # the fit has moved up
    assert first_look == pytest.approx(at_start, abs=config.initial_delay * REPLAN)


def test_a_job_seen_pending_is_checked_again_by_twice_its_age():
    """The first answers of jobs started together can fit a median far beyond the truth
    (here twenty jobs pending at 30 s, none done), and the plan then puts the next check of a
    job seen pending at 3 s many times its age away: it is checked again by 6 s, so that it
    is never found done later than its age at its last pending answer."""
    config = StatusPollingConfig()
    schedule = Learned(config)
    server = ServerView(plain=True)
    for i in range(20):
        other = JobRecord(f"other{i}", config, started=0.0, random=lambda: 0.5)
        other.checks, other.pending_age = 1, 30.0
        schedule.after_pending(other, ANSWER, 30.0, server)
    # Its waits drawn at the middle of their spread: as planned.
    job = JobRecord("job", config, started=27.0, random=lambda: 0.5)
    job.checks, job.pending_age = 1, 3.0
    checked = _checked_at(schedule, job, 30.0, schedule.after_pending(job, ANSWER, 30.0, server))
    assert schedule.model.fit.median > 20
    assert checked - job.started == pytest.approx(2 * job.pending_age, rel=0.01)


def test_no_wait_between_checks_is_longer_than_max_delay():
    """A plan that puts the next check far off is looked at again as the fit changes; those
    looks are not checks, and the checks they lead to are still no further apart than
    max_delay (every job pending, as a server that never finishes them: the fit's median
    keeps moving up)."""
    config = StatusPollingConfig(initial_delay=0.1, max_delay=0.2, jitter="none")
    schedule = Learned(config)
    server = ServerView(plain=True)
    jobs = [JobRecord(f"j{i}", config, started=0.0, random=lambda: 0.5) for i in range(20)]
    last = dict.fromkeys(range(len(jobs)), 0.0)
    due = {k: schedule.first(job, 0.0, server) for k, job in enumerate(jobs)}
    at = {k: action.delay for k, action in due.items()}
    gaps = []
    for _ in range(2000):
        k = min(at, key=at.__getitem__)
        now, job, action = at[k], jobs[k], due[k]
        if action.replan:  # the job's loop asks again, as at its start
            action = schedule.first(job, now, server)
        else:
            gaps.append(now - last[k])
            last[k] = now
            job.checks += 1
            job.pending_age = now
            action = schedule.after_pending(job, ANSWER, now, server)
        due[k], at[k] = action, now + action.delay
    assert len(gaps) > 100
    # (A wait is never shorter than MIN_HINT: a look at the plan just short of its point
    # checks that much later.)
    assert max(gaps) <= config.max_delay + MIN_HINT


def test_jobs_started_together_first_look_at_ages_spread_over_the_plans_first_point():
    """Had they all looked at one age, the fit would see one quantile of F and pick among the
    spreads that put it there by its prior (the issue's lag p99 over 4 s in most runs): their
    first looks are spread evenly over FIRST_RANGE of the plan's first point, and brought
    forward to where the plan as fitted now puts it (here, with nothing seen yet, the
    plan at the start)."""
    config = StatusPollingConfig()
    schedule = Learned(config)
    server = ServerView(plain=True)
    at_start = Plan(PRIOR_SIGMA, config.checks_per_job * BUDGET_SHARE).next(0.0, GUESS_DELAYS)
    looks = []
    for k in range(11):
        # The first draw spreads the first look; the others, the later waits (by nothing).
        job = JobRecord(f"j{k}", config, started=0.0, random=iter([k / 10] + [0.5] * 99).__next__)
        looks.append(_checked_at(schedule, job, 0.0, schedule.first(job, 0.0, server)))
        schedule.ended(job)
    earliest, latest = FIRST_RANGE
    spread = [at_start * min(1.0, earliest + (latest - earliest) * k / 10) for k in range(11)]
    assert looks == pytest.approx(spread, rel=0.01)
    assert looks[0] <= 0.7 * at_start  # over a range of ages, not at one


# -- against the plain server, in process ----------------------------------------------------


class PlainServer:
    """The simulation server as ``make_sim(**PLAIN)`` answers a status check (no hint, no
    batch route, no holding): each job as the server's own state shows it. The schedule
    learns from nothing else, and the app in process over ASGI cost 30-50% more CPU a run
    (routing, middleware, metrics) for nothing these tests prove; the test that needs the
    server's faults keeps it."""

    def __init__(self) -> None:
        self.state = SimState(ServerSettings(**PLAIN), trio.current_time)
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.answer))

    def answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/jobs":  # the batch route, which a plain server lacks
            return httpx.Response(404, json={"error": "not_found", "detail": path})
        job = self.state.store.get(path.removeprefix("/jobs/"))
        assert job is not None, path
        return httpx.Response(200, json=self.state.view(job, trio.current_time()))


@pytest.fixture
async def make_plain() -> AsyncIterator[Callable[[], PlainServer]]:
    made: list[PlainServer] = []

    def make() -> PlainServer:
        made.append(PlainServer())
        return made[-1]

    yield make
    for server in made:
        await server.client.aclose()
        server.state.store.close()


def add_jobs(
    server: PlainServer | Sim, durations: dict[str, float], outcome: str = "completed"
) -> None:
    now = trio.current_time()
    for job_id, duration in durations.items():
        server.state.store.add(Job(job_id, now, duration, outcome))  # type: ignore[arg-type]


def lognormal(n: int, sigma: float, seed: int, median: float = 6.0) -> dict[str, float]:
    rng = random.Random(seed)
    return {f"j{i}": median * math.exp(rng.gauss(0, sigma)) for i in range(n)}


async def run(
    sim: PlainServer, durations: dict[str, float], config: StatusPollingConfig
) -> tuple[float, float, float]:
    """Requests per job, the lag's p99 and its mean, every job polled by a task of its
    own."""
    add_jobs(sim, durations)
    client = VideoTranslationClient(
        URL, config, http_client=sim.client, random=random.Random(1).random
    )
    lags: list[float] = []
    async with client:

        async def one(job_id: str) -> None:
            done = await client.poll_until_complete(job_id)
            lags.append(done.elapsed_time - durations[job_id])

        async with trio.open_nursery() as nursery:
            for job_id in durations:
                nursery.start_soon(one, job_id)
    lags.sort()
    requests = client.statistics().requests / len(durations)
    return requests, lags[int(0.99 * len(lags))], sum(lags) / len(lags)


async def test_learning_beats_the_backoff_on_requests_and_lag(autojump_clock, make_plain):
    """Lognormal jobs of median 6 s: the learning schedule (the default) costs about its
    budget of 3 checks a job, where full-jitter backoff spends 5, and sees completions within
    seconds, where the backoff's tail is tens of seconds."""
    durations = lognormal(50, 0.5, seed=1)
    learnt = await run(make_plain(), durations, StatusPollingConfig())
    backoff = await run(make_plain(), durations, StatusPollingConfig(schedule="backoff"))
    assert learnt[0] <= 4.0
    assert learnt[1] <= 7.0
    assert learnt[0] < backoff[0]
    assert learnt[1] < backoff[1] / 2


async def test_a_smaller_budget_costs_fewer_requests(autojump_clock, make_plain):
    durations = lognormal(50, 0.5, seed=2)
    few = await run(make_plain(), durations, StatusPollingConfig(checks_per_job=2))
    many = await run(make_plain(), durations, StatusPollingConfig(checks_per_job=5))
    assert few[0] < many[0]
    assert many[2] < few[2]  # the mean lag


@pytest.mark.parametrize(
    "shape",
    ["done-at-once", "bimodal", "drifting", "all-errors"],
)
async def test_odd_data_is_survived(autojump_clock, make_plain, shape):
    """Every job done at the first look, one in ten ten times longer, durations doubling
    halfway, every job ending in error: every job its true outcome, at a bounded cost."""
    sim = make_plain()
    # 30 jobs: at most 4.7 requests a job at 8 seeds (4.1 with 60), and odd data that
    # breaks the fit breaks it with any number (a log of 0, at 30 as at 60).
    durations = lognormal(30, 0.5, seed=3)
    outcome = "error" if shape == "all-errors" else "completed"
    if shape == "done-at-once":
        durations = dict.fromkeys(durations, 0.0)
    elif shape == "bimodal":
        durations = {
            j: d * (10 if i % 10 == 0 else 1) for i, (j, d) in enumerate(durations.items())
        }
    add_jobs(sim, durations, outcome)
    client = VideoTranslationClient(URL, StatusPollingConfig(timeout=None), http_client=sim.client)
    async with client:
        first = await client.poll_many(list(durations))
        if shape == "drifting":
            later = {f"late{j}": 2 * d for j, d in durations.items()}
            add_jobs(sim, later, outcome)
            first += await client.poll_many(list(later))
    assert {r.outcome.value for r in first} == {outcome}
    assert client.statistics().requests / len(first) <= 8


async def test_an_expected_duration_narrows_the_guess(autojump_clock, make_plain):
    """Jobs of a minute among jobs of seconds: told their length, they cost fewer checks."""

    async def checks(expected: float | None) -> int:
        sim = make_plain()
        add_jobs(sim, lognormal(20, 0.3, seed=5, median=3.0))
        add_jobs(sim, {"long": 60.0})
        client = VideoTranslationClient(URL, http_client=sim.client)
        async with client:
            await client.poll_many(list(lognormal(20, 0.3, seed=5, median=3.0)))
            done = await client.poll_until_complete("long", expected_duration=expected)
        return done.checks

    assert await checks(60.0) < await checks(None)


async def test_faults_teach_nothing_of_durations(autojump_clock, make_sim):
    """Only answers about a job are learnt from: each finished job once, whatever failed."""
    sim = make_sim(**PLAIN, fault_500=0.3, fault_429=0.1, seed=8)
    # 25 jobs meet a fault at nearly one request in two (51 in 111; 50 jobs, 96 in 237).
    durations = lognormal(25, 0.5, seed=6)
    add_jobs(sim, durations)
    client = VideoTranslationClient(
        URL, StatusPollingConfig(max_retries=20), http_client=sim.client
    )
    results = await client.poll_many(list(durations))
    assert {r.outcome for r in results} == {Outcome.COMPLETED}
    model = client._schedule.model  # type: ignore[attr-defined]
    assert len(model.finished) == len(durations)
    assert all(low < high for low, high in model.finished)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"checks_per_job": 0.5}, "checks_per_job must be a finite number >= 1"),
        ({"checks_per_job": math.inf}, "checks_per_job must be a finite number >= 1"),
        ({"schedule": "fast"}, "schedule must be one of 'learn', 'backoff'"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        StatusPollingConfig(**kwargs)


async def test_a_negative_expected_duration_is_refused(autojump_clock, make_sim):
    client = VideoTranslationClient(URL, http_client=make_sim().client)
    with pytest.raises(InvalidArgument, match="expected_duration must be a finite number > 0"):
        await client.poll_until_complete("j", expected_duration=-1)


async def test_a_refused_first_look_is_handed_on_not_followed_by_every_job(autojump_clock):
    """On a plain server, the client's first look is refused (a 429 at random): the next job
    looks instead, and the others wait for what its answer shows, then check by the learnt
    plan. (A 429 counted as hearing from the server: the other 19 jobs checked at once, again
    a second later, and the run cost 80 requests, not 42.)"""
    start = trio.current_time()
    refusals = [error(429, {"Retry-After": "1"})]

    def answer(request: httpx.Request) -> httpx.Response:
        if refusals:
            return refusals.pop()
        return status("pending" if trio.current_time() - start < 5 else "completed")

    server = Scripted([answer])
    async with server.client() as http:
        client = VideoTranslationClient(URL, http_client=http, batch=False)
        async with client, trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(client.poll_until_complete, f"j{i}")
    assert server.times.count(start) == 2
    assert len(server.times) <= 50
    assert client.statistics().jobs_completed == 20


async def test_a_first_look_that_ends_unanswered_is_taken_over(autojump_clock):
    """The job of the client's first look is cancelled by its caller while the server has not
    answered it: another job looks instead (after at most a request's timeout), rather than
    every other job waiting for an answer that will never come."""

    async def answer(request: httpx.Request) -> httpx.Response:
        if "first" in request.url.path:
            await trio.sleep_forever()
        return status("completed")

    server = Scripted([answer])
    async with server.client() as http:
        client = VideoTranslationClient(URL, http_client=http, batch=False)
        async with client, trio.open_nursery() as nursery:
            looking = trio.CancelScope()

            async def first() -> None:
                with looking:
                    await client.poll_until_complete("first")

            nursery.start_soon(first)
            await trio.testing.wait_all_tasks_blocked()  # its check is out, unanswered
            async with trio.open_nursery() as others:
                others.start_soon(client.poll_until_complete, "other")
                await trio.testing.wait_all_tasks_blocked()  # waiting for what the look shows
                cancelled = trio.current_time()
                looking.cancel()
                others.cancel_scope.deadline = cancelled + 60
            ended = trio.current_time()
    assert not others.cancel_scope.cancelled_caught
    assert ended - cancelled <= client.config.request_timeout + 1
