"""Workload W through faults, a server rate limit and a server killed mid-run: is anything lost?

    uv run python load/chaos.py [--jobs 1000] [--time-scale 1] [--seed 1] [--fault-rate 0.05]
                                [--server-rate 25] [--client-rate 50] [--down 0]
                                [--policies batch hint-aware default] [--json PATH]

``vtpoll serve`` with ``--db`` (jobs survive a restart), every fault kind at ``--fault-rate``
(500, 502, 503, 429, slow, dropped connection, garbage: 35% of status requests by default) and a
rate limit of ``--server-rate`` requests/s, below the client's ``--client-rate``. The client
runs with ``max_retries=10``: at 35% failures the default 5 would let 0.35**6 = 0.2% of checks
fail six times in a row. For each policy (batch, and hint-aware single requests; ``default``,
the library with every default including ``max_retries`` and no rate of its own, when asked for)
a client process creates W's jobs and polls them; ``--kill-at`` seconds into the polling the
server is killed with SIGKILL and started again on the same port with the same database,
``--down`` seconds later. At the end every job's outcome is checked against the restarted
server's own record. Jobs lost (a wrong outcome, or none) must be 0.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    SERVE,
    client_process,
    client_report,
    percentile,
    plot_lag_cdf,
    print_table,
    report,
    spawn,
    standard_args,
    stop,
    write_json,
)
from _workload import create_all, workload, workload_args, workload_argv

from sim_server.testing import recorded_results, wait_healthy

POLICIES = ["batch", "hint-aware", "default"]
FAULTS = ("500", "502", "503", "429", "slow", "drop", "garbage")
COLUMNS = [
    ("policy", "policy"),
    ("jobs_lost", "lost"),
    ("wrong_outcomes", "wrong"),
    ("requests_per_job", "req/job"),
    ("extra_requests_per_job", "extra req/job"),
    ("share_429", "429 share"),
    ("retries_denied", "held back"),
    ("lag_p50_ms", "lag p50 ms"),
    ("lag_p99_ms", "p99"),
    ("downtime_s", "down s"),
    ("wall_s", "wall s"),
]


def client_main(url: str, policy: str, args: argparse.Namespace) -> None:
    """Runs in its own process: says when polling starts, then prints one JSON line."""
    from video_translation_client import StatusPollingConfig, VideoTranslationClient

    jobs = workload(args, prefix=f"{policy}-")
    seen: dict[str, Any] = {}

    def on_change(status: Any) -> None:
        if status.is_final and status.job_id not in seen:
            seen[status.job_id] = status.payload

    async def main() -> dict[str, Any]:
        start, late = await create_all(url, jobs)
        await trio.sleep_until(start)
        print("polling", flush=True)
        if policy == "default":
            client = VideoTranslationClient(url, on_status_change=on_change)
        else:
            client = VideoTranslationClient(
                url,
                # The client's delays shrink with the workload's durations.
                StatusPollingConfig(
                    initial_delay=args.time_scale,
                    max_delay=30 * args.time_scale,
                    timeout=900,
                    long_poll=0,
                    max_retries=args.max_retries,
                ),
                on_status_change=on_change,
                rate_limit=args.client_rate,
                batch=policy == "batch",
            )
        wall0 = trio.current_time()
        async with client:
            results = await client.poll_many([job.job_id for job in jobs])
        stats = client.statistics()
        return {
            "start": start,
            "late_start": late,
            "wall": trio.current_time() - wall0,
            "requests": stats.requests,
            "retries": stats.retries,
            "throttled": stats.throttled,
            "retries_denied": stats.retries_denied,
            "outcomes": {r.job_id: r.outcome.value for r in results},
            "errors": sorted({repr(r.error) for r in results if r.error is not None})[:5],
        }

    out = trio.run(main)
    out["lags"] = [
        job.lag(float(seen[job.job_id]["elapsed"]), out["start"])
        for job in jobs
        if job.job_id in seen and "elapsed" in seen[job.job_id]
    ]
    out["intended"] = {job.job_id: job.outcome for job in jobs}
    report(out)


class Server:
    """The server process, restartable on the same port and database."""

    def __init__(self, args: argparse.Namespace, db: Path) -> None:
        self.options = ["--db", str(db), "--seed", str(args.seed), "--max-wait", "30"]
        if args.server_rate:
            self.options += ["--rate-limit", str(args.server_rate)]
        for kind in FAULTS:
            self.options += [f"--fault-{kind}", str(args.fault_rate)]
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> None:
        self.proc = spawn(
            [*SERVE, "--host", "127.0.0.1", "--port", str(self.port), *self.options],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        wait_healthy(self.url)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def run_policy(policy: str, args: argparse.Namespace, server: Server) -> dict[str, Any]:
    client = client_process(__file__, server.url, policy, *forward(args))
    assert client.stdout is not None
    if client.stdout.readline().strip() != "polling":
        raise SystemExit(f"{policy}: the client process failed before polling")
    time.sleep(args.kill_at)
    down = time.monotonic()
    server.kill()
    time.sleep(args.down)
    server.start()
    downtime = time.monotonic() - down
    out = client_report(client, policy)
    outcomes: dict[str, str] = out["outcomes"]
    record = recorded_results(server.url, list(outcomes))
    lost = sum(1 for job_id, outcome in outcomes.items() if outcome != record.get(job_id))
    wrong = sum(1 for job_id, outcome in out["intended"].items() if record.get(job_id) != outcome)
    lags_ms = [lag * 1000 for lag in out["lags"]]
    jobs = len(outcomes)
    if out["errors"]:
        print(f"{policy}: errors seen: {out['errors']}", file=sys.stderr)
    return {
        "policy": policy,
        "jobs": jobs,
        "time_scale": args.time_scale,
        "fault_rate_each": args.fault_rate,
        "server_rate": args.server_rate,
        "client_rate": args.client_rate,
        "jobs_lost": lost,
        # The server's record against what the job was created to do: a check of the server.
        "wrong_outcomes": wrong,
        "requests_per_job": round(out["requests"] / jobs, 3),
        "extra_requests_per_job": round((out["retries"] + out["throttled"]) / jobs, 3),
        "share_429": round(out["throttled"] / max(1, out["requests"]), 3),
        "throttled": out["throttled"],
        "retries_denied": out["retries_denied"],
        "lag_p50_ms": round(percentile(lags_ms, 0.5), 1),
        "lag_p99_ms": round(percentile(lags_ms, 0.99), 1),
        "downtime_s": round(downtime, 2),
        "wall_s": round(out["wall"], 2),
        "late_start_s": round(out["late_start"], 3),
        "lags_ms": lags_ms,
    }


def forward(args: argparse.Namespace) -> list[str]:
    return [
        *workload_argv(args),
        f"--client-rate={args.client_rate}",
        f"--max-retries={args.max_retries}",
    ]


def plot(rows: list[dict[str, Any]], folder: Path) -> None:
    plot_lag_cdf(
        {f"{row['policy']} ({row['jobs_lost']} lost)": row["lags_ms"] for row in rows},
        "Detection lag through faults, a rate limit and a server kill",
        folder,
        "chaos_lag_cdf.png",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    standard_args(parser)
    workload_args(parser)
    parser.add_argument("--fault-rate", type=float, default=0.05, help="each kind (0.05)")
    parser.add_argument(
        "--server-rate", type=float, default=25.0, help="server limit, req/s (0: none)"
    )
    parser.add_argument("--client-rate", type=float, default=50.0, help="client limit, req/s")
    parser.add_argument(
        "--max-retries",
        type=int,
        default=10,
        help="the client's max_retries (default 10: at 35%% failures, 5 would fail 0.35**6 = "
        "0.2%% of checks)",
    )
    parser.add_argument(
        "--kill-at", type=float, help="seconds into polling (default: half the median duration)"
    )
    parser.add_argument(
        "--down", type=float, default=0.0, help="seconds the killed server stays down (0)"
    )
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=POLICIES[:2])
    parser.add_argument("--client", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        url, policy = args.client
        client_main(url, policy, args)
        return
    if args.kill_at is None:
        args.kill_at = args.median * args.time_scale / 2
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        server = Server(args, Path(folder) / "chaos.db")
        server.start()
        try:
            for policy in args.policies:
                rows.append(run_policy(policy, args, server))
                print(f"{policy}: done", file=sys.stderr, flush=True)
        finally:
            server.close()
    print_table(rows, COLUMNS)
    write_json(args.json, [{k: v for k, v in row.items() if k != "lags_ms"} for row in rows])
    if not args.no_plots:
        plot(rows, args.plots)


if __name__ == "__main__":
    main()
