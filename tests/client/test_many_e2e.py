"""Many jobs against the real server on 127.0.0.1: faults, throttling, and the server dying."""

from __future__ import annotations

import random
import re
from typing import Any

import httpx
import trio

from sim_server import TranslationServer
from video_translation_client import (
    Outcome,
    RetriesExhausted,
    StatusPollingConfig,
    VideoTranslationClient,
)

KINDS = ("500", "502", "503", "429", "slow", "drop", "garbage")


def metric(text: str, name: str) -> float:
    return sum(
        float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    )


async def test_thousand_jobs_through_faults_and_a_server_rate_limit():
    """1,000 jobs, 5% of every fault, a server limit below the client's: all outcomes true."""
    faults: dict[str, Any] = {f"fault_{k}": 0.05 for k in KINDS}
    rng = random.Random(8)
    truth = {f"job-{i}": rng.choice(["completed"] * 9 + ["error"]) for i in range(1000)}
    config = StatusPollingConfig(
        initial_delay=0.1,
        max_delay=1,
        timeout=60,
        request_timeout=3,
        max_retries=10,
        max_hint=0.5,
    )
    with trio.fail_after(90):
        async with TranslationServer(
            **faults, slow_delay=0.05, rate_limit=100, burst=20, seed=4
        ) as server:
            async with httpx.AsyncClient(base_url=server.url) as http:
                for job_id, outcome in truth.items():
                    r = await http.post(
                        "/jobs",
                        json={
                            "job_id": job_id,
                            "duration": rng.uniform(0.2, 2),
                            "outcome": outcome,
                        },
                    )
                    if r.status_code == 429:  # creation shares the server's rate limit
                        await trio.sleep(float(r.headers["retry-after-ms"]) / 1000)
                        r = await http.post(
                            "/jobs",
                            json={"job_id": job_id, "duration": 1, "outcome": outcome},
                        )
                    assert r.status_code == 201, r.text
                before = (await http.get("/metrics")).text
            async with VideoTranslationClient(
                server.url, config, rate_limit=150, batch_window=0.02
            ) as client:
                results = await client.poll_many(list(truth))
                stats = client.statistics()
            async with httpx.AsyncClient(base_url=server.url) as http:
                text = (await http.get("/metrics")).text
    assert {r.job_id: r.outcome.value for r in results} == truth
    # Counted from the end of the creations: the client's own requests only.
    requests = metric(text, "sim_requests_total") - metric(before, "sim_requests_total") - 1
    rate_limited = metric(text, "sim_rate_limited_total") - metric(before, "sim_rate_limited_total")
    assert stats.requests < len(truth)
    assert requests == stats.requests
    assert rate_limited / requests < 0.05


async def test_server_stopped_mid_run_holds_retries_back():
    """When the server dies, jobs end with RetriesExhausted and requests stay bounded."""
    with trio.fail_after(60):
        server = TranslationServer(max_wait=0)
        url = await server.start()
        try:
            async with httpx.AsyncClient(base_url=url) as http:
                for i in range(300):
                    # Hints bring every job back between 2 and 4 s, after the server died.
                    duration = 2 + i / 150
                    await http.post("/jobs", json={"job_id": f"d{i}", "duration": duration})
            config = StatusPollingConfig(
                initial_delay=0.25, max_delay=1, max_retries=3, timeout=300
            )
            async with VideoTranslationClient(url, config, rate_limit=None, batch=False) as client:

                async def kill_soon() -> None:
                    await trio.sleep(1.0)
                    await server.stop()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(kill_soon)
                    started = trio.current_time()
                    results = await client.poll_many([f"d{i}" for i in range(300)])
                    took = trio.current_time() - started
                stats = client.statistics()
        finally:
            await server.stop()
    assert all(r.outcome is Outcome.FAILED for r in results)
    assert all(isinstance(r.error, RetriesExhausted) for r in results)
    assert took < 20  # 3 backoffs of at most 1 s (and probes a second) after the server died
    # Before the stop: the first check of each job. After it: about one request per job,
    # plus the failures that spend the budget and about one probe a second.
    assert stats.requests < 300 + 300 + 10 + took + 5
