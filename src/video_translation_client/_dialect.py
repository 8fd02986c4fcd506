"""Dialects: how to ask a service for a job's status, and how to read its answer.

A :class:`Dialect` declares the status route (``{id}`` filled in as one percent-encoded path
segment), an optional batch route, the dotted path to the status field and the values that
mean pending, completed and error (strings or numbers), the header that carries the API key
and its scheme, the fields copied into each result, the fields that give a job's progress and
time left, whether the service holds checks (``Prefer: wait``), and a Python hook for what a
declaration cannot say. Built in (:data:`DIALECTS`): ``sim`` (this project's server, the
default), ``original`` (the original design's ``{"result": ...}`` routes), ``elevenlabs``
(dubbing) and ``heygen`` (video translate). :func:`load_dialect` reads one from a TOML file.

Everything is checked at construction: a template without ``{id}``, an empty value list, a
value listed twice is an :class:`~video_translation_client.InvalidArgument` naming the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from . import _validate as check
from ._headers import finite_number
from ._models import JobStatus

#: A status value as a service writes it: a string, or an integer code.
Value = str | int
#: A hook: the decoded answer to the status, or None to read it as declared.
Hook = Callable[[Any], JobStatus | None]

_FIELD = re.compile(r"[A-Za-z0-9_$@-]+(\.[A-Za-z0-9_$@-]+)*")
#: An HTTP header name (RFC 9110 token).
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MISSING = object()


def dig(data: Any, path: str) -> Any:
    """The value at a dotted path into nested objects, or a sentinel when it is not there."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


class StatusFieldError(ValueError):
    """The status field of an answer is missing, or holds what no status is (a list, an
    object, a value of no declared kind). ``unknown`` tells a value of the right type that
    is not declared (a state the service added) from a value of the wrong shape."""

    def __init__(self, message: str, *, unknown: bool) -> None:
        super().__init__(message)
        self.unknown = unknown


