"""Polling policies side by side on workload W: requests per job, detection lag, CPU.

    uv run python load/policies.py [--jobs 1000] [--time-scale 1] [--seed 1]
                                   [--policies fixed-1s original ...]
                                   [--plain-policies original default] [--json PATH]

One ``vtpoll serve`` process; for each policy in turn, a fresh client process that creates its
own copy of W's jobs (all starting at one instant, see ``_workload.py``) and polls them until
each ends. The clients' delays are multiplied by ``--time-scale`` like the durations, so that a
scaled-down run keeps the shape of a full one (fixed-1s polls every 20 ms at 0.02). The server
counts the requests (the difference of its counters over the policy's run, as for its CPU
time); the lag is the server's ``elapsed`` in the first final answer a job gets minus its
duration (see ``_workload.py`` for a start delayed by slow creation). No client-side rate
limit; 16 short requests in flight (held ones have their own bound, 1,000).

- fixed-1s: one check a second (the library with initial = max delay = 1 s, no jitter, hints off);
- original: the original design's loop, written out here: initial 1 s, factor 2, cap 32 s,
  each wait stretched by up to 20% at random; no hints, no retries beyond the next poll;
- full-jitter, decorrelated: the library's exponential (1 s, x2, cap 32 s) with that jitter,
  hints off;
- hint-aware: the library's default, following the server's Retry-After-Ms (long-poll and
  batch off);
- long-poll: the library with ``Prefer: wait=25``, one request per check (``batch=False``);
- batch: the library with ``GET /jobs?ids=`` (each job on its own eta), long-poll off;
- default: the library with every default: batches, held from each job's second check.

Then ``--plain-policies`` (original and default) again against ``vtpoll serve --plain``, a
backend like the original one: no hints, no batch route, no long-poll. Their rows are marked
``@plain``.
"""

from __future__ import annotations

import argparse
import itertools
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
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
    pyplot,
    report,
    save,
    server,
    standard_args,
    write_json,
)
from _workload import WorkJob, create_all, workload, workload_args, workload_argv

from sim_server.testing import tls

POLICIES = [
    "fixed-1s",
    "original",
    "full-jitter",
    "decorrelated",
    "hint-aware",
    "long-poll",
    "batch",
    "default",
]
#: Run again against a server like the original backend (``vtpoll serve --plain``).
PLAIN_POLICIES = ["original", "default"]
IN_FLIGHT = 16
COLUMNS = [
    ("policy", "policy"),
    ("requests_per_job", "req/job"),
    ("lag_p50_ms", "lag p50 ms"),
    ("lag_p95_ms", "p95"),
    ("lag_p99_ms", "p99"),
    ("wall_s", "wall s"),
    ("client_cpu_s", "client CPU s"),
    ("server_cpu_s", "server CPU s"),
    ("throttled", "429s"),
    ("jobs_lost", "lost"),
]


# -- the client process ----------------------------------------------------------------------


def library_client(url: str, policy: str, scale: float) -> Any:
    from video_translation_client import StatusPollingConfig, VideoTranslationClient

    exponential = {"initial_delay": scale, "max_delay": 32.0 * scale, "backoff_factor": 2.0}
    configs: dict[str, dict[str, Any]] = {
        "fixed-1s": {
            "initial_delay": scale,
            "max_delay": scale,
            "backoff_factor": 1.0,
            "jitter": "none",
            "hints": False,
            "schedule": "backoff",
        },
        # Blind schedules: hints off would otherwise make the client learn durations.
        "full-jitter": {**exponential, "jitter": "full", "hints": False, "schedule": "backoff"},
        "decorrelated": {
            **exponential,
            "jitter": "decorrelated",
            "hints": False,
            "schedule": "backoff",
        },
        "hint-aware": {"initial_delay": scale, "max_delay": 30.0 * scale},
        "long-poll": {"initial_delay": scale, "max_delay": 30.0 * scale},
        "batch": {"initial_delay": scale, "max_delay": 30.0 * scale},
        "default": {"initial_delay": scale, "max_delay": 30.0 * scale},
    }
    config = StatusPollingConfig(
        timeout=600,
        long_poll=25 if policy in ("long-poll", "default") else 0,
        **configs[policy],
    )
    return VideoTranslationClient(
        url,
        config,
        rate_limit=None,
        batch={"batch": True, "default": None}.get(policy, False),
        max_in_flight=IN_FLIGHT,
    )


async def original_policy(
    url: str, jobs: list[WorkJob], seen: dict[str, dict[str, Any]], scale: float
) -> int:
    """The original design's client, one loop per job (its delays times ``scale``); returns
    the requests it sent."""
    rng = random.Random(0)
    limiter = trio.CapacityLimiter(IN_FLIGHT)
    sent = 0
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10, verify=tls(url)) as http:

        async def one(job: WorkJob) -> None:
            nonlocal sent
            delay = scale
            while True:
                async with limiter:
                    sent += 1
                    try:
                        response = await http.get(f"/jobs/{job.job_id}")
                        body = response.json() if response.status_code == 200 else {}
                    except (httpx.HTTPError, ValueError):
                        body = {}
                if body.get("result") in ("completed", "error"):
                    seen[job.job_id] = body
                    return
                await trio.sleep(delay * (1 + 0.2 * rng.random()))
                delay = min(32.0 * scale, delay * 2)

        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(one, job)
    return sent


