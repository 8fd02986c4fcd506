"""``vtpoll``: the command line.

The commands are thin: :mod:`._jobfile` reads and writes the files, :mod:`._display` draws,
the library polls. Every input is checked before the first request. Exit codes: 0 every job
completed, 1 some did not (or a request failed), 2 usage or input error, 130 interrupted.
"""

from __future__ import annotations

import json
import random
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
import click
import httpx
import trio
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._client import VideoTranslationClient
from ._config import JITTERS, Jitter, StatusPollingConfig
from ._display import WatchDisplay, plain_line, summary_table, wants_live
from ._errors import VideoTranslationError
from ._headers import finite_number, parse_retry_after
from ._http import redact_url
from ._jobfile import InputError, Previous, ResultWriter, file_lines, open_results, read_ids
from ._models import ClientStatistics, JobResult, Outcome, StatusResponse

EXIT_OK, EXIT_NOT_ALL_COMPLETED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_BASE_URL = "http://localhost:8000"
#: Live display refreshes per second.
REFRESH_HZ = 8

_DEFAULTS = StatusPollingConfig()
#: The option a user typed, for the field a library error names.
_FLAGS = {
    "initial_delay": "--initial-delay",
    "max_delay": "--max-delay",
    "backoff_factor": "--backoff-factor",
    "jitter": "--jitter",
    "timeout": "--timeout",
    "request_timeout": "--request-timeout",
    "max_retries": "--max-retries",
    "rate": "--rate",
    "rate_limit": "--rate",
    "burst": "--burst",
    "max_in_flight": "--in-flight",
    "base_url": "--base-url",
    "api_key": "--api-key",
}


class Problem(click.ClickException):
    """Bad input: one line naming it, exit code 2."""

    exit_code = EXIT_USAGE


class Failure(click.ClickException):
    """The work could not be done (the server refused, could not be reached): exit code 1."""

    exit_code = EXIT_NOT_ALL_COMPLETED


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: click's errors become one line on stderr and the documented exit code."""
    try:
        code = cli.main(args=argv, prog_name="vtpoll", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)
        code = EXIT_USAGE
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"vtpoll: error: {exc.format_message()}{hint}", err=True)
        code = exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("vtpoll: interrupted", err=True)
        code = EXIT_INTERRUPTED
    raise SystemExit(code if isinstance(code, int) else EXIT_OK)


