"""Schedules against a plain server (``vtpoll serve --plain``: no hints, no held checks, no batch
route), side by side in one run: requests per job, checks wasted, detection lag.

Schedules (all through the library, only their settings differ):

- ``original``: the original design's loop, 1 s, x3, capped at 8 s, no jitter;
- ``backoff``: today's full-jitter exponential backoff at every default (``schedule="backoff"``);
- ``fixed``: the best fixed interval, found by a sweep of intervals on the same workload (the
  one with the lowest lag p99 among those costing no more requests per job than ``learn``);
- ``learn``: the learning schedule at every default (``checks_per_job=3``).

Workloads: lognormal durations of median 6 s, sigma 0.5 and 1.0, and a bimodal one (sigma 0.5,
one job in ten ten times longer); jobs created all at once, or spread over 30 s. Each series
polls jobs of its own, made with the same durations, concurrently with the others against one
server; a job's lag is its age when the server answered it final (the server says it) less its
duration.
By default the server is the plain app in this process, on trio's virtual clock: the numbers
are the schedules' alone, exact and the same on any machine, and a run takes seconds. With
``--process`` it is ``vtpoll serve --plain`` as a process of its own, on the real clock, times
multiplied by ``--time-scale`` (durations, spread and the schedules' delays alike; the table
reports them unscaled): there the client's and the server's CPU are in the numbers too, and
several series of 200 jobs at a quarter of real time keep a 2-core machine busy.

A second run sweeps each schedule's budget (the learner's ``checks_per_job``, the fixed
interval, the backoff's first delay) on the sigma 0.5 workload and plots requests per job
against lag p99 (``plain_budgets.png``).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from contextlib import AbstractAsyncContextManager, ExitStack, nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import trio
from trio.testing import MockClock

sys.path.insert(0, str(Path(__file__).parent))
from _common import percentile, print_table, pyplot, save, server, standard_args, write_json

from sim_server.testing import create_jobs, tls
from video_translation_client import StatusPollingConfig, VideoTranslationClient

#: (name, sigma, share of jobs ten times longer)
WORKLOADS = {"sigma0.5": (0.5, 0.0), "sigma1.0": (1.0, 0.0), "bimodal": (0.5, 0.1)}
MEDIAN = 6.0
SPREAD = 30.0
IN_PROCESS = "http://plain.sim"
FIXED_SWEEP = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
LEARN_SWEEP = (1.5, 2.0, 2.4, 3.0, 4.0, 6.0)
BACKOFF_SWEEP = (0.25, 0.5, 1.0, 2.0)
ORIGINAL_SWEEP = (0.5, 1.0, 2.0)


class Series(NamedTuple):
    name: str
    schedule: str
    budget: float
    config: StatusPollingConfig


def scaled(config: StatusPollingConfig, scale: float) -> StatusPollingConfig:
    """The schedule on a clock ``scale`` times faster."""
    return replace(
        config,
        initial_delay=config.initial_delay * scale,
        max_delay=config.max_delay * scale,
        timeout=None,
    )


def original(first: float = 1.0) -> StatusPollingConfig:
    return StatusPollingConfig(
        initial_delay=first,
        backoff_factor=3,
        max_delay=8 * first,
        jitter="none",
        schedule="backoff",
    )


def fixed(interval: float) -> StatusPollingConfig:
    return StatusPollingConfig(
        initial_delay=interval,
        backoff_factor=1,
        max_delay=interval,
        jitter="none",
        schedule="backoff",
    )


def backoff(first: float = 1.0) -> StatusPollingConfig:
    return StatusPollingConfig(initial_delay=first, schedule="backoff")


def learn(checks: float = 3.0) -> StatusPollingConfig:
    return StatusPollingConfig(checks_per_job=checks)


def durations(n: int, sigma: float, long_share: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        d = MEDIAN * math.exp(rng.gauss(0, sigma))
        out.append(d * 10 if long_share and i % round(1 / long_share) == 0 else d)
    return out


#: Jobs created at once, across the series (below httpx's 100 connections).
CREATE_AT_ONCE = 50


def connect(url: str | None) -> httpx.AsyncClient:
    """An httpx client to the server: ``url``, or the plain app in this process (on trio's
    virtual clock: exact and fast, the server costing nothing of the client's time)."""
    if url is not None:
        return httpx.AsyncClient(base_url=url, timeout=30, verify=tls(url))
    from sim_server import ServerSettings, create_app
    from sim_server.testing import SimTransport

    settings = ServerSettings(hints=False, batch=False, max_wait=0, error_rate=0)
    app = create_app(settings, backend="trio", clock=trio.current_time)
    return httpx.AsyncClient(transport=SimTransport(app), base_url=IN_PROCESS)


async def run_series(
    url: str | None,
    tag: str,
    series: list[Series],
    lengths: list[float],
    spread: float,
    scale: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Every series at once against ``url`` (None: the app in process): one client each,
    jobs of its own."""
    rng = random.Random(seed)
    offsets = [rng.uniform(0, spread) * scale for _ in lengths]
    rows: list[dict[str, Any]] = []
    shared = connect(url)
    # Against a process, fewer creations at once than the pool has connections: thousands
    # queued in httpcore's pool cost it time in the square of their number (every release
    # scans the queue), and 2,000 jobs created at once held the client's core for minutes
    # until PoolTimeout. In process there is no pool, and the virtual clock's run stays as it
    # was.
    creating: AbstractAsyncContextManager[Any] = (
        trio.CapacityLimiter(CREATE_AT_ONCE) if url is not None else nullcontext()
    )

    async def one_series(index: int, s: Series) -> None:
        lags: list[float] = []
        http = None if url is not None else shared
        draws = random.Random(f"{seed}:{tag}:{index}").random
        async with VideoTranslationClient(
            url or IN_PROCESS, scaled(s.config, scale), http_client=http, random=draws
        ) as client:
            maker = shared

            async def one_job(k: int) -> None:
                await trio.sleep(offsets[k])
                job_id = f"{tag}-{index}-{k}"
                spec = {"job_id": job_id, "duration": lengths[k] * scale}
                async with creating:
                    await create_jobs(maker, [spec], creators=1)
                result = await client.poll_job(job_id)
                assert result.ok, result
                assert result.last_status is not None
                # The job's age when the server answered it final, as the server tells it: where
                # creation queues (400 jobs created at once waited 3.4 s for their answers, on
                # the real server), the client cannot tell when the job started.
                age = float(result.last_status.payload["elapsed"])
                lags.append(age / scale - lengths[k])

            async with trio.open_nursery() as nursery:
                for k in range(len(lengths)):
                    nursery.start_soon(one_job, k)
            stats = client.statistics()
        per_job = stats.requests / len(lengths)
        rows.append(
            {
                "schedule": s.schedule,
                "series": s.name,
                "budget": s.budget,
                "jobs": len(lengths),
                "jobs_lost": len(lengths) - len(lags),
                "requests_per_job": round(per_job, 3),
                "wasted_per_job": round(per_job - 1, 3),
                "lag_p50_s": round(percentile(lags, 0.5), 3),
                "lag_p99_s": round(percentile(lags, 0.99), 3),
            }
        )

    async with shared, trio.open_nursery() as nursery:
        for index, s in enumerate(series):
            nursery.start_soon(one_series, index, s)
    return rows


def table_series(fixed_interval: float | None) -> list[Series]:
    out = [
        Series("original", "original", 1.0, original()),
        Series("backoff", "backoff", 1.0, backoff()),
        Series("learn", "learn", 3.0, learn()),
    ]
    if fixed_interval is not None:
        out.insert(2, Series("fixed", "fixed", fixed_interval, fixed(fixed_interval)))
    return out


def best_fixed(rows: list[dict[str, Any]]) -> float:
    """The interval with the lowest lag p99 among those costing no more than ``learn``; the
    cheapest, if none is that cheap."""
    learner = next(r for r in rows if r["series"] == "learn")
    candidates = [r for r in rows if r["schedule"] == "fixed"]
    cheap = [r for r in candidates if r["requests_per_job"] <= learner["requests_per_job"]]
    if not cheap:
        return float(min(candidates, key=lambda r: r["requests_per_job"])["budget"])
    return float(min(cheap, key=lambda r: (r["lag_p99_s"], r["requests_per_job"]))["budget"])


def sweep_series(learn_only: bool = False) -> list[Series]:
    out = [Series(f"learn R={r:g}", "learn", r, learn(r)) for r in LEARN_SWEEP]
    if learn_only:
        return out
    out += [Series(f"fixed {i:g} s", "fixed", i, fixed(i)) for i in FIXED_SWEEP]
    out += [Series(f"backoff {b:g} s", "backoff", b, backoff(b)) for b in BACKOFF_SWEEP]
    out += [Series(f"original {b:g} s", "original", b, original(b)) for b in ORIGINAL_SWEEP]
    return out


def plot(rows: list[dict[str, Any]], folder: Any) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for schedule in ("original", "backoff", "fixed", "learn"):
        points = sorted(
            (r["requests_per_job"], r["lag_p99_s"]) for r in rows if r["schedule"] == schedule
        )
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=schedule)
    ax.set_xlabel("requests per job")
    ax.set_ylabel("detection lag p99, s")
    ax.set_yscale("log")
    ax.set_title("Plain server, lognormal jobs of median 6 s, sigma 0.5: cost against lag")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save(fig, folder, "plain_budgets.png")


COLUMNS = [
    ("workload", "workload"),
    ("arrival", "arrival"),
    ("series", "schedule"),
    ("budget", "budget"),
    ("jobs", "jobs"),
    ("jobs_lost", "lost"),
    ("requests_per_job", "requests/job"),
    ("wasted_per_job", "wasted/job"),
    ("lag_p50_s", "lag p50 s"),
    ("lag_p99_s", "lag p99 s"),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    standard_args(parser, jobs=200)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--arrivals", nargs="+", default=["at-once", "spread"])
    parser.add_argument("--sweep-jobs", type=int, default=100, help="jobs per sweep point")
    parser.add_argument(
        "--process",
        action="store_true",
        help="against 'vtpoll serve --plain' as a process of its own, on the real clock (times"
        " scaled by --time-scale), instead of the same app in this process on trio's virtual"
        " clock",
    )
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        url = None
        scale = 1.0
        if args.process:
            url, _ = stack.enter_context(server("--plain", "--error-rate", "0"))
            scale = args.time_scale
        rows = measure(args, url, scale)
    write_json(args.json, rows)


def repeatable(seed: str) -> None:
    """The virtual-clock run of a seed, the same on every run: trio wakes the tasks due at
    one instant in an order it breaks by their cancel scopes' addresses in memory, and
    hundreds of jobs fall due together on the virtual clock; its deterministic scheduling
    (a private switch, which pytest-trio turns on where Hypothesis is installed) orders them
    by a generator seeded here."""
    trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    trio._core._run._r.seed(seed)


def measure(args: argparse.Namespace, url: str | None, scale: float) -> list[dict[str, Any]]:
    """The table's rows, then the sweep's (plotted)."""

    def run(tag: str, series: list[Series], lengths: list[float], spread: float) -> Any:
        go = partial(run_series, url, tag, series, lengths, spread, scale, args.seed)
        if url is not None:
            return trio.run(go)
        repeatable(f"{args.seed}:{tag}")
        return trio.run(go, clock=MockClock(autojump_threshold=0))

    rows: list[dict[str, Any]] = []
    for workload in args.workloads:
        sigma, long_share = WORKLOADS[workload]
        lengths = durations(args.jobs, sigma, long_share, args.seed)
        for arrival in args.arrivals:
            spread = SPREAD if arrival == "spread" else 0.0
            # The fixed intervals' sweep runs beside the others; its best joins the table.
            sweep = [Series(f"fixed {i:g} s", "fixed", i, fixed(i)) for i in FIXED_SWEEP]
            found = run(f"{workload}-{arrival}", table_series(None) + sweep, lengths, spread)
            interval = best_fixed(found)
            for row in found:
                if row["schedule"] != "fixed" or row["budget"] == interval:
                    if row["schedule"] == "fixed":
                        row["series"] = f"fixed (best: {interval:g} s)"
                    rows.append({"workload": workload, "arrival": arrival, **row})
    order = {"original": 0, "backoff": 1, "fixed": 2, "learn": 3}
    rows.sort(key=lambda r: (r["workload"], r["arrival"], order[r["schedule"]]))
    print_table(rows, COLUMNS)
    if not args.no_plots:
        lengths = durations(args.sweep_jobs, 0.5, 0.0, args.seed)
        swept = run("sweep", sweep_series(), lengths, 0.0)
        plot(swept, args.plots)
        rows += [{"workload": "sigma0.5 sweep", "arrival": "at-once", **row} for row in swept]
    return rows


if __name__ == "__main__":
    main()