@dataclass(frozen=True, kw_only=True, slots=True)
class Dialect:
    """How to ask a service for a job's status and read its answer (see the module's
    docstring). Frozen; make a changed copy with ``dataclasses.replace``.

    Attributes:
        name: What the dialect is called in messages.
        status_url: The status route under the base URL, with ``{id}``: "/jobs/{id}".
        status_field: Dotted path to the status in the answer: "data.status".
        pending: Values of the status field that mean the job is still working.
        completed: Values that mean it finished well.
        error: Values that mean it failed.
        auth_header: The header that carries the API key.
        auth_scheme: Put before the key in that header ("Bearer" sends "Bearer KEY");
            "" sends the key alone.
        keep: Dotted paths of fields copied into each result (the translated video's URL).
        eta_field: Dotted path of the seconds the job has left, if the answer says.
        progress_field: Dotted path of how far along the job is, 0 to 1, if the answer says.
        batch_url: A batch route with ``{ids}`` (comma-separated), answering
            ``{"jobs": [...], "unknown": [...]}``; None if the service has none.
        id_field: The job's ID in a batch answer's entries.
        default_url: The route of the original design's job-less ``GET /status``, if any.
        long_poll: Whether the service holds a check when asked (``Prefer: wait``).
        hook: A function given the decoded answer, returning its JobStatus, or None to read
            it as declared: for what a declaration cannot say.
    """

    name: str = "custom"
    status_url: str
    status_field: str
    pending: tuple[Value, ...]
    completed: tuple[Value, ...]
    error: tuple[Value, ...]
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    keep: tuple[str, ...] = ()
    eta_field: str | None = None
    progress_field: str | None = None
    batch_url: str | None = None
    id_field: str = "job_id"
    default_url: str | None = None
    long_poll: bool = False
    hook: Hook | None = field(default=None, compare=False)
    _values: Mapping[Value, JobStatus] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in ("pending", "completed", "error", "keep"):
            value = getattr(self, key)
            if isinstance(value, list):
                object.__setattr__(self, key, tuple(value))
        _template("status_url", self.status_url, "{id}")
        if self.batch_url is not None:
            _template("batch_url", self.batch_url, "{ids}")
        if self.default_url is not None:
            _template("default_url", self.default_url, None)
        _field("status_field", self.status_field)
        _field("id_field", self.id_field)
        for key in ("eta_field", "progress_field"):
            if getattr(self, key) is not None:
                _field(key, getattr(self, key))
        if not isinstance(self.keep, tuple):
            raise check.InvalidArgument("keep", "a list of dotted field names", self.keep)
        for path in self.keep:
            _field("keep", path)
        values: dict[Value, JobStatus] = {}
        for key, status in (
            ("pending", JobStatus.PENDING),
            ("completed", JobStatus.COMPLETED),
            ("error", JobStatus.ERROR),
        ):
            listed = getattr(self, key)
            if not isinstance(listed, tuple) or not listed:
                requirement = "a non-empty list of strings or integers"
                raise check.InvalidArgument(key, requirement, listed)
            for value in listed:
                if isinstance(value, bool) or not isinstance(value, str | int):
                    raise check.InvalidArgument(key, "a list of strings or integers", listed)
                if value in values:
                    also = values[value].value
                    requirement = f"values listed once (it is also under {also!r})"
                    raise check.InvalidArgument(key, requirement, value)
                values[value] = status
        object.__setattr__(self, "_values", MappingProxyType(values))
        if not isinstance(self.auth_header, str) or not _HEADER.fullmatch(self.auth_header):
            raise check.InvalidArgument("auth_header", "an HTTP header name", self.auth_header)
        if not isinstance(self.auth_scheme, str) or (
            self.auth_scheme and not _HEADER.fullmatch(self.auth_scheme)
        ):
            requirement = 'a word such as "Bearer", or "" for the key alone'
            raise check.InvalidArgument("auth_scheme", requirement, self.auth_scheme)
        if not isinstance(self.long_poll, bool):
            raise check.InvalidArgument("long_poll", "true or false", self.long_poll)
        if self.hook is not None and not callable(self.hook):
            raise check.InvalidArgument("hook", "a callable", self.hook)

    # -- asking ------------------------------------------------------------------------------

    def status_path(self, job_id: str | None) -> str:
        """The status route for a job, its ID as one opaque path segment: everything but
        unreserved characters percent-encoded, and the dots of ``.`` and ``..`` too, which URL
        normalisation would otherwise resolve: no ID can reach another route. With no ID,
        the default job's route."""
        if job_id is None:
            if self.default_url is None:
                raise check.InvalidArgument(
                    "job_id", f"given: the {self.name} dialect has no job-less route", None
                )
            return self.default_url
        return self.status_url.replace("{id}", segment(job_id))

    def batch_path(self, ids: list[str]) -> str:
        assert self.batch_url is not None
        return self.batch_url.replace("{ids}", ",".join(quote(i, safe="") for i in ids))

    def auth(self, api_key: str) -> tuple[str, str]:
        """The header that carries the key."""
        return self.auth_header, f"{self.auth_scheme} {api_key}" if self.auth_scheme else api_key

    # -- reading -----------------------------------------------------------------------------

    def status_of(self, data: Any) -> JobStatus:
        """The job's status in a decoded answer. Raises :class:`StatusFieldError` naming the
        field (and the value) when it holds no declared status."""
        if self.hook is not None:
            status = self.hook(data)
            if status is not None:
                return JobStatus(status)
        value = dig(data, self.status_field)
        where = f"the status field {self.status_field!r}"
        if value is _MISSING:
            raise StatusFieldError(
                f"the answer has no status field {self.status_field!r}", unknown=False
            )
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, str | int):
            kind = "a list" if isinstance(value, list) else type(value).__name__
            kind = "an object" if isinstance(value, dict) else kind
            raise StatusFieldError(f"{where} holds {kind}, not a status", unknown=False)
        status = self._values.get(value)
        if status is None:
            shown = repr(value)[:60]
            raise StatusFieldError(
                f"{where} holds {shown}, which the {self.name} dialect does not list",
                unknown=True,
            )
        return status

    def kept(self, data: Any) -> dict[str, Any]:
        """The fields to keep, as the answer has them (None where it has none)."""
        out = {}
        for path in self.keep:
            value = dig(data, path)
            out[path] = None if value is _MISSING else value
        return out

    def eta(self, data: Any) -> float | None:
        return None if self.eta_field is None else finite_number(dig(data, self.eta_field))

    def progress(self, data: Any) -> float | None:
        if self.progress_field is None:
            return None
        progress = finite_number(dig(data, self.progress_field))
        return progress if progress is not None and progress <= 1 else None


