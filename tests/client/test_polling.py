"""One job polled on trio's virtual clock: schedules, deadlines, hints, long-poll, callbacks."""

from __future__ import annotations

import random

import httpx
import pytest
import trio
import trio.lowlevel

from tests.hostile_server import hostile_server
from video_translation_client import (
    JobStatus,
    PollTimeout,
    StatusPollingConfig,
    VideoTranslationClient,
)
from video_translation_client._backoff import Backoff

from .scripted import Scripted, error, status

URL = "http://server.test"


def cfg(**kwargs) -> StatusPollingConfig:
    """The backoff schedule, exactly (test_learned.py has the learning one)."""
    kwargs.setdefault("long_poll", 0)
    kwargs.setdefault("jitter", "none")
    kwargs.setdefault("schedule", "backoff")
    return StatusPollingConfig(**kwargs)


def rel(times: list[float], start: float) -> list[float]:
    return [round(t - start, 9) for t in times]


async def test_plain_exponential_schedule(autojump_clock):
    """Without jitter, polls go out at 0, 1, 3, 7, 15 s: waits 1, 2, 4, 8."""
    server = Scripted([status("pending")] * 4 + [status("completed")])
    start = trio.current_time()
    async with (
        server.client() as http,
        VideoTranslationClient(
            URL, cfg(initial_delay=1, backoff_factor=2, max_delay=60), http_client=http
        ) as client,
    ):
        done = await client.poll_until_complete("j")
    assert rel(server.times, start) == [0, 1, 3, 7, 15]
    assert done.status is JobStatus.COMPLETED
    assert done.elapsed_time == 15
    assert done.checks == 5


async def test_wait_is_capped_at_max_delay(autojump_clock):
    """No wait between polls exceeds max_delay."""
    server = Scripted([status("pending")] * 6 + [status("error")])
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(
            URL, cfg(initial_delay=1, backoff_factor=3, max_delay=5), http_client=http
        )
        done = await client.poll_until_complete("j")
    assert rel(server.times, start) == [0, 1, 4, 9, 14, 19, 24]
    assert done.status is JobStatus.ERROR


@pytest.mark.parametrize("jitter", ["full", "equal", "decorrelated"])
async def test_jittered_schedules_are_exact_for_a_seed(autojump_clock, jitter):
    """With a seeded random, each jitter mode polls exactly when its formula says."""
    server = Scripted([status("pending")] * 6 + [status("completed")])
    config = cfg(initial_delay=1, backoff_factor=2, max_delay=20, jitter=jitter)
    # The expected waits, from the published formulas and an identical random stream.
    rng = random.Random(7)
    previous, expected, t = 1.0, [0.0], 0.0
    for n in range(6):
        cap = min(20.0, 1.0 * 2**n)
        if jitter == "full":
            wait = cap * rng.random()
        elif jitter == "equal":
            wait = cap / 2 + cap / 2 * rng.random()
        else:
            wait = previous = min(20.0, 1.0 + (max(1.0, previous * 2) - 1.0) * rng.random())
        t += wait
        expected.append(t)
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(
            URL, config, http_client=http, random=random.Random(7).random
        )
        await client.poll_until_complete("j")
    assert rel(server.times, start) == pytest.approx(expected, abs=1e-9)


async def test_deadline_fits_last_poll_and_raises_poll_timeout(autojump_clock):
    """With a 10 s deadline: polls at 0, 1, 3, 7, the last fitted at 9, PollTimeout at 10."""
    server = Scripted([status("pending")])
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(
            URL, cfg(initial_delay=1, backoff_factor=2, timeout=10), http_client=http
        )
        with pytest.raises(PollTimeout, match="job 'j' did not finish within 10 s") as info:
            await client.poll_until_complete("j")
    assert trio.current_time() - start == 10
    assert rel(server.times, start) == [0, 1, 3, 7, 9]
    assert isinstance(info.value, TimeoutError)
    assert info.value.last_status is not None
    assert info.value.last_status.status is JobStatus.PENDING
    assert info.value.last_status.checks == 5


