"""The ``vtpoll`` group: each command is imported when it is asked for, and every way a
command ends (its exit code, a usage error, an interrupt) becomes one line and a documented
exit status, whether the process runs it or ``click.testing.CliRunner`` does."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from ._errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Problem, Terminated, Terminations
from ._launch import missing_extra, needs

#: Command name -> (module, attribute). ``serve`` is the server's own command (also
#: ``python -m sim_server``); importing it costs most of a second, which no other command pays.
COMMANDS = {
    "create": ("vtpoll.create", "create"),
    "demo": ("vtpoll.demo", "demo"),
    "fleet": ("vtpoll.fleet", "fleet"),
    "serve": ("sim_server._cli", "serve"),
    "status": ("vtpoll.status", "status"),
    "watch": ("vtpoll.watch", "watch"),
}


class NeedsExtra(click.Command):
    """A stand-in for a command whose extra is missing: listed by 'vtpoll --help' (which then
    still works), and run with any arguments, '--help' included, it says what to install."""

    def __init__(self, name: str, extra: str) -> None:
        message = needs(f"'vtpoll {name}'", extra)

        def refuse() -> None:
            raise Problem(message)

        super().__init__(
            name,
            callback=refuse,
            help=message,
            short_help=f'(needs the "{extra}" extra)',
            add_help_option=False,
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        )


class Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name]
        try:
            command = getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as exc:
            extra = missing_extra(exc)
            if extra is None:
                raise
            return NeedsExtra(cmd_name, extra)
        assert isinstance(command, click.Command)
        return command

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> NoReturn:
        """Run, then exit with the command's code; click's errors become one line."""
        try:
            code = super().main(args, prog_name or "vtpoll", complete_var, False, **extra)
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
        except Terminated as exc:
            click.echo("vtpoll: terminated", err=True)
            code = 128 + exc.signum
        raise SystemExit(code if isinstance(code, int) else EXIT_OK)


@click.group(cls=Commands, no_args_is_help=True)
@click.version_option(package_name="video-translation-client")
def cli() -> None:
    """Poll the status of many video translation jobs, and run the simulation server.

    Start with 'vtpoll demo'.
    """


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The installed script."""
    Terminations.keep = True  # this process is the command's: SIGTERM is said to the end
    try:
        cli.main(argv)
    except SystemExit as exc:
        if Terminations.some_settled and isinstance(exc.code, int):
            Terminations.end_process(exc.code)
        raise
