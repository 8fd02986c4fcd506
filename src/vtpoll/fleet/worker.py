"""``vtpoll fleet worker``: one poller of the fleet; run as many as you like, anywhere."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import sys
from typing import Any

import anyio
import click
import trio

from .._errors import EXIT_NOT_ALL_COMPLETED, Problem
from .._options import make_client, polling_options
from ._limiter import FleetRateLimiter
from ._metrics import WorkerMetrics, serving
from ._options import fleet_options
from ._redis import FleetError, open_fleet
from ._worker import MAX_DELIVERIES, Fenced, Worker

DEFAULT_LEASE = 20.0


@click.command()
@click.option(
    "--name",
    help="This worker's name in the fleet, unique among live workers (default: host, pid and a"
    " random part). A worker restarted under its name resumes the jobs that name held.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=1.0),
    default=DEFAULT_LEASE,
    show_default=True,
    help="Seconds this worker's lease lasts unrenewed (renewed every third of it): a worker"
    " dead or frozen this long has its jobs taken over.",
)
@click.option(
    "--capacity",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Jobs this worker polls at once.",
)
@click.option(
    "--max-deliveries",
    type=click.IntRange(min=1),
    default=MAX_DELIVERIES,
    show_default=True,
    help="A job handed to workers this many times without a result (each stopped first: a job"
    " that crashes its poller) is recorded failed instead of being polled again.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="Serve Prometheus metrics on this port (0: a free one, said on standard error) at"
    " /metrics: results recorded and dropped, jobs held, taken over, dead-lettered, shards"
    " read, requests.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="The address the metrics are served on (0.0.0.0 for every interface).",
)
@fleet_options
@polling_options
@click.pass_context
def worker(
    ctx: click.Context,
    /,
    name: str | None,
    lease: float,
    capacity: int,
    max_deliveries: int,
    metrics_port: int | None,
    metrics_host: str,
    redis_url: str,
    fleet_name: str,
    **polling: Any,
) -> None:
    """Poll the fleet's jobs until stopped (Ctrl-C or SIGTERM hands them back at once).

    --rate is the whole fleet's rate toward the status API, shared through Redis, in evenly
    spaced slots (--burst allows that many at once); a 429's Retry-After pauses every worker.
    Without --rate each worker keeps a limiter of its own. In a fleet of several shards each
    worker reads new jobs from the shards rendezvous hashing gives it among the live workers
    (from the others' too while its own have none left), and takes over a dead worker's jobs
    in every shard. Started before the fleet's first submit, it waits for it.
    Exit status: 0 stopped by a signal, 1 this worker's lease was lost (its jobs were taken
    over), 2 bad input, a Redis that cannot be used, or the fleet's state lost (Redis wiped).
    """
    # A random part: a container restarted on the same host often gets the same pid, and would
    # otherwise take the name of a worker whose lease is still alive.
    name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    make_client(**polling)  # every option checked before Redis is reached
    rate, burst = polling["rate_limit"], polling["burst"]

    metrics = WorkerMetrics(name) if metrics_port is not None else None

    async def main() -> int:
        async with open_fleet(redis_url, fleet_name) as fleet:
            limiter = FleetRateLimiter(fleet, rate, burst or None) if rate else None
            client = make_client(**polling, rate_limiter=limiter)
            work = Worker(
                fleet,
                client,
                name=name,
                lease=lease,
                capacity=capacity,
                limiter=limiter,
                max_deliveries=max_deliveries,
                metrics=metrics,
            )
            click.echo(f"worker {name} polling fleet {fleet_name!r} on {client.base_url}", err=True)
            return await until_stopped(work)

    with contextlib.ExitStack() as stack:
        if metrics is not None:
            try:
                url = stack.enter_context(serving(metrics, metrics_host, metrics_port or 0))
            except OSError as exc:  # the port taken, the address not this host's
                raise Problem(f"--metrics-port {metrics_port}: {exc.strerror or exc}") from None
            click.echo(f"worker {name}: metrics on {url}", err=True)
        try:
            code = trio.run(main)
        except FleetError as exc:
            raise Problem(str(exc)) from None
    sys.stdout.flush()
    ctx.exit(code)


async def until_stopped(work: Worker) -> int:
    """Run the worker until SIGINT or SIGTERM (its jobs handed back at once: 0), or until it
    finds its lease gone (1)."""
    fenced = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def until_signal() -> None:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

            tg.start_soon(until_signal)
            try:
                await work.run()
            except Fenced as exc:
                click.echo(f"vtpoll: {exc}; stopping", err=True)
                tg.cancel_scope.cancel()
                fenced = True
    if fenced:
        return EXIT_NOT_ALL_COMPLETED
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        await work.leave()
    stats = work.stats
    click.echo(
        f"worker {work.name} stopped: {stats.recorded} results recorded "
        f"({stats.stale} stale results dropped, {stats.dead_letters} jobs delivered too often"
        f" recorded failed), {stats.claimed} jobs taken "
        "over; its unfinished jobs go to the other workers",
        err=True,
    )
    return 0
