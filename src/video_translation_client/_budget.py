"""A client-wide retry budget, after gRPC's retry throttling (gRFC A6) and Finagle's minimum
retry rate.

A bucket of ``max_tokens``: a failed attempt takes one token, a successful one gives back
``token_ratio``, and time gives back ``refill`` tokens a second. Retries are sent only while
more than half the tokens remain. With the default ratio of 1, retries go on while failures stay
under about half of the attempts (a flaky server, even at 35% failures, keeps being retried).

When the server is down the budget is soon spent, and a retry it refuses is *held back*, not
sent: the job waits its backoff and asks again. While no request has succeeded since the job's
last failure, a held-back retry counts as one more failure, so a server that stays down ends
each job with ``RetriesExhausted`` after its ``max_retries`` backoffs, having seen about one
request per job plus ``refill`` probes a second (never ``max_retries + 1`` per job). Once a
request succeeds again (a restarted server), held-back retries stop counting: the jobs wait
their turn instead of failing for the budget's sake, and no job is lost to a restart.

A retry that is allowed holds one token while it is in flight (``release()`` gives it back):
retries decided at the same instant, before any of their outcomes is known, cannot all pass.

Throttling (429) is not counted: the adaptive rate limiter deals with it.
"""

from __future__ import annotations


class RetryBudget:
    def __init__(
        self, max_tokens: float = 20.0, token_ratio: float = 1.0, refill: float = 1.0
    ) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {max_tokens!r}")
        if token_ratio <= 0:
            raise ValueError(f"token_ratio must be > 0, got {token_ratio!r}")
        if refill < 0:
            raise ValueError(f"refill must be >= 0, got {refill!r}")
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.refill = refill
        self.tokens = max_tokens
        self.denied = 0
        #: When a request last succeeded (-inf: never).
        self.last_success = float("-inf")
        self._updated: float | None = None

    def _catch_up(self, now: float) -> None:
        if self._updated is not None and now > self._updated:
            self.tokens = min(self.max_tokens, self.tokens + (now - self._updated) * self.refill)
        self._updated = now

    def record_success(self, now: float) -> None:
        self._catch_up(now)
        self.last_success = now
        self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)

    def record_failure(self, now: float) -> None:
        self._catch_up(now)
        self.tokens = max(0.0, self.tokens - 1)

    def allows_retry(self, now: float) -> bool:
        """Whether a retry may be sent now; if so it holds a token until ``release()``."""
        self._catch_up(now)
        if self.tokens > self.max_tokens / 2:
            self.tokens -= 1
            return True
        self.denied += 1
        return False

    def release(self) -> None:
        """A retry allowed by ``allows_retry`` has its answer (its outcome is recorded apart)."""
        self.tokens = min(self.max_tokens, self.tokens + 1)
