"""``serve``: the server's command line, mounted as ``vtpoll serve`` and ``python -m sim_server``.

The options are generated from :class:`ServerSettings` fields, so a new setting is a new flag.
"""

from __future__ import annotations

import sqlite3
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from ._dialects import DIALECTS
from ._settings import ServerSettings

_HELP = {
    "host": "Address to listen on.",
    "port": "Port to listen on; 0 picks a free one (the URL is printed on the first line).",
    "completion_time": "Seconds a job takes when its creation does not say.",
    "error_rate": "Share of jobs that end in error when their creation does not say.",
    "seed": "Seed for outcomes, auto-created jobs and the fault sequence (default: a new one"
    " each run).",
    "auto_create": "Create unknown job IDs on first sight instead of answering 404.",
    "max_wait": "Longest a long-poll (Prefer: wait=N) is held, seconds; 0 turns long-poll off.",
    "hints": "Hint when to ask again on a pending job (Retry-After, Retry-After-Ms, eta).",
    "batch": "Offer the batch route, GET /jobs?ids=a,b,c (off: it answers 404).",
    "fault_500": "Probability per status request of a 500.",
    "fault_502": "Probability per status request of a 502.",
    "fault_503": "Probability per status request of a 503 (with Retry-After: see --fault-hints).",
    "fault_429": "Probability per status request of a 429 (with Retry-After: see --fault-hints).",
    "fault_hints": "Injected 429s and 503s say Retry-After: 1 (off: nothing, as a proxy's or a"
    " concurrency cap's refusals often do).",
    "fault_slow": "Probability per status request of answering --slow-delay seconds late.",
    "slow_delay": "Delay of a slow response, seconds.",
    "fault_drop": "Probability per status request of closing the connection mid-response.",
    "fault_garbage": "Probability per status request of a malformed body.",
    "rate_limit": "Requests per second allowed per API key (else per client address).",
    "burst": "Token bucket size of the rate limit (default: one second's worth).",
    "api_key": "Require this key as 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'.",
    "db": "SQLite file that keeps jobs across restarts.",
    "workers": "Worker processes (they share jobs through the database).",
    "dialect": "The status API spoken: sim (this project's), elevenlabs (GET /v1/dubbing/ID,"
    " key in xi-api-key) or heygen (GET /v2/video_translate/ID, key in X-Api-Key); the vendors'"
    " have no batch route, hints or long-poll.",
}


def _option(name: str, default: Any) -> Any:
    flag = "--" + name.replace("_", "-")
    kwargs: dict[str, Any] = {"help": _HELP[name], "show_default": True}
    if isinstance(default, bool):
        return click.option(f"{flag}/--no-{flag[2:]}", default=default, **kwargs)
    if name == "db":
        return click.option(flag, type=click.Path(dir_okay=False, path_type=Path), **kwargs)
    if name == "api_key":
        return click.option(flag, envvar="SIM_SERVER_API_KEY", show_envvar=True, help=_HELP[name])
    if name in ("rate_limit",):
        return click.option(flag, type=float, **kwargs)
    if name in ("burst", "seed"):
        return click.option(flag, type=int, **kwargs)
    if name == "dialect":
        return click.option(flag, type=click.Choice(DIALECTS), default=default, **kwargs)
    return click.option(flag, type=type(default), default=default, **kwargs)


def _settings_options(func: Any) -> Any:
    defaults = ServerSettings()
    for f in reversed(fields(ServerSettings)):
        func = _option(f.name, getattr(defaults, f.name))(func)
    return func


def run_server(settings: ServerSettings) -> int:
    """:func:`sim_server.run_server`, imported when a server runs: ``vtpoll --help`` imports
    this module for the command's summary, and Quart and hypercorn cost it a third of a
    second of CPU."""
    from ._server import run_server

    return run_server(settings)


#: What ``--plain`` sets: a backend like the original one, for trying a client against it.
PLAIN = {"hints": False, "batch": False, "max_wait": 0.0}


@click.command("serve")
@_settings_options
@click.option(
    "--plain",
    is_flag=True,
    help="Behave like the original backend: no hints, no batch route, no long-poll (the same"
    " as --no-hints --no-batch --max-wait 0).",
)
@click.pass_context
def serve(ctx: click.Context, /, plain: bool, **options: Any) -> None:
    """Run the simulation server in the foreground until Ctrl-C."""
    if plain:
        options.update(PLAIN)
    try:
        settings = ServerSettings(**options)
    except ValueError as exc:
        raise click.UsageError(_as_flag(str(exc))) from None
    try:
        code = run_server(settings)
    except OSError as exc:  # the port is taken, the address is not this machine's...
        where = f"{settings.host}:{settings.port}"
        raise click.ClickException(f"cannot serve on {where}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        raise _BadFile(f"cannot use the database {settings.db}: {exc}") from None
    ctx.exit(code)


class _BadFile(click.ClickException):
    """A file given that cannot be used: bad input, as a bad option is (exit code 2)."""

    exit_code = 2


def _as_flag(message: str) -> str:
    """Name the option the user typed, not the field behind it."""
    name, sep, rest = message.partition(" ")
    if sep and name in {f.name for f in fields(ServerSettings)}:
        return "--" + name.replace("_", "-") + " " + rest
    return message
