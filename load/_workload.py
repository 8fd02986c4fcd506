"""Workload W, and creating its jobs so that they all start at the same instant.

W: ``--jobs`` jobs created at once; durations lognormal with median 8 s (sigma 0.8), clipped to
[1, 60] s, times ``--time-scale``; 10% end in ``error``; fixed by the seed.

Creating 1,000 jobs over HTTP takes about a second, so jobs created first would have a head
start. Instead every job is created with its W duration plus the time left until a planned start
instant T0 a little ahead: on the server they all "start" at T0, and the client starts polling
at T0. Detection lag is measured by the server itself (``elapsed`` in the first final answer
minus the duration it was given), so no clocks need to agree.

A busy machine may take longer than planned to create the jobs. That must not fail a run, nor
count against the policy measured: polling then starts when creation has finished, and a job
that completed before polling could start has its lag counted from that start
(:meth:`WorkJob.lag`), since no client could have seen it sooner.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from sim_server.testing import create_jobs

MEDIAN, SIGMA, SHORTEST, LONGEST, ERROR_SHARE = 8.0, 0.8, 1.0, 60.0, 0.1


@dataclass(slots=True)
class WorkJob:
    job_id: str
    #: W's duration, seconds (time-scaled).
    duration: float
    outcome: str
    #: The duration the server was given: W's plus the wait until T0.
    sent_duration: float = 0.0
    #: When its creation was sent, on the creating process's trio clock.
    created: float = 0.0

    def lag(self, elapsed: float, start: float) -> float:
        """Seconds from when the job could first be seen final to when it was, from the
        server's ``elapsed`` in the first final answer: from its completion, or from ``start``
        (when polling began) if it completed before that.

        That start is on this process's clock and ``elapsed`` on the server's, from when the
        creation reached it, not from when it was sent (``created``): for a job that completed
        before a late start, the difference is off by the creation request's latency, which
        on a busy machine made lags of -44 ms. A lag is never less than none."""
        return max(0.0, elapsed - max(self.sent_duration, start - self.created))


def workload_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--median", type=float, default=MEDIAN, help="median duration, s")
    parser.add_argument("--sigma", type=float, default=SIGMA, help="lognormal sigma")
    parser.add_argument("--shortest", type=float, default=SHORTEST, help="clip below, s")
    parser.add_argument("--longest", type=float, default=LONGEST, help="clip above, s")
    parser.add_argument("--error-share", type=float, default=ERROR_SHARE)


def workload_argv(args: argparse.Namespace) -> list[str]:
    """The options that define the workload, to hand it to a client process."""
    return [
        f"--jobs={args.jobs}",
        f"--time-scale={args.time_scale}",
        f"--seed={args.seed}",
        f"--median={args.median}",
        f"--sigma={args.sigma}",
        f"--shortest={args.shortest}",
        f"--longest={args.longest}",
        f"--error-share={args.error_share}",
    ]


def workload(args: argparse.Namespace, prefix: str = "w") -> list[WorkJob]:
    rng = random.Random(args.seed)
    jobs = []
    for i in range(args.jobs):
        drawn = rng.lognormvariate(math.log(args.median), args.sigma)
        duration = min(args.longest, max(args.shortest, drawn)) * args.time_scale
        outcome = "error" if rng.random() < args.error_share else "completed"
        jobs.append(WorkJob(f"{prefix}{args.seed}-{i}", duration, outcome))
    return jobs


def lead_time(jobs: int) -> float:
    """Time planned for creating the jobs (about 1 ms each on a quiet machine)."""
    return 0.1 + 0.002 * jobs


async def create_all(url: str, jobs: list[WorkJob]) -> tuple[float, float]:
    """Create every job so that it completes ``duration`` after a planned start.

    Returns the trio time at which polling starts (the planned start, or the end of creation
    if that is later) and how late that is against the plan, in seconds.
    """
    planned = trio.current_time() + lead_time(len(jobs))

    def spec(job: WorkJob) -> Callable[[], dict[str, Any]]:
        def body() -> dict[str, Any]:
            # Made when it is sent: the job's duration counts from the planned start.
            job.created = trio.current_time()
            job.sent_duration = job.duration + max(0.0, planned - job.created)
            duration = round(job.sent_duration, 6)
            return {"job_id": job.job_id, "duration": duration, "outcome": job.outcome}

        return body

    await create_jobs(url, [spec(job) for job in jobs])
    start = max(planned, trio.current_time())
    return start, start - planned
