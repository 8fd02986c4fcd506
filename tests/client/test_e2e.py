"""The client against the real server on 127.0.0.1: the quick starts, asyncio, and the server
dying under many jobs."""

from __future__ import annotations

import asyncio
import re
import runpy
from pathlib import Path

import httpx
import pytest
import trio

from sim_server import TranslationServer
from video_translation_client import (
    JobNotFound,
    JobStatus,
    Outcome,
    PollTimeout,
    ServerUnreachable,
    StatusPollingConfig,
    StatusResponse,
    VideoTranslationClient,
)

ROOT = Path(__file__).parents[2]
EXAMPLES = ["quickstart_asyncio.py", "quickstart_trio.py"]


@pytest.mark.long
def test_quick_starts_run_and_are_in_the_readme(capsys: pytest.CaptureFixture[str]):
    """Both quick-start programs print pending (unless the job ended before their first
    check), then the final status and time; the library guide shows them both and the README
    the trio one.

    Each runs as ``__main__`` in this process, which has already imported what they import
    from the same installed packages: a fresh interpreter apiece spent about a second of CPU
    importing it again."""
    guide = (ROOT / "docs" / "library.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in EXAMPLES:
        code = (ROOT / "examples" / name).read_text().split('"""', 2)[2].strip()
        assert code in guide, f"{name} differs from docs/library.md"
        if name == "quickstart_trio.py":
            assert code in readme, f"{name} differs from the README"
        runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
        out = capsys.readouterr().out
        # The server's job ends 2 s after the server starts: the client's first check sees it
        # pending, unless a slow machine took that long to start the client.
        lines = out.splitlines()
        assert len(lines) in (2, 3), out
        completed = re.fullmatch(r"status: completed after (\d+\.\d\d) s", lines[-2])
        final = re.fullmatch(r"final: completed in (\d+\.\d\d) s", lines[-1])
        assert completed, out
        assert final, out
        assert float(completed[1]) == float(final[1]), out
        if len(lines) == 3:
            pending = re.fullmatch(r"status: pending after (\d+\.\d\d) s", lines[0])
            assert pending, out
            assert float(pending[1]) < float(completed[1]), out


def test_asyncio_path():
    """Under asyncio: a status, a poll to completion, a typed error and a deadline."""

    async def main() -> None:
        async with TranslationServer(max_wait=5) as server:
            async with httpx.AsyncClient(base_url=server.url) as http:
                await http.post("/jobs", json={"job_id": "a", "duration": 0.3, "outcome": "error"})
                await http.post("/jobs", json={"job_id": "slow", "duration": 600})
            config = StatusPollingConfig(initial_delay=0.05, timeout=0.5, long_poll=2)
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
                # Not before the deadline; the upper bound only catches a deadline ignored.
                assert 0.5 <= loop.time() - started < 10

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


async def test_server_stopped_mid_run_holds_retries_back():
    """When the server dies for good, jobs ride through it for outage_timeout, then end failed
    as unreachable (a ConnectionError), with about one probe a second meanwhile."""
    # With no retry budget, 25 jobs send three times the retries the bound below allows (49
    # to 16); with one, they hold back twice as many as there are jobs: 50 showed both no
    # better, at twice the CPU.
    jobs = 25
    with trio.fail_after(60):
        server = TranslationServer(max_wait=0)
        url = await server.start()
        try:
            async with httpx.AsyncClient(base_url=url) as http:
                for i in range(jobs):
                    # Far longer than the test: every job is still pending when the server
                    # stops, however slow the machine.
                    await http.post("/jobs", json={"job_id": f"d{i}", "duration": 3600})
            first_seen = trio.Event()
            seen = 0

            def on_change(status: StatusResponse) -> None:
                nonlocal seen
                seen += 1
                if seen == jobs:
                    first_seen.set()

            # Every job looks at once (the backoff schedule), so that all are seen before the
            # server stops (the learning one would place their first checks by their duration).
            config = StatusPollingConfig(
                initial_delay=0.25,
                max_delay=0.5,
                outage_timeout=0.5,
                timeout=300,
                hints=False,
                schedule="backoff",
            )
            async with VideoTranslationClient(
                url, config, on_status_change=on_change, rate_limit=None, batch=False
            ) as client:
                stopped_at = 0.0

                async def stop_when_every_job_was_seen() -> None:
                    nonlocal stopped_at
                    await first_seen.wait()
                    await server.stop()
                    stopped_at = trio.current_time()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stop_when_every_job_was_seen)
                    results = await client.poll_many([f"d{i}" for i in range(jobs)])
                after_stop = trio.current_time() - stopped_at
                stats = client.statistics()
        finally:
            await server.stop()
    assert all(r.outcome is Outcome.FAILED for r in results)
    assert all(isinstance(r.error, ServerUnreachable) for r in results)
    assert all(isinstance(r.error, ConnectionError) for r in results)
    # outage_timeout from the first unanswered request, and a backoff or two.
    assert after_stop < 20
    # Retries sent: those before the failures spent the budget, then about one probe a
    # second; the rest were held back, not sent.
    assert stats.retries < 10 + after_stop + 5
    assert stats.retries_denied > jobs
