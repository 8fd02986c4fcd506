"""The job model and its store, including the SQLite file shared by restarts and workers."""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3

import hypercorn.run
from hypercorn.config import Config
from hypothesis import given
from hypothesis import strategies as st

from sim_server import Job
from sim_server._jobs import JobStore, auto_job, valid_job_id
from sim_server._protocol import parse_wait
from sim_server._server import run_server
from sim_server._settings import ServerSettings
from tests import strategies
from tests.helpers import stop_signals_kept

times = st.floats(min_value=0, max_value=1e7, allow_nan=False)


@given(created=times, duration=st.floats(min_value=0, max_value=604800), now=times)
def test_view_is_always_in_range(created, duration, now):
    """Progress in [0, 1], elapsed and eta >= 0, result consistent with eta, for any time."""
    view = Job("j", created, duration, "completed").view(now)
    assert 0.0 <= view["progress"] <= 1.0
    assert view["elapsed"] >= 0
    assert view["eta"] >= 0
    assert (view["result"] == "pending") == (now < created + duration)


@given(duration=st.floats(min_value=0.001, max_value=1000), a=times, b=times)
def test_terminal_state_is_sticky(duration, a, b):
    """Once final, a job stays final: later times never show it pending."""
    job = Job("j", 0.0, duration, "error")
    early, late = sorted((a, b))
    if job.result_at(early) != "pending":
        assert job.result_at(late) == "error"


@given(strategies.text())
def test_parse_wait_never_raises(value):
    """Any Prefer header value gives a non-negative finite wait or None."""
    wait = parse_wait([value])
    assert wait is None or (math.isfinite(wait) and wait >= 0)


def test_parse_wait_examples():
    """wait is found among other preferences, in any case, quoted or with parameters."""
    assert parse_wait(["respond-async, wait=10"]) == 10
    assert parse_wait(['WAIT="2.5"']) == 2.5
    assert parse_wait(["wait=5;x=y"]) == 5
    assert parse_wait(["handling=lenient", "wait=3"]) == 3
    assert parse_wait(["wait=-3"]) is None


@given(strategies.text(max_size=200))
def test_valid_job_id_matches_the_rule(job_id):
    """IDs are valid exactly when 1 to 128 characters from [A-Za-z0-9._:-]."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")
    assert valid_job_id(job_id) == (1 <= len(job_id) <= 128 and set(job_id) <= allowed)


def test_store_survives_reopen(tmp_path):
    """Jobs written to the database are all there, unchanged, when it is opened again."""
    db = tmp_path / "jobs.db"
    store = JobStore(db)
    jobs = [Job(f"j{i}", 1000.0 + i, 5.0, "error" if i % 3 else "completed") for i in range(50)]
    for job in jobs:
        assert store.add(job) is job
    store.close()
    again = JobStore(db)
    assert sorted(again, key=lambda j: j.job_id) == sorted(jobs, key=lambda j: j.job_id)
    assert again.add(jobs[0]) is None
    again.close()


def test_stores_sharing_a_database_see_each_other(tmp_path):
    """Two stores on one file (two workers): each finds, and never remakes, the other's jobs."""
    db = tmp_path / "jobs.db"
    one, two = JobStore(db), JobStore(db)
    job = Job("shared", 5.0, 1.0, "completed")
    assert one.add(job) is job
    assert two.get("shared") == job
    assert two.add(Job("shared", 6.0, 9.0, "error")) is None
    auto = two.get_or_add(Job("other", 7.0, 2.0, "completed"))
    assert one.get_or_add(Job("other", 8.0, 3.0, "error")) == auto
    one.close()
    two.close()


def test_a_server_of_several_workers_prepares_its_database_before_they_start(
    tmp_path, monkeypatch, capsys
):
    """Workers turning a new database to WAL at once failed ("database is locked": SQLite does
    not wait for that lock) and hypercorn then stopped them all, one run in a few hundred of
    `--workers 2`. The master turns it before any worker starts; a worker then opens it even
    while another writes."""
    db = tmp_path / "jobs.db"
    opened: list[JobStore] = []

    def workers(config: Config) -> int:
        os.close(int(config.bind[0].removeprefix("fd://")))
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as reader:
            assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as writer:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("INSERT INTO jobs VALUES ('other', 1.0, 2.0, 'completed')")
            opened.append(JobStore(db))
            writer.execute("COMMIT")
        return 0

    monkeypatch.setattr(hypercorn.run, "run", workers)
    with stop_signals_kept():
        assert run_server(ServerSettings(host="127.0.0.1", port=0, workers=2, db=db)) == 0
    assert capsys.readouterr().out.startswith("http://127.0.0.1:")
    assert opened[0].get("other") == Job("other", 1.0, 2.0, "completed")
    opened[0].close()


def test_auto_job_bounds():
    """Auto-created durations lie in [0.5, 1.5] x completion time; error rate 0 never errs."""
    jobs = [auto_job(f"a{i}", now=0, seed=1, completion_time=8, error_rate=0) for i in range(500)]
    assert all(4 <= j.duration <= 12 for j in jobs)
    assert {j.outcome for j in jobs} == {"completed"}
