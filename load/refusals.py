"""What 429s cost: refusals at random and a real rate limit, against ``vtpoll serve``.

Each run: jobs created on a fresh server process (creation is never refused), then one entered
client at every default but ``timeout=30`` polls them, one ``poll_job`` task per job; its wall
time runs from the first check to the last result.

- ``random``: 429s injected at random on a share of status requests (``--fault-429 P``), no rate
  limit. With ``Retry-After: 1`` (the server's default) and without (``--no-fault-hints``, as
  the refusals of a proxy or a concurrency cap often come). Workloads: ``A``, 200 jobs of
  1.5-2.5 s; ``B``, 1,000 jobs of 0.5 s; both on the plain server (``--plain``: single checks),
  ``A`` also batched (``--no-hints --max-wait 0``: the batch route, no hints, no held checks).
  ``x none`` is the median wall over the median wall of the same workload without 429s;
  ``floor x`` what a client would take that lost nothing to the refusals but the waits their
  ``Retry-After`` imposes (each job's refusals in a row drawn at the share, the slowest job's
  added to the run without 429s: the median of 500 draws).
- ``limit``: ``--plain --rate-limit 100 --burst 10`` (a real limit), 600 jobs of 0.5 s, the
  client at ``rate_limit=300`` and with no rate of its own: the share of requests refused in
  each run (the worst run shown) and the rate the server accepted. The simulator's 429s say
  ``Retry-After``; the same again in ElevenLabs' dialect, whose 429s say nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table, server, write_json

from sim_server.testing import create_jobs
from video_translation_client import StatusPollingConfig, VideoTranslationClient

#: name: (jobs, shortest and longest duration, s)
WORKLOADS = {"A": (200, 1.5, 2.5), "B": (1000, 0.5, 0.5)}
#: How each mode's server is started (besides its faults).
MODES = {"single": ["--plain"], "batched": ["--no-hints", "--max-wait", "0"]}
RETRY_AFTER = 1.0
FLOOR_DRAWS = 500
LIMIT = ["--plain", "--rate-limit", "100", "--burst", "10"]
LIMIT_JOBS = 600


def durations(workload: str, seed: int, scale: int) -> list[float]:
    jobs, low, high = WORKLOADS[workload]
    draw = random.Random(seed)
    return [draw.uniform(low, high) for _ in range(max(1, jobs // scale))]


async def poll_run(
    url: str, tag: str, lengths: list[float], rate_limit: float | None, dialect: str = "sim"
) -> dict[str, Any]:
    """One run: the jobs made, then polled to their ends; what it cost."""
    specs = [{"job_id": f"{tag}-{k}", "duration": d} for k, d in enumerate(lengths)]
    ids = await create_jobs(url, specs)
    ended: list[bool] = []
    async with VideoTranslationClient(
        url, StatusPollingConfig(timeout=30), rate_limit=rate_limit, dialect=dialect
    ) as client:
        start = trio.current_time()

        async def one(job_id: str) -> None:
            result = await client.poll_job(job_id)
            ended.append(result.ok)

        async with trio.open_nursery() as nursery:
            for job_id in ids:
                nursery.start_soon(one, job_id)
        wall = trio.current_time() - start
        stats = client.statistics()
    return {
        "wall_s": wall,
        "requests": stats.requests,
        "refused": stats.throttled,
        "lost": len(ids) - sum(ended),
        "jobs": len(ids),
    }


def floor_extra(lengths: list[float], share: float, retry_after: float, seed: int) -> float:
    """Seconds a client loses at the least to refusals at ``share`` that each say
    ``retry_after``: every job checked as it ends, each refusal waited out and nothing more,
    the slowest job's end against the slowest job's end without refusals (median of draws)."""
    if not share or not retry_after:
        return 0.0
    draw = random.Random(seed)
    end = max(lengths)
    extras = []
    for _ in range(FLOOR_DRAWS):
        latest = end
        for length in lengths:
            refused = 0
            while draw.random() < share:
                refused += 1
            latest = max(latest, length + retry_after * refused)
        extras.append(latest - end)
    return statistics.median(extras)


def random_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for workload in args.workloads:
        for mode in args.modes:
            if workload == "B" and mode == "batched":
                continue  # 1,000 jobs of 0.5 s in a few batches: no refusal to speak of
            base: float | None = None
            for share in [0.0, *args.shares]:
                for hints in [True] if not share else [True, False]:
                    flags = [*MODES[mode], "--error-rate", "0", "--seed", str(args.seed)]
                    flags += ["--fault-429", str(share)]
                    flags += [] if hints else ["--no-fault-hints"]
                    runs, floors = [], []
                    with server(*flags) as (url, _):
                        for k in range(args.runs):
                            lengths = durations(workload, args.seed + k, args.scale)
                            tag = f"{workload}-{mode}-{share}-{hints}-{k}"
                            runs.append(trio.run(poll_run, url, tag, lengths, None))
                            floors.append(
                                floor_extra(lengths, share, RETRY_AFTER * hints, args.seed + k)
                            )
                    row = summary(runs)
                    if base is None:
                        base = row["wall_s"]
                    rows.append(
                        {
                            "scenario": "random",
                            "workload": workload,
                            "mode": mode,
                            "share": share,
                            "retry_after": hints if share else None,
                            **row,
                            "x_none": row["wall_s"] / base,
                            "floor_x": (base + statistics.median(floors)) / base,
                        }
                    )
    return rows


def limit_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    lengths = [0.5] * max(1, LIMIT_JOBS // args.scale)
    # The simulator's own 429s say Retry-After; ElevenLabs' say nothing of when to come back.
    for dialect in args.dialects:
        flags = [*LIMIT, "--error-rate", "0", "--seed", str(args.seed), "--dialect", dialect]
        for rate in args.rates:
            with server(*flags) as (url, _):
                runs = [
                    trio.run(poll_run, url, f"limit-{rate}-{k}", lengths, rate, dialect)
                    for k in range(args.runs)
                ]
            row = summary(runs)
            shares = [r["refused"] / r["requests"] for r in runs]
            rows.append(
                {
                    "scenario": "limit",
                    "workload": "C",
                    "mode": f"client {rate:g}/s" if rate else "client unlimited",
                    "retry_after": dialect == "sim",
                    **row,
                    "refused_worst": max(shares),
                    "accepted_per_s": statistics.median(
                        (r["requests"] - r["refused"]) / r["wall_s"] for r in runs
                    ),
                }
            )
    return rows


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    requests = sum(r["requests"] for r in runs)
    return {
        "jobs": runs[0]["jobs"],
        "runs": len(runs),
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "wall_max_s": max(r["wall_s"] for r in runs),
        "requests_per_job": requests / sum(r["jobs"] for r in runs),
        "refused_share": sum(r["refused"] for r in runs) / requests,
        "lost": sum(r["lost"] for r in runs),
    }


COLUMNS = [
    ("scenario", "scenario"),
    ("workload", "work"),
    ("mode", "mode"),
    ("share", "429 P"),
    ("retry_after", "Retry-After"),
    ("runs", "runs"),
    ("wall_s", "wall s"),
    ("wall_max_s", "max"),
    ("x_none", "x none"),
    ("floor_x", "floor x"),
    ("requests_per_job", "req/job"),
    ("refused_share", "refused"),
    ("refused_worst", "worst run"),
    ("accepted_per_s", "accepted/s"),
    ("lost", "lost"),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios", nargs="+", choices=["random", "limit"], default=["random", "limit"]
    )
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--shares", nargs="+", type=float, default=[0.05, 0.1, 0.2])
    parser.add_argument(
        "--dialects", nargs="+", choices=["sim", "elevenlabs"], default=["sim", "elevenlabs"]
    )
    parser.add_argument(
        "--rates",
        nargs="+",
        type=lambda text: None if text == "none" else float(text),
        default=[300.0, None],
        help="the client's own rates against the limit, requests/s or none (default 300 none)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per row (default 3)")
    parser.add_argument("--scale", type=int, default=1, help="divide every job count by this")
    parser.add_argument("--seed", type=int, default=1, help="durations and faults (default 1)")
    parser.add_argument("--json", type=Path, help="write the table's rows here as JSON")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    if "random" in args.scenarios:
        rows += random_rows(args)
    if "limit" in args.scenarios:
        rows += limit_rows(args)
    print_table(rows, COLUMNS)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
