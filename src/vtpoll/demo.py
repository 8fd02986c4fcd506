"""``vtpoll demo``: the README's first run. A simulation server with every fault, jobs of
2-20 s (some ending in error), watched; every outcome checked against the server's."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import click
import trio
from rich.console import Console

from sim_server._settings import FAULT_KINDS
from sim_server.testing import CreationFailed, create_jobs
from video_translation_client import JobResult, Outcome

from ._display import plain_line
from ._errors import EXIT_NOT_ALL_COMPLETED, EXIT_OK, Failure, Terminations
from ._options import make_client
from ._watching import WatchRun, abnormal_end, say, watch_and_report

#: Probability per status request of each fault kind.
FAULT_RATE = 0.03
#: Share of jobs that end in error.
ERROR_SHARE = 0.15


def demo_specs(jobs: int, time_scale: float, seed: int) -> list[dict[str, Any]]:
    """Durations spread evenly over 2-20 s (times the scale), in a seeded order; outcomes
    decided here, so that the end can be checked against them."""
    rng = random.Random(seed)
    durations = [(2 + 18 * (i + rng.random()) / jobs) * time_scale for i in range(jobs)]
    rng.shuffle(durations)
    return [
        {"duration": round(d, 3), "outcome": "error" if rng.random() < ERROR_SHARE else "completed"}
        for d in durations
    ]


@click.command()
@click.option("--jobs", type=click.IntRange(1, 1000), default=30, show_default=True)
@click.option(
    "--time-scale",
    type=click.FloatRange(0.001, 10),
    default=1.0,
    show_default=True,
    help="Multiply every job's duration (0.1 runs the demo ten times faster).",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No live display: one plain line per job.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    help="Also write the results as JSON lines here.",
)
@click.pass_context
def demo(
    ctx: click.Context, jobs: int, time_scale: float, seed: int, quiet: bool, output: Path | None
) -> None:
    """Run a simulation server, create jobs of 2-20 s (some fail), and watch them.

    Exit status 0 when every job's outcome matches what the server decided, 1 when one does
    not; 130 on Ctrl-C, 143 on SIGTERM (whenever it comes, with a line saying so, as watch).
    """
    from sim_server import ServerSettings, TranslationServer

    with Terminations().installed() as noted:
        console = Console(stderr=True, soft_wrap=True)
        specs = demo_specs(jobs, time_scale, seed)
        faults: dict[str, Any] = {f"fault_{kind}": FAULT_RATE for kind in FAULT_KINDS}
        server = TranslationServer(
            ServerSettings(port=0, seed=seed, slow_delay=max(0.05, time_scale), **faults)
        )

        async def start_and_create() -> list[str]:
            await server.start(host="127.0.0.1")
            return await create_jobs(server.url, specs)

        try:
            try:
                with noted.noted_only():
                    ids = trio.run(start_and_create)
            except CreationFailed as exc:
                raise Failure(str(exc)) from None
            console.print(
                f"[bold]vtpoll demo[/]: a simulation server at {server.url} failing "
                f"{FAULT_RATE:.0%} of status requests in each of {len(FAULT_KINDS)} ways (500, "
                f"502, 503, 429, dropped connection, garbage, slow); {jobs} jobs of "
                f"{2 * time_scale:g}-{20 * time_scale:g} s, some ending in error.",
                highlight=False,
            )
            client = make_client(base_url=server.url, api_key=None)
            truth = {job_id: spec["outcome"] for job_id, spec in zip(ids, specs, strict=True)}
            wrong: list[JobResult] = []

            def check(result: JobResult) -> None:
                if result.outcome.value != truth[result.job_id]:
                    wrong.append(result)

            run = watch_and_report(
                client,
                ids,
                console=console,
                quiet=quiet,
                output=output,
                resume=False,
                on_result=check,
                noted=noted,
            )
        finally:
            with noted.noted_only():
                trio.run(server.stop)
        code = abnormal_end(console, run, output, len(ids), noted)
        if code is None:
            code = verdict(console, run, wrong)
    ctx.exit(code)


def verdict(console: Console, run: WatchRun, wrong: list[JobResult]) -> int:
    """Say whether every outcome was the server's; the exit status."""
    if wrong:
        say(console, f"{len(wrong)} jobs did not end as the server decided:")
        for result in wrong:
            say(console, "  " + plain_line(result))
        return EXIT_NOT_ALL_COMPLETED
    errors = run.ended[Outcome.ERROR]
    say(
        console,
        f"Every outcome matches the server's: {run.ended[Outcome.COMPLETED]} completed, "
        f"{errors} error, despite the injected faults.\nNext: 'vtpoll serve' in one terminal, "
        "then 'vtpoll create -n 100 --duration-range 5 30 | vtpoll watch - -o results.jsonl'.",
    )
    return EXIT_OK
