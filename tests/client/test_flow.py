"""Flow control against a rate-limited server, whatever its RateLimit-Policy says.

The server's token bucket allows R requests a second (burst 10); the client, set to 300/s or
to no rate at all, wants far more. While work remains it must get at least 0.9 R through, with
at most 5% of its requests refused, in single and in batch mode, whether the 429s declare the
true quota, none, a tenth of it (a misdeclaring server) or ten times it (a stale policy).

Finding the rate costs a few 429s at the start, and each probe upwards one more, ever less
often: the share is measured over a run of 400 accepted requests, 20 s at 20/s and 200 s at
2/s (2.6% refused there; about 5% over the first minute).

The server is a token bucket written here (cheap enough for a virtual minute of batches);
the client is the real one, on trio's virtual clock. The limiter itself meets all four
policies in test_ratelimit.py; here the whole client meets some of them in each mode.
"""

from __future__ import annotations

import json
import math
import random

import httpx
import pytest
import trio

from video_translation_client import StatusPollingConfig, VideoTranslationClient

BURST = 10
#: Requests the server accepts over a run.
ACCEPTED = 400


class RateLimitedServer:
    """Answers every job pending, through a token bucket of ``rate`` a second; a refusal is a
    429 with Retry-After-Ms (unless not ``hinted``: as ElevenLabs' say nothing of when to
    come back) and the given RateLimit-Policy (if any)."""

    def __init__(self, rate: float, policy: str | None, *, hinted: bool = True) -> None:
        self.rate = rate
        self.policy = policy
        self.hinted = hinted
        self._tokens = float(BURST)
        self._updated = trio.current_time()

    def handler(self, request: httpx.Request) -> httpx.Response:
        now = trio.current_time()
        self._tokens = min(BURST, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < 1:
            wait = math.ceil((1 - self._tokens) / self.rate * 1000)
            headers = {"Retry-After-Ms": str(wait)} if self.hinted else {}
            if self.policy is not None:
                headers["RateLimit-Policy"] = self.policy
            return httpx.Response(429, json={"error": "rate_limited"}, headers=headers)
        self._tokens -= 1
        ids = request.url.params.get("ids")
        if ids is None:
            return httpx.Response(200, json={"result": "pending"})
        jobs = [{"job_id": i, "result": "pending", "eta": 1000} for i in ids.split(",")]
        return httpx.Response(200, content=json.dumps({"jobs": jobs, "unknown": []}).encode())


@pytest.mark.parametrize(
    ("batch", "rate", "jobs", "policy", "client_rate", "hinted"),
    [
        (False, 20, 50, "misdeclared", 300, True),
        (False, 20, 50, "stale", 300, True),
        (False, 20, 50, "true", None, True),
        (False, 20, 50, None, None, False),
        (True, 2, 20, "misdeclared", 300, True),
        (True, 2, 20, None, None, True),
        (True, 2, 20, None, 300, False),
    ],
)
async def test_the_server_rate_is_found_whatever_the_policy_says(
    autojump_clock, policy, batch, rate, jobs, client_rate, hinted
):
    """At least 0.9 R of the server's rate used, at most 5% of requests answered 429 (with
    the client set to 300/s, and with no rate of its own, the default), whether the 429s
    say when to come back or not."""
    seconds = ACCEPTED / rate
    quota = {"true": rate, "misdeclared": rate / 10, "stale": rate * 10}.get(policy or "")
    server = RateLimitedServer(
        rate, None if quota is None else f'"default";q={math.ceil(quota)};w=1', hinted=hinted
    )
    # Each job checks at least every max_delay: 50 jobs want 250 checks a second, far over R.
    # Batched, 20 jobs want 16 requests a second (8 R; measured against a server with no
    # limit), each check a wake-up of its job whichever batch it rides: the CPU of a virtual
    # run goes with the jobs, and 20 cost half of what 50 did (1.1 s to 0.6 s). At 2/s,
    # max_delay 1 s rather than 0.2 s halves it again.
    config = StatusPollingConfig(
        initial_delay=0.1,
        max_delay=1.0 if batch else 0.2,
        jitter="none",
        hints=False,
        long_poll=0,
        timeout=None,
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        client = VideoTranslationClient(
            "http://server.test", config, http_client=http, rate_limit=client_rate, batch=batch
        )
        with trio.move_on_after(seconds):
            await client.poll_many([f"f{i}" for i in range(jobs)])
    stats = client.statistics()
    accepted = stats.requests - stats.throttled
    assert accepted / seconds >= 0.9 * rate, stats
    assert stats.throttled / stats.requests <= 0.05, stats


@pytest.mark.parametrize("batch", [False, True])
async def test_random_429s_that_say_nothing_cost_little_time(autojump_clock, batch):
    """A server with no limit that refuses 20% of requests at random, saying nothing of when
    to come back (a proxy, a concurrency cap): 300 jobs ending at 2 s take at most 1.5 times
    as long as without the refusals, at no more requests than the refusals themselves add.
    Each refused job waited longer at each refusal in a row: 3.1 times as long at 1,000 jobs
    against the real server (load/refusals.py)."""
    ids = [f"r{i}" for i in range(300)]

    async def run(share: float) -> tuple[float, float]:
        draw = random.Random(5)
        start = trio.current_time()

        def handler(request: httpx.Request) -> httpx.Response:
            if draw.random() < share:
                return httpx.Response(429, json={"error": "busy"})
            result = "completed" if trio.current_time() - start >= 2 else "pending"
            asked = request.url.params.get("ids")
            if asked is None:
                return httpx.Response(200, json={"result": result})
            jobs = [{"job_id": i, "result": result} for i in asked.split(",")]
            return httpx.Response(200, json={"jobs": jobs, "unknown": []})

        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            client = VideoTranslationClient("http://server.test", http_client=http, batch=batch)
            results = await client.poll_many(ids)
        assert all(r.ok for r in results)
        return trio.current_time() - start, client.statistics().requests / len(ids)

    (calm, calm_requests), (refused, refused_requests) = await run(0.0), await run(0.2)
    assert refused <= 1.5 * calm, (refused, calm)
    assert refused_requests <= calm_requests / 0.8 + 0.1
