"""The retry budget's arithmetic, apart from any HTTP."""

from __future__ import annotations

from video_translation_client._budget import RetryBudget


def test_failures_spend_and_successes_refill():
    """Retries pass while more than half the tokens remain; successes give tokens back."""
    budget = RetryBudget(max_tokens=10, refill=0)
    for _ in range(5):
        budget.record_failure(0.0)
    assert not budget.allows_retry(0.0)
    budget.record_success(0.0)
    assert budget.allows_retry(0.0)
    assert budget.denied == 1
    assert budget.last_success == 0.0


def test_an_allowed_retry_holds_a_token_until_released():
    """Retries decided at the same instant cannot all pass before any outcome is known."""
    budget = RetryBudget(max_tokens=10, refill=0)
    allowed = sum(budget.allows_retry(0.0) for _ in range(100))
    assert allowed == 5
    for _ in range(allowed):
        budget.release()
    assert budget.tokens == 10


def test_time_refills_the_bucket_so_a_dead_server_is_probed():
    """With every request failing, the budget still lets about `refill` retries a second."""
    budget = RetryBudget(max_tokens=20, refill=1.0)
    for _ in range(20):
        budget.record_failure(0.0)
    assert not budget.allows_retry(0.0)
    assert not budget.allows_retry(9.5)  # 9.5 tokens: not above half yet
    assert budget.allows_retry(10.5)
    assert budget.tokens <= 20
