"""One HTTP attempt at a job's status, and the classification of everything that can go wrong.

This is the only module that sends requests. Whatever the attempt ends in leaves it as one of:
an :class:`Answer`; a :class:`Transient` failure for the retry logic; :class:`BatchUnsupported`
for a batch the server will not take; or a permanent
:class:`~video_translation_client.VideoTranslationError` subclass.

Nothing raised here holds on to a response, a request or a transport exception: they carry the
API key in their headers and the body in their state, and an error may live on in a
``JobResult`` for as long as the caller keeps it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from ._dialect import SIM, Dialect, StatusFieldError, dig
from ._errors import (
    AuthenticationError,
    InvalidResponse,
    JobNotFound,
    RequestRejected,
    UnknownStatus,
)
from ._headers import parse_ratelimit_policy, parse_retry_after, parse_wait_applied
from ._models import JobStatus
from ._read import ACCEPT_ENCODING, BodyError, read_limited

#: Answers worth another try (RFC 9110 semantics, and common proxy behaviour).
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Redirects followed, same origin only.
MAX_REDIRECTS = 5
#: Characters of a server's text quoted in an error message.
QUOTED = 60
#: Characters of a server's reason for refusing a request kept in the error message.
REASON_CHARS = 200
#: Fields of a JSON error body that hold the reason, the most telling first.
REASON_FIELDS = ("detail", "message", "error", "title")
#: Jobs whose status URL a fetcher keeps (see :meth:`StatusFetcher._job_url`).
KEPT_URLS = 4096


@dataclass(slots=True)
class Answer:
    """One job's answer from one request: made fresh for each, and completed by the session
    (how it was held, whether it was cut short or woken) before any job sees it."""

    status: JobStatus
    payload: dict[str, Any]
    #: The server's "ask again in" hint, seconds.
    hint: float | None
    #: The long-poll wait the server says it applied, or None if it did not say.
    wait_applied: float | None
    #: How far along the job is (0 to 1) and the seconds it has left, if the answer says.
    progress: float | None = None
    eta: float | None = None
    #: The fields the dialect keeps.
    kept: dict[str, Any] = field(default_factory=dict)
    #: The seconds the session asked the server to hold this check (0: answered at once):
    #: decided once, where the request was made.
    held: int = 0
    #: A held check answered pending well before its wait, nothing having finished: the
    #: server (or a proxy) does not really hold, and asking again at once would spin.
    cut_short: bool = False
    #: A held batch came back because another of its jobs changed: this job's pending answer
    #: is no check of it.
    woken: bool = False

    @property
    def is_final(self) -> bool:
        return self.status.is_final


class Transient(Exception):
    """A failure worth retrying. Internal: when a job's retries run out it becomes the
    ``__cause__`` of :class:`~video_translation_client.RetriesExhausted` (its ``error``, if it
    has one, instead), as plain data."""

    def __init__(
        self,
        description: str,
        *,
        status_code: int | None = None,
        hint: float | None = None,
        quota: float | None = None,
        error: InvalidResponse | None = None,
        miss: bool = False,
        refused: bool = False,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.status_code = status_code
        self.hint = hint
        #: On a 429, the request rate the server's ``RateLimit-Policy`` allows, if it says.
        self.quota = quota
        #: The library's own error for this failure, for an answer that was not a status.
        self.error = error
        #: An answer that may show a wrong route: not JSON, or without the status field.
        self.miss = miss
        #: The connection was refused (nothing listens there): no answer, but not a time-out.
        self.refused = refused


class MalformedBatch(Transient):
    """A batch answer that is not ``{"jobs": [...], "unknown": [...]}``: from a server known
    to have the batch endpoint a transient failure, from any other a sign it has none."""


class BatchUnsupported(Exception):
    """Check this job on its own: the server has no batch endpoint (``missing``), or it
    refused this particular batch (a 400, say for one ID it dislikes, which must not fail the
    other jobs of the batch)."""

    def __init__(self, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back, read and closed: the status code, headers and the decoded body."""

    status_code: int
    headers: httpx.Headers
    body: bytes
    #: The URL asked.
    url: httpx.URL

    @property
    def shown_url(self) -> str:
        """The URL asked, fit to show: made for an error only, not for every answer."""
        return redact_url(str(self.url))


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def redact_url(url: str) -> str:
    """``url`` fit to show: a password in it replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not (sep and at and ":" in userinfo):
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


def job_name(job_id: str | None) -> str:
    return "the default job" if job_id is None else f"job {job_id!r}"


def _hint(reply: Reply) -> float | None:
    return parse_retry_after(reply.headers.get("retry-after"), reply.headers.get("retry-after-ms"))


def _decode(body: bytes) -> tuple[Any, str | None]:
    """The JSON in ``body``, or the name of the reason it is none. The decoder's error itself
    is not kept: it holds the whole body."""
    try:
        return json.loads(body), None
    except (ValueError, RecursionError) as exc:
        return None, type(exc).__name__


def _quote(value: object) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**QUOTED else "<a number>"
    return text[:QUOTED] + ("…" if len(text) > QUOTED else "")


def reason(body: bytes) -> str:
    """Why the server says it refused a request, as one short line for a person: the first
    text field of a JSON error body among :data:`REASON_FIELDS` (at the top or under
    ``error``), else a short plain-text body; "" if it says nothing readable (HTML, binary,
    empty). Control characters become spaces and the text is cut at :data:`REASON_CHARS`."""
    data, not_json = _decode(body[: REASON_CHARS * 20])
    text = ""
    if not_json is None:
        for where in (data, data.get("error") if isinstance(data, dict) else None):
            if isinstance(where, dict):
                found = [where[f] for f in REASON_FIELDS if isinstance(where.get(f), str)]
                if found:
                    text = found[0]
                    break
    elif not body.lstrip().startswith(b"<"):
        text = body[: REASON_CHARS * 4].decode("utf-8", "replace")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text[:REASON_CHARS] + ("…" if len(text) > REASON_CHARS else "")


def _batch_answers(
    reply: Reply, ids: list[str], dialect: Dialect
) -> dict[str, Answer | BaseException]:
    """Per-job answers from a batch body ``{"jobs": [...], "unknown": [...]}``.

    A pending job's hint is its own ETA: the response-wide ``Retry-After`` is the soonest
    of all the jobs', which would make every other job ask too early. One job's bad entry
    fails that job's check alone; a job left out is checked on its own.
    """
    code = reply.status_code
    data, not_json = _decode(reply.body)
    if not_json:
        raise MalformedBatch(f"malformed batch answer ({not_json})", status_code=code)
    jobs = data.get("jobs") if isinstance(data, dict) else None
    unknown = data.get("unknown", []) if isinstance(data, dict) else None
    if not isinstance(jobs, list) or not isinstance(unknown, list):
        raise MalformedBatch("malformed batch answer (no list of jobs)", status_code=code)
    wanted = set(ids)
    applied = parse_wait_applied(reply.headers.get("preference-applied"))
    out: dict[str, Answer | BaseException] = {}
    for entry in jobs:
        job_id = dig(entry, dialect.id_field)
        if not isinstance(job_id, str) or job_id not in wanted:
            continue
        try:
            status = dialect.status_of(entry)
        except StatusFieldError as exc:
            out[job_id] = Transient(f"job {job_id!r} in a batch: {exc}", status_code=code)
            continue
        out[job_id] = _answer(status, entry, None, applied, dialect)
    listed_unknown = {i for i in unknown if isinstance(i, str)}
    for job_id in ids:
        if job_id in out:
            continue
        if job_id in listed_unknown:
            out[job_id] = JobNotFound(
                f"the server does not know job {job_id!r} (listed unknown in a batch)",
                job_id=job_id,
                status_code=404,
            )
        else:
            # Left out: asked on its own at once, neither a failure nor a wait.
            left_out = f"job {job_id!r} left out of a batch answer"
            out[job_id] = BatchUnsupported(left_out, missing=False)
    return out


def _answer(
    status: JobStatus,
    payload: dict[str, Any],
    hint: float | None,
    applied: float | None,
    dialect: Dialect,
) -> Answer:
    """An answer, with what the dialect reads of the job's progress and time left. A pending
    job's hint is the header's, else its own ETA."""
    eta = dialect.eta(payload)
    if hint is None and status is JobStatus.PENDING:
        hint = eta
    return Answer(
        status, payload, hint, applied, dialect.progress(payload), eta, dialect.kept(payload)
    )


class StatusFetcher:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        max_response_bytes: int,
        dialect: Dialect = SIM,
    ) -> None:
        self.base = httpx.URL(base_url.rstrip("/"))
        #: The base URL fit to show: its password, if it has one, hidden.
        self.shown_url = redact_url(str(self.base))
        self.max_response_bytes = max_response_bytes
        self.dialect = dialect
        self._headers = {"Accept": "application/json", "Accept-Encoding": ACCEPT_ENCODING}
        self._secrets = [api_key] if api_key else []
        self._urls: dict[str | None, httpx.URL] = {}
        if api_key is not None:
            name, value = dialect.auth(api_key)
            self._headers[name] = value

    def _because(self, reply: Reply) -> str:
        """The server's reason for a refusal, to end its error message with ("" if none); a
        server echoing the API key back does not get it into the message."""
        said = reason(reply.body)
        for secret in self._secrets:
            said = said.replace(secret, "***")
        return f": {said}" if said else ""

    def __repr__(self) -> str:
        return f"StatusFetcher({str(self.base)!r})"  # never the headers: they hold the key

    async def fetch(
        self, http: httpx.AsyncClient, job_id: str | None, *, wait: int | None, limit: float
    ) -> Answer:
        """One attempt, bounded by ``limit`` seconds as a cancel scope. ``wait`` is sent as
        ``Prefer: wait=N`` (None: no preference)."""
        reply = await self._get(http, lambda: self._job_url(job_id), wait, limit, job_id)
        return self._classify(reply, job_id)

    async def fetch_batch(
        self, http: httpx.AsyncClient, ids: list[str], *, wait: int | None, limit: float
    ) -> dict[str, Answer | BaseException]:
        """One batch request. Raises :class:`BatchUnsupported` if the server has no batch
        endpoint, :class:`Transient` if the whole batch failed; otherwise maps each ID to its
        answer, or to the error for that job alone."""
        batch = self.dialect.batch_path(ids).encode()
        reply = await self._get(http, lambda: self._url(batch), wait, limit, None)
        code = reply.status_code
        if code in (404, 405, 501):
            raise BatchUnsupported(f"batch request answered {code}", missing=True)
        if code in (400, 414, 422, 431):
            raise BatchUnsupported(f"batch request answered {code}", missing=False)
        if code in (401, 403):
            raise AuthenticationError(
                f"the server refused the credentials for a batch ({code})", status_code=code
            )
        if code in TRANSIENT_STATUS or code >= 500:
            raise _transient(reply, f"HTTP {code} for a batch of {len(ids)}")
        if not 200 <= code < 300:
            raise RequestRejected(
                f"the server rejected a batch ({code}){self._because(reply)}", status_code=code
            )
        return _batch_answers(reply, ids, self.dialect)

    def _job_url(self, job_id: str | None) -> httpx.URL:
        """The URL of a job's status, built once while the job is among the last
        ``KEPT_URLS`` asked: each check of a job asks for the same one, and httpx parses and
        checks a URL whole to build it (45 us, loaded machine)."""
        url = self._urls.get(job_id)
        if url is None:
            if len(self._urls) >= KEPT_URLS:
                del self._urls[next(iter(self._urls))]
            url = self._urls[job_id] = self._url(self.dialect.status_path(job_id).encode())
        return url

    def _url(self, path: bytes) -> httpx.URL:
        """``path`` under the base URL."""
        return self.base.copy_with(raw_path=self.base.raw_path.rstrip(b"/") + path)

    async def _get(
        self,
        http: httpx.AsyncClient,
        where: Callable[[], httpx.URL],
        wait: int | None,
        limit: float,
        job_id: str | None,
    ) -> Reply:
        """GET ``where()``, following same-origin redirects; transport failures become
        :class:`Transient`, described but not chained."""
        headers = dict(self._headers)
        if wait is not None:
            headers["Prefer"] = f"wait={wait}"
        failure: str | None = None
        refused = False
        try:
            url = where()
            # httpx's own timeouts are not enforced by every transport: the cancel scope is
            # the guarantee, httpx's timeout a courtesy to the connection pool.
            with anyio.fail_after(limit):
                for _ in range(MAX_REDIRECTS + 1):
                    reply, target = await self._send(http, url, headers, limit, job_id)
                    if target is None:
                        return reply
                    url = target
        except TimeoutError:
            failure = f"no answer within {limit:g} s"
        except (httpx.TransportError, httpx.DecodingError) as exc:
            failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            refused = isinstance(exc, httpx.ConnectError) and _refusal_in(exc)
        except BodyError as exc:
            invalid = InvalidResponse(f"{exc} for {job_name(job_id)}", job_id=job_id)
            raise Transient(str(invalid), error=invalid) from None
        except httpx.InvalidURL as exc:  # a URL too long for httpx: the caller's bounds missed
            raise RequestRejected(
                f"no valid URL for {job_name(job_id)} ({exc})", job_id=job_id
            ) from None
        except httpx.HTTPError as exc:
            failure = f"the request for {job_name(job_id)} failed: {type(exc).__name__}"
            raise RequestRejected(failure, job_id=job_id) from None
        else:
            raise RequestRejected(
                f"more than {MAX_REDIRECTS} redirects for {job_name(job_id)}", job_id=job_id
            )
        raise Transient(failure, refused=refused)

    async def _send(
        self,
        http: httpx.AsyncClient,
        url: httpx.URL,
        headers: dict[str, str],
        limit: float,
        job_id: str | None,
    ) -> tuple[Reply, httpx.URL | None]:
        """One request: its reply, and where it redirects to (same origin only), if it does."""
        request = http.build_request("GET", url, headers=headers, timeout=limit)
        response = await http.send(request, stream=True, follow_redirects=False)
        try:
            if response.is_redirect:
                target = response.next_request.url if response.next_request else None
                if target is None or _origin(target) != _origin(self.base):
                    where = f"{target.scheme}://{target.host}" if target is not None else "nowhere"
                    raise RequestRejected(
                        f"the server redirected {job_name(job_id)} to another origin ({where}),"
                        " not followed",
                        job_id=job_id,
                        status_code=response.status_code,
                    )
                return Reply(response.status_code, response.headers, b"", url), target
            body = await read_limited(response, self.max_response_bytes)
            return Reply(response.status_code, response.headers, body, url), None
        finally:
            await response.aclose()

    def _classify(self, reply: Reply, job_id: str | None) -> Answer:
        code = reply.status_code
        if 200 <= code < 300:
            data, not_json = _decode(reply.body)
            try:
                if not_json:
                    raise StatusFieldError(f"not valid JSON ({not_json})", unknown=False)
                status = self.dialect.status_of(data)
            except StatusFieldError as exc:
                kind = UnknownStatus if exc.unknown else InvalidResponse
                invalid = kind(
                    f"{job_name(job_id)}: {exc}",
                    job_id=job_id,
                    status_code=code,
                    url=reply.shown_url,
                )
                # Not JSON, or no status field: maybe not the route that was meant.
                raise Transient(
                    str(invalid), status_code=code, error=invalid, miss=not exc.unknown
                ) from None
            applied = parse_wait_applied(reply.headers.get("preference-applied"))
            payload = data if isinstance(data, dict) else {"": data}
            return _answer(status, payload, _hint(reply), applied, self.dialect)
        if code in TRANSIENT_STATUS:
            raise _transient(reply, f"HTTP {code} for {job_name(job_id)}")
        if code in (401, 403):
            raise AuthenticationError(
                f"the server refused the credentials for {job_name(job_id)} ({code})"
                f"{self._because(reply)}",
                job_id=job_id,
                status_code=code,
                url=reply.shown_url,
            )
        if code in (404, 410):
            raise JobNotFound(
                f"the server does not know {job_name(job_id)} ({code}){self._because(reply)}",
                job_id=job_id,
                status_code=code,
                url=reply.shown_url,
            )
        if 400 <= code < 500:
            raise RequestRejected(
                f"the server rejected the request for {job_name(job_id)} ({code})"
                f"{self._because(reply)}",
                job_id=job_id,
                status_code=code,
                url=reply.shown_url,
            )
        # 5xx outside the usual set (501, 505, ...) and anything stranger: keep trying.
        raise _transient(reply, f"HTTP {code} for {job_name(job_id)}")


def _refusal_in(exc: BaseException) -> bool:
    """Whether the operating system's ``ECONNREFUSED`` is among the causes of ``exc`` (its
    chain and the members of exception groups in it; trio and asyncio wrap it differently)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 50:
        here = todo.pop()
        if here is None or id(here) in seen:
            continue
        seen.add(id(here))
        if isinstance(here, ConnectionRefusedError):
            return True
        todo += [here.__cause__, here.__context__, *getattr(here, "exceptions", ())]
    return False


def _transient(reply: Reply, description: str) -> Transient:
    code = reply.status_code
    return Transient(
        description,
        status_code=code,
        hint=_hint(reply) if code in (429, 503) else None,
        quota=(
            parse_ratelimit_policy(reply.headers.get("ratelimit-policy")) if code == 429 else None
        ),
    )
