"""The simulation server's ceiling: requests/s under wrk, and the cost of held long-polls.

    uv run python load/server_ceiling.py [--workers 1 2] [--duration 10] [--holds 1000 5000]

Starts ``vtpoll serve`` as a separate process for each measurement, points ``wrk`` (the
Debian package) at ``GET /jobs/{id}`` of one pending job, then opens N plain TCP connections
that each hold a ``Prefer: wait=60`` long-poll and reads the server's RSS before and after.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table, run_wrk, server, write_json

from sim_server.testing import tls

#: The table printed at the end (and checked in load/README.md against the JSON): a wrk row
#: has no held long-polls, a held row no request rate.
COLUMNS = [
    ("measure", "measure"),
    ("workers", "workers"),
    ("requests_per_s", "requests/s"),
    ("held", "held"),
    ("open_s", "open s"),
    ("rss_before_mib", "RSS before MiB"),
    ("rss_after_mib", "RSS after MiB"),
    ("kib_per_held", "KiB/held"),
]


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (the workers), KiB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


async def hold_many(host: str, port: int, n: int, url: str, pid: int) -> dict[str, float]:
    request = (f"GET /jobs/held HTTP/1.1\r\nHost: {host}\r\nPrefer: wait=60\r\n\r\n").encode()
    before = rss_kib(pid)
    streams: list[trio.SocketStream] = []
    started = time.monotonic()
    with trio.fail_after(120):
        for _ in range(n):
            stream = await trio.open_tcp_stream(host, port)
            await stream.send_all(request)
            streams.append(stream)
        async with httpx.AsyncClient(timeout=10, verify=tls(url)) as client:
            while True:  # bounded by fail_after above
                text = (await client.get(f"{url}/metrics")).text
                held = float(re.search(r"^sim_long_polls_held (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
                if held >= n:
                    break
                await trio.sleep(0.2)
    opened = time.monotonic() - started
    await trio.sleep(1)
    after = rss_kib(pid)
    for stream in streams:
        await stream.aclose()
    return {
        "held": n,
        "open_s": round(opened, 2),
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "kib_per_held": round((after - before) / n, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--holds", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")

    rows: list[dict[str, object]] = []
    for workers in args.workers:
        with server("--completion-time", "3600", "--workers", str(workers)) as (url, _):
            httpx.post(f"{url}/jobs", json={"job_id": "bench"}, verify=tls(url)).raise_for_status()
            rps = run_wrk(f"{url}/jobs/bench", args.duration, args.connections, args.threads)
            rows.append(
                {"measure": "wrk GET /jobs/{id}", "workers": workers, "requests_per_s": rps}
            )
            print(f"workers={workers}: {rps:,.0f} requests/s", file=sys.stderr, flush=True)

    for n in args.holds:
        with server("--completion-time", "3600", "--max-wait", "60") as (url, proc):
            httpx.post(f"{url}/jobs", json={"job_id": "held"}, verify=tls(url)).raise_for_status()
            host, port = url.removeprefix("http://").split(":")
            row = trio.run(hold_many, host, int(port), n, url, proc.pid)
            rows.append({"measure": "held long-polls", "workers": 1, **row})
            print(f"held={n}: {row}", file=sys.stderr, flush=True)
    print_table(rows, COLUMNS)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
