"""The client against the real server on 127.0.0.1: quick starts, faults, and asyncio."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from sim_server import TranslationServer
from video_translation_client import (
    JobNotFound,
    JobStatus,
    PollTimeout,
    StatusPollingConfig,
    VideoTranslationClient,
)

ROOT = Path(__file__).parents[2]
EXAMPLES = ["quickstart_asyncio.py", "quickstart_trio.py"]


def test_quick_starts_run_and_are_in_the_readme():
    """Both quick-start programs print the final status and time, and the README shows them."""
    readme = (ROOT / "README.md").read_text()
    procs = []
    for name in EXAMPLES:
        source = (ROOT / "examples" / name).read_text()
        assert source.split('"""', 2)[2].strip() in readme, f"{name} differs from the README"
        procs.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "examples" / name)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert re.search(r"^final: completed in [23]\.\d\d s$", out, re.M), out


async def test_true_outcomes_through_five_percent_of_every_fault():
    """200 sequential polls through 5% of each fault kind all end with the job's true outcome."""
    faults: dict[str, Any] = {
        f"fault_{k}": 0.05 for k in ("500", "502", "503", "429", "slow", "drop", "garbage")
    }
    rng = random.Random(5)
    truth = {f"job-{i}": rng.choice(["completed", "error"]) for i in range(200)}
    config = StatusPollingConfig(
        initial_delay=0.01,
        max_delay=0.2,
        timeout=30,
        request_timeout=2,
        max_retries=20,
        long_poll=1,
        max_hint=0.05,
    )
    with trio.fail_after(90):
        async with TranslationServer(**faults, slow_delay=0.05, max_wait=1, seed=11) as server:
            async with httpx.AsyncClient(base_url=server.url) as http:
                for job_id, outcome in truth.items():
                    duration = rng.uniform(0, 0.05)
                    r = await http.post(
                        "/jobs", json={"job_id": job_id, "duration": duration, "outcome": outcome}
                    )
                    assert r.status_code == 201
            seen = {}
            # Unlimited rate: this test is about faults, not about pacing.
            async with VideoTranslationClient(server.url, config, rate_limit=None) as client:
                for job_id in truth:
                    seen[job_id] = (await client.poll_until_complete(job_id)).status.value
            async with httpx.AsyncClient(base_url=server.url) as http:
                metrics = (await http.get("/metrics")).text
    assert seen == truth
    # The faults really happened, of every kind.
    for kind in ("500", "502", "503", "429", "slow", "drop", "garbage"):
        match = re.search(rf'sim_faults_injected_total{{kind="{kind}"}} (\d+)', metrics)
        assert match is not None, kind
        assert int(match.group(1)) > 0, kind


def test_asyncio_path():
    """Under asyncio: a status, a poll to completion, a typed error and a deadline."""

    async def main() -> None:
        async with TranslationServer(max_wait=5) as server:
            async with httpx.AsyncClient(base_url=server.url) as http:
                await http.post("/jobs", json={"job_id": "a", "duration": 0.3, "outcome": "error"})
                await http.post("/jobs", json={"job_id": "slow", "duration": 600})
            config = StatusPollingConfig(initial_delay=0.05, timeout=3, long_poll=2)
            async with VideoTranslationClient(server.url, config) as client:
                assert (await client.get_status("a")).status is JobStatus.PENDING
                done = await client.poll_until_complete("a")
                assert done.status is JobStatus.ERROR
                with pytest.raises(JobNotFound):
                    await client.get_status("missing")
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(PollTimeout):
                    await client.poll_until_complete("slow")
                assert 2.9 <= loop.time() - started < 3.5

    asyncio.run(main())


def test_one_client_on_trio_then_on_asyncio():
    """A client (and its rate limiter) serves a trio run and then an asyncio run."""
    server = TranslationServer(completion_time=0.2, error_rate=0.0, auto_create=True)
    url = trio.run(server.start)
    try:
        client = VideoTranslationClient(url, StatusPollingConfig(initial_delay=0.1, timeout=30))

        async def poll() -> list[str]:
            async with client:
                return [r.outcome.value for r in await client.poll_many(["x1", "x2"])]

        assert trio.run(poll) == ["completed", "completed"]
        assert asyncio.run(poll()) == ["completed", "completed"]
    finally:
        trio.run(server.stop)