class _Commands(click.Group):
    """Loads ``serve`` only when asked for: the server's imports (Quart, hypercorn) take
    most of a second, which every ``vtpoll watch`` would otherwise pay."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "serve"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "serve":
            from sim_server._cli import serve

            return serve
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, no_args_is_help=True)
@click.version_option(package_name="video-translation-client")
def cli() -> None:
    """Poll the status of many video translation jobs, and run the simulation server.

    Start with 'vtpoll demo'.
    """


# -- options ---------------------------------------------------------------------------------


def _connection_options(func: Any) -> Any:
    func = click.option(
        "--api-key",
        envvar="VTPOLL_API_KEY",
        show_envvar=True,
        help="API key, sent as 'Authorization: Bearer KEY' (the variable keeps it out of ps).",
    )(func)
    return click.option(
        "--base-url",
        envvar="VTPOLL_BASE_URL",
        show_envvar=True,
        default=DEFAULT_BASE_URL,
        show_default=True,
        help="The server's base URL.",
    )(func)


#: (flag, type, default, help) of every polling setting; defaults come from the library's.
_POLLING: list[tuple[str, Any, Any, str]] = [
    (
        "--rate",
        float,
        0.0,
        "Requests per second for all jobs together; 0 = none but the server's own (learnt"
        " from its 429s).",
    ),
    ("--burst", int, None, "Requests allowed at once (default: 1 s worth)."),
    ("--in-flight", int, 16, "Requests in flight at once (the connection pool size)."),
    (
        "--timeout",
        float,
        _DEFAULTS.timeout,
        "Seconds a job may stay pending before it ends as 'timeout'; 0 = never.",
    ),
    (
        "--initial-delay",
        float,
        _DEFAULTS.initial_delay,
        "First wait between two checks of a job, seconds.",
    ),
    ("--max-delay", float, _DEFAULTS.max_delay, "Longest wait between two checks, seconds."),
    ("--backoff-factor", float, _DEFAULTS.backoff_factor, "Each wait is this many times the last."),
    (
        "--jitter",
        click.Choice(JITTERS),
        _DEFAULTS.jitter,
        "How waits are randomised so that jobs do not poll in step.",
    ),
    ("--request-timeout", float, _DEFAULTS.request_timeout, "Seconds one HTTP request may take."),
    (
        "--max-retries",
        int,
        _DEFAULTS.max_retries,
        "Transient failures in a row before a job ends as 'failed'.",
    ),
]


def _polling_options(func: Any) -> Any:
    func = click.option(
        "--batch/--no-batch",
        default=None,
        help="Check many jobs per request (default: when the server offers it).",
    )(func)
    func = click.option(
        "--hints/--no-hints",
        default=True,
        show_default=True,
        help="Follow the server's hint of when to ask again.",
    )(func)
    func = click.option(
        "--long-poll/--no-long-poll",
        default=True,
        show_default=True,
        help="Let the server hold a pending check open until the job ends (Prefer: wait).",
    )(func)
    for flag, kind, default, text in reversed(_POLLING):
        func = click.option(flag, type=kind, default=default, show_default=True, help=text)(func)
    return _connection_options(func)


def _as_flag(message: str) -> str:
    name, sep, rest = message.partition(" ")
    return f"{_FLAGS[name]} {rest}" if sep and name in _FLAGS else message


def make_client(
    *,
    base_url: str,
    api_key: str | None,
    rate: float = 0.0,
    burst: int | None = None,
    in_flight: int = 16,
    timeout: float | None = _DEFAULTS.timeout,
    initial_delay: float = _DEFAULTS.initial_delay,
    max_delay: float = _DEFAULTS.max_delay,
    backoff_factor: float = _DEFAULTS.backoff_factor,
    jitter: Jitter = _DEFAULTS.jitter,
    request_timeout: float = _DEFAULTS.request_timeout,
    max_retries: int = _DEFAULTS.max_retries,
    long_poll: bool = True,
    hints: bool = True,
    batch: bool | None = None,
) -> VideoTranslationClient:
    """The client the options describe, or :class:`Problem` naming the bad option."""
    try:
        config = StatusPollingConfig(
            initial_delay,
            max_delay,
            backoff_factor,
            None if timeout == 0 else timeout,
            jitter=jitter,
            request_timeout=request_timeout,
            max_retries=max_retries,
            long_poll=_DEFAULTS.long_poll if long_poll else 0,
            hints=hints,
        )
        return VideoTranslationClient(
            base_url,
            config,
            api_key=api_key,
            rate_limit=None if rate == 0 else rate,
            burst=burst,
            max_in_flight=in_flight,
            batch=batch,
        )
    except ValueError as exc:
        raise Problem(_as_flag(str(exc))) from None


def _id_sources(
    ids: Iterable[str], files: Iterable[Path], stdin: IO[str]
) -> list[tuple[str, Iterable[str]]]:
    sources: list[tuple[str, Iterable[str]]] = []
    arguments = [i for i in ids if i != "-"]
    if arguments:
        sources.append(("argument", arguments))
    wants_stdin = "-" in ids or any(str(f) == "-" for f in files)
    for path in files:
        if str(path) != "-":
            sources.append((str(path), file_lines(path)))
    if wants_stdin:
        sources.append(("<stdin>", stdin.read().removeprefix("\ufeff").splitlines()))
    return sources


# -- watch -----------------------------------------------------------------------------------


@dataclass(slots=True)
class WatchRun:
    """What one run of the watch loop saw: counts, not the results themselves, which go to
    the results file as they come (a run of a million jobs must not keep a million)."""

    ended: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    stats: ClientStatistics | None = None
    wall: float = 0.0
    #: The signal that stopped the run early, if one did.
    signal: int | None = None


async def run_watch(
    client: VideoTranslationClient,
    ids: list[str],
    *,
    console: Console,
    live: bool,
    writer: ResultWriter | None,
    on_result: Callable[[JobResult], None] | None = None,
) -> WatchRun:
    """Poll every job with ``client.watch``, writing each result the moment it is known.

    SIGINT and SIGTERM cancel the polling; results already received, including those still
    queued in the watch stream, are written before returning.
    """
    run = WatchRun()
    started = trio.current_time()
    display = WatchDisplay(console, len(ids), started, live=live)

    def take(event: StatusResponse | JobResult) -> None:
        if isinstance(event, JobResult):
            run.ended[event.outcome] += 1
            if writer is not None:
                writer.write(event)
            if on_result is not None:
                on_result(event)
            display.finished(event)
        else:
            display.status(event, trio.current_time())

    async def until_signal(scope: trio.CancelScope) -> None:
        # Leaving the receiver restores the default handler: a second Ctrl-C during the
        # cleanup raises KeyboardInterrupt instead of being ignored.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                run.signal = signum
                scope.cancel()
                return

    async def tick() -> None:
        while True:
            display.refresh(client.statistics(), trio.current_time())
            await trio.sleep(1 / REFRESH_HZ)

    async with client:
        with display:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(until_signal, nursery.cancel_scope)
                if live:
                    nursery.start_soon(tick)
                async with client.watch(ids) as events:
                    try:
                        async for event in events:
                            take(event)
                    finally:
                        _drain(events, take)
                nursery.cancel_scope.cancel()
            display.refresh(client.statistics(), trio.current_time())
    run.stats = client.statistics()
    run.wall = trio.current_time() - started
    return run


def _drain(events: Any, take: Callable[[Any], None]) -> None:
    while True:
        try:
            take(events.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return


def _watch_and_report(
    client: VideoTranslationClient,
    ids: list[str],
    *,
    console: Console,
    quiet: bool,
    output: Path | None,
    resume: bool,
    on_result: Callable[[JobResult], None] | None = None,
) -> tuple[WatchRun, dict[str, str]]:
    """Open the results file, watch the jobs not in it yet, print the summary."""
    file: IO[str] | None = None
    previous = Previous()
    files = ExitStack()
    if output is not None and str(output) == "-":
        file = sys.stdout
    elif output is not None:
        try:
            file, previous = open_results(output, resume=resume)
        except InputError as exc:
            raise Problem(str(exc)) from None
        files.enter_context(file)
    if previous.repaired:
        say(
            console,
            f"warning: {output}: cut a torn last line ({previous.repaired} bytes) left by an "
            "interrupted run; that job is polled again",
        )
    for warning in previous.warnings:
        say(console, f"warning: {warning}")
    done_before = {i: previous.outcomes[i] for i in ids if i in previous.outcomes}
    todo = [i for i in ids if i not in done_before]
    if done_before:
        say(
            console,
            f"{len(done_before)} of {len(ids)} jobs already in {output}; "
            f"polling the other {len(todo)}",
        )
    live = wants_live(console, quiet=quiet)
    run = WatchRun()
    with files:
        if todo:
            if not live:
                say(console, f"watching {len(todo)} jobs on {redact_url(client.base_url)}")
            writer = ResultWriter(file) if file is not None else None
            run = trio.run(
                lambda: run_watch(
                    client, todo, console=console, live=live, writer=writer, on_result=on_result
                )
            )
    if run.stats is not None:
        console.print(summary_table(run.ended, run.stats, run.wall, skipped=len(done_before)))
    return run, done_before


def say(console: Console, text: str) -> None:
    """One line for a person: text as it is, never read as markup (it may hold a file name
    or what a server said)."""
    console.print(text, highlight=False, markup=False)


@cli.command()
@click.argument("ids", nargs=-1)
@click.option(
    "--file",
    "-f",
    "files",
    multiple=True,
    type=click.Path(dir_okay=True, path_type=Path, allow_dash=True),
    help="File of job IDs, one per line ('#' starts a comment); '-' reads standard input.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    help="Write one JSON line per finished job here, as each one ends ('-' = stdout).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Skip the jobs already in --output and append the rest (repairs a torn last line).",
)
@click.option("--quiet", "-q", is_flag=True, help="No live display: one plain line per job.")
@_polling_options
def watch(
    ids: tuple[str, ...],
    files: tuple[Path, ...],
    output: Path | None,
    resume: bool,
    quiet: bool,
    **polling: Any,
) -> int:
    """Poll jobs until each one ends: IDS, --file F, or '-' for standard input.

    Exit status: 0 every job completed, 1 some ended in error, timeout or failure, 2 bad input,
    130 interrupted (the results file keeps every finished job; rerun with --resume).
    """
    if resume and output is None:
        raise Problem("--resume needs --output FILE: the file to continue")
    if resume and str(output) == "-":
        raise Problem("--resume cannot continue standard output; give --output a file")
    client = make_client(**polling)
    try:
        id_list = read_ids(_id_sources(ids, files, sys.stdin))
    except InputError as exc:
        raise Problem(str(exc)) from None
    if not id_list.ids:
        raise Problem("no job IDs given: pass IDs, --file FILE, or '-' to read standard input")
    console = Console(stderr=True, soft_wrap=True)
    if id_list.first_duplicate is not None:
        source, line, job_id = id_list.first_duplicate
        say(
            console,
            f"warning: dropped {id_list.duplicates} duplicate job ID"
            f"{'s' if id_list.duplicates > 1 else ''} (first: {job_id} at {source}:{line})",
        )
    run, done_before = _watch_and_report(
        client, id_list.ids, console=console, quiet=quiet, output=output, resume=resume
    )
    finished = sum(run.ended.values())
    if run.signal is not None:
        left = len(id_list.ids) - len(done_before) - finished
        if output is not None and str(output) != "-":
            say(
                console,
                f"interrupted: {len(done_before) + finished} results are in {output}; "
                f"run the same command with --resume to poll the other {left} jobs",
            )
        else:
            say(
                console,
                f"interrupted with {left} jobs unfinished; use --output FILE to keep results "
                "across runs",
            )
        return 128 + run.signal
    earlier = all(outcome == Outcome.COMPLETED.value for outcome in done_before.values())
    if earlier and run.ended[Outcome.COMPLETED] == finished:
        return EXIT_OK
    return EXIT_NOT_ALL_COMPLETED


# -- status ----------------------------------------------------------------------------------


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to keep retrying a transient failure.",
)
@_connection_options
def status(
    ids: tuple[str, ...], as_json: bool, timeout: float, base_url: str, api_key: str | None
) -> int:
    """Show the current status of each job ID, once."""
    try:
        id_list = read_ids([("argument", ids)])
    except InputError as exc:
        raise Problem(str(exc)) from None
    client = make_client(base_url=base_url, api_key=api_key, timeout=timeout, long_poll=False)
    answers = trio.run(_statuses, client, id_list.ids)
    rows = [_status_row(i, answer) for i, answer in zip(id_list.ids, answers, strict=True)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        Console().print(status_table(rows))
    return EXIT_OK if all(row["error"] is None for row in rows) else EXIT_NOT_ALL_COMPLETED


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
    client: VideoTranslationClient, ids: list[str]
) -> list[StatusResponse | VideoTranslationError]:
    answers: dict[str, StatusResponse | VideoTranslationError] = {}

    async def one(job_id: str) -> None:
        try:
            answers[job_id] = await client.get_status(job_id)
        except VideoTranslationError as exc:
            answers[job_id] = exc

    async with client, trio.open_nursery() as nursery:
        for job_id in ids:
            nursery.start_soon(one, job_id)
    return [answers[job_id] for job_id in ids]


def _status_row(job_id: str, answer: StatusResponse | VideoTranslationError) -> dict[str, Any]:
    if isinstance(answer, VideoTranslationError):
        error = f"{type(answer).__name__}: {answer}"
        return {"job_id": job_id, "status": None, "progress": None, "eta_s": None, "error": error}
    payload = answer.payload
    progress = finite_number(payload.get("progress"))
    return {
        "job_id": job_id,
        "status": answer.status.value,
        "progress": progress if progress is not None and progress <= 1 else None,
        "eta_s": finite_number(payload.get("eta")),
        "error": None,
    }


# -- create ----------------------------------------------------------------------------------

#: Creations in flight at once.
CREATE_CONCURRENCY = 8
#: 429 answers in a row one creation waits out before giving up.
CREATE_THROTTLE_RETRIES = 20


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


async def create_jobs(
    base_url: str,
    api_key: str | None,
    specs: list[dict[str, Any]],
    on_created: Callable[[str], None],
) -> list[str]:
    """``POST /jobs`` for each spec; returns the IDs in the order of ``specs``.

    ``on_created`` sees each ID as soon as it exists, so a failure later loses none of them.
    Raises :class:`Failure` at the first refusal or network error; waits out 429s.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    created: dict[int, str] = {}
    limiter = trio.CapacityLimiter(CREATE_CONCURRENCY)
    problems: list[str] = []

    async def one(http: httpx.AsyncClient, index: int, spec: dict[str, Any]) -> None:
        async with limiter:
            if problems:
                return
            for _ in range(CREATE_THROTTLE_RETRIES):
                try:
                    response = await http.post("/jobs", json=spec)
                except httpx.HTTPError as exc:
                    problems.append(f"cannot create jobs at {base_url}: {exc!r}")
                    return
                if response.status_code != 429:
                    break
                hint = parse_retry_after(
                    response.headers.get("Retry-After"), response.headers.get("Retry-After-Ms")
                )
                await trio.sleep(hint if hint is not None else 1.0)
            if response.status_code != 201:
                problems.append(
                    f"POST {base_url}/jobs answered {response.status_code}: "
                    f"{response.text[:200].strip()}"
                )
                return
            job_id = response.json()["job_id"]
            created[index] = job_id
            on_created(job_id)

    async with (
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10.0) as http,
        trio.open_nursery() as nursery,
    ):
        for index, spec in enumerate(specs):
            nursery.start_soon(one, http, index, spec)
    if problems:
        raise Failure(f"{problems[0]} ({len(created)} of {len(specs)} jobs created)")
    return [created[index] for index in range(len(specs))]