def client_main(url: str, policy: str, args: argparse.Namespace) -> None:
    """Runs in its own process: create, poll, print one JSON line of measurements."""
    import resource

    jobs = workload(args, prefix=f"{policy}-")
    seen: dict[str, dict[str, Any]] = {}

    async def main() -> dict[str, Any]:
        start, late = await create_all(url, jobs)
        await trio.sleep_until(start)
        started_at = time.time()
        cpu0, wall0 = time.process_time(), trio.current_time()
        throttled = 0
        if policy == "original":
            await original_policy(url, jobs, seen, args.time_scale)
        else:

            def on_change(status: Any) -> None:
                if status.is_final and status.job_id not in seen:
                    seen[status.job_id] = status.payload

            client = library_client(url, policy, args.time_scale)
            client.on_status_change = on_change
            async with client:
                await client.poll_many([job.job_id for job in jobs])
            throttled = client.statistics().throttled
        return {
            "start": start,
            "late_start": late,
            "started_at": started_at,
            "wall": trio.current_time() - wall0,
            "cpu": time.process_time() - cpu0,
            "throttled": throttled,
        }

    out = trio.run(main)
    lags, lost = [], 0
    for job in jobs:
        body = seen.get(job.job_id)
        if body is None or body.get("result") != job.outcome:
            lost += 1
        else:
            lags.append(job.lag(float(body["elapsed"]), out["start"]))
    out["lags"] = lags
    out["lost"] = lost
    out["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report(out)


# -- the driver ------------------------------------------------------------------------------


def run_policy(
    policy: str, args: argparse.Namespace, url: str, server_pid: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    cpu0, before = cpu_seconds(server_pid), metrics(url)
    client = client_process(__file__, url, policy, *workload_argv(args))
    samples: list[tuple[float, float]] = []
    while True:
        samples.append((time.time(), metrics(url)["status_requests"]))
        try:
            client.wait(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            continue
    out = client_report(client, policy)
    after = metrics(url)
    final = {key: after[key] - before[key] for key in after}
    server_cpu = cpu_seconds(server_pid) - cpu0
    lags_ms = [lag * 1000 for lag in out["lags"]]
    row = {
        "policy": policy,
        "jobs": args.jobs,
        "time_scale": args.time_scale,
        "requests_per_job": round(final["status_requests"] / args.jobs, 3),
        "lag_p50_ms": round(percentile(lags_ms, 0.50), 1),
        "lag_p95_ms": round(percentile(lags_ms, 0.95), 1),
        "lag_p99_ms": round(percentile(lags_ms, 0.99), 1),
        "wall_s": round(out["wall"], 2),
        "client_cpu_s": round(out["cpu"], 2),
        "server_cpu_s": round(server_cpu, 2),
        "throttled": int(out["throttled"] + final["throttled"]),
        "jobs_lost": out["lost"],
        # Seconds polling started later than planned because creating the jobs took longer.
        "late_start_s": round(out["late_start"], 3),
    }
    series = {
        "lags_ms": lags_ms,
        "requests": [(t - out["started_at"], n - before["status_requests"]) for t, n in samples],
    }
    return row, series


def plot(series: dict[str, dict[str, Any]], folder: Path) -> None:
    plot_lag_cdf(
        {policy: data["lags_ms"] for policy, data in series.items()},
        "Detection lag by polling policy (workload W)",
        folder,
        "policies_lag_cdf.png",
    )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for policy, data in series.items():
        points = [(t, n) for t, n in data["requests"] if t >= -1]
        rates = [
            ((t0 + t1) / 2, (n1 - n0) / (t1 - t0))
            for (t0, n0), (t1, n1) in itertools.pairwise(points)
            if t1 > t0
        ]
        if rates:
            ax.plot([t for t, _ in rates], [r for _, r in rates], label=policy)
    ax.set_xlabel("seconds since the jobs started")
    ax.set_ylabel("status requests per second (server count)")
    ax.set_title("Requests over time by polling policy (workload W)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save(fig, folder, "policies_requests.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    standard_args(parser)
    workload_args(parser)
    parser.add_argument("--policies", nargs="*", choices=POLICIES, default=POLICIES)
    parser.add_argument(
        "--plain-policies",
        nargs="*",
        choices=POLICIES,
        default=PLAIN_POLICIES,
        help="run again against 'vtpoll serve --plain' (no hints, batch route or long-poll)",
    )
    parser.add_argument("--client", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        url, policy = args.client
        client_main(url, policy, args)
        return
    rows, series = [], {}
    runs = [
        ("", ["--max-wait", "30"], args.policies),
        (" @plain", ["--plain"], args.plain_policies),
    ]
    for label, server_args, policies in runs:
        if not policies:
            continue
        with server(*server_args, "--seed", str(args.seed)) as (url, proc):
            for policy in policies:
                row, series[policy + label] = run_policy(policy, args, url, proc.pid)
                row["policy"] += label
                rows.append(row)
                print(f"{row['policy']}: done in {row['wall_s']} s", file=sys.stderr, flush=True)
    print_table(rows, COLUMNS)
    write_json(args.json, rows)
    if not args.no_plots:
        plot(series, args.plots)


if __name__ == "__main__":
    main()
