"""``vtpoll``, the command line of ``video_translation_client``.

How it stacks: ``_errors`` (exit codes and the two kinds of error) and ``_options`` (options
generated from the library's settings) under every command; ``_jobfile`` reads ID lists and
writes results, ``_display`` draws; ``_watching`` runs a watch and reports it, for ``watch``
and ``demo``. One module per command: ``watch``, ``status``, ``create``, ``demo``; ``serve``
is the simulation server's own (``sim_server._cli``). ``_main`` is the group, importing each
command only when it is asked for.
"""

from ._main import cli as cli
from ._main import main as main

__all__ = ["cli", "main"]
