"""The HTTP vocabulary the routes speak: error answers, the ``Prefer: wait`` preference
(RFC 7240) they read, and the retry hints they write. No Quart here."""

from __future__ import annotations

import math
from collections.abc import Iterable

#: How a bad job ID is explained (the rule itself is ``_settings.JOB_ID``).
ID_RULE = "job IDs are 1 to 128 characters from A-Z a-z 0-9 . _ : -"


class ApiError(Exception):
    """An answer with a JSON error body that names the problem."""

    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers = headers or {}


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


def retry_after(seconds: float) -> dict[str, str]:
    """When to ask again: whole seconds (at least 1) per RFC 9110, and the precise figure in
    milliseconds, for clients that can use it."""
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "Retry-After-Ms": str(max(1, math.ceil(seconds * 1000))),
    }
