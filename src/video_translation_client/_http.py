"""One HTTP attempt at a job's status, and the classification of everything that can go wrong.

This is the only module that sees httpx. Whatever the attempt ends in leaves it as one of:
an :class:`Answer`; a :class:`Transient` failure for the retry logic; or a permanent
:class:`~video_translation_client.VideoTranslationError` subclass.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from ._backoff import parse_retry_after
from ._errors import AuthenticationError, InvalidResponse, JobNotFound, RequestRejected
from ._models import JobStatus

#: Answers worth another try (RFC 9110 semantics, and common proxy behaviour).
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Redirects followed, same origin only.
MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class Answer:
    status: JobStatus
    payload: dict[str, Any]
    #: The server's "ask again in" hint, seconds.
    hint: float | None
    #: The long-poll wait the server says it applied, or None if it did not say.
    wait_applied: float | None


class Transient(Exception):
    """A failure worth retrying. Internal: never reaches the caller."""

    def __init__(
        self,
        description: str,
        *,
        status_code: int | None = None,
        hint: float | None = None,
        quota: float | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.status_code = status_code
        self.hint = hint
        #: On a 429, the request rate the server's ``RateLimit-Policy`` allows, if it says.
        self.quota = quota


def status_path(job_id: str | None) -> str:
    """``/jobs/{id}`` with the ID as one opaque path segment, or the original ``/status``.

    Everything but unreserved characters is percent-encoded, and so are the dots of ``.`` and
    ``..``, which URL normalisation would otherwise resolve: no ID can reach another route.
    """
    if job_id is None:
        return "/status"
    segment = quote(job_id, safe="")
    if set(job_id) <= {"."}:
        segment = segment.replace(".", "%2E")
    return f"/jobs/{segment}"


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def _parse_wait_applied(value: str | None) -> float | None:
    if value is None:
        return None
    for pref in value.split(","):
        name, _, token = pref.partition("=")
        if name.strip().lower() == "wait":
            try:
                wait = float(token.split(";", 1)[0].strip().strip('"'))
            except ValueError:
                return None
            return wait if math.isfinite(wait) and wait >= 0 else None
    return None


def _hint(response: httpx.Response) -> float | None:
    return parse_retry_after(
        response.headers.get("retry-after"), response.headers.get("retry-after-ms")
    )


def _quota(response: httpx.Response) -> float | None:
    return parse_ratelimit_policy(response.headers.get("ratelimit-policy"))


def parse_ratelimit_policy(value: str | None) -> float | None:
    """Requests per second allowed by a ``RateLimit-Policy`` header (IETF draft
    httpapi-ratelimit-headers: ``"default";q=100;w=60``), the strictest policy if there are
    several; None when absent or unreadable. Never raises."""
    if not value:
        return None
    rates = []
    for policy in value.split(","):
        params = {}
        for part in policy.split(";")[1:]:
            key, _, number = part.strip().partition("=")
            params[key] = number
        try:
            quota = float(params["q"])
            window = float(params.get("w", "1"))
        except (KeyError, ValueError):
            continue
        if 0 < quota < math.inf and 0 < window < math.inf:
            rates.append(quota / window)
    return min(rates) if rates else None


def parse_status(
    body: bytes, job_id: str | None, status_code: int
) -> tuple[JobStatus, dict[str, Any]]:
    """The status in a response body; :class:`InvalidResponse` for anything else."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidResponse(
            f"the status of {_name(job_id)} is not valid JSON",
            job_id=job_id,
            status_code=status_code,
        ) from exc
    if not isinstance(data, dict) or "result" not in data:
        raise InvalidResponse(
            f"the answer for {_name(job_id)} has no 'result'",
            job_id=job_id,
            status_code=status_code,
        )
    try:
        return JobStatus(data["result"]), data
    except (ValueError, TypeError):
        shown = repr(data["result"])[:60]
        raise InvalidResponse(
            f"the answer for {_name(job_id)} has an unknown result {shown}",
            job_id=job_id,
            status_code=status_code,
        ) from None


def _name(job_id: str | None) -> str:
    return "the default job" if job_id is None else f"job {job_id!r}"


def _batch_answers(response: httpx.Response, ids: list[str]) -> dict[str, Answer | BaseException]:
    """Per-job answers from a batch body ``{"jobs": [...], "unknown": [...]}``.

    A pending job's hint is its own ``eta``: the response-wide ``Retry-After`` is the soonest
    of all the jobs', which would make every other job ask too early.
    """
    code = response.status_code
    try:
        data = json.loads(response.content)
        jobs = data["jobs"]
        unknown = set(data.get("unknown", []))
        if not isinstance(jobs, list):
            raise TypeError("jobs is not a list")
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise Transient(f"malformed batch answer ({type(exc).__name__})", status_code=code) from exc
    out: dict[str, Answer | BaseException] = {}
    for entry in jobs:
        if not isinstance(entry, dict) or not isinstance(entry.get("job_id"), str):
            continue
        job_id = entry["job_id"]
        try:
            status = JobStatus(entry.get("result"))
        except (ValueError, TypeError):
            out[job_id] = Transient(
                f"unknown result for job {job_id!r} in a batch", status_code=code
            )
            continue
        eta = entry.get("eta")
        hint = float(eta) if isinstance(eta, int | float) and math.isfinite(eta) else None
        out[job_id] = Answer(status, entry, hint if status is JobStatus.PENDING else None, None)
    applied = _parse_wait_applied(response.headers.get("preference-applied"))
    for job_id in ids:
        if job_id in out:
            answer = out[job_id]
            if isinstance(answer, Answer) and applied is not None:
                out[job_id] = Answer(answer.status, answer.payload, answer.hint, applied)
        elif job_id in unknown:
            out[job_id] = JobNotFound(
                f"the server does not know job {job_id!r} (listed unknown in a batch)",
                job_id=job_id,
                status_code=404,
            )
        else:
            out[job_id] = Transient(f"job {job_id!r} missing from a batch answer", status_code=code)
    return out