async def test_hung_request_cut_at_deadline(autojump_clock):
    """A request that never answers cannot hold the job past its deadline."""

    async def hang(request):
        await trio.sleep_forever()

    server = Scripted([hang])
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(timeout=5, request_timeout=60), http_client=http)
        with pytest.raises(PollTimeout) as info:
            await client.poll_until_complete("j")
    assert trio.current_time() - start == 5
    assert info.value.last_status is None


async def test_pending_hint_sets_next_poll(autojump_clock, make_sim):
    """Retry-After-Ms on a pending answer wins over backoff: the second poll sees completion."""
    sim = make_sim(max_wait=0)
    await sim.create("h", 7.3)
    start = trio.current_time()
    client = VideoTranslationClient(URL, cfg(initial_delay=1), http_client=sim.client)
    done = await client.poll_until_complete("h")
    assert done.status is JobStatus.COMPLETED
    assert done.checks == 2
    assert trio.current_time() - start == pytest.approx(7.3)


async def test_hints_off_polls_on_the_backoff_schedule(autojump_clock, make_sim):
    """hints=False ignores a pending answer's hint: polls at 0, 1, 3, 7, 15 for a 7.3 s job."""
    sim = make_sim(max_wait=0)
    await sim.create("h", 7.3)
    start = trio.current_time()
    client = VideoTranslationClient(URL, cfg(hints=False), http_client=sim.client)
    done = await client.poll_until_complete("h")
    assert done.checks == 5
    assert trio.current_time() - start == pytest.approx(15)


async def test_hint_past_deadline_does_not_give_up_early(autojump_clock):
    """A hint beyond the deadline still gets a last poll before it, which can succeed."""
    server = Scripted([status("pending", headers={"Retry-After": "120"}), status("completed")])
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(timeout=30), http_client=http)
        done = await client.poll_until_complete("j")
    assert rel(server.times, start) == [0, 29]
    assert done.status is JobStatus.COMPLETED


async def test_zero_hint_is_floored(autojump_clock):
    """A server answering "Retry-After: 0" is polled every 20 ms, not in a busy loop."""
    server = Scripted([status("pending", headers={"Retry-After": "0"})] * 3 + [status("error")])
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(timeout=None), http_client=http)
        await client.poll_until_complete("j")
    assert rel(server.times, start) == pytest.approx([0, 0.02, 0.04, 0.06])


async def test_hint_is_clamped_to_max_hint(autojump_clock):
    """A hint longer than max_hint waits max_hint."""
    server = Scripted([status("pending", headers={"Retry-After": "3600"}), status("completed")])
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(timeout=None, max_hint=60), http_client=http)
        await client.poll_until_complete("j")
    assert rel(server.times, start) == [0, 60]


@pytest.mark.parametrize("code", [429, 503])
async def test_retry_after_on_429_and_503_is_honoured(autojump_clock, code):
    """A 429 or 503 with Retry-After delays the retry by exactly that."""
    server = Scripted([error(code, {"Retry-After": "4"}), status("completed")])
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(initial_delay=1), http_client=http)
        done = await client.get_status("j")
    assert rel(server.times, start) == [0, 4]
    assert done.checks == 1


async def test_retry_after_http_date(autojump_clock):
    """Retry-After as an HTTP-date in the past means: retry after the 20 ms floor."""
    server = Scripted(
        [error(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), status("completed")]
    )
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), http_client=http)
        await client.get_status("j")
    assert rel(server.times, start) == [0, 0.02]


async def test_long_poll_used_when_offered(autojump_clock, make_sim):
    """Against a long-poll server a 40 s job costs 2 requests: the first look, answered at
    once with the job's ETA, and half the ETA later one held until completion, seen at 40 s."""
    sim = make_sim(max_wait=30)
    await sim.create("lp", 40)
    start = trio.current_time()
    seen: list[str] = []
    client = VideoTranslationClient(
        URL,
        cfg(long_poll=25),
        http_client=sim.client,
        on_status_change=lambda r: seen.append(r.status.value),
    )
    done = await client.poll_until_complete("lp")
    assert trio.current_time() - start == pytest.approx(40)
    assert done.checks == 2
    assert sim.metric("sim_long_polls_total") == 1
    assert seen == ["pending", "completed"]


