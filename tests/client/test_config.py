"""StatusPollingConfig and client arguments are validated at construction."""

from __future__ import annotations

import math
import re

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from video_translation_client import PollTimeout, StatusPollingConfig, VideoTranslationClient
from video_translation_client._backoff import MIN_HINT, Backoff

from .scripted import Scripted, status


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backoff_factor": 0.5}, "backoff_factor must be a finite number >= 1, got 0.5"),
        ({"initial_delay": 0}, "initial_delay must be a finite number > 0, got 0"),
        ({"initial_delay": math.nan}, "initial_delay must be a finite number > 0, got nan"),
        ({"max_delay": 0.5}, "max_delay must be >= initial_delay (1.0), got 0.5"),
        ({"timeout": 0}, "timeout must be a finite number > 0 or None, got 0"),
        ({"timeout": math.inf}, "timeout must be a finite number > 0 or None, got inf"),
        (
            {"jitter": "some"},
            "jitter must be one of 'full', 'equal', 'decorrelated', 'none', got 'some'",
        ),
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1 or None, got 0"),
        ({"outage_timeout": -1}, "outage_timeout must be a finite number >= 0, got -1"),
        ({"request_timeout": 0}, "request_timeout must be a finite number > 0, got 0"),
        ({"max_retries": -1}, "max_retries must be an integer >= 0, got -1"),
        ({"max_retries": 2.5}, "max_retries must be an integer >= 0, got 2.5"),
        ({"long_poll": -3}, "long_poll must be a finite number >= 0, got -3"),
        ({"max_hint": True}, "max_hint must be a finite number >= 0, got True"),
        ({"hints": 1}, "hints must be True or False, got 1"),
    ],
)
def test_bad_config_names_field_and_value(kwargs, message):
    """Each bad field is a ValueError naming it and the bad value."""
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        StatusPollingConfig(**kwargs)


def test_original_positional_form():
    """The original design's positional arguments still work; the rest are keyword-only."""
    config = StatusPollingConfig(1.0, 8.0, 3.0, 60.0)
    assert (config.initial_delay, config.max_delay, config.backoff_factor, config.timeout) == (
        1.0,
        8.0,
        3.0,
        60.0,
    )
    with pytest.raises(TypeError):
        StatusPollingConfig(1.0, 8.0, 3.0, 60.0, "full")  # type: ignore[call-arg]


def test_config_is_frozen():
    """A config cannot be changed after construction."""
    config = StatusPollingConfig()
    with pytest.raises(AttributeError):
        config.timeout = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (
            ("localhost:8000",),
            {},
            "base_url must be an http:// or https:// URL, got 'localhost:8000'",
        ),
        (("ftp://x",), {}, "base_url must be an http:// or https:// URL, got 'ftp://x'"),
        (("http://x",), {"max_in_flight": 0}, "max_in_flight must be an integer >= 1, got 0"),
        (("http://x",), {"api_key": ""}, "api_key must be a non-empty string"),
        (
            ("http://x",),
            {"api_key": "a\nb"},
            "api_key must be visible ASCII characters (HTTP headers are ASCII); it has a space "
            "or control character at position 2",
        ),
        (
            ("http://x",),
            {"api_key": "clé-123"},
            "api_key must be visible ASCII characters (HTTP headers are ASCII); it has a "
            "non-ASCII character at position 3",
        ),
        (("http://[::1",), {}, "base_url must be a valid URL ("),
        (
            ("ftp://user:secret@x",),
            {},
            "base_url must be an http:// or https:// URL, got 'ftp://user:***@x'",
        ),
        (("http://x",), {"max_response_bytes": 10}, "max_response_bytes must be an integer"),
    ],
)
def test_bad_client_arguments(args, kwargs, message):
    """Client arguments are checked at construction, the error naming the argument."""
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        VideoTranslationClient(*args, **kwargs)


async def test_empty_job_id_rejected():
    """An empty job ID is a ValueError before anything is sent."""
    client = VideoTranslationClient("http://x")
    with pytest.raises(ValueError, match="job_id must be a non-empty string, got ''"):
        await client.get_status("")


configs = st.builds(
    lambda initial, extra, factor, jitter: StatusPollingConfig(
        initial_delay=initial, max_delay=initial + extra, backoff_factor=factor, jitter=jitter
    ),
    st.floats(0.001, 100),
    st.floats(0, 1000),
    st.floats(1, 10),
    st.sampled_from(["full", "equal", "decorrelated", "none"]),
)


@given(configs, st.randoms(use_true_random=False), st.integers(1, 80))
def test_every_delay_within_zero_and_max_delay(config, rng, steps):
    """Whatever the settings and the random stream, each wait is within [0, max_delay]."""
    backoff = Backoff(config, rng.random)
    for _ in range(steps):
        assert 0 <= backoff.next_delay() <= config.max_delay


@settings(max_examples=40, deadline=None)
@given(
    timeout=st.floats(0.5, 60),
    initial=st.floats(0.05, 20),
    factor=st.floats(1, 4),
    jitter=st.sampled_from(["full", "equal", "decorrelated", "none"]),
    hint=st.one_of(st.none(), st.integers(0, 1000)),
)
def test_never_polls_past_the_deadline(timeout, initial, factor, jitter, hint):
    """No poll is sent after the deadline, and PollTimeout comes exactly at it."""
    from trio.testing import MockClock

    headers = {"Retry-After": str(hint)} if hint is not None else None
    config = StatusPollingConfig(
        initial_delay=initial,
        max_delay=max(initial, 30),
        backoff_factor=factor,
        jitter=jitter,
        timeout=timeout,
        long_poll=0,
    )

    async def main() -> None:
        server = Scripted([status("pending", headers=headers)])
        start = trio.current_time()
        async with server.client() as http:
            client = VideoTranslationClient("http://s", config, http_client=http)
            with pytest.raises(PollTimeout):
                await client.poll_until_complete("j")
        assert trio.current_time() - start == pytest.approx(timeout)
        assert all(t - start <= timeout for t in server.times)
        if hint is not None:
            # Even a server repeating "Retry-After: 0" gets at most one poll per MIN_HINT.
            assert len(server.times) <= timeout / MIN_HINT + 2

    trio.run(main, clock=MockClock(autojump_threshold=0))
