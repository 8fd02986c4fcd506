"""Workload W's bookkeeping: a slow creation cannot fail a run nor count against a policy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "load"))
from _workload import WorkJob


def test_lag_is_counted_from_completion_when_polling_started_on_time():
    """Created at 10 with 1.5 s to go (1 s of W plus 0.5 s to T0): it completes at 11.5;
    seen in an answer 1.6 s after its creation, that is 0.1 s late."""
    job = WorkJob("a", duration=1.0, outcome="completed", sent_duration=1.5, created=10.0)
    assert job.lag(elapsed=1.6, start=10.5) == pytest.approx(0.1)


def test_lag_is_counted_from_the_start_of_polling_when_creation_ran_late():
    """Creation ran until 12, past the job's completion at 11.5: no client could have seen it
    before polling started at 12, so an answer at 12.05 is 0.05 s late, not 0.55 s."""
    job = WorkJob("a", duration=1.0, outcome="completed", sent_duration=1.5, created=10.0)
    assert job.lag(elapsed=2.05, start=12.0) == pytest.approx(0.05)
    # A job still running when polling started is measured from its completion as usual.
    assert job.lag(elapsed=1.6, start=11.0) == pytest.approx(0.1)


def test_lag_is_never_negative_when_the_creation_reached_the_server_late():
    """Sent at 10, the creation reached the server at 10.05 (a busy machine); polling started
    late, at 12, and the first answer came at once, at 12.0 on the client's clock and 1.95 s
    after the server's creation: -0.05 s counted from the client's send, none in truth."""
    job = WorkJob("a", duration=1.0, outcome="completed", sent_duration=1.5, created=10.0)
    assert job.lag(elapsed=1.95, start=12.0) == 0.0