async def test_without_hints_a_lone_job_long_polls_from_its_second_check(autojump_clock, make_sim):
    """With no ETA to go by, the second check is held at once: a 40 s job costs the first
    look and two holds of 25 s (cut short at completion)."""
    sim = make_sim(max_wait=30)
    await sim.create("lp", 40)
    start = trio.current_time()
    client = VideoTranslationClient(URL, cfg(long_poll=25, hints=False), http_client=sim.client)
    done = await client.poll_until_complete("lp")
    assert trio.current_time() - start == pytest.approx(40)
    assert done.checks == 3
    assert sim.metric("sim_long_polls_total") == 2


@pytest.mark.parametrize("eta", [10, 40])
async def test_a_wrong_eta_still_sees_completion_at_once(autojump_clock, eta):
    """The pause before a lone job's first hold is half the ETA the server gave: a job that
    ends at 25 s is seen then, by its second request, whether the ETA said 10 s or 40 s."""
    start = trio.current_time()

    async def answer(request: httpx.Request) -> httpx.Response:
        wait = int(request.headers.get("prefer", "wait=0").removeprefix("wait="))
        now = trio.current_time() - start
        if wait:
            await trio.sleep(max(0, min(wait, 25 - now)))
            now = trio.current_time() - start
        if now >= 25:
            return status("completed")
        headers = {
            "Retry-After": str(max(1, round(eta - now))),
            "Preference-Applied": f"wait={wait}",
        }
        return status("pending", headers=headers)

    server = Scripted([answer])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(long_poll=25), http_client=http)
        done = await client.poll_until_complete("j")
    assert trio.current_time() - start == pytest.approx(25)
    assert done.checks == 2
    assert rel(server.times, start) == [0, eta / 2]


async def test_long_poll_request_timeout_covers_the_wait(autojump_clock, make_sim):
    """A held request is not cut by request_timeout: the limit is request_timeout + wait."""
    sim = make_sim(max_wait=30)
    await sim.create("lp", 20)
    client = VideoTranslationClient(
        URL, cfg(long_poll=25, request_timeout=2, max_retries=0), http_client=sim.client
    )
    done = await client.poll_until_complete("lp")
    assert done.checks == 2


async def test_long_poll_refused_falls_back_to_polling(autojump_clock):
    """A server that ignores Prefer gets ordinary polling: the first check asks wait=0 (a
    server that holds says it applied that, at no cost); a pending answer that does not say
    so shows it does not hold, and Prefer is not sent again (no held check spent finding
    out)."""
    server = Scripted([status("pending")] * 3 + [status("completed")])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(long_poll=25, initial_delay=1), http_client=http)
        await client.poll_until_complete("j")
    prefers = [r.headers.get("prefer") for _, r in server.log]
    assert prefers == ["wait=0", None, None, None]


async def test_a_server_that_holds_says_so_on_the_first_check(autojump_clock, make_sim):
    """Against a long-poll server the first check (wait=0, answered at once) tells that it
    holds: every job long-polls from its second check, none is left to find out alone."""
    sim = make_sim(max_wait=30)
    for i in range(5):
        await sim.create(f"h{i}", 10)
    client = VideoTranslationClient(URL, cfg(long_poll=25), http_client=sim.client, batch=False)
    results = await client.poll_many([f"h{i}" for i in range(5)])
    assert all(r.ok for r in results)
    assert client.statistics().requests == 10  # the first look and one held check each
    assert sim.metric("sim_long_polls_total") == 5


async def test_long_poll_wait_shrinks_to_fit_the_deadline(autojump_clock, make_sim):
    """Near the deadline the client asks for a shorter hold, ending at the last-poll point."""
    sim = make_sim(max_wait=30)
    await sim.create("lp", 1000)
    start = trio.current_time()
    client = VideoTranslationClient(
        URL, cfg(long_poll=25, timeout=40, hints=False), http_client=sim.client
    )
    with pytest.raises(PollTimeout):
        await client.poll_until_complete("lp")
    assert trio.current_time() - start == 40
    # The first look, then holds of 25 s and 14 s (40 - 25 - 1 s margin).
    assert sim.metric("sim_long_polls_total") == 2


