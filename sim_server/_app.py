"""The Quart app: routes over a :class:`JobStore`, behind auth, rate limit, faults and metrics.

Requests pass, outermost first: metrics (counts everything) -> fault injection (as a failing
proxy would) -> Quart: authentication -> rate limit -> the route.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import math
import random
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, cast

import anyio
import sniffio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from quart import Quart, Response, g, request
from quart_schema import (
    QuartSchema,
    document_headers,
    document_querystring,
    document_request,
    document_response,
)
from werkzeug.exceptions import HTTPException

from ._faults import FaultInjector, FaultMiddleware
from ._jobs import Job, JobStore, Outcome, auto_job, new_job_id, valid_job_id
from ._metrics import Metrics, MetricsMiddleware
from ._models import (
    BatchQuery,
    BatchView,
    CreateJob,
    ErrorBody,
    Health,
    JobView,
    LegacyStatus,
    PreferHeader,
    SimOpenAPIProvider,
)
from ._ratelimit import Decision, TokenBuckets
from ._settings import MAX_BATCH, MAX_BODY_BYTES, ServerSettings

Backend = Literal["asyncio", "trio"]

#: Settings a running server takes changes of (the original design's tests set them).
LIVE_SETTINGS = frozenset({"completion_time", "error_rate"})

#: Routes anyone may read, with or without the API key and the rate limit: liveness probes and
#: scrapers must keep working while clients are throttled.
PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json"})

_ID_RULE = "job IDs are 1 to 128 characters from A-Z a-z 0-9 . _ : -"


class ApiError(Exception):
    """An answer with a JSON error body that names the problem."""

    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers = headers or {}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def parse_wait(values: Iterable[str]) -> float | None:
    """The ``wait`` preference of ``Prefer`` headers (RFC 7240), or None. Never raises."""
    for value in values:
        for pref in value.split(","):
            name, _, rest = pref.partition("=")
            if name.strip().lower() != "wait":
                continue
            token = rest.split(";", 1)[0].strip().strip('"')
            try:
                wait = float(token)
            except ValueError:
                continue
            if math.isfinite(wait) and wait >= 0:
                return wait
    return None


def pending_hints(eta: float) -> dict[str, str]:
    """When to ask again: whole seconds per RFC 9110, and the precise figure in milliseconds."""
    return {
        "Retry-After": str(math.ceil(eta)),
        "Retry-After-Ms": str(max(1, math.ceil(eta * 1000))),
    }


class SimState:
    """Everything the routes share; one per app."""

    def __init__(self, settings: ServerSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        #: The seed in force: the settings' own, or one drawn afresh for this run.
        self.seed = settings.seed if settings.seed is not None else secrets.randbits(64)
        self.clock = clock
        self.store = JobStore(settings.db)
        self.metrics = Metrics()
        self.injector = FaultInjector(settings.fault_rates(), self.seed)
        # A stream apart from the faults', so creating jobs cannot shift the fault sequence.
        self.outcomes = random.Random(f"outcomes:{self.seed}")
        self.buckets = (
            TokenBuckets(settings.rate_limit, settings.effective_burst, clock)
            if settings.rate_limit is not None
            else None
        )
        self._holds: set[anyio.CancelScope] = set()
        self._released = False
        self.started_at = clock()
        self.default_job = self._default_job()

    def _default_job(self) -> Job:
        s = self.settings
        outcome: Outcome = "error" if self.outcomes.random() < s.error_rate else "completed"
        return Job("default", self.started_at, s.completion_time, outcome)

    def change(self, **changes: Any) -> None:
        """Change settings of the running server: ``completion_time`` and ``error_rate`` (the
        default job is made again with them, as are jobs created from now on). Validated as
        at construction; any other setting raises rather than being ignored."""
        fixed = set(changes) - LIVE_SETTINGS
        if fixed:
            names = ", ".join(sorted(fixed))
            raise AttributeError(
                f"{names} cannot be changed on a running server; "
                f"only {', '.join(sorted(LIVE_SETTINGS))} can"
            )
        self.settings = dataclasses.replace(self.settings, **changes)
        self.default_job = self._default_job()

    def lookup(self, job_id: str) -> Job | None:
        job = self.store.get(job_id)
        if job is None and self.settings.auto_create:
            s = self.settings
            job = self.store.get_or_add(
                auto_job(
                    job_id,
                    now=self.clock(),
                    seed=self.seed,
                    completion_time=s.completion_time,
                    error_rate=s.error_rate,
                )
            )
            self.metrics.jobs_created.labels("auto").inc()
        return job

    def require(self, job_id: str) -> Job:
        if not valid_job_id(job_id):
            raise ApiError(400, "invalid_job_id", f"invalid job ID {job_id[:140]!r}: {_ID_RULE}")
        job = self.lookup(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"no job with ID {job_id!r}")
        return job

    def applied_wait(self) -> float | None:
        if self.settings.max_wait <= 0:
            return None
        wait = parse_wait(request.headers.getlist("Prefer"))
        return None if wait is None else min(wait, self.settings.max_wait)

    async def hold(self, jobs: list[Job], wait: float) -> None:
        """Hold a long-poll until one of ``jobs`` reaches its final state or ``wait`` passes.

        One timed sleep per held request, never a polling loop: the event loop's timer heap
        wakes it at the exact moment the job completes.
        """
        now = self.clock()
        if wait <= 0 or self._released or not jobs:
            return
        if any(j.result_at(now) != "pending" for j in jobs):
            return
        deadline = now + wait
        target = min(min(j.completes_at for j in jobs), deadline)
        self.metrics.long_polls.inc()
        self.metrics.long_polls_held.inc()
        with anyio.CancelScope() as scope:
            self._holds.add(scope)
            try:
                # The loop only absorbs a wall clock that drifts from the monotonic sleep clock.
                while (delta := target - self.clock()) > 0:  # noqa: ASYNC110 - a timer, not a flag
                    await anyio.sleep(delta)
            finally:
                self._holds.discard(scope)
                self.metrics.long_polls_held.dec()

    def release_holds(self) -> None:
        """Answer every held long-poll now, and hold no more: the server is shutting down.

        Without this a graceful shutdown would wait for the holds, then cut them with a 500.
        """
        self._released = True
        for scope in list(self._holds):
            scope.cancel()

    def record(self, job: Job, now: float) -> None:
        self.metrics.record_check(job.job_id, final=job.result_at(now) != "pending")


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
    app.extensions["sim_server"] = state
    _register(app, state)
    metrics = state.metrics
    app.asgi_app = cast(  # type: ignore[method-assign]
        Any,
        MetricsMiddleware(
            FaultMiddleware(
                cast(Any, app.asgi_app),
                state.injector,
                slow_delay=settings.slow_delay,
                on_fault=lambda kind: metrics.faults.labels(kind).inc(),
            ),
            metrics,
        ),
    )
    return app


def sim_state(app: Quart) -> SimState:
    state: SimState = app.extensions["sim_server"]
    return state


def _register(app: Quart, state: SimState) -> None:
    settings = state.settings
    key = settings.api_key.encode() if settings.api_key else None

    @app.before_request
    async def _gate() -> Response | None:
        if request.path in PUBLIC_PATHS:
            return None
        if key is not None and not _authorized(key):
            raise ApiError(401, "unauthorized", "missing or wrong API key")
        # Like the faults, the rate limit guards the status reads: job submission stands for
        # another system, and load tests must be able to create their jobs at full speed.
        if state.buckets is not None and request.method == "GET":
            decision = state.buckets.take(_client_key(key is not None, request.remote_addr))
            g.rate_decision = decision
            if not decision.allowed:
                state.metrics.throttled.inc()
                wait = decision.reset
                raise ApiError(
                    429,
                    "rate_limited",
                    f"over the rate limit of {settings.rate_limit:g} requests/s",
                    {
                        "Retry-After": str(max(1, math.ceil(wait))),
                        "Retry-After-Ms": str(math.ceil(wait * 1000)),
                    },
                )
        return None

    @app.after_request
    async def _rate_headers(response: Response) -> Response:
        decision: Decision | None = g.get("rate_decision")
        if decision is not None and state.buckets is not None:
            response.headers["RateLimit-Policy"] = state.buckets.policy_header()
            response.headers["RateLimit"] = state.buckets.state_header(decision)
        return response

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        return _json({"error": exc.error, "detail": exc.detail}, exc.status, exc.headers)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        name = (exc.name or "error").lower().replace(" ", "_")
        response = _json({"error": name, "detail": exc.description or name}, code)
        for header, value in exc.get_headers():
            if header.lower() != "content-type":
                response.headers[header] = value
        return response

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return _json({"error": "internal", "detail": "internal server error"}, 500)

    @app.get("/healthz")
    @document_response(Health)
    async def healthz() -> Response:
        """Liveness."""
        return _json({"status": "ok", "jobs": len(state.store)})

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(generate_latest(state.metrics.registry), content_type=CONTENT_TYPE_LATEST)

    @app.post("/jobs")
    @document_request(CreateJob)
    @document_response(JobView, 201)
    @document_response(ErrorBody, 401)
    @document_response(ErrorBody, 400)
    @document_response(ErrorBody, 409)
    @document_response(ErrorBody, 413)
    @document_response(ErrorBody, 422)
    async def create_job() -> Response:
        """Create a job."""
        body = await request.get_data()
        try:
            spec = (
                CreateJob.model_validate_json(body)
                if body.strip()
                else CreateJob.model_validate({})
            )
        except ValidationError as exc:
            raise _validation_error(exc) from None
        job_id = spec.job_id or new_job_id()
        duration = settings.completion_time if spec.duration is None else spec.duration
        outcome = spec.outcome or (
            "error" if state.outcomes.random() < settings.error_rate else "completed"
        )
        now = state.clock()
        job = state.store.add(Job(job_id, now, duration, outcome))
        if job is None:
            raise ApiError(409, "job_exists", f"a job with ID {job_id!r} already exists")
        state.metrics.jobs_created.labels("post").inc()
        return _json(job.view(now), 201, {"Location": f"/jobs/{job_id}"})

    async def _one(job_id: str) -> tuple[Job, float, dict[str, str]]:
        return await _answer(state.require(job_id))

    async def _answer(job: Job) -> tuple[Job, float, dict[str, str]]:
        headers: dict[str, str] = {}
        wait = state.applied_wait()
        if wait is not None:
            await state.hold([job], wait)
            headers["Preference-Applied"] = f"wait={wait:g}"
        now = state.clock()
        state.record(job, now)
        if job.result_at(now) == "pending":
            headers.update(pending_hints(job.completes_at - now))
        return job, now, headers

    @app.get("/jobs/<job_id>")
    @document_headers(PreferHeader)
    @document_response(JobView)
    @document_response(ErrorBody, 401)
    @document_response(ErrorBody, 429)
    @document_response(ErrorBody, 400)
    @document_response(ErrorBody, 404)
    async def job_status(job_id: str) -> Response:
        """Status of one job; ``Prefer: wait=N`` holds a pending answer until it changes."""
        job, now, headers = await _one(job_id)
        return _json(job.view(now), 200, headers)

    @app.get("/jobs/<job_id>/status")
    @document_headers(PreferHeader)
    @document_response(LegacyStatus)
    @document_response(ErrorBody, 401)
    @document_response(ErrorBody, 429)
    @document_response(ErrorBody, 400)
    @document_response(ErrorBody, 404)
    async def legacy_job_status(job_id: str) -> Response:
        """Status of one job in the original ``{"result": ...}`` format."""
        job, now, headers = await _one(job_id)
        return _json({"result": job.result_at(now)}, 200, headers)

    @app.get("/status")
    @document_headers(PreferHeader)
    @document_response(LegacyStatus)
    @document_response(ErrorBody, 401)
    @document_response(ErrorBody, 429)
    async def legacy_status() -> Response:
        """The default job, whose clock starts with the server, in the original format."""
        job, now, headers = await _answer(state.default_job)
        return _json({"result": job.result_at(now)}, 200, headers)

    @app.get("/jobs")
    @document_querystring(BatchQuery)
    @document_headers(PreferHeader)
    @document_response(BatchView)
    @document_response(ErrorBody, 401)
    @document_response(ErrorBody, 429)
    @document_response(ErrorBody, 400)
    async def batch_status() -> Response:
        """Status of up to 100 jobs; with ``Prefer: wait=N``, held until one of them finishes."""
        raw = request.args.get("ids")
        if raw is None:
            raise ApiError(400, "missing_ids", "the ids query parameter is required: ?ids=a,b,c")
        if not raw:
            raise ApiError(400, "missing_ids", "the ids query parameter names no job ID")
        ids = list(dict.fromkeys(raw.split(",")))
        if len(ids) > MAX_BATCH:
            raise ApiError(
                400, "batch_too_large", f"at most {MAX_BATCH} job IDs per batch, got {len(ids)}"
            )
        bad = [i for i in ids if not valid_job_id(i)]
        if bad:
            shown = ", ".join(repr(b[:40]) for b in bad[:5])
            raise ApiError(
                400, "invalid_job_id", f"{len(bad)} invalid job ID(s): {shown}: {_ID_RULE}"
            )
        jobs: list[Job] = []
        unknown: list[str] = []
        for job_id in ids:
            found = state.lookup(job_id)
            if found is None:
                unknown.append(job_id)
            else:
                jobs.append(found)
        headers: dict[str, str] = {}
        wait = state.applied_wait()
        if wait is not None:
            await state.hold(jobs, wait)
            headers["Preference-Applied"] = f"wait={wait:g}"
        now = state.clock()
        etas = []
        for job in jobs:
            state.record(job, now)
            if job.result_at(now) == "pending":
                etas.append(job.completes_at - now)
        if etas:
            headers.update(pending_hints(min(etas)))
        return _json({"jobs": [j.view(now) for j in jobs], "unknown": unknown}, 200, headers)


def _supplied_key(headers: Any) -> str | None:
    """The API key a request carries: ``X-Api-Key``, else ``Authorization: Bearer``."""
    supplied: str | None = headers.get("X-Api-Key")
    if supplied is None:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        supplied = token.strip() if scheme.lower() == "bearer" else None
    return supplied


def _authorized(key: bytes) -> bool:
    supplied = _supplied_key(request.headers)
    # compare_digest on bytes: constant time in the key's length, whatever the supplied value.
    return supplied is not None and hmac.compare_digest(supplied.encode("utf-8", "replace"), key)


def _client_key(keyed: bool, remote_addr: str | None) -> str:
    """The rate limit's bucket: the API key when the server has one (the gate has checked it
    by now), else the client's address. A key the server never checked is no identity: a new
    one on every request would get a fresh bucket every time."""
    return "key" if keyed else f"addr:{remote_addr or 'unknown'}"


def _validation_error(exc: ValidationError) -> ApiError:
    errors = exc.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return ApiError(400, "invalid_json", "the request body is not valid JSON")
    if any(e["type"] == "model_type" for e in errors):
        return ApiError(422, "invalid_body", "the request body must be a JSON object")
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return ApiError(422, "invalid_body", "; ".join(parts))
