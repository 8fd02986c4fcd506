"""Server settings: one frozen, validated record shared by the app, the CLI and the embed API.

The field names are the command-line flags (``completion_time`` is ``--completion-time``) and the
keyword arguments of :class:`~sim_server.TranslationServer`, so the three never drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

#: Every kind of fault the server injects, each with its own ``fault_<kind>`` probability.
FAULT_KINDS = ("500", "502", "503", "429", "slow", "drop", "garbage")
#: The API's job-ID rule: one path segment, no escaping needed, a bounded length.
JOB_ID = r"[A-Za-z0-9._:-]{1,128}"

#: Longest job anyone can ask for. A week is far past any real translation and keeps
#: arithmetic on ``created_at + duration`` well inside float precision.
MAX_DURATION = 7 * 24 * 3600.0
#: Cap on a request body; a job creation is a few dozen bytes.
MAX_BODY_BYTES = 64 * 1024
#: Most job IDs in one batch request.
MAX_BATCH = 100


def _probability(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerSettings:
    """Everything the simulation server can be told. Validated at construction."""

    host: str = "127.0.0.1"
    port: int = 8000
    completion_time: float = 20.0
    error_rate: float = 0.1
    #: Fixes outcomes, auto-created jobs and faults; None draws them afresh each run.
    seed: int | None = None
    auto_create: bool = False
    max_wait: float = 30.0
    #: Hints of when to ask again on a pending job (Retry-After, Retry-After-Ms, ``eta``).
    hints: bool = True
    #: The batch route, ``GET /jobs?ids=``.
    batch: bool = True
    fault_500: float = 0.0
    fault_502: float = 0.0
    fault_503: float = 0.0
    fault_429: float = 0.0
    #: Whether injected 429s and 503s say when to come back (``Retry-After: 1``).
    fault_hints: bool = True
    fault_slow: float = 0.0
    slow_delay: float = 2.0
    fault_drop: float = 0.0
    fault_garbage: float = 0.0
    rate_limit: float | None = None
    burst: int | None = None
    api_key: str | None = field(default=None, repr=False)
    db: Path | None = None
    workers: int = 1
    #: The status API spoken: sim, elevenlabs or heygen (see ``_dialects``).
    dialect: str = "sim"

    def __post_init__(self) -> None:
        if self.dialect not in ("sim", "elevenlabs", "heygen"):
            raise ValueError(
                f"dialect must be one of 'sim', 'elevenlabs', 'heygen', got {self.dialect!r}"
            )
        if self.dialect != "sim":
            # The vendors' APIs have no batch route, give no hints and hold no request.
            object.__setattr__(self, "batch", False)
            object.__setattr__(self, "hints", False)
            object.__setattr__(self, "max_wait", 0.0)
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be an integer in [0, 65535], got {self.port!r}")
        _positive("completion_time", self.completion_time, allow_zero=True)
        if self.completion_time > MAX_DURATION:
            raise ValueError(
                f"completion_time must be at most {MAX_DURATION:g} s, got {self.completion_time!r}"
            )
        _probability("error_rate", self.error_rate)
        _positive("max_wait", self.max_wait, allow_zero=True)
        _positive("slow_delay", self.slow_delay, allow_zero=True)
        for kind in FAULT_KINDS:
            _probability(f"fault_{kind}", getattr(self, f"fault_{kind}"))
        total = sum(self.fault_rates().values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"the fault probabilities add up to {total:g}, more than 1")
        if self.rate_limit is not None:
            _positive("rate_limit", self.rate_limit)
        if self.burst is not None and (not isinstance(self.burst, int) or self.burst < 1):
            raise ValueError(f"burst must be an integer >= 1, got {self.burst!r}")
        if self.burst is not None and self.rate_limit is None:
            raise ValueError("burst needs rate_limit to be set")
        if self.api_key is not None and not (
            isinstance(self.api_key, str)
            and self.api_key
            and all("!" <= char <= "~" for char in self.api_key)
        ):
            # A client sends the key in a header, whose values are ASCII.
            raise ValueError("api_key must be a non-empty string of visible ASCII characters")
        if self.db is not None and not Path(self.db).parent.is_dir():
            raise ValueError(f"db must be in an existing directory, got {str(self.db)!r}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {self.workers!r}")
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool)
        ):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")

    def fault_rates(self) -> dict[str, float]:
        """Probability per request of each fault kind, in a fixed order."""
        return {kind: float(getattr(self, f"fault_{kind}")) for kind in FAULT_KINDS}

    @property
    def effective_burst(self) -> int:
        """The token bucket's size: the configured burst, else one second's worth of requests."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.rate_limit or 1))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy, used to hand the settings to worker processes."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["db"] = str(self.db) if self.db is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerSettings:
        data = dict(data)
        if data.get("db") is not None:
            data["db"] = Path(data["db"])
        return cls(**data)