async def test_original_status_endpoint_without_job_id(autojump_clock, make_sim):
    """poll_until_complete() with no ID polls GET /status in the original format."""
    sim = make_sim(completion_time=12, max_wait=0)
    client = VideoTranslationClient(URL, cfg(), http_client=sim.client)
    done = await client.poll_until_complete()
    assert done.job_id is None
    assert done.status is JobStatus.COMPLETED
    assert done.payload == {"result": "completed"}
    assert done.elapsed_time == pytest.approx(12)


async def test_callbacks_once_per_change_in_order(autojump_clock):
    """on_status_change sees the first status and each change once, in order, sync or async."""
    seen_sync: list[tuple[str, float]] = []
    seen_async: list[str] = []

    def on_change(resp):
        seen_sync.append((resp.status.value, resp.elapsed_time))

    async def on_change_async(resp):
        await trio.lowlevel.checkpoint()
        seen_async.append(resp.status.value)

    for callback in (on_change, on_change_async):
        server = Scripted([status("pending")] * 3 + [status("completed")])
        async with server.client() as http:
            client = VideoTranslationClient(URL, cfg(), on_status_change=callback, http_client=http)
            await client.poll_until_complete("j")
    assert seen_sync == [("pending", 0), ("completed", 7)]
    assert seen_async == ["pending", "completed"]


async def test_callback_exception_propagates(autojump_clock):
    """An exception raised by the callback reaches the caller unchanged."""

    class Boom(Exception):
        pass

    def explode(resp):
        raise Boom(resp.status.value)

    server = Scripted([status("pending")])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(), on_status_change=explode, http_client=http)
        with pytest.raises(Boom, match="pending"):
            await client.poll_until_complete("j")
    assert len(server.log) == 1


async def test_callers_cancel_scope_is_respected(autojump_clock):
    """A caller's own deadline cancels polling cleanly, without a PollTimeout."""
    server = Scripted([status("pending")])
    async with server.client() as http:
        client = VideoTranslationClient(URL, cfg(timeout=None), http_client=http)
        with trio.move_on_after(5) as scope:
            await client.poll_until_complete("j")
    assert scope.cancelled_caught


async def test_usable_without_async_with():
    """A call on a client never entered opens a session of its own and closes it after: the
    client is not left open."""

    def answer(path: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        return 200, [], b'{"result": "pending"}'

    with trio.fail_after(10), hostile_server(answer) as (url, seen):
        client = VideoTranslationClient(url, cfg())
        assert (await client.get_status("one")).status is JobStatus.PENDING
        async with client:  # would raise if the call had left it open
            assert (await client.get_status("two")).status is JobStatus.PENDING
    assert len(seen) == 2


def test_backoff_reset_restarts_the_sequence():
    """After a reset the waits start again from initial_delay."""
    backoff = Backoff(cfg(initial_delay=2, backoff_factor=3, max_delay=100), lambda: 0.5)
    assert [backoff.next_delay() for _ in range(3)] == [2, 6, 18]
    backoff.reset()
    assert backoff.next_delay() == 2


async def test_retries_wait_at_least_half_their_delay_under_full_jitter(autojump_clock):
    """Full jitter may poll at once, but retries keep half their delay: a restart can't use
    up max_retries within a second."""
    server = Scripted([httpx.ConnectError("down")] * 3 + [status("completed")])
    start = trio.current_time()
    async with server.client() as http:
        client = VideoTranslationClient(
            URL, cfg(jitter="full"), http_client=http, random=lambda: 0.0
        )
        await client.poll_until_complete("j")
    assert rel(server.times, start) == [0, 0.5, 1.5, 3.5]


async def test_each_call_sees_its_first_status(autojump_clock):
    """What a job's polling knows lives with that call, not in the client: a second poll of
    the same job reports its first status again, and nothing about the job stays behind."""
    seen: list[str] = []
    server = Scripted([status("completed")])
    async with server.client() as http:
        client = VideoTranslationClient(
            URL, cfg(), http_client=http, on_status_change=lambda r: seen.append(r.status.value)
        )
        await client.poll_until_complete("j")
        await client.poll_until_complete("j")
    assert seen == ["completed", "completed"]
    assert not [v for v in vars(client).values() if isinstance(v, dict)]
