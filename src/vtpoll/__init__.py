"""``vtpoll``, the command line of ``video_translation_client``.

How it stacks: ``_launch`` (exit codes, which extra brings which module) needs nothing but the
standard library, so that ``main`` can name a missing extra in one line; ``_errors`` (the two
kinds of error) and ``_options`` (options generated from the library's settings) are under
every command; ``_jobfile`` reads ID lists and writes results, ``_display`` draws;
``_watching`` runs a watch and reports it, for ``watch`` and ``demo``. One module per command:
``watch``, ``status``, ``create``, ``demo``; ``serve`` is the simulation server's own
(``sim_server._cli``). ``_main`` is the group, importing each command only when it is asked
for.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from ._launch import EXIT_USAGE, missing_extra, needs

if TYPE_CHECKING:
    from ._main import cli as cli

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The installed script: the ``vtpoll`` group, or one line naming the extra to install."""
    try:
        from ._main import main as run
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc)
        if extra is None:
            raise
        print(needs("vtpoll", extra), file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    run(argv)


def __getattr__(name: str) -> object:
    # ``cli`` (the click group) is imported when asked for: ``import vtpoll`` needs no click.
    if name == "cli":
        from ._main import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