@cli.command()
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
@_connection_options
def create(
    count: int,
    duration: float | None,
    duration_range: tuple[float, float] | None,
    error_rate: float | None,
    seed: int | None,
    base_url: str,
    api_key: str | None,
) -> int:
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

    def echo(job_id: str) -> None:
        click.echo(job_id)
        sys.stdout.flush()

    trio.run(create_jobs, base_url, api_key, specs, echo)
    return EXIT_OK


# -- demo ------------------------------------------------------------------------------------

DEMO_FAULT_RATE = 0.03


@cli.command()
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
def demo(jobs: int, time_scale: float, seed: int, quiet: bool, output: Path | None) -> int:
    """Run a simulation server, create jobs of 2-20 s (some fail), and watch them.

    Exit status 0 when every job's outcome matches what the server decided.
    """
    from sim_server import ServerSettings, TranslationServer

    console = Console(stderr=True, soft_wrap=True)
    rng = random.Random(seed)
    durations = [(2 + 18 * (i + rng.random()) / jobs) * time_scale for i in range(jobs)]
    rng.shuffle(durations)
    specs = [
        {
            "duration": round(d, 3),
            "outcome": "error" if rng.random() < 0.15 else "completed",
        }
        for d in durations
    ]
    faults: dict[str, Any] = {
        f"fault_{kind}": DEMO_FAULT_RATE
        for kind in ("500", "502", "503", "429", "drop", "garbage", "slow")
    }
    server = TranslationServer(
        ServerSettings(port=0, seed=seed, slow_delay=max(0.05, time_scale), **faults)
    )

    async def create_all() -> list[str]:
        await server.start(host="127.0.0.1")
        return await create_jobs(server.url, None, specs, lambda _: None)

    try:
        ids = trio.run(create_all)
        console.print(
            f"[bold]vtpoll demo[/]: a simulation server at {server.url} failing "
            f"{DEMO_FAULT_RATE:.0%} of status requests in each of 7 ways (500, 502, 503, 429, "
            f"dropped connection, garbage, slow); {jobs} jobs of "
            f"{2 * time_scale:g}-{20 * time_scale:g} s, some ending in error.",
            highlight=False,
        )
        client = make_client(base_url=server.url, api_key=None)
        truth = {job_id: spec["outcome"] for job_id, spec in zip(ids, specs, strict=True)}
        wrong: list[JobResult] = []

        def check(result: JobResult) -> None:
            if result.outcome.value != truth[result.job_id]:
                wrong.append(result)

        run, _ = _watch_and_report(
            client, ids, console=console, quiet=quiet, output=output, resume=False, on_result=check
        )
    finally:
        trio.run(server.stop)
    if run.signal is not None:
        return 128 + run.signal
    if wrong:
        say(console, f"{len(wrong)} jobs did not end as the server decided:")
        for result in wrong:
            say(console, "  " + plain_line(result))
        return EXIT_NOT_ALL_COMPLETED
    errors = run.ended[Outcome.ERROR]
    say(
        console,
        f"Every outcome matches the server's: {len(ids) - errors} completed, {errors} error, "
        "despite the injected faults.\nNext: 'vtpoll serve' in one terminal, then "
        "'vtpoll create -n 100 --duration-range 5 30 | vtpoll watch - -o results.jsonl'.",
    )
    return EXIT_OK
