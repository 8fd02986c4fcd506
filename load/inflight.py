"""httpx's pool with many requests queued on it, with and without an in-flight cap.

    uv run python load/inflight.py [--requests 3000] [--concurrency 50] [--pool 10]

``--concurrency`` tasks share one ``httpx.AsyncClient`` whose pool holds ``--pool``
connections, each task sending GETs until ``--requests`` are done. "uncapped" lets every task
queue on httpcore's pool; "capped" puts an ``anyio.CapacityLimiter(pool)`` in front of it, as
``VideoTranslationClient`` does with ``max_in_flight``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anyio
import httpx
import trio
from _common import print_table, server, write_json

from sim_server.testing import tls

COLUMNS = [
    ("mode", "mode"),
    ("concurrency", "tasks"),
    ("pool", "pool"),
    ("requests_per_s", "requests/s"),
]


async def run(url: str, total: int, concurrency: int, pool: int, capped: bool) -> float:
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    limiter = anyio.CapacityLimiter(pool)
    left = total
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=30, verify=tls(url)
    ) as client:
        await client.get("/jobs/bench")

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                if capped:
                    async with limiter:
                        (await client.get("/jobs/bench")).raise_for_status()
                else:
                    (await client.get("/jobs/bench")).raise_for_status()

        started = time.perf_counter()
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
        return total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with server("--completion-time", "3600") as (url, _):
        httpx.post(f"{url}/jobs", json={"job_id": "bench"}, verify=tls(url)).raise_for_status()
        for capped in (False, True, False, True):
            rps = trio.run(run, url, args.requests, args.concurrency, args.pool, capped)
            row = {
                "mode": "capped" if capped else "uncapped",
                "concurrency": args.concurrency,
                "pool": args.pool,
                "requests_per_s": round(rps),
            }
            rows.append(row)
    print_table(rows, COLUMNS)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
