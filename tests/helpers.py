"""Running the real server as a process, for end-to-end tests."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def server_process(
    *args: str, timeout: float = 15.0, env: dict[str, str] | None = None
) -> Iterator[str]:
    """``python -m sim_server --port 0 ARGS``: yields its URL, stops it with SIGINT after.

    The server must exit 0 within 10 s of SIGINT, or the test fails.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim_server", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"server printed no URL within {timeout} s")
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (url, proc.stderr.read() if proc.stderr else "")
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == 0, f"server exited with {proc.returncode} after SIGINT"


def wait_healthy(url: str, timeout: float = 15.0) -> None:
    """Until /healthz answers: worker processes may still be importing the app."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not healthy within {timeout} s")
        time.sleep(0.05)
