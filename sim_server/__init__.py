"""A simulation of the video translation backend, for tests, demos and load tests.

``_settings`` holds the one validated settings record; ``_jobs`` the job model (state is a pure
function of creation time, duration and outcome) and its store; ``_faults``, ``_ratelimit`` and
``_metrics`` the behaviours layered around the Quart app built in ``_app`` (its routes are the
blueprint in ``_routes``); ``_server`` serves it with hypercorn, embedded
(:class:`TranslationServer`) or in the foreground (``run_server``). ``testing`` holds what a
client needs to drive the server (create jobs, wait for health) without importing any of it.

The names below are imported on first use: ``import sim_server.testing`` or reading the
settings must not pay for Quart and hypercorn (most of a second).
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._app import create_app as create_app
    from ._jobs import Job as Job
    from ._server import TranslationServer as TranslationServer
    from ._server import run_server as run_server
    from ._settings import ServerSettings as ServerSettings

__all__ = ["Job", "ServerSettings", "TranslationServer", "create_app", "run_server"]

_HOMES = {
    "Job": "._jobs",
    "ServerSettings": "._settings",
    "TranslationServer": "._server",
    "create_app": "._app",
    "run_server": "._server",
}


#: The top-level modules the ``server`` extra brings: without them, the error names the extra
#: (``vtpoll`` names the ``cli`` extra, which brings them, from the same set).
_SERVER_EXTRA = frozenset(
    {
        "hypercorn",
        "prometheus_client",
        "pydantic",
        "quart",
        "quart_schema",
        "quart_trio",
    }
)


def __getattr__(name: str) -> _typing.Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'sim_server' has no attribute {name!r}")
    try:
        module = _importlib.import_module(_HOMES[name], __name__)
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _SERVER_EXTRA:
            raise
        raise ModuleNotFoundError(
            f'sim_server.{name} needs the "server" extra, which brings {exc.name}: '
            'pip install "video-translation-client[server]"',
            name=exc.name,
        ) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
