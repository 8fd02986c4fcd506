"""A client-wide retry budget, after gRPC's retry throttling (gRFC A6).

A bucket of ``max_tokens``: a failed attempt takes one token, a successful one gives back
``token_ratio``. Retries are allowed only while more than half the tokens remain. With the
default ratio of 1, retries go on while failures stay under about half of the attempts (a flaky
server, even at 35% failures, keeps being retried); when the server is down, after about
``max_tokens / 2`` failures every job stops retrying and fails fast, so the requests sent stay
bounded by about one per job instead of ``max_retries + 1`` per job.

Throttling (429) is not counted: the adaptive rate limiter deals with it.
"""

from __future__ import annotations


class RetryBudget:
    def __init__(self, max_tokens: float = 20.0, token_ratio: float = 1.0) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {max_tokens!r}")
        if token_ratio <= 0:
            raise ValueError(f"token_ratio must be > 0, got {token_ratio!r}")
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.tokens = max_tokens
        self.denied = 0

    def record_success(self) -> None:
        self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)

    def record_failure(self) -> None:
        self.tokens = max(0.0, self.tokens - 1)

    def allows_retry(self) -> bool:
        if self.tokens > self.max_tokens / 2:
            return True
        self.denied += 1
        return False