def segment(job_id: str) -> str:
    """A job ID as one opaque path segment."""
    encoded = quote(job_id, safe="")
    if set(job_id) <= {"."}:
        encoded = encoded.replace(".", "%2E")
    return encoded


def _template(key: str, value: object, placeholder: str | None) -> None:
    if not isinstance(value, str) or not value.startswith("/"):
        raise check.InvalidArgument(key, "a path under the base URL, starting with /", value)
    if placeholder is not None and value.count(placeholder) != 1:
        raise check.InvalidArgument(key, f"a path with {placeholder} once", value)
    rest = value.replace(placeholder or "\0", "")
    if "{" in rest or "}" in rest or any(c.isspace() for c in rest):
        what = f"a path with no spaces and no braces but {placeholder}"
        raise check.InvalidArgument(key, what if placeholder else "a path", value)


def _field(key: str, value: object) -> None:
    if not isinstance(value, str) or not _FIELD.fullmatch(value):
        raise check.InvalidArgument(key, 'a dotted field name such as "data.status"', value)


SIM = Dialect(
    name="sim",
    status_url="/jobs/{id}",
    status_field="result",
    pending=("pending",),
    completed=("completed",),
    error=("error",),
    eta_field="eta",
    progress_field="progress",
    batch_url="/jobs?ids={ids}",
    default_url="/status",
    long_poll=True,
)


class Builtins(Mapping[str, Dialect]):
    """The dialects built in, by name: read-only."""

    def __init__(self, dialects: dict[str, Dialect]) -> None:
        self._dialects = dialects

    def __getitem__(self, name: str) -> Dialect:
        return self._dialects[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dialects)

    def __len__(self) -> int:
        return len(self._dialects)

    def __repr__(self) -> str:
        return f"<built-in dialects: {', '.join(self._dialects)}>"


#: The dialects built in, by name.
DIALECTS = Builtins(
    {
        "sim": SIM,
        "original": Dialect(
            name="original",
            status_url="/jobs/{id}/status",
            status_field="result",
            pending=("pending",),
            completed=("completed",),
            error=("error",),
            default_url="/status",
        ),
        "elevenlabs": Dialect(
            name="elevenlabs",
            status_url="/v1/dubbing/{id}",
            status_field="status",
            pending=("dubbing",),
            completed=("dubbed",),
            error=("failed",),
            auth_header="xi-api-key",
            auth_scheme="",
            keep=("target_languages", "error"),
        ),
        "heygen": Dialect(
            name="heygen",
            status_url="/v2/video_translate/{id}",
            status_field="data.status",
            pending=("pending", "running"),
            completed=("success",),
            error=("failed",),
            auth_header="X-Api-Key",
            auth_scheme="",
            keep=("data.url", "data.message"),
        ),
    }
)

#: The keys a dialect file may have: every field but the hook (Python, not TOML).
FILE_KEYS = tuple(f.name for f in fields(Dialect) if f.init and f.name != "hook")
_REQUIRED = ("status_url", "status_field", "pending", "completed", "error")


def load_dialect(path: str | Path) -> Dialect:
    """A dialect from a TOML file (the keys are the fields of :class:`Dialect`, the hook
    excepted). Raises :class:`~video_translation_client.InvalidArgument` naming the key and
    what is wrong with it, or the file and why it cannot be read, in one line."""
    where = Path(path)
    try:
        data = tomllib.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise check.InvalidArgument(
            "dialect file", f"a readable file ({reason})", str(where)
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise check.InvalidArgument("dialect file", f"valid TOML ({exc})", str(where)) from None
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        known = ", ".join(FILE_KEYS)
        raise check.InvalidArgument(unknown[0], f"a key a dialect has ({known})", data[unknown[0]])
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise check.InvalidArgument(missing[0], "given in the file", None, show=False)
    data.setdefault("name", where.stem)
    return Dialect(**data)


def as_dialect(value: object) -> Dialect:
    """A dialect, or the name of a built-in one."""
    if isinstance(value, Dialect):
        return value
    if isinstance(value, str) and value in DIALECTS:
        return DIALECTS[value]
    names = ", ".join(repr(n) for n in DIALECTS)
    raise check.InvalidArgument("dialect", f"a Dialect or one of {names}", value)
