"""The routes, as a blueprint of module-level views over the app's :class:`SimState`.

Every request but the public ones passes the gate (API key, then the rate limit on status
reads); every status route answers through :meth:`SimState.answer`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from quart import Blueprint, Response, current_app, g, request
from quart_schema import (
    document_headers,
    document_querystring,
    document_request,
    document_response,
)
from werkzeug.exceptions import HTTPException, NotFound

from ._dialects import KEY_HEADERS, ROUTES, vendor_view
from ._jobs import Job, new_job_id, valid_job_id
from ._models import (
    BatchQuery,
    BatchView,
    CreateJob,
    ElevenLabsDubbing,
    ErrorBody,
    Health,
    HeyGenTranslation,
    JobView,
    LegacyStatus,
    PreferHeader,
)
from ._protocol import ID_RULE, ApiError, retry_after
from ._ratelimit import Decision
from ._settings import MAX_BATCH
from ._state import SimState, sim_state

#: Routes anyone may read, with or without the API key and the rate limit: liveness probes and
#: scrapers must keep working while clients are throttled.
PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json"})

routes = Blueprint("sim", __name__)
View = TypeVar("View", bound=Callable[..., Any])


def state() -> SimState:
    """The state of the app serving this request."""
    return sim_state(current_app)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


# -- gate and errors ---------------------------------------------------------------------------


@routes.before_app_request
async def gate() -> None:
    if request.path in PUBLIC_PATHS:
        return
    sim = state()
    if sim.key is not None and not _authorized(sim.key):
        raise ApiError(401, "unauthorized", "missing or wrong API key")
    # Like the faults, the rate limit guards the status reads: job submission stands for
    # another system, and load tests must be able to create their jobs at full speed.
    if sim.buckets is not None and request.method == "GET":
        decision = sim.buckets.take(_client_key(sim.key is not None, request.remote_addr))
        g.rate_decision = decision
        if not decision.allowed:
            sim.metrics.throttled.inc()
            raise ApiError(
                429,
                "rate_limited",
                f"over the rate limit of {sim.settings.rate_limit:g} requests/s",
                retry_after(decision.reset),
            )


@routes.after_app_request
async def rate_headers(response: Response) -> Response:
    sim = state()
    if sim.settings.dialect == "elevenlabs":
        # ElevenLabs says neither its limit nor when to come back: a 429 and a JSON detail.
        for header in ("Retry-After", "Retry-After-Ms"):
            response.headers.pop(header, None)
        return response
    decision: Decision | None = g.get("rate_decision")
    buckets = sim.buckets
    if decision is not None and buckets is not None:
        response.headers["RateLimit-Policy"] = buckets.policy_header()
        response.headers["RateLimit"] = buckets.state_header(decision)
    return response


@routes.app_errorhandler(ApiError)
async def api_error(exc: ApiError) -> Response:
    return _json({"error": exc.error, "detail": exc.detail}, exc.status, exc.headers)


@routes.app_errorhandler(HTTPException)
async def http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    name = (exc.name or "error").lower().replace(" ", "_")
    response = _json({"error": name, "detail": exc.description or name}, code)
    for header, value in exc.get_headers():
        if header.lower() != "content-type":
            response.headers[header] = value
    return response


@routes.app_errorhandler(Exception)
async def unexpected(exc: Exception) -> Response:
    current_app.logger.exception("unhandled error")
    return _json({"error": "internal", "detail": "internal server error"}, 500)


# -- routes ------------------------------------------------------------------------------------


@routes.get("/healthz")
@document_response(Health)
async def healthz() -> Response:
    """Liveness."""
    return _json({"status": "ok", "jobs": len(state().store)})


@routes.get("/metrics")
async def metrics() -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(state().metrics.registry), content_type=CONTENT_TYPE_LATEST)


@routes.post("/jobs")
@document_request(CreateJob)
@document_response(JobView, 201)
@document_response(ErrorBody, 401)
@document_response(ErrorBody, 400)
@document_response(ErrorBody, 409)
@document_response(ErrorBody, 413)
@document_response(ErrorBody, 422)
async def create_job() -> Response:
    """Create a job."""
    sim = state()
    body = await request.get_data()
    try:
        spec = CreateJob.model_validate_json(body) if body.strip() else CreateJob.model_validate({})
    except ValidationError as exc:
        raise _validation_error(exc) from None
    job_id = spec.job_id or new_job_id()
    duration = sim.settings.completion_time if spec.duration is None else spec.duration
    now = sim.clock()
    job = sim.store.add(Job(job_id, now, duration, spec.outcome or sim.new_outcome()))
    if job is None:
        raise ApiError(409, "job_exists", f"a job with ID {job_id!r} already exists")
    sim.metrics.jobs_created.labels("post").inc()
    return _json(sim.view(job, now), 201, {"Location": f"/jobs/{job_id}"})


async def _answer(job: Job) -> tuple[float, dict[str, str]]:
    return await state().answer([job], request.headers.getlist("Prefer"))


def _speaking(dialect: str) -> SimState:
    """The state, if the server speaks ``dialect``; else the route does not exist here."""
    sim = state()
    if sim.settings.dialect != dialect:
        raise NotFound()
    return sim


def _status_docs(answer: type[BaseModel], *errors: int) -> Callable[[View], View]:
    """What a status route documents: ``Prefer``, its answer, and its error answers."""

    def decorate(view: View) -> View:
        for code in errors:
            view = document_response(ErrorBody, code)(view)
        return document_headers(PreferHeader)(document_response(answer)(view))

    return decorate


@routes.get("/jobs/<job_id>")
@_status_docs(JobView, 401, 429, 400, 404)
async def job_status(job_id: str) -> Response:
    """Status of one job; ``Prefer: wait=N`` holds a pending answer until it changes."""
    sim = _speaking("sim")
    job = sim.require(job_id)
    now, headers = await _answer(job)
    return _json(sim.view(job, now), 200, headers)


@routes.get("/jobs/<job_id>/status")
@_status_docs(LegacyStatus, 401, 429, 400, 404)
async def legacy_job_status(job_id: str) -> Response:
    """Status of one job in the original ``{"result": ...}`` format."""
    job = _speaking("sim").require(job_id)
    now, headers = await _answer(job)
    return _json({"result": job.result_at(now)}, 200, headers)


@routes.get("/status")
@_status_docs(LegacyStatus, 401, 429)
async def legacy_status() -> Response:
    """The default job, whose clock starts with the server, in the original format."""
    job = _speaking("sim").default_job
    now, headers = await _answer(job)
    return _json({"result": job.result_at(now)}, 200, headers)


@routes.get("/jobs")
@document_querystring(BatchQuery)
@_status_docs(BatchView, 401, 429, 400)
async def batch_status() -> Response:
    """Status of up to 100 jobs; with ``Prefer: wait=N``, held until one of them finishes."""
    sim = state()
    if not sim.settings.batch:
        # As if the route did not exist, as on a backend without it.
        raise NotFound()
    jobs: list[Job] = []
    unknown: list[str] = []
    for job_id in _batch_ids(request.args.get("ids")):
        found = sim.lookup(job_id)
        if found is None:
            unknown.append(job_id)
        else:
            jobs.append(found)
    now, headers = await sim.answer(jobs, request.headers.getlist("Prefer"))
    return _json({"jobs": [sim.view(j, now) for j in jobs], "unknown": unknown}, 200, headers)


@routes.get(ROUTES["elevenlabs"])
@_status_docs(ElevenLabsDubbing, 401, 429, 400, 404)
async def elevenlabs_dubbing(job_id: str) -> Response:
    """A dubbing's status, as ElevenLabs answers it (with ``--dialect elevenlabs``)."""
    return await _vendor_status("elevenlabs", job_id)


