"""The retry budget's arithmetic, apart from any HTTP."""

from __future__ import annotations

from video_translation_client._budget import RetryBudget


def test_failures_spend_and_successes_refill():
    """Retries pass while more than half the tokens remain; successes give tokens back."""
    budget = RetryBudget(max_tokens=10, probe_interval=100)
    for _ in range(5):
        budget.record_failure()
    assert budget.spent
    assert budget.allows_retry(0.0)  # the first probe
    budget.release()
    assert not budget.allows_retry(1.0)
    budget.record_success()
    assert not budget.spent
    assert budget.allows_retry(1.0)
    assert budget.denied == 1


def test_retries_in_flight_count_against_the_budget():
    """Retries decided at the same instant cannot all pass before any outcome is known."""
    budget = RetryBudget(max_tokens=10)
    allowed = sum(budget.allows_retry(0.0) for _ in range(100))
    assert allowed == 5
    for _ in range(allowed):
        budget.release()
    assert budget.allows_retry(0.0)


def test_a_dead_server_is_probed_once_a_second():
    """With the budget spent, one retry per probe interval goes out, the rest are held back."""
    budget = RetryBudget(max_tokens=20, probe_interval=1.0)
    for _ in range(20):
        budget.record_failure()
    allowed = []
    for step in range(100):  # 10 s, asked every 0.1 s
        now = step / 10
        if budget.allows_retry(now):
            allowed.append(now)
            budget.record_failure()
            budget.release()
    assert allowed == [float(s) for s in range(10)]


def test_recovery_lifts_the_budget_just_over_half():
    """The first success after an outage lets retries resume one at a time, then ramp up."""
    budget = RetryBudget(max_tokens=20, probe_interval=100)
    for _ in range(20):
        budget.record_failure()
    budget.record_success()
    assert not budget.spent
    assert budget.allows_retry(1.0)
    assert not budget.allows_retry(1.0)  # one at a time at first
    budget.record_success()
    budget.release()
    assert sum(budget.allows_retry(1.1) for _ in range(10)) == 2


def test_batched_retries_reserve_nothing():
    """Retries that share one batch request all pass while the budget is not spent."""
    budget = RetryBudget(max_tokens=10)
    assert all(budget.allows_retry(0.0, reserve=False) for _ in range(100))
    assert budget.in_flight == 0
    for _ in range(5):
        budget.record_failure()
    assert budget.allows_retry(0.0, reserve=False)  # the probe
    assert not budget.allows_retry(0.1, reserve=False)


def test_health_knows_answers_successes_and_silence():
    """The server is silent from the first attempt that got no answer until the next answer;
    a failing answer is still an answer."""
    from video_translation_client._state import Health

    health = Health()
    assert not health.ever_answered
    health.no_answer(1.0)
    health.no_answer(2.0)
    assert health.silent_since == 1.0
    assert health.silent_for(4.0) == 3.0
    health.answered(5.0, success=False)
    assert health.silent_since is None
    assert (health.last_answer, health.last_success) == (5.0, float("-inf"))
    health.answered(6.0, success=True)
    assert health.last_success == 6.0
    assert health.ever_answered
