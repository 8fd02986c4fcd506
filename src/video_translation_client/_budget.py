"""A client-wide retry budget, after gRPC's retry throttling (gRFC A6), with probes.

A bucket of ``max_tokens``: a failed request takes one token, a successful one gives back
``token_ratio``. Retries are sent while more than half the tokens remain (counting the retries
in flight, so that retries decided at the same instant cannot all pass before any outcome is
known). With the default ratio of 1, retries go on while failures stay under about half of the
requests: a flaky server, even at 35% failures, keeps being retried.

When the server fails most requests the budget is *spent*, and retries are held back instead of
sent, except one probe every ``probe_interval`` seconds. A dead server therefore sees about one
request per job plus one probe a second, never ``max_retries + 1`` per job. The first success
while spent (the server is back) lifts the bucket just over half: retries resume one at a time
and ramp up as they succeed, and if the server was not really back, a few failures spend the
budget again.

Throttling (429) is not counted: the adaptive rate limiter deals with it.
"""

from __future__ import annotations

from . import _validate as check


class RetryBudget:
    def __init__(
        self, max_tokens: float = 20.0, token_ratio: float = 1.0, probe_interval: float = 1.0
    ) -> None:
        for name, value in (
            ("max_tokens", max_tokens),
            ("token_ratio", token_ratio),
            ("probe_interval", probe_interval),
        ):
            check.number(name, value, low=0, inclusive=False)
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.probe_interval = probe_interval
        self.tokens = max_tokens
        #: Retries allowed and not yet answered.
        self.in_flight = 0
        self.denied = 0
        self._next_probe = float("-inf")

    @property
    def next_probe(self) -> float:
        """When the next probe may go out while the budget is spent."""
        return self._next_probe

    @property
    def spent(self) -> bool:
        """Retries are held back: the server has been failing most requests."""
        return self.tokens <= self.max_tokens / 2

    def record_success(self) -> None:
        if self.spent:
            self.tokens = self.max_tokens / 2
        self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)

    def record_failure(self) -> None:
        self.tokens = max(0.0, self.tokens - 1)

    def allows_retry(self, now: float, *, reserve: bool = True) -> bool:
        """Whether a retry may be sent now; if so, with ``reserve``, ``release()`` must follow
        its answer. A retry that shares a request with others (a batch) reserves nothing."""
        if self.tokens - self.in_flight > self.max_tokens / 2:
            self.in_flight += reserve
            return True
        if self.spent and now >= self._next_probe:
            self._next_probe = now + self.probe_interval
            self.in_flight += reserve
            return True
        self.denied += 1
        return False

    def release(self) -> None:
        """A retry allowed by ``allows_retry`` has its answer (its outcome is recorded apart)."""
        self.in_flight = max(0, self.in_flight - 1)
