"""Checks of what callers pass in, each raising ``ValueError`` that names the argument and the
value: ``ValueError("backoff_factor must be a finite number >= 1, got 0.5")``. The config, the
client and the rate limiter all check their arguments here, in the same words."""

from __future__ import annotations

import math
from collections.abc import Iterable


def number(name: str, value: object, *, low: float, inclusive: bool = True) -> float:
    """A finite int or float (not a bool) at least ``low`` (above it if not ``inclusive``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value >= low if inclusive else value > low):  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    bound = f">= {low:g}" if inclusive else f"> {low:g}"
    raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def optional_number(name: str, value: object, *, low: float, inclusive: bool = True) -> None:
    """None, or as :func:`number`."""
    if value is not None:
        try:
            number(name, value, low=low, inclusive=inclusive)
        except ValueError:
            bound = f">= {low:g}" if inclusive else f"> {low:g}"
            raise ValueError(
                f"{name} must be a finite number {bound} or None, got {value!r}"
            ) from None


def integer(name: str, value: object, *, low: int) -> int:
    """An int (not a bool) at least ``low``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= low:
        return value
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def optional_integer(name: str, value: object, *, low: int) -> None:
    """None, or as :func:`integer`."""
    if value is not None and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= low
    ):
        raise ValueError(f"{name} must be an integer >= {low} or None, got {value!r}")


def one_of(name: str, value: object, choices: Iterable[object]) -> None:
    options = list(choices)
    if value not in options:
        shown = ", ".join(repr(o) for o in options)
        raise ValueError(f"{name} must be one of {shown}, got {value!r}")


def visible_ascii(name: str, value: object) -> None:
    """A non-empty string of visible ASCII characters, as an HTTP header value must be. The
    message names the problem, never the value (it may be a secret)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    for position, char in enumerate(value, 1):
        if not "!" <= char <= "~":
            kind = "a non-ASCII" if not char.isascii() else "a space or control"
            raise ValueError(
                f"{name} must be visible ASCII characters (HTTP headers are ASCII); "
                f"it has {kind} character at position {position}"
            )
