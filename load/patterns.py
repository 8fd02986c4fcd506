"""Ways of calling the client, every default: requests per job and detection lag.

    uv run python load/patterns.py [--sizes 100 1000] [--patterns tasks poll_many watch
                                   tasks-single] [--time-scale 1] [--seed 1] [--json PATH]

A trio user's first program starts a task per job, each awaiting ``poll_until_complete``;
others call ``poll_many`` or read ``watch``. Whichever way, a client's checks go through one
scheduler, so each should cost about one request per job and see completions within
milliseconds. For each pattern and size, a fresh client process creates workload W's jobs (all
starting at one instant, see ``_workload.py``) and polls them through a client made with every
default (``VideoTranslationClient(url)`` inside ``async with``); ``tasks-single`` is the same
with ``batch=False``. One ``python -m sim_server`` process serves them all and counts the
requests; the lag is the server's ``elapsed`` in the first final answer minus the job's
duration.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    client_process,
    client_report,
    cpu_seconds,
    metrics,
    percentile,
    plot_lag_cdf,
    print_table,
    report,
    server,
    standard_args,
    write_json,
)
from _workload import create_all, workload, workload_args, workload_argv

PATTERNS = ["tasks", "poll_many", "watch", "tasks-single"]
COLUMNS = [
    ("pattern", "pattern"),
    ("jobs", "jobs"),
    ("requests_per_job", "req/job"),
    ("lag_p50_ms", "lag p50 ms"),
    ("lag_p95_ms", "p95"),
    ("lag_p99_ms", "p99"),
    ("outcomes_true", "outcomes true"),
    ("wall_s", "wall s"),
    ("client_cpu_s", "client CPU s"),
    ("late_start_s", "late start s"),
]


def client_main(url: str, pattern: str, args: argparse.Namespace) -> None:
    """Runs in its own process: create, poll, print one JSON line of measurements."""
    from video_translation_client import JobResult, StatusResponse, VideoTranslationClient

    jobs = workload(args, prefix=f"{pattern}-{args.jobs}-")
    first_final: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, str] = {}

    def seen(status: StatusResponse) -> None:
        if status.is_final and status.job_id is not None:
            first_final.setdefault(status.job_id, status.payload)

    async def main() -> dict[str, Any]:
        start, late = await create_all(url, jobs)
        await trio.sleep_until(start)
        cpu0, wall0 = time.process_time(), trio.current_time()
        ids = [job.job_id for job in jobs]
        batch = False if pattern == "tasks-single" else None
        async with VideoTranslationClient(url, on_status_change=seen, batch=batch) as client:
            if pattern in ("tasks", "tasks-single"):

                async def one(job_id: str) -> None:
                    final = await client.poll_until_complete(job_id)
                    outcomes[job_id] = final.status.value

                async with trio.open_nursery() as nursery:
                    for job_id in ids:
                        nursery.start_soon(one, job_id)
            elif pattern == "poll_many":
                for result in await client.poll_many(ids):
                    outcomes[result.job_id] = result.outcome.value
            else:
                async with client.watch(ids) as events:
                    async for event in events:
                        if isinstance(event, JobResult):
                            outcomes[event.job_id] = event.outcome.value
        return {
            "start": start,
            "late_start": late,
            "wall": trio.current_time() - wall0,
            "cpu": time.process_time() - cpu0,
        }

    out = trio.run(main)
    out["lags"] = [
        job.lag(float(first_final[job.job_id]["elapsed"]), out["start"])
        for job in jobs
        if job.job_id in first_final
    ]
    out["true"] = sum(1 for job in jobs if outcomes.get(job.job_id) == job.outcome)
    report(out)


def run_pattern(
    pattern: str, size: int, args: argparse.Namespace, url: str, server_pid: int
) -> tuple[dict[str, Any], list[float]]:
    before = metrics(url)
    cpu0 = cpu_seconds(server_pid)
    argv = workload_argv(argparse.Namespace(**{**vars(args), "jobs": size}))
    out = client_report(client_process(__file__, url, pattern, *argv), f"{pattern} {size}")
    after = metrics(url)
    lags_ms = [lag * 1000 for lag in out["lags"]]
    row = {
        "pattern": pattern,
        "jobs": size,
        "time_scale": args.time_scale,
        "requests_per_job": round((after["status_requests"] - before["status_requests"]) / size, 3),
        "lag_p50_ms": round(percentile(lags_ms, 0.50), 1),
        "lag_p95_ms": round(percentile(lags_ms, 0.95), 1),
        "lag_p99_ms": round(percentile(lags_ms, 0.99), 1),
        "outcomes_true": f"{out['true']}/{size}",
        "wall_s": round(out["wall"], 2),
        "client_cpu_s": round(out["cpu"], 2),
        "server_cpu_s": round(cpu_seconds(server_pid) - cpu0, 2),
        "throttled": int(after["throttled"] - before["throttled"]),
        "late_start_s": round(out["late_start"], 3),
    }
    return row, lags_ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    standard_args(parser)
    workload_args(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--patterns", nargs="+", choices=PATTERNS, default=PATTERNS)
    parser.add_argument("--client", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        url, pattern = args.client
        client_main(url, pattern, args)
        return
    rows, lags = [], {}
    with server("--max-wait", "30", "--seed", str(args.seed)) as (url, proc):
        for size in args.sizes:
            for pattern in args.patterns:
                row, lags[f"{pattern} {size}"] = run_pattern(pattern, size, args, url, proc.pid)
                rows.append(row)
                print(f"{pattern} {size}: done in {row['wall_s']} s", file=sys.stderr, flush=True)
    print_table(rows, COLUMNS)
    write_json(args.json, rows)
    if not args.no_plots:
        title = "Detection lag by way of calling the client (workload W, every default)"
        plot_lag_cdf(lags, title, args.plots, "patterns_lag_cdf.png")


if __name__ == "__main__":
    main()