class StatusFetcher:
    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base = httpx.URL(base_url.rstrip("/"))
        self._headers = {"Accept": "application/json"}
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def __repr__(self) -> str:
        return f"StatusFetcher({str(self.base)!r})"  # never the headers: they hold the key

    async def fetch(
        self, http: httpx.AsyncClient, job_id: str | None, *, wait: int, limit: float
    ) -> Answer:
        """One attempt, bounded by ``limit`` seconds as a cancel scope."""
        response = await self._get(
            http, status_path(job_id).encode(), wait, limit, _name(job_id), job_id
        )
        return self._classify(response, job_id)

    async def _get(
        self,
        http: httpx.AsyncClient,
        path: bytes,
        wait: int,
        limit: float,
        what: str,
        job_id: str | None,
    ) -> httpx.Response:
        """GET ``path`` under the base URL; transport failures become ours, nothing else."""
        headers = dict(self._headers)
        if wait > 0:
            headers["Prefer"] = f"wait={wait}"
        url = self.base.copy_with(raw_path=self.base.raw_path.rstrip(b"/") + path)
        try:
            # httpx's own timeouts are not enforced by every transport: the cancel scope is
            # the guarantee, httpx's timeout a courtesy to the connection pool.
            with anyio.fail_after(limit):
                return await self._send(http, url, headers, limit, job_id)
        except TimeoutError as exc:
            raise Transient(f"no answer within {limit:g} s") from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise Transient(
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ) from exc
        except httpx.HTTPError as exc:
            raise RequestRejected(
                f"the request for {what} failed: {type(exc).__name__}", job_id=job_id
            ) from exc

    async def fetch_batch(
        self, http: httpx.AsyncClient, ids: list[str], *, wait: int, limit: float
    ) -> dict[str, Answer | BaseException]:
        """One batch request. Raises :class:`BatchUnsupported` if the server has no batch
        endpoint, :class:`Transient` if the whole batch failed; otherwise maps each ID to its
        answer, or to the error for that job alone."""
        from ._batch import BatchUnsupported

        query = "ids=" + ",".join(quote(i, safe="") for i in ids)
        what = f"a batch of {len(ids)}"
        response = await self._get(http, b"/jobs?" + query.encode(), wait, limit, what, None)
        code = response.status_code
        if code in (404, 405, 501):
            raise BatchUnsupported(f"batch request answered {code}", missing=True)
        if code in (400, 414, 422, 431):
            raise BatchUnsupported(f"batch request answered {code}", missing=False)
        if code in (401, 403):
            raise AuthenticationError(
                f"the server refused the credentials for a batch ({code})", status_code=code
            )
        if code in TRANSIENT_STATUS or code >= 500:
            raise Transient(
                f"HTTP {code} for a batch of {len(ids)}",
                status_code=code,
                hint=_hint(response) if code in (429, 503) else None,
                quota=_quota(response) if code == 429 else None,
            )
        if not 200 <= code < 300:
            raise RequestRejected(f"the server rejected a batch ({code})", status_code=code)
        return _batch_answers(response, ids)

    async def _send(
        self,
        http: httpx.AsyncClient,
        url: httpx.URL,
        headers: dict[str, str],
        limit: float,
        job_id: str | None,
    ) -> httpx.Response:
        for _ in range(MAX_REDIRECTS + 1):
            response = await http.get(url, headers=headers, timeout=limit, follow_redirects=False)
            if not response.is_redirect:
                return response
            target = response.next_request.url if response.next_request else None
            if target is None or _origin(target) != _origin(self.base):
                where = f"{target.scheme}://{target.host}" if target is not None else "nowhere"
                raise RequestRejected(
                    f"the server redirected {_name(job_id)} to another origin ({where}),"
                    " not followed",
                    job_id=job_id,
                    status_code=response.status_code,
                )
            url = target
        raise RequestRejected(
            f"more than {MAX_REDIRECTS} redirects for {_name(job_id)}", job_id=job_id
        )

    @staticmethod
    def _classify(response: httpx.Response, job_id: str | None) -> Answer:
        code = response.status_code
        if 200 <= code < 300:
            try:
                status, payload = parse_status(response.content, job_id, code)
            except InvalidResponse as exc:
                raise Transient(str(exc), status_code=code) from exc
            return Answer(
                status,
                payload,
                _hint(response),
                _parse_wait_applied(response.headers.get("preference-applied")),
            )
        if code in TRANSIENT_STATUS:
            return _raise_transient(response, job_id)
        if code in (401, 403):
            raise AuthenticationError(
                f"the server refused the credentials for {_name(job_id)} ({code})",
                job_id=job_id,
                status_code=code,
            )
        if code in (404, 410):
            raise JobNotFound(
                f"the server does not know {_name(job_id)} ({code})",
                job_id=job_id,
                status_code=code,
            )
        if 400 <= code < 500:
            raise RequestRejected(
                f"the server rejected the request for {_name(job_id)} ({code})",
                job_id=job_id,
                status_code=code,
            )
        # 5xx outside the usual set (501, 505, ...) and anything stranger: keep trying.
        return _raise_transient(response, job_id)


def _raise_transient(response: httpx.Response, job_id: str | None) -> Answer:
    code = response.status_code
    raise Transient(
        f"HTTP {code} for {_name(job_id)}",
        status_code=code,
        hint=_hint(response) if code in (429, 503) else None,
        quota=_quota(response) if code == 429 else None,
    )
