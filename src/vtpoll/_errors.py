"""How a command ends: its exit codes, and the two kinds of error a person is told of."""

from __future__ import annotations

import click

from ._launch import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from ._launch import EXIT_NOT_ALL_COMPLETED as EXIT_NOT_ALL_COMPLETED
from ._launch import EXIT_OK as EXIT_OK
from ._launch import EXIT_USAGE as EXIT_USAGE


class Problem(click.ClickException):
    """Bad input: one line naming it, exit code 2."""

    exit_code = EXIT_USAGE


class Failure(click.ClickException):
    """The work could not be done (the server refused, could not be reached): exit code 1."""

    exit_code = EXIT_NOT_ALL_COMPLETED
