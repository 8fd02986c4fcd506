"""What the server's headers say: when to ask again, its declared quota, the long-poll wait it
applied; and the numbers in its JSON bodies.

A server may send anything. Every function here answers a finite, non-negative number of
seconds (or requests per second) or None, and never raises: a header of 5,000 digits is a very
long wait, not an ``OverflowError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: The longest wait a header can say, seconds (about 31 years); longer ones are this long.
#: Every wait the client applies is clamped far below it (``StatusPollingConfig.max_hint``).
LONGEST_HINT = 1e9
#: Digits beyond which a delay-seconds (or milliseconds) value is certainly over LONGEST_HINT:
#: reading more would only cost time (and Python refuses ints of over 4,300 digits).
_MAX_DIGITS = 16


def _whole_number(text: str) -> int | None:
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= _MAX_DIGITS else 10**_MAX_DIGITS


def parse_retry_after(
    retry_after: str | None,
    retry_after_ms: str | None,
    *,
    now: Callable[[], datetime] | None = None,
) -> float | None:
    """Seconds the server asks us to wait, from ``Retry-After-Ms`` or ``Retry-After``.

    ``Retry-After-Ms`` (integer milliseconds) wins when valid; ``Retry-After`` may be
    delay-seconds or an HTTP-date (RFC 9110 10.2.3). Anything unparseable is None; a date in the
    past is 0; anything over :data:`LONGEST_HINT` is that.
    """
    if retry_after_ms is not None:
        millis = _whole_number(retry_after_ms)
        if millis is not None:
            return min(millis / 1000, LONGEST_HINT)
    if retry_after is None:
        return None
    seconds = _whole_number(retry_after)
    if seconds is not None:
        return float(min(seconds, LONGEST_HINT))
    try:
        when = parsedate_to_datetime(retry_after.strip())
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = now() if now is not None else datetime.now(UTC)
        delay = (when - current).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, delay), LONGEST_HINT)


def parse_ratelimit_policy(value: str | None) -> float | None:
    """Requests per second allowed by a ``RateLimit-Policy`` header (IETF draft
    httpapi-ratelimit-headers: ``"default";q=100;w=60``), the strictest policy if there are
    several; None when absent or unreadable."""
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
        if 0 < quota < math.inf and 0 < window < math.inf and 0 < quota / window < math.inf:
            rates.append(quota / window)
    return min(rates) if rates else None


def parse_wait_applied(value: str | None) -> float | None:
    """The ``wait`` a ``Preference-Applied`` header (RFC 7240) says the server applied."""
    if value is None:
        return None
    for pref in value.split(","):
        name, _, token = pref.partition("=")
        if name.strip().lower() == "wait":
            return finite_number(token.split(";", 1)[0].strip().strip('"'))
    return None


def finite_number(value: object) -> float | None:
    """A JSON number or numeric string as a finite float >= 0, else None (booleans, NaN,
    infinities, negative numbers, integers too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if 0 <= number < math.inf else None
