"""``vtpoll fleet cancel``: stop polling jobs, each recorded as cancelled."""

from __future__ import annotations

from pathlib import Path

import click

from video_translation_client import JobResult, Outcome

from .._errors import EXIT_NOT_ALL_COMPLETED, EXIT_OK
from .._jobfile import record_line
from .._options import given_job_ids, job_id_options
from ._options import fleet_options, with_fleet
from ._redis import Fleet


class Cancelled(Exception):
    """The job was cancelled by ``vtpoll fleet cancel`` before it ended."""


@click.command()
@job_id_options
@fleet_options
@click.pass_context
def cancel(
    ctx: click.Context,
    /,
    ids: tuple[str, ...],
    files: tuple[Path, ...],
    redis_url: str,
    fleet_name: str,
) -> None:
    """Cancel jobs not done yet (IDS, --file F, or '-' for standard input).

    Each is recorded at once with outcome 'failed' and the error 'Cancelled', so 'results'
    writes it; a worker polling it stops counting (its result is dropped). Exit status: 0 every
    job cancelled or done already, 1 some IDs unknown to the fleet (named; the others are
    cancelled all the same), 2 bad input or a Redis that cannot be used.
    """
    id_list = given_job_ids(ids, files)
    error = Cancelled("cancelled by 'vtpoll fleet cancel' before it ended")
    records = [
        (job_id, record_line(JobResult(job_id, Outcome.FAILED, None, error=error)))
        for job_id in id_list.ids
    ]

    async def body(fleet: Fleet) -> list[int]:
        await fleet.check_epoch()
        said = await fleet.cancel(records)
        for k, (job_id, _) in enumerate(records):
            if said[k] < 0 and await fleet.job(job_id) is not None:
                said[k] = 0  # acknowledged already: its state is only a done marker now
        return said

    said = with_fleet(redis_url, fleet_name, body)
    unknown = [job_id for job_id, s in zip(id_list.ids, said, strict=True) if s < 0]
    click.echo(
        f"cancelled {said.count(1)} jobs of fleet {fleet_name!r}"
        f" ({said.count(0)} done already, {len(unknown)} unknown)"
    )
    if unknown:
        shown = ", ".join(repr(job_id) for job_id in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        click.echo(f"unknown to the fleet: {shown}{more}", err=True)
    ctx.exit(EXIT_NOT_ALL_COMPLETED if unknown else EXIT_OK)
