"""Simulated jobs and where they are kept.

A job's state is a pure function of its creation time, duration and outcome, so nothing but the
creation is ever written: the terminal state is sticky by construction and a restarted server (with
a database) answers exactly as the old one would have.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NotRequired, TypedDict

from ._settings import JOB_ID

Outcome = Literal["completed", "error"]
Result = Literal["pending", "completed", "error"]

JOB_ID_RE = re.compile(JOB_ID)


def valid_job_id(job_id: str) -> bool:
    return JOB_ID_RE.fullmatch(job_id) is not None


def new_job_id() -> str:
    return f"job-{secrets.token_hex(8)}"


class JobViewDict(TypedDict):
    job_id: str
    result: Result
    progress: float
    elapsed: float
    eta: NotRequired[float]


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    created_at: float
    duration: float
    outcome: Outcome

    @property
    def completes_at(self) -> float:
        return self.created_at + self.duration

    def result_at(self, now: float) -> Result:
        return "pending" if now < self.completes_at else self.outcome

    def view(self, now: float) -> JobViewDict:
        """The job as ``GET /jobs/{id}`` shows it at server time ``now``."""
        elapsed = max(0.0, now - self.created_at)
        done = now >= self.completes_at
        progress = 1.0 if done or self.duration <= 0 else min(1.0, elapsed / self.duration)
        return {
            "job_id": self.job_id,
            "result": self.result_at(now),
            "progress": round(progress, 4),
            "elapsed": round(elapsed, 3),
            "eta": 0.0 if done else round(self.completes_at - now, 3),
        }


def draw(seed: int, job_id: str, purpose: str) -> float:
    """A uniform number in [0, 1) fixed by the seed, the job ID and what it is for.

    Hashing (rather than a shared random stream) keeps the draw independent of the order in
    which jobs are first seen, so concurrent clients cannot change a job's fate.
    """
    digest = hashlib.blake2b(f"{seed}\0{purpose}\0{job_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def auto_job(
    job_id: str, *, now: float, seed: int, completion_time: float, error_rate: float
) -> Job:
    """The job that ``--auto-create`` makes for an ID seen for the first time.

    Its duration is uniform in [0.5, 1.5] x completion_time; its outcome is ``error`` with
    probability error_rate. Both depend only on the seed and the ID.
    """
    duration = completion_time * (0.5 + draw(seed, job_id, "duration"))
    outcome: Outcome = "error" if draw(seed, job_id, "outcome") < error_rate else "completed"
    return Job(job_id, now, duration, outcome)


def prepare_database(db: Path) -> None:
    """Make ``db`` ready for workers that open it at once: in WAL mode, with its table.

    Turning a database to WAL takes a lock that SQLite does not wait for ("database is
    locked" at once): of 200 workers started two at a time on a new database, 37 failed so
    (and hypercorn then stops every worker). Done once, before any worker exists, it leaves
    the workers nothing to turn: the mode is kept in the file.
    """
    _connect(db).close()


def _connect(db: Path) -> sqlite3.Connection:
    # Autocommit: each creation is one durable statement, which is all a restart needs.
    connection = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY,"
        " created_at REAL NOT NULL, duration REAL NOT NULL, outcome TEXT NOT NULL)"
    )
    return connection


class JobStore:
    """Jobs in memory, written through to SQLite when a database path is given.

    With several worker processes sharing one database, a job created by another worker is not
    in this worker's memory: a miss falls through to the database before it becomes a 404.
    """

    def __init__(self, db: Path | None = None) -> None:
        self._jobs: dict[str, Job] = {}
        self._db: sqlite3.Connection | None = None
        if db is not None:
            self._db = _connect(db)
            for row in self._db.execute("SELECT job_id, created_at, duration, outcome FROM jobs"):
                self._jobs[row[0]] = Job(*row)

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self._jobs.values()))

    def get(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None and self._db is not None:
            row = self._db.execute(
                "SELECT job_id, created_at, duration, outcome FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is not None:
                job = self._jobs[job_id] = Job(*row)
        return job

    def add(self, job: Job) -> Job | None:
        """Store a new job; return None if the ID is taken (here or by another worker)."""
        if job.job_id in self._jobs:
            return None
        if self._db is not None:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO jobs (job_id, created_at, duration, outcome)"
                " VALUES (?, ?, ?, ?)",
                (job.job_id, job.created_at, job.duration, job.outcome),
            )
            if cur.rowcount == 0:
                self.get(job.job_id)  # another worker won the race: cache its copy
                return None
        self._jobs[job.job_id] = job
        return job

    def get_or_add(self, job: Job) -> Job:
        """The stored job with this ID, adding ``job`` if there is none (auto-create)."""
        return self.add(job) or self.get(job.job_id) or job

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
