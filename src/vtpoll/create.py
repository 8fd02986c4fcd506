"""``vtpoll create``: make jobs on the simulation server and print their IDs."""

from __future__ import annotations

import random
import sys
from typing import Any

import click
import trio

from sim_server.testing import CreationFailed, create_jobs

from ._errors import EXIT_OK, Failure, Problem
from ._options import connection_options, make_client


def job_specs(
    count: int,
    *,
    duration: float | None,
    duration_range: tuple[float, float] | None,
    error_rate: float | None,
    seed: int | None,
) -> list[dict[str, Any]]:
    """The creation bodies: durations and outcomes drawn here, so a seed repeats them."""
    rng = random.Random(seed)
    specs: list[dict[str, Any]] = []
    for _ in range(count):
        spec: dict[str, Any] = {}
        if duration is not None:
            spec["duration"] = duration
        elif duration_range is not None:
            spec["duration"] = round(rng.uniform(*duration_range), 3)
        if error_rate is not None:
            spec["outcome"] = "error" if rng.random() < error_rate else "completed"
        specs.append(spec)
    return specs


def create_or_fail(
    base_url: str, api_key: str | None, specs: list[dict[str, Any]], echo: bool = False
) -> list[str]:
    """Create the jobs; :class:`Failure` (exit 1) naming what refused or failed."""

    def printed(job_id: str) -> None:
        click.echo(job_id)
        sys.stdout.flush()

    try:
        return trio.run(
            lambda: create_jobs(
                base_url, specs, api_key=api_key, on_created=printed if echo else None
            )
        )
    except CreationFailed as exc:
        raise Failure(str(exc)) from None


@click.command()
@click.option("--count", "-n", type=click.IntRange(1, 1_000_000), default=1, show_default=True)
@click.option("--duration", type=click.FloatRange(0), help="Seconds every job takes.")
@click.option(
    "--duration-range",
    type=(click.FloatRange(0), click.FloatRange(0)),
    help="Draw each job's duration uniformly from A to B seconds.",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    help="Share of jobs that end in error (default: the server's own rate).",
)
@click.option("--seed", type=int, help="Seed for the drawn durations and outcomes.")
@connection_options
@click.pass_context
def create(
    ctx: click.Context,
    count: int,
    duration: float | None,
    duration_range: tuple[float, float] | None,
    error_rate: float | None,
    seed: int | None,
    base_url: str,
    api_key: str | None,
) -> None:
    """Create jobs on the (simulation) server and print their IDs, one per line.

    'vtpoll create -n 100 --duration-range 5 30 | vtpoll watch -' makes and watches 100 jobs.
    """
    if duration is not None and duration_range is not None:
        raise Problem("--duration and --duration-range cannot be used together")
    if duration_range is not None and duration_range[0] > duration_range[1]:
        low, high = duration_range
        raise Problem(f"--duration-range A B needs A <= B, got {low:g} {high:g}")
    make_client(base_url=base_url, api_key=api_key)  # the same checks as watch
    specs = job_specs(
        count, duration=duration, duration_range=duration_range, error_rate=error_rate, seed=seed
    )
    create_or_fail(base_url, api_key, specs, echo=True)
    ctx.exit(EXIT_OK)
