"""The library's CPU per single request against raw httpx's, side by side on one server.

    uv run python load/overhead.py [--requests 5000] [--rounds 3] [--json PATH]

One ``python -m sim_server`` process holds ``--requests`` jobs, all completed. Each round runs,
in fresh client processes one after the other: *httpx*, 16 tasks sharing one
``httpx.AsyncClient`` (16 connections) that GET every job's status and read its JSON; and
*library*, ``VideoTranslationClient(url, batch=False, max_in_flight=16)`` polling every job
with ``poll_many`` (one request each, the jobs being done). Each process reports its CPU time
for the requests alone (imports and set-up excluded). The ratio of the medians is the
library's cost per request over raw httpx's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from sim_server.testing import create_jobs, tls

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    client_process,
    client_report,
    print_table,
    report,
    server,
    write_json,
)

CONCURRENCY = 16
COLUMNS = [
    ("client", "client"),
    ("requests", "requests"),
    ("cpu_us_per_request", "CPU µs/request (median)"),
    ("cpu_us_per_request_all", "each round"),
    ("ratio", "x httpx"),
]


def client_main(url: str, which: str, count: int) -> None:
    """Runs in its own process: send one request per job, print the CPU it took."""
    ids = [f"o{i}" for i in range(count)]

    async def with_httpx() -> None:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=url, limits=limits, verify=tls(url)) as http:
            queue = list(reversed(ids))

            async def worker() -> None:
                while queue:
                    response = await http.get(f"/jobs/{queue.pop()}")
                    assert response.json()["result"] == "completed"

            async with trio.open_nursery() as nursery:
                for _ in range(CONCURRENCY):
                    nursery.start_soon(worker)

    async def with_library() -> None:
        from video_translation_client import VideoTranslationClient

        async with VideoTranslationClient(url, batch=False, max_in_flight=CONCURRENCY) as client:
            results = await client.poll_many(ids)
            assert all(r.ok for r in results)
            assert client.statistics().requests == count

    async def main() -> float:
        if which == "library":
            import video_translation_client  # noqa: F401  (imports are not measured)
        start = time.process_time()
        await (with_library() if which == "library" else with_httpx())
        return time.process_time() - start

    report({"cpu": trio.run(main)})


def create_completed(url: str, count: int) -> None:
    specs = [{"job_id": f"o{i}", "duration": 0, "outcome": "completed"} for i in range(count)]
    trio.run(create_jobs, url, specs)


def run(url: str, which: str, count: int) -> float:
    cpu: float = client_report(client_process(__file__, url, which, str(count)), which)["cpu"]
    return cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the table's rows here as JSON")
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        url, which, count = args.client
        client_main(url, which, int(count))
        return
    cpu: dict[str, list[float]] = {"httpx": [], "library": []}
    with server("--seed", "1") as (url, _):
        create_completed(url, args.requests)
        for _ in range(args.rounds):
            for which in cpu:  # side by side, alternating
                cpu[which].append(run(url, which, args.requests) / args.requests * 1e6)
                time.sleep(0.2)
    base = statistics.median(cpu["httpx"])
    rows: list[dict[str, Any]] = [
        {
            "client": which,
            "requests": args.requests,
            "cpu_us_per_request": round(statistics.median(values), 1),
            "cpu_us_per_request_all": " ".join(f"{v:.0f}" for v in values),
            "ratio": round(statistics.median(values) / base, 3),
        }
        for which, values in cpu.items()
    ]
    print_table(rows, COLUMNS)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