@routes.get(ROUTES["heygen"])
@_status_docs(HeyGenTranslation, 401, 429, 400, 404)
async def heygen_video_translate(job_id: str) -> Response:
    """A video translation's status, as HeyGen answers it (with ``--dialect heygen``)."""
    return await _vendor_status("heygen", job_id)


async def _vendor_status(dialect: str, job_id: str) -> Response:
    job = _speaking(dialect).require(job_id)
    now, headers = await _answer(job)
    return _json(vendor_view(dialect, job, now), 200, headers)


def _batch_ids(raw: str | None) -> list[str]:
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
        raise ApiError(400, "invalid_job_id", f"{len(bad)} invalid job ID(s): {shown}: {ID_RULE}")
    return ids


# -- helpers -----------------------------------------------------------------------------------


def _supplied_key(headers: Any, dialect: str = "sim") -> str | None:
    """The API key a request carries: in the vendor's header for a vendor's dialect; else
    ``X-Api-Key``, or ``Authorization: Bearer``."""
    if dialect in KEY_HEADERS:
        vendor: str | None = headers.get(KEY_HEADERS[dialect])
        return vendor
    supplied: str | None = headers.get("X-Api-Key")
    if supplied is None:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        supplied = token.strip() if scheme.lower() == "bearer" else None
    return supplied


def _authorized(key: bytes) -> bool:
    # A vendor's status route takes the key in the vendor's header only; the simulator's own
    # routes (creating jobs) take it as they always have.
    dialect = state().settings.dialect
    supplied = _supplied_key(request.headers, dialect if request.method == "GET" else "sim")
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
