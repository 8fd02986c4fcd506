"""``vtpoll watch``: poll jobs until each one ends, with a live display and a results file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from video_translation_client import Outcome

from ._display import plural
from ._errors import EXIT_NOT_ALL_COMPLETED, EXIT_OK, Problem, Terminations
from ._options import (
    given_job_ids,
    job_id_options,
    make_client,
    polling_options,
    results_file_options,
)
from ._watching import abnormal_end, say, watch_and_report


@click.command()
@job_id_options
@results_file_options()
@click.option("--quiet", "-q", is_flag=True, help="No live display: one plain line per job.")
@polling_options
@click.pass_context
def watch(
    ctx: click.Context,
    /,
    ids: tuple[str, ...],
    files: tuple[Path, ...],
    output: Path | None,
    resume: bool,
    quiet: bool,
    **polling: Any,
) -> None:
    """Poll jobs until each one ends: IDS, --file F, or '-' for standard input.

    Exit status: 0 every job completed; 1 some ended in error, timeout or failure; 2 bad input
    (or a results file another vtpoll is writing); 3 the results could not be written (a full
    disk); 130 on Ctrl-C, 143 on SIGTERM (128 + the signal; the results file keeps every
    finished job: rerun with --resume); 141 when the reader of '-o -' closed it.
    """
    with Terminations().installed() as noted:
        if resume and output is None:
            raise Problem("--resume needs --output FILE: the file to continue")
        if resume and str(output) == "-":
            raise Problem("--resume cannot continue standard output; give --output a file")
        client = make_client(**polling)
        id_list = given_job_ids(ids, files)
        console = Console(stderr=True, soft_wrap=True)
        if id_list.first_duplicate is not None:
            source, line, job_id = id_list.first_duplicate
            say(
                console,
                f"warning: dropped {plural(id_list.duplicates, 'duplicate job ID')} "
                f"(first: {job_id} at {source}:{line})",
            )
        run = watch_and_report(
            client,
            id_list.ids,
            console=console,
            quiet=quiet,
            output=output,
            resume=resume,
            noted=noted,
        )
        code = abnormal_end(console, run, output, len(id_list.ids), noted)
        if code is None:
            finished = sum(run.ended.values())
            earlier = all(o == Outcome.COMPLETED.value for o in run.done_before.values())
            all_completed = earlier and run.ended[Outcome.COMPLETED] == finished
            code = EXIT_OK if all_completed else EXIT_NOT_ALL_COMPLETED
    ctx.exit(code)
