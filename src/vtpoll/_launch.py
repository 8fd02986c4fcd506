"""What the installed script knows before click is imported: the exit codes, and which extra
brings which module, so that a command whose extra is missing is one line, not a traceback.

Nothing here imports more than the standard library (and ``sim_server``'s package, which
imports no more itself): a plain ``pip install video-translation-client`` has no click, and
``vtpoll`` must still say what to install.
"""

from __future__ import annotations

from sim_server import _SERVER_EXTRA

EXIT_OK, EXIT_NOT_ALL_COMPLETED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DISTRIBUTION = "video-translation-client"

#: Extra -> the top-level modules it brings that vtpoll imports (pyproject.toml's extras; the
#: server's come with ``cli``). A module missing from neither is a broken install, not an extra.
EXTRAS = {
    "cli": frozenset({"click", "rich"}) | _SERVER_EXTRA,
    "fleet": frozenset({"coredis"}),
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra that would have brought the module ``exc`` did not find, if any."""
    top = (exc.name or "").partition(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


def needs(what: str, extra: str) -> str:
    """The one line that names the extra to install."""
    return f'{what} needs the "{extra}" extra: pip install "{DISTRIBUTION}[{extra}]"'
