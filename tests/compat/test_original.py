"""The original design's five test scenarios, written the way its users write code.

The original client (frieda-huang/video_translation_client) was tested with pytest-asyncio
against its own aiohttp server: a job that completes, a server whose error rate is raised to
1, a completion time raised past the timeout, a server that is not there, and three clients at
once. Here the same scenarios use the names and calls of that design (``JobStatus.completed``,
``max_attempts``, ``server.error_rate = 1.0``, ``except TimeoutError``, ``except
ConnectionError``), on asyncio as the original ran them, with only the imports changed, and
``dataclasses.replace`` where the original assigned to its (mutable) config.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Awaitable, Callable

import pytest

from sim_server import TranslationServer
from video_translation_client import (
    JobResult,
    JobStatus,
    Outcome,
    RetriesExhausted,
    StatusPollingConfig,
    StatusResponse,
    VideoTranslationClient,
)


def config() -> StatusPollingConfig:
    return StatusPollingConfig(
        initial_delay=0.1, max_delay=0.4, backoff_factor=2.0, timeout=10.0, max_attempts=50
    )


def with_server(test: Callable[[TranslationServer, str], Awaitable[None]]) -> None:
    """Run ``test(server, base_url)`` under asyncio against a fresh server on a free port, one
    like the original's: no hints, no held checks, no batch route."""

    async def main() -> None:
        server = TranslationServer(
            completion_time=0.3, error_rate=0.0, hints=False, max_wait=0, batch=False
        )
        await server.start(port=0)
        try:
            await asyncio.wait_for(test(server, server.url), timeout=30)
        finally:
            await server.stop()

    asyncio.run(main())


def test_successful_completion():
    """The job completes; the callback saw it pending, then completed. (It completes once the
    callback has seen it pending: its 0.3 s from the server's start were over before the
    first check on a machine busy enough.)"""

    async def test(server: TranslationServer, base_url: str) -> None:
        server.completion_time = 30.0
        status_changes = []

        async def status_callback(response):
            status_changes.append(response.status)
            if response.status == JobStatus.pending:
                server.completion_time = 0.0

        client = VideoTranslationClient(
            base_url=base_url, config=config(), on_status_change=status_callback
        )
        result = await client.poll_until_complete()
        assert result.status == JobStatus.completed
        assert result.status == "completed"
        with pytest.deprecated_call(match="use payload"):  # one name for the body now
            assert result.raw_response == {"result": "completed"}
        assert result.elapsed_time > 0
        assert JobStatus.pending in status_changes
        assert JobStatus.completed in status_changes

    with_server(test)


def test_error_scenario():
    """A server whose error rate is set to 1 while it runs: the job ends in error, returned."""

    async def test(server: TranslationServer, base_url: str) -> None:
        server.error_rate = 1.0
        client = VideoTranslationClient(base_url=base_url, config=config())
        result = await client.poll_until_complete()
        assert result.status == JobStatus.error

    with_server(test)


def test_timeout_scenario():
    """A completion time raised past the client's timeout: TimeoutError."""

    async def test(server: TranslationServer, base_url: str) -> None:
        server.completion_time = 30.0
        short = dataclasses.replace(config(), timeout=0.5)  # the config is frozen: a copy
        client = VideoTranslationClient(base_url=base_url, config=short)
        with pytest.raises(TimeoutError):
            await client.poll_until_complete()

    with_server(test)


def test_server_unavailable():
    """No server at the URL: a ConnectionError, after the client's retries."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> None:
        client = VideoTranslationClient(base_url=f"http://127.0.0.1:{port}", config=config())
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(client.poll_until_complete(), timeout=30)

    asyncio.run(main())


def test_multiple_clients():
    """Three clients polling at once all see the job complete."""

    async def test(server: TranslationServer, base_url: str) -> None:
        async def run_client():
            client = VideoTranslationClient(base_url=base_url, config=config())
            return await client.poll_until_complete()

        results = await asyncio.gather(*[run_client() for _ in range(3)])
        assert [result.status for result in results] == [JobStatus.completed] * 3

    with_server(test)


def test_renamed_fields_still_read_with_a_deprecation_warning():
    """One word per count, and a result that reads as it means: the old names still give the
    same values, each with a DeprecationWarning naming its new name."""
    status = StatusResponse(JobStatus.COMPLETED, "j", 1.0, checks=3, payload={"a": 1})
    result = JobResult("j", Outcome.COMPLETED, status, checks=3)
    error = RetriesExhausted("gave up", job_id="j", requests=7)
    for read, new, value in [
        (lambda: status.attempts, "checks", 3),
        (lambda: status.raw_response, "payload", {"a": 1}),
        (lambda: result.status, "last_status", status),
        (lambda: result.attempts, "checks", 3),
        (lambda: error.attempts, "requests", 7),
    ]:
        with pytest.deprecated_call(match=f"use {new}$"):
            assert read() == value
