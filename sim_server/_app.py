"""The Quart app: the routes (``_routes``) over a :class:`SimState`, behind auth, rate limit,
faults and metrics.

Requests pass, outermost first: metrics (counts everything) -> fault injection (as a failing
proxy would) -> Quart: authentication -> rate limit -> the route.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, cast

import sniffio
from quart import Quart
from quart.routing import QuartRule
from quart_schema import QuartSchema
from werkzeug.routing import Rule

from ._faults import FaultMiddleware
from ._metrics import MetricsMiddleware
from ._models import SimOpenAPIProvider
from ._routes import routes
from ._settings import MAX_BODY_BYTES, ServerSettings
from ._state import EXTENSION, SimState

Backend = Literal["asyncio", "trio"]


class _Rule(QuartRule):
    """A route whose URL builders (``url_for``'s, which the simulator never calls) are compiled
    when first used rather than with the app: werkzeug compiles two a rule from an AST, 80% of
    the CPU of building an app, and the tests build one for each simulation (140 a run)."""

    def _compile_builder(self, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        compile_builder = super()._compile_builder
        compiled: Callable[..., tuple[str, str]] | None = None

        def build(rule: Rule, *args: Any, **kwargs: Any) -> tuple[str, str]:
            nonlocal compiled
            if compiled is None:
                compiled = compile_builder(append_unknown).__get__(rule, None)
            return compiled(*args, **kwargs)

        return build


def _detect_backend() -> Backend:
    try:
        return "trio" if sniffio.current_async_library() == "trio" else "asyncio"
    except sniffio.AsyncLibraryNotFoundError:
        return "asyncio"


def create_app(
    settings: ServerSettings | None = None,
    *,
    backend: Backend | None = None,
    clock: Callable[[], float] | None = None,
) -> Quart:
    """Build the simulation app.

    ``backend`` picks Quart (asyncio) or QuartTrio (trio); by default the one running now.
    ``clock`` is the server's notion of time in seconds (default ``time.time``, so jobs in a
    database keep their age across restarts); tests pass ``trio.current_time`` to run the
    server on trio's virtual clock.
    """
    settings = settings or ServerSettings()
    backend = backend or _detect_backend()
    if backend == "trio":
        from quart_trio import QuartTrio

        app: Quart = QuartTrio("sim_server")
    else:
        app = Quart("sim_server")
    app.url_rule_class = _Rule
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    QuartSchema(
        app,
        info={"title": "Video translation simulation server", "version": "1"},
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        openapi_provider_class=SimOpenAPIProvider,
    )
    state = SimState(settings, clock or time.time)
    app.extensions[EXTENSION] = state
    app.register_blueprint(routes)
    metrics = state.metrics
    app.asgi_app = cast(  # type: ignore[method-assign]
        Any,
        MetricsMiddleware(
            FaultMiddleware(
                cast(Any, app.asgi_app),
                state.injector,
                slow_delay=settings.slow_delay,
                on_fault=lambda kind: metrics.faults.labels(kind).inc(),
                retry_after=settings.fault_hints and settings.dialect != "elevenlabs",
            ),
            metrics,
        ),
    )
    return app
