"""``vtpoll fleet status``: how far the fleet got, and which workers are alive."""

from __future__ import annotations

import json
import math
from functools import partial
from typing import Any

import click
from coredis import PureToken
from coredis.response.types import ScoredMember, StreamPending
from rich.console import Console
from rich.table import Table

from .._errors import EXIT_OK, Problem
from ._options import fleet_options, with_fleet
from ._redis import Fleet
from ._scripts import GROUP, NOW_MS

#: Redis's clock, in ms, as the leases are scored by it (coredis 6.9's time() drops the
#: sub-second part).
_NOW = NOW_MS + "return now"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--job",
    "job_id",
    help="One job instead: queued, in progress (which worker, delivered how often), done (its"
    " result) or acknowledged. Exit 2 if the fleet does not know it.",
)
@fleet_options
@click.pass_context
def status(
    ctx: click.Context, /, as_json: bool, job_id: str | None, redis_url: str, fleet_name: str
) -> None:
    """Jobs submitted, queued, in progress, done and acknowledged (their results written out
    by ``results --ack`` and removed from Redis); workers and their leases."""
    if job_id is not None:
        ctx.exit(_one_job(redis_url, fleet_name, job_id, as_json=as_json))
    report = with_fleet(redis_url, fleet_name, _report)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        table = Table(title=f"fleet {fleet_name!r}", title_justify="left", show_header=False)
        table.add_column("what")
        table.add_column("value", justify="right")
        for key in ("submitted", "queued", "in_progress", "done", "acknowledged"):
            table.add_row(key.replace("_", " "), str(report[key]))
        if report["shards"] > 1:
            table.add_row("shards", str(report["shards"]))
        if report["paused"]:
            table.add_row("paused", "yes: workers take no new jobs")
        for worker in report["workers"]:
            state = "alive" if worker["alive"] else "lease expired"
            table.add_row(f"worker {worker['name']}", f"{state}, {worker['pending']} jobs")
        Console().print(table)
    ctx.exit(EXIT_OK)


def _one_job(redis_url: str, fleet_name: str, job_id: str, *, as_json: bool) -> int:
    async def find(fleet: Fleet) -> dict[str, Any] | None:
        await fleet.check_epoch()
        return await fleet.job(job_id)

    found = with_fleet(redis_url, fleet_name, find)
    if found is None:
        raise Problem(f"fleet {fleet_name!r} has no job {job_id!r} (never submitted, or forgotten)")
    if as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        said = found["state"]
        if "worker" in found:
            said += f" by worker {found['worker']} (delivered {found['deliveries']} times)"
        if found.get("result"):
            result = found["result"]
            said += f": {result.get('outcome')}"
            if result.get("error"):
                said += f" ({result['error']})"
        click.echo(f"{job_id}: {said}")
    return EXIT_OK


async def _report(fleet: Fleet) -> dict[str, Any]:
    """The fleet's counts, summed over its shards; each worker with its jobs in every shard,
    alive while its lease is alive in each (it holds one in every shard)."""
    redis = fleet.redis
    await fleet.check_epoch()
    counts = dict.fromkeys(("submitted", "recorded", "acked"), 0)
    open_entries = 0
    pending: dict[str, int] = {}
    #: Each worker's lease left (ms), the least over the shards.
    left: dict[str, float] = {}
    grouped = False
    for shard in range(fleet.count):
        keys = fleet.shard(shard)
        for key, value in (await fleet.call(partial(redis.hgetall, keys.counts))).items():
            if key in counts:
                counts[key] += int(value)
        entries = await fleet.call(partial(redis.xlen, keys.jobs))
        open_entries += entries
        if entries:
            if not grouped:
                await fleet.ensure_group()
                grouped = True
            summary = await fleet.call(partial(redis.xpending, keys.jobs, GROUP))
            if isinstance(summary, StreamPending):
                for name, count in (summary.consumers or {}).items():
                    pending[str(name)] = pending.get(str(name), 0) + int(count)
        now = float(str(await fleet.call(partial(redis.eval, _NOW, keys=[keys.workers]))))
        leases = await fleet.call(
            partial(redis.zrange, keys.workers, "-inf", "+inf", PureToken.BYSCORE, withscores=True)
        )
        for lease in leases:
            if isinstance(lease, ScoredMember):
                name = str(lease.member)
                left[name] = min(left.get(name, math.inf), float(lease.score) - now)
    in_progress = sum(pending.values())
    workers = [
        {
            "name": name,
            "alive": ms > 0,
            "lease_left_s": round(max(0.0, ms / 1000), 1),
            "pending": pending.get(name, 0),
        }
        for name, ms in left.items()
    ]
    return {
        "submitted": counts["submitted"],
        "queued": open_entries - in_progress,
        "in_progress": in_progress,
        "done": counts["recorded"],
        "acknowledged": counts["acked"],
        "paused": await fleet.is_paused(),
        "shards": fleet.count,
        "workers": workers,
    }
