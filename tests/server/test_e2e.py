"""The real server on 127.0.0.1 port 0: embedded from trio and asyncio, and as a process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import runpy
import signal
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest
import trio

from sim_server import TranslationServer
from sim_server.testing import tls
from tests._zygote import Zygote
from tests.helpers import (
    session_members,
    start_server,
    stop,
    stop_signals_kept,
    wait_for,
    wait_healthy,
)


async def create_poll_and_long_poll(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5, verify=tls(url)) as client:
        r = await client.post("/jobs", json={"job_id": "e2e", "duration": 0.1, "outcome": "error"})
        assert r.status_code == 201
        result = None
        for _ in range(100):  # bounded: 100 polls of at most 50 ms
            result = (await client.get("/jobs/e2e")).json()["result"]
            if result != "pending":
                break
            await anyio.sleep(0.05)
        assert result == "error"

        r = await client.post("/jobs", json={"job_id": "held", "duration": 0.2})
        created = time.monotonic()
        r = await client.get("/jobs/held", headers={"Prefer": "wait=10"})
        waited = time.monotonic() - created
        assert r.json()["result"] == "completed"
        assert r.headers["preference-applied"] == "wait=10"
        # Woken by completion, not by the 10 s wait running out.
        assert 0.15 <= waited < 9


async def test_embedded_from_trio():
    """async with TranslationServer() serves on a free port from a trio program."""
    with trio.fail_after(20):
        async with TranslationServer(completion_time=1, error_rate=0) as server:
            assert server.url.startswith("http://127.0.0.1:")
            assert not server.url.endswith(":8000")
            await create_poll_and_long_poll(server.url)
        with pytest.raises(RuntimeError, match="not running"):
            server.url  # noqa: B018


def test_embedded_from_asyncio():
    """start()/stop() serve from an asyncio program too."""

    async def main() -> None:
        server = TranslationServer(completion_time=1, error_rate=0)
        url = await server.start(port=0)
        try:
            async with asyncio.timeout(20):
                await create_poll_and_long_poll(url)
        finally:
            await server.stop()

    asyncio.run(main())


async def test_stop_answers_held_long_polls_promptly():
    """Stopping with long-polls held answers them (still pending) at once and stops quickly."""
    with trio.fail_after(20):
        server = TranslationServer(max_wait=60)
        await server.start(port=0)
        async with httpx.AsyncClient(
            base_url=server.url, timeout=30, verify=tls(server.url)
        ) as client:
            await client.post("/jobs", json={"job_id": "long", "duration": 600})

            async def hold() -> None:
                r = await client.get("/jobs/long", headers={"Prefer": "wait=60"})
                assert r.status_code == 200
                assert r.json()["result"] == "pending"

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hold)
                await trio.sleep(0.2)
                started = trio.current_time()
                await server.stop()
                assert trio.current_time() - started < 1.0


async def test_dropped_connection_over_the_wire():
    """The drop fault closes the connection mid-body: httpx raises RemoteProtocolError."""
    with trio.fail_after(20):
        async with (
            TranslationServer(fault_drop=1.0, auto_create=True) as server,
            httpx.AsyncClient(base_url=server.url, timeout=5, verify=tls(server.url)) as client,
        ):
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/jobs/x")
            # The server is still fine for requests that are not faulted.
            assert (await client.get("/healthz")).status_code == 200


async def test_restart_with_db_keeps_jobs(tmp_path):
    """With a database, jobs made before a restart are there after it, with their age."""
    db = tmp_path / "jobs.db"
    with trio.fail_after(20):
        async with (
            TranslationServer(db=db) as server,
            httpx.AsyncClient(base_url=server.url, verify=tls(server.url)) as client,
        ):
            body = {"job_id": "keep", "duration": 3600, "outcome": "error"}
            assert (await client.post("/jobs", json=body)).status_code == 201
            body = {"job_id": "done", "duration": 0, "outcome": "error"}
            assert (await client.post("/jobs", json=body)).status_code == 201
        async with (
            TranslationServer(db=db) as server,
            httpx.AsyncClient(base_url=server.url, verify=tls(server.url)) as client,
        ):
            kept = (await client.get("/jobs/keep")).json()
            assert kept["result"] == "pending"
            assert kept["elapsed"] > 0
            assert (await client.get("/jobs/done")).json()["result"] == "error"
            assert (await client.post("/jobs", json={"job_id": "keep"})).status_code == 409


@pytest.mark.long
def test_two_workers_share_jobs_and_the_key_and_die_with_their_master(zygote: Zygote):
    """With --workers 2 a job made through one worker is found by whichever answers next; the
    API key given as SIM_SERVER_API_KEY guards both. When the master is killed (kill -9) the
    workers end too, and a new server can take the same port."""
    key = {"X-Api-Key": "env-key-123"}
    # The masters forked from the zygote (a second of CPU each importing the app, otherwise);
    # their workers are interpreters of their own, started by multiprocessing.
    env = {"SIM_SERVER_API_KEY": "env-key-123"}
    proc, url = start_server("--workers", "2", env=env, zygote=zygote)
    # No certificates loaded over plain http: httpx loads them for every client it makes, 30 ms
    # of CPU each, and this test makes 52 (1.5 s of its 3.3 s).
    verify = tls(url)
    try:
        wait_healthy(url)
        assert httpx.get(f"{url}/jobs/x", verify=verify).status_code == 401
        with httpx.Client(base_url=url, timeout=5, headers=key, verify=verify) as client:
            ids = [f"w{i}" for i in range(20)]
            for job_id in ids:
                assert client.post("/jobs", json={"job_id": job_id}).status_code == 201
        # A fresh connection per read spreads the reads over both workers.
        for job_id in ids:
            read = httpx.get(f"{url}/jobs/{job_id}", timeout=5, headers=key, verify=verify)
            assert read.status_code == 200
            assert httpx.get(f"{url}/jobs/{job_id}", timeout=5, verify=verify).status_code == 401
        proc.kill()
        proc.wait(timeout=10)
        wait_for(lambda: not session_members(proc.pid), "end of the workers", timeout=10)
    finally:
        stop(proc)
    # The port is free again. A worker ignores SIGTERM (its master stops it), and SIGTERM sent
    # to the new server's whole process group (as `timeout` and systemd do) ends it: only the
    # master acts on it, and it stops its workers.
    port = url.rsplit(":", 1)[1]
    proc, again = start_server("--port", port, "--workers", "2", zygote=zygote)
    try:
        assert again == url
        wait_healthy(url)
        workers = [
            pid
            for pid in session_members(proc.pid)
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(workers) == 2
        # Workers still importing the app have not set up their signals yet.
        wait_for(
            lambda: all(ignores_sigterm(pid) for pid in workers), "SIGTERM ignored", timeout=15
        )
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        for _ in range(10):
            assert httpx.get(f"{url}/healthz", timeout=5, verify=verify).status_code == 200
        assert set(workers) <= set(session_members(proc.pid))
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        wait_for(lambda: not session_members(proc.pid), "end of the workers", timeout=10)
    finally:
        stop(proc)


def ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(status.split("SigIgn:")[1].split()[0], 16)
    return bool(ignored & 1 << (signal.SIGTERM - 1))


def test_serve_rejects_bad_option_with_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """python -m sim_server with a bad value: a usage error naming the flag, exit code 2."""
    monkeypatch.setattr(sys, "argv", ["sim_server", "--error-rate", "2"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("sim_server", run_name="__main__")
    assert exit_info.value.code == 2
    assert "Error: --error-rate must be a probability in [0, 1], got 2.0" in capsys.readouterr().err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_with_a_file_that_is_no_database_says_so_in_one_line(
    workers: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    """--db naming a file that is not SQLite's: one line naming it, exit code 2, and no URL
    printed first (nothing serves)."""
    db = tmp_path / "jobs.db"
    db.write_text("not a database\n" * 100)
    argv = ["sim_server", "--port", "0", "--workers", workers, "--db", str(db)]
    monkeypatch.setattr(sys, "argv", argv)
    with stop_signals_kept(), pytest.raises(SystemExit) as exit_info:
        runpy.run_module("sim_server", run_name="__main__")
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"Error: cannot use the database {db}: file is not a database\n"
    assert db.read_text() == "not a database\n" * 100


async def test_a_request_hypercorn_cannot_read_gets_a_json_error():
    """A 1 MB request line is refused by hypercorn itself (431) before the app sees it: the
    answer is JSON naming the problem, like every other 4xx. (Sent over a raw socket: httpx
    sends no URL over 64 KiB.)"""
    request = b"GET /jobs?ids=" + b"x" * 1_000_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    with trio.fail_after(20):
        async with TranslationServer() as server:
            port = int(server.url.rsplit(":", 1)[1])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            answer = b""
            async with stream:

                async def send() -> None:
                    # The server answers and closes after 16 KiB: the rest may not go out.
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await stream.send_all(request)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send)
                    while chunk := await stream.receive_some():
                        answer += chunk
                    nursery.cancel_scope.cancel()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 431 "), head
            assert b"content-type: application/json" in head.lower()
            assert json.loads(body)["error"] == "request_header_fields_too_large"
            async with httpx.AsyncClient(base_url=server.url, verify=tls(server.url)) as client:
                assert (await client.get("/healthz")).status_code == 200  # still serving
