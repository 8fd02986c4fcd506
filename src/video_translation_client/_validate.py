"""Checks of what callers pass in, each raising :class:`InvalidArgument` (a ``ValueError``)
that names the argument and the value: ``backoff_factor must be a finite number >= 1, got
0.5``. The config, the client and the rate limiter all check their arguments here, in the same
words; a command line renders the same error in its own terms from the exception's fields."""

from __future__ import annotations

import math
from collections.abc import Iterable


class InvalidArgument(ValueError):
    """``name`` must be ``requirement`` (``or None`` when ``optional``), but was ``value``."""

    def __init__(
        self,
        name: str,
        requirement: str,
        value: object,
        *,
        optional: bool = False,
        show: bool = True,
    ) -> None:
        self.name, self.requirement, self.value = name, requirement, value
        self.optional, self.shown = optional, show
        message = f"{name} must be {requirement}{' or None' if optional else ''}"
        # A secret is named, never shown.
        super().__init__(f"{message}, got {value!r}" if show else message)


def number(name: str, value: object, *, low: float, inclusive: bool = True) -> float:
    """A finite int or float (not a bool) at least ``low`` (above it if not ``inclusive``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value >= low if inclusive else value > low):  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    raise InvalidArgument(name, _finite(low, inclusive), value)


def optional_number(name: str, value: object, *, low: float, inclusive: bool = True) -> None:
    """None, or as :func:`number`."""
    if value is not None:
        try:
            number(name, value, low=low, inclusive=inclusive)
        except InvalidArgument:
            raise InvalidArgument(name, _finite(low, inclusive), value, optional=True) from None


def _finite(low: float, inclusive: bool) -> str:
    return f"a finite number {'>=' if inclusive else '>'} {low:g}"


def integer(name: str, value: object, *, low: int) -> int:
    """An int (not a bool) at least ``low``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= low:
        return value
    raise InvalidArgument(name, f"an integer >= {low}", value)


def optional_integer(name: str, value: object, *, low: int) -> None:
    """None, or as :func:`integer`."""
    if value is not None:
        try:
            integer(name, value, low=low)
        except InvalidArgument:
            raise InvalidArgument(name, f"an integer >= {low}", value, optional=True) from None


def one_of(name: str, value: object, choices: Iterable[object]) -> None:
    options = list(choices)
    if value not in options:
        raise InvalidArgument(name, "one of " + ", ".join(repr(o) for o in options), value)


def visible_ascii(name: str, value: object) -> None:
    """A non-empty string of visible ASCII characters, as an HTTP header value must be. The
    message names the problem, never the value (it may be a secret)."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(name, "a non-empty string", value, show=False)
    for position, char in enumerate(value, 1):
        if not "!" <= char <= "~":
            kind = "a non-ASCII" if not char.isascii() else "a space or control"
            raise InvalidArgument(
                name,
                f"visible ASCII characters (HTTP headers are ASCII); it has {kind} character "
                f"at position {position}",
                value,
                show=False,
            )
