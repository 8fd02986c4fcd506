"""Running the real server as a process, for end-to-end tests."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from sim_server.testing import wait_healthy as wait_healthy


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
