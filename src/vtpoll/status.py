"""``vtpoll status``: each job's status, once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import trio
from rich.console import Console
from rich.table import Table
from rich.text import Text

from video_translation_client import StatusResponse, VideoTranslationClient, VideoTranslationError
from video_translation_client._decide import REFUSED_GIVE_UP

from ._errors import EXIT_NOT_ALL_COMPLETED, EXIT_OK, Problem
from ._jobfile import InputError, read_ids
from ._options import connection_options, dialect_options, make_client

#: Seconds between two looks at whether the server has gone silent.
WATCH_SILENCE = 0.1


@click.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to keep retrying a transient failure (a server refusing every connection"
    f" is given up on after {REFUSED_GIVE_UP:g} s).",
)
@dialect_options
@connection_options
@click.pass_context
def status(
    ctx: click.Context,
    ids: tuple[str, ...],
    as_json: bool,
    timeout: float,
    base_url: str,
    api_key: str | None,
    dialect: str,
    dialect_file: Path | None,
) -> None:
    """Show the current status of each job ID, once.

    Exit status: 0 every status was read, 1 some could not be (unknown job, server
    unreachable), 2 bad input.
    """
    try:
        id_list = read_ids([("argument", ids)])
    except InputError as exc:
        raise Problem(str(exc)) from None
    client = make_client(
        base_url=base_url,
        api_key=api_key,
        timeout=timeout,
        long_poll=0,
        dialect=dialect,
        dialect_file=dialect_file,
    )
    answers = trio.run(_statuses, client, id_list.ids, timeout)
    rows = [_status_row(i, answer) for i, answer in zip(id_list.ids, answers, strict=True)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        Console().print(status_table(rows))
    ctx.exit(EXIT_OK if all(row["error"] is None for row in rows) else EXIT_NOT_ALL_COMPLETED)


def status_table(rows: list[dict[str, Any]]) -> Table:
    """The rows of ``vtpoll status`` for a person. Cells are Text, not markup: what a server
    says ("[/x]", a link, a style) is shown as it is."""
    table = Table("job", "status", "progress", "eta", "error")
    for row in rows:
        progress, eta = row["progress"], row["eta_s"]
        cells = (
            row["job_id"],
            row["status"] or "-",
            f"{progress:.0%}" if progress is not None else "-",
            f"{eta:.1f} s" if eta is not None else "-",
            row["error"] or "",
        )
        table.add_row(*map(Text, cells))
    return table


async def _statuses(
    client: VideoTranslationClient, ids: list[str], retrying_for: float
) -> list[StatusResponse | VideoTranslationError]:
    answers: dict[str, StatusResponse | VideoTranslationError] = {}

    async def one(job_id: str) -> None:
        try:
            answers[job_id] = await client.get_status(job_id)
        except VideoTranslationError as exc:
            answers[job_id] = exc

    async def tell_of_silence() -> None:
        # A person waiting on a server that does not answer is told so at once, not after
        # the retries run out.
        # The client has no event for it; a look every 0.1 s costs nothing.
        while client.statistics().server_silent_since is None:  # noqa: ASYNC110
            await trio.sleep(WATCH_SILENCE)
        click.echo(silence_line(client.display_url, retrying_for), err=True)

    async with client, trio.open_nursery() as nursery:
        nursery.start_soon(tell_of_silence)
        async with trio.open_nursery() as asks:
            for job_id in ids:
                asks.start_soon(one, job_id)
        nursery.cancel_scope.cancel()
    return [answers[job_id] for job_id in ids]


def silence_line(url: str, timeout: float) -> str:
    """What happens to a server that has not answered since the client started, as the
    client does it: one that refuses connections (nothing listens there) is given up on
    after ``REFUSED_GIVE_UP`` seconds, any other at the deadline (``timeout``, 0: none) or
    once the retries run out."""
    said = f"vtpoll: no answer from {url}; retrying"
    if 0 < timeout <= REFUSED_GIVE_UP:
        return f"{said} for up to {timeout:g} s (--timeout)"
    longest = f"up to {timeout:g} s (--timeout)" if timeout else "until the retries run out"
    return f"{said} for up to {REFUSED_GIVE_UP:g} s if it refuses connections, else {longest}"


def _status_row(job_id: str, answer: StatusResponse | VideoTranslationError) -> dict[str, Any]:
    if isinstance(answer, VideoTranslationError):
        error = f"{type(answer).__name__}: {answer}"
        return {"job_id": job_id, "status": None, "progress": None, "eta_s": None, "error": error}
    return {
        "job_id": job_id,
        "status": answer.status.value,
        "progress": answer.progress,
        "eta_s": answer.eta,
        "error": None,
    }
