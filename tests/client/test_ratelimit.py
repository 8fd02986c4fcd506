"""The shared rate limiter on trio's virtual clock."""

from __future__ import annotations

import math
import re

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from video_translation_client import RateLimiter


def run(fn):
    return trio.run(fn, clock=MockClock(autojump_threshold=0))


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.5, 200),
    burst=st.integers(1, 20),
    arrivals=st.lists(st.floats(0, 30), min_size=1, max_size=80),
)
def test_never_more_than_burst_plus_rate_times_t(rate, burst, arrivals):
    """For any arrival pattern, any window of length t sees at most burst + rate*t grants."""
    grants: list[float] = []

    async def main() -> None:
        limiter = RateLimiter(rate, burst)
        start = trio.current_time()

        async def caller(at: float) -> None:
            await trio.sleep_until(start + at)
            await limiter.acquire()
            grants.append(trio.current_time() - start)

        async with trio.open_nursery() as nursery:
            for at in arrivals:
                nursery.start_soon(caller, at)

    run(main)
    grants.sort()
    assert len(grants) == len(arrivals)
    for i in range(len(grants)):
        for j in range(i, len(grants)):
            assert j - i + 1 <= burst + rate * (grants[j] - grants[i]) + 1e-6


async def test_fifo_order(autojump_clock):
    """Callers are served in the order they arrived."""
    limiter = RateLimiter(2, 1)
    order: list[int] = []

    async def caller(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(caller, i)
            await trio.testing.wait_all_tasks_blocked()
    assert order == list(range(20))


async def test_steady_rate_exact_times(autojump_clock):
    """After the burst, grants come exactly 1/rate apart."""
    limiter = RateLimiter(4, 2)
    start = trio.current_time()
    times = []
    for _ in range(6):
        await limiter.acquire()
        times.append(trio.current_time() - start)
    assert times == pytest.approx([0, 0, 0.25, 0.5, 0.75, 1.0])


async def test_pause_stops_everyone(autojump_clock):
    """pause(s) holds every caller until it ends, even with tokens left."""
    limiter = RateLimiter(None)
    start = trio.current_time()
    await limiter.acquire()
    limiter.pause(5)
    limiter.pause(1)  # a shorter pause never shortens the current one
    await limiter.acquire()
    assert trio.current_time() - start == 5


async def test_throttled_lowers_rate_then_recovers(autojump_clock):
    """A 429 storm lowers the rate (once per cooldown) and it climbs back to the full rate."""
    limiter = RateLimiter(100, 10)
    for _ in range(50):  # a storm within one cooldown: one decrease
        limiter.throttled()
    assert limiter.statistics().current_rate == pytest.approx(70)
    assert limiter.statistics().decreases == 1
    for _ in range(3):
        await trio.sleep(1)
        limiter.throttled()
    assert limiter.statistics().decreases == 4
    low = limiter.statistics().current_rate
    assert low < 40
    await trio.sleep(5)
    assert limiter.statistics().current_rate == pytest.approx(low + 50)
    await trio.sleep(60)
    assert limiter.statistics().current_rate == 100


async def test_lowered_rate_is_enforced(autojump_clock):
    """After a decrease, grants are spaced by the lower rate."""
    limiter = RateLimiter(10, 1, recovery=1e-9)
    await limiter.acquire()
    limiter.throttled()  # 7/s, and the bucket emptied
    start = trio.current_time()
    for _ in range(7):
        await limiter.acquire()
    assert trio.current_time() - start == pytest.approx(1.0, rel=1e-3)


def test_unlimited_never_throttles():
    """Without a rate, throttled() changes nothing."""
    limiter = RateLimiter(None)
    limiter.throttled()
    assert limiter.rate == math.inf


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0,), "rate must be a finite number > 0 or None, got 0"),
        ((math.inf,), "rate must be a finite number > 0 or None, got inf"),
        ((5, 0), "burst must be an integer >= 1, got 0"),
    ],
)
def test_bad_arguments(args, message):
    """Bad arguments name themselves."""
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        RateLimiter(*args)


async def test_float_refill_does_not_stall(autojump_clock):
    """Refills that sum to 0.999... of a token still grant it (rate 50: 0.02 s x 50/s)."""
    limiter = RateLimiter(50)
    start = trio.current_time()
    with trio.fail_after(10):
        for _ in range(150):
            await limiter.acquire()
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_a_declared_quota_caps_the_rate_for_good(autojump_clock):
    """A 429 with the server's quota sets the rate just under it, and it never climbs past."""
    limiter = RateLimiter(50.0)
    limiter.throttled(quota=25.0)
    assert limiter.current_rate() == pytest.approx(23.75)
    await trio.sleep(100)
    assert limiter.current_rate() == pytest.approx(23.75)
    # The bucket shrank with the rate: after a long idle time it holds 23.75 tokens, not 50,
    # so the 24th request waits for the missing quarter of a token.
    start = trio.current_time()
    for _ in range(24):
        await limiter.acquire()
    assert trio.current_time() - start == pytest.approx(0.25 / 23.75)
    limiter.throttled()  # a blind 429 later still cuts, and recovers to the quota only
    assert limiter.current_rate() == pytest.approx(23.75 * 0.7)
    await trio.sleep(100)
    assert limiter.current_rate() == pytest.approx(23.75)
    # Refused under the declared quota (others share it): cut, but the ceiling stays.
    limiter.throttled(quota=100.0)
    assert limiter.current_rate() == pytest.approx(23.75 * 0.7)
    await trio.sleep(100)
    assert limiter.current_rate() == pytest.approx(23.75)
