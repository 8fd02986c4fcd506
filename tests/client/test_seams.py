"""What a program that runs its own jobs (the fleet's worker) needs of the client: one job
polled to its result with an absolute deadline, jobs added and cancelled one by one in a
running client, and a rate limiter of its own."""

from __future__ import annotations

import math

import pytest
import trio

from sim_server import Job
from video_translation_client import (
    Outcome,
    PollTimeout,
    RateLimiterStatistics,
    StatusPollingConfig,
    VideoTranslationClient,
)

URL = "http://sim"


def add_jobs(sim, specs: dict[str, tuple[float, str]]) -> None:
    now = trio.current_time()
    for job_id, (duration, outcome) in specs.items():
        sim.state.store.add(Job(job_id, now, duration, outcome))  # type: ignore[arg-type]


async def test_poll_job_keeps_an_absolute_deadline(autojump_clock, make_sim):
    """A job handed over with its deadline ends at that instant, not at the config's timeout
    counted from now; a result, not an exception."""
    sim = make_sim()
    add_jobs(sim, {"long": (500, "completed"), "short": (3, "error")})
    client = VideoTranslationClient(URL, StatusPollingConfig(timeout=300), http_client=sim.client)
    start = trio.current_time()
    result = await client.poll_job("long", deadline=start + 20)
    assert result.outcome is Outcome.TIMEOUT
    assert isinstance(result.error, PollTimeout)
    assert trio.current_time() - start == pytest.approx(20, abs=0.01)
    assert "20 s" in str(result.error)
    done = await client.poll_job("short")
    assert done.outcome is Outcome.ERROR


async def test_jobs_added_and_cancelled_one_by_one_share_the_client(autojump_clock, make_sim):
    """Jobs started at different times in one entered client share its batches; cancelling
    one job's scope ends that job alone."""
    sim = make_sim()
    add_jobs(sim, {f"j{i}": (10 + i % 3, "completed") for i in range(30)})
    add_jobs(sim, {"unwanted": (1000, "completed")})
    client = VideoTranslationClient(URL, http_client=sim.client)
    results = {}

    async def one(job_id: str) -> None:
        results[job_id] = await client.poll_job(job_id)

    unwanted = trio.CancelScope()

    async def cancellable(job_id: str) -> None:
        with unwanted:
            await one(job_id)

    async with client, trio.open_nursery() as nursery:
        nursery.start_soon(cancellable, "unwanted")
        for i in range(30):
            nursery.start_soon(one, f"j{i}")
            if i == 14:
                await trio.sleep(2)  # the second half joins a running client
        await trio.sleep(5)
        unwanted.cancel()
    assert "unwanted" not in results
    assert {r.outcome for r in results.values()} == {Outcome.COMPLETED}
    assert len(results) == 30
    stats = client.statistics()
    assert stats.requests < stats.status_checks / 3  # batched across the two halves


class CountingLimiter:
    """A limiter of the caller's own: lets everything through, and counts."""

    rate = math.inf

    def __init__(self) -> None:
        self.acquired = self.answered_count = 0
        self.pauses: list[float] = []

    async def acquire(self) -> None:
        self.acquired += 1

    def refused(self, retry_after: float | None = None, quota: float | None = None) -> None:
        if retry_after is not None:
            self.pauses.append(retry_after)

    def accepted(self) -> None:
        self.answered_count += 1

    def statistics(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(
            rate=self.rate,
            current_rate=self.rate,
            burst=1,
            acquired=self.acquired,
            waiting=0,
            wait_time=0.0,
            decreases=0,
            paused_for=0.0,
            server_rate=None,
        )


async def test_a_rate_limiter_of_ones_own_gates_every_request(autojump_clock, make_sim):
    """``rate_limiter=`` replaces the client's own: every request acquires from it, and a
    429's Retry-After reaches its ``pause``."""
    sim = make_sim(fault_429=0.3, seed=4)
    add_jobs(sim, {f"r{i}": (5, "completed") for i in range(20)})
    limiter = CountingLimiter()
    client = VideoTranslationClient(URL, http_client=sim.client, rate_limiter=limiter, batch=False)
    results = await client.poll_many([f"r{i}" for i in range(20)])
    assert {r.outcome for r in results} == {Outcome.COMPLETED}
    assert limiter.acquired == client.statistics().requests > 0
    assert client.statistics().throttled == len(limiter.pauses) > 0


def test_a_rate_limiter_with_a_rate_is_refused():
    """A limiter of one's own and a rate for the client's own contradict each other."""
    with pytest.raises(ValueError, match="rate_limiter"):
        VideoTranslationClient(URL, rate_limiter=CountingLimiter(), rate_limit=5)


class BrokenLimiter(CountingLimiter):
    """A limiter of one's own that fails (a fleet's, its Redis gone)."""

    async def acquire(self) -> None:
        raise RuntimeError("the limiter's store is gone")


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "single"])
async def test_a_failing_rate_limiter_reaches_the_caller_batched_or_not(
    autojump_clock, make_sim, batch
):
    """An error from ``acquire`` is no job's failure: it reaches the caller, as it was raised,
    batched or not (a batch takes its token in its leader's task, which must not swallow
    it). The first job's check meets it (the others wait for that look's outcome, and are
    cancelled with the call)."""
    sim = make_sim()
    add_jobs(sim, {f"r{i}": (5, "completed") for i in range(5)})
    client = VideoTranslationClient(
        URL, http_client=sim.client, rate_limiter=BrokenLimiter(), batch=batch
    )
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is what is checked
        await client.poll_many([f"r{i}" for i in range(5)])
    group = caught.value
    errors = group.exceptions if isinstance(group, BaseExceptionGroup) else (group,)
    assert errors
    assert all(isinstance(e, RuntimeError) and "store is gone" in str(e) for e in errors)
