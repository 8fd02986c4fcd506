"""1k, 10k and 100k concurrent jobs in one client process: memory, CPU per check, throughput.

    uv run python load/scale.py [--jobs 1000 10000 100000] [--time-scale 1] [--seed 1]
                                [--single-up-to 10000] [--json PATH]

One ``vtpoll serve --auto-create`` process (jobs are made on first sight, lasting 4-12 s times
``--time-scale``, 10% in error). For each size, a fresh client process polls every job with the
batch endpoint (and, up to ``--single-up-to`` jobs, again with one request per check, the
baseline for CPU per check): peak RSS per job, client CPU per status check, status checks per
second. Then ``wrk`` measures the server's own ceiling on the same two endpoints, in the same run
(``GET /jobs?ids=`` with 100 IDs, and ``GET /jobs/{id}``), so the client's rate can be read
against it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    client_process,
    client_report,
    cpu_seconds,
    print_table,
    pyplot,
    report,
    run_wrk,
    save,
    server,
    standard_args,
    write_json,
)

COLUMNS = [
    ("jobs", "jobs"),
    ("policy", "policy"),
    ("requests_per_job", "req/job"),
    ("peak_rss_kib_per_job", "KiB/job"),
    ("client_cpu_us_per_check", "µs CPU/check"),
    ("checks_per_s", "checks/s"),
    ("server_ceiling_checks_per_s", "server ceiling checks/s"),
    ("wall_s", "wall s"),
    ("client_cpu_s", "client CPU s"),
    ("server_cpu_s", "server CPU s"),
    ("jobs_lost", "lost"),
]
BATCH = 100


def client_main(url: str, policy: str, jobs: int, seed: int) -> None:
    """Runs in its own process: poll ``jobs`` auto-created jobs, print one JSON line."""
    import resource

    import trio

    from video_translation_client import Outcome, StatusPollingConfig, VideoTranslationClient

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ids = [f"s{seed}-{jobs}-{i}" for i in range(jobs)]

    async def main() -> dict[str, Any]:
        client = VideoTranslationClient(
            url,
            StatusPollingConfig(timeout=900, long_poll=0),
            rate_limit=None,
            batch=policy == "batch",
        )
        cpu0, wall0 = time.process_time(), trio.current_time()
        async with client:
            results = await client.poll_many(ids)
        stats = client.statistics()
        final = (Outcome.COMPLETED, Outcome.ERROR)
        return {
            "cpu": time.process_time() - cpu0,
            "wall": trio.current_time() - wall0,
            "requests": stats.requests,
            "checks": stats.status_checks,
            "lost": sum(1 for r in results if r.outcome not in final),
        }

    out = trio.run(main)
    out["rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss
    report(out)


def wrk(url: str, seconds: int) -> float | None:
    """Requests per second wrk gets from one URL (16 connections, like the client); None
    without wrk, or for 0 seconds."""
    return run_wrk(url, seconds, 16, 1) if seconds > 0 and shutil.which("wrk") else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    standard_args(parser, jobs=[1000, 10000, 100000])
    parser.add_argument(
        "--single-up-to",
        type=int,
        default=10000,
        help="also run one request per check up to this size (default 10000)",
    )
    parser.add_argument(
        "--wrk-seconds", type=int, default=5, help="each wrk run (default 5; 0: none)"
    )
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        url, policy, jobs, seed = args.client
        client_main(url, policy, int(jobs), int(seed))
        return

    completion = 8.0 * args.time_scale
    rows: list[dict[str, Any]] = []
    serve_args = ["--auto-create", "--completion-time", str(completion), "--seed", str(args.seed)]
    with server(*serve_args) as (url, proc):
        for jobs in args.jobs:
            for policy in ("batch", "single"):
                if policy == "single" and jobs > args.single_up_to:
                    continue
                cpu0 = cpu_seconds(proc.pid)
                # A size of its own per policy: the jobs are fresh (auto-created) each time.
                seed = args.seed * 10 + (policy == "single")
                client = client_process(__file__, url, policy, str(jobs), str(seed))
                out = client_report(client, f"{jobs} {policy}")
                row = {
                    "jobs": jobs,
                    "policy": policy,
                    "time_scale": args.time_scale,
                    "requests_per_job": round(out["requests"] / jobs, 3),
                    "peak_rss_kib_per_job": round(out["rss_kib"] / jobs, 2),
                    "client_cpu_us_per_check": round(out["cpu"] / out["checks"] * 1e6, 1),
                    "checks_per_s": round(out["checks"] / out["wall"], 1),
                    "wall_s": round(out["wall"], 2),
                    "client_cpu_s": round(out["cpu"], 2),
                    "server_cpu_s": round(cpu_seconds(proc.pid) - cpu0, 2),
                    "jobs_lost": out["lost"],
                }
                rows.append(row)
                print(f"{jobs} {policy}: {row['wall_s']} s", file=sys.stderr, flush=True)
        ids = ",".join(f"s{args.seed * 10}-{args.jobs[0]}-{i}" for i in range(BATCH))
        batch_rps = wrk(f"{url}/jobs?ids={ids}", args.wrk_seconds)
        single_rps = (
            wrk(f"{url}/jobs/s{args.seed * 10}-{args.jobs[0]}-0", args.wrk_seconds)
            if any(row["policy"] == "single" for row in rows)
            else None
        )
    for row in rows:
        rps = batch_rps if row["policy"] == "batch" else single_rps
        row["server_ceiling_checks_per_s"] = (
            round(rps * (BATCH if row["policy"] == "batch" else 1), 1) if rps else None
        )
    print_table(rows, COLUMNS)
    if batch_rps is None and args.wrk_seconds > 0:
        print("wrk not found (apt-get install wrk): no server ceiling", file=sys.stderr)
    write_json(args.json, rows)
    if not args.no_plots:
        plot(rows, args.plots)


def plot(rows: list[dict[str, Any]], folder: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    for policy in ("batch", "single"):
        mine = [r for r in rows if r["policy"] == policy]
        if not mine:
            continue
        sizes = [r["jobs"] for r in mine]
        axes[0].plot(sizes, [r["peak_rss_kib_per_job"] for r in mine], "o-", label=policy)
        axes[1].plot(sizes, [r["client_cpu_us_per_check"] for r in mine], "o-", label=policy)
        axes[2].plot(sizes, [r["checks_per_s"] for r in mine], "o-", label=f"client, {policy}")
        ceiling = mine[0]["server_ceiling_checks_per_s"]
        if ceiling:
            axes[2].axhline(ceiling, linestyle="--", alpha=0.5, label=f"server ceiling, {policy}")
    titles = ("peak RSS per job, KiB", "client CPU per status check, µs", "status checks per s")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("concurrent jobs")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    fig.suptitle("One client process, many jobs")
    save(fig, folder, "scale.png")


if __name__ == "__main__":
    main()
