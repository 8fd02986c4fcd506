"""What the routes share, one per app: settings, jobs, metrics, faults, rate limit, and the
one way a status is answered (hold, record, hint). It never reads a request: the routes pass
it what they read."""

from __future__ import annotations

import dataclasses
import random
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import anyio

from ._faults import FaultInjector
from ._jobs import Job, JobStore, JobViewDict, Outcome, auto_job, valid_job_id
from ._metrics import Metrics
from ._protocol import ID_RULE, ApiError, parse_wait, retry_after
from ._ratelimit import TokenBuckets
from ._settings import ServerSettings

#: Where an app keeps its :class:`SimState` (``app.extensions``).
EXTENSION = "sim_server"
#: Settings a running server takes changes of (the original design's tests set them).
LIVE_SETTINGS = frozenset({"completion_time", "error_rate"})


class SimState:
    """Everything the routes share; one per app."""

    def __init__(self, settings: ServerSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        #: The seed in force: the settings' own, or one drawn afresh for this run.
        self.seed = settings.seed if settings.seed is not None else secrets.randbits(64)
        self.clock = clock
        self.key = settings.api_key.encode() if settings.api_key else None
        self.store = JobStore(settings.db)
        self.metrics = Metrics()
        self.injector = FaultInjector(settings.fault_rates(), self.seed)
        # A stream apart from the faults', so creating jobs cannot shift the fault sequence.
        self.outcomes = random.Random(f"outcomes:{self.seed}")
        self.buckets = (
            TokenBuckets(settings.rate_limit, settings.effective_burst, clock)
            if settings.rate_limit is not None
            else None
        )
        self._holds: set[anyio.CancelScope] = set()
        self._released = False
        self.started_at = clock()
        self.default_job = self._default_job()

    def _default_job(self) -> Job:
        return Job("default", self.started_at, self.settings.completion_time, self.new_outcome())

    def change(self, **changes: Any) -> None:
        """Change settings of the running server: ``completion_time`` and ``error_rate`` (the
        default job is made again with them, as are jobs created from now on). Validated as
        at construction; any other setting raises rather than being ignored."""
        fixed = set(changes) - LIVE_SETTINGS
        if fixed:
            names = ", ".join(sorted(fixed))
            raise AttributeError(
                f"{names} cannot be changed on a running server; "
                f"only {', '.join(sorted(LIVE_SETTINGS))} can"
            )
        self.settings = dataclasses.replace(self.settings, **changes)
        self.default_job = self._default_job()

    # -- jobs --------------------------------------------------------------------------------

    def new_outcome(self) -> Outcome:
        return "error" if self.outcomes.random() < self.settings.error_rate else "completed"

    def lookup(self, job_id: str) -> Job | None:
        job = self.store.get(job_id)
        if job is None and self.settings.auto_create:
            s = self.settings
            job = self.store.get_or_add(
                auto_job(
                    job_id,
                    now=self.clock(),
                    seed=self.seed,
                    completion_time=s.completion_time,
                    error_rate=s.error_rate,
                )
            )
            self.metrics.jobs_created.labels("auto").inc()
        return job

    def require(self, job_id: str) -> Job:
        if not valid_job_id(job_id):
            raise ApiError(400, "invalid_job_id", f"invalid job ID {job_id[:140]!r}: {ID_RULE}")
        job = self.lookup(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"no job with ID {job_id!r}")
        return job

    def view(self, job: Job, now: float) -> JobViewDict:
        """The job as the API shows it: without its ETA when hints are off."""
        view = job.view(now)
        if not self.settings.hints:
            del view["eta"]
        return view

    # -- answering a status --------------------------------------------------------------------

    async def answer(self, jobs: list[Job], prefer: Iterable[str]) -> tuple[float, dict[str, str]]:
        """The one way a status is answered, for one job or a batch: held while every job is
        pending if the client prefers to wait (and the server allows it), each check recorded,
        and a hint of when to ask again while any is pending. Returns the instant the answer
        describes and its headers."""
        headers: dict[str, str] = {}
        wait = self._applied_wait(prefer)
        if wait is not None:
            await self._hold(jobs, wait)
            headers["Preference-Applied"] = f"wait={wait:g}"
        now = self.clock()
        etas = []
        for job in jobs:
            final = job.result_at(now) != "pending"
            self.metrics.record_check(job.job_id, final=final)
            if not final:
                etas.append(job.completes_at - now)
        if etas and self.settings.hints:
            headers.update(retry_after(min(etas)))
        return now, headers

    def _applied_wait(self, prefer: Iterable[str]) -> float | None:
        if self.settings.max_wait <= 0:
            return None
        wait = parse_wait(prefer)
        return None if wait is None else min(wait, self.settings.max_wait)

    async def _hold(self, jobs: list[Job], wait: float) -> None:
        """Hold a long-poll until one of ``jobs`` reaches its final state or ``wait`` passes.

        One timed sleep per held request, never a polling loop: the event loop's timer heap
        wakes it at the exact moment the job completes.
        """
        now = self.clock()
        if wait <= 0 or self._released or not jobs:
            return
        if any(j.result_at(now) != "pending" for j in jobs):
            return
        deadline = now + wait
        target = min(min(j.completes_at for j in jobs), deadline)
        self.metrics.long_polls.inc()
        self.metrics.long_polls_held.inc()
        with anyio.CancelScope() as scope:
            self._holds.add(scope)
            try:
                # The loop only absorbs a wall clock that drifts from the monotonic sleep clock.
                while (delta := target - self.clock()) > 0:  # noqa: ASYNC110 - a timer, not a flag
                    await anyio.sleep(delta)
            finally:
                self._holds.discard(scope)
                self.metrics.long_polls_held.dec()

    def release_holds(self) -> None:
        """Answer every held long-poll now, and hold no more: the server is shutting down.

        Without this a graceful shutdown would wait for the holds, then cut them with a 500.
        """
        self._released = True
        for scope in list(self._holds):
            scope.cancel()


def sim_state(app: Any) -> SimState:
    """The state of a Quart app made by ``create_app``."""
    state: SimState = app.extensions[EXTENSION]
    return state
