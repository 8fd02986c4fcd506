"""How a command ends: its exit codes, and the two kinds of error a person is told of."""

from __future__ import annotations

import click

EXIT_OK, EXIT_NOT_ALL_COMPLETED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Problem(click.ClickException):
    """Bad input: one line naming it, exit code 2."""

    exit_code = EXIT_USAGE


class Failure(click.ClickException):
    """The work could not be done (the server refused, could not be reached): exit code 1."""

    exit_code = EXIT_NOT_ALL_COMPLETED
