"""Schedules: when to check a job, first and again after the server answered it pending.

A schedule is a policy object the job's decisions ask (:class:`~._decide.Schedule`); one per
client, asked for every job. :class:`Hinted` follows a server that says when to ask again or
holds checks, and backs off exponentially otherwise; :class:`Learned`, the default, is
:class:`Hinted` wherever the server hints or holds, and against a server that does neither
learns how long jobs take and checks where completions are likely.
"""

from __future__ import annotations

from ._backoff import MIN_HINT, clamp_hint
from ._config import StatusPollingConfig
from ._decide import Check, JobRecord, ServerView
from ._durations import DurationModel, Plan, plan
from ._http import Answer

#: The first guess of a job's median duration, in initial delays (5 s by default). Weak: the
#: model's prior lets the run's own jobs outweigh it within a few, and no job commits to a
#: far check placed by it (see REPLAN). Tried against 1, 3, 5 and 10 on the plain server's
#: lognormal workloads: 5 and 10 spent the fewest requests.
GUESS_DELAYS = 5.0
#: A job's first check comes at a share of the plan's first point at its start drawn in this
#: range, and no later than the plan as fitted now puts it (at the start, then, no later than
#: that point; a later fit may move it out up to the range's top). Jobs started
#: together all looked at one age: the fit saw one quantile of F, and every duration spread
#: that put it there fitted alone (from a short median and a narrow spread to a long median
#: and a wide one). Spread, the first checks show F over an interval, and its shape with it.
#: Earlier more than later: a first check late is lag for every job already done, a first
#: check early only a check more for some. At 2.4 checks a job (200 jobs of median 6 s and
#: sigma 0.5 started together, the same 40 runs), 0.6-1.4 put the short jobs' first looks up
#: to 6.4 s in and the lag p99 over the issue's 3.95 s in 11 runs, 0.6-1.1 in 1, at 0.13
#: requests a job more (the runs of the final code: below).
FIRST_RANGE = (0.6, 1.1)
#: Keller's plan aims at this share of ``checks_per_job`` (the even checks of a poor fit, at
#: all of it). Its count is of a smooth density; a job's checks are whole, the first one
#: spread, some brought forward by GROWTH and each later one replanned. On the plain server's
#: lognormal workloads (200 jobs of median 6 s started together, 40 runs each) this share
#: spends 3.10 requests a job for 3 at sigma 0.5 (2.79-3.63), 2.36 for 2.4 (2.13-2.74) and
#: 3.08 for 3 at sigma 1 (2.75-3.45).
BUDGET_SHARE = 0.82
#: A check the plan puts further off than this many initial delays (or eighths of the job's
#: age, at 0.5) is planned again then, from a fit of more jobs, rather than committed to.
REPLAN = 0.5
#: A job pending at age a is checked again by age (1 + GROWTH) a at the latest: doubling, so
#: that a job is found done no later than about its age at its last pending answer (at least
#: an initial delay, and the waits' spread). Early in a
#: run of jobs started together, a fit from a few answers may put the median at twice its
#: true value and the spread at twice its own (a ridge the first answers cannot tell from the
#: truth), and the plan then leaves jobs pending at 3 s unchecked until 8-9 s. With 3 (a
#: quadrupling), 10 to 13 of 40 runs of each of the issue's workloads missed their lag p99
#: target; with 1, none or one, at 0.04-0.27 requests a job more (one seeding of the runs,
#: the rest of the schedule as now). Squaring it while no job has finished (to search faster
#: for the scale of jobs of minutes) was tried and dropped: jobs arriving over 30 s then read
#: a lag p99 of 4.7 s against 2.8 s.
GROWTH = 1.0
#: Waits are spread by up to this share either way.
SPREAD = 0.1


class Hinted:
    """Server hints win; a server that holds checks is asked again at once (it holds the next
    one too); otherwise exponential backoff with jitter."""

    def after_pending(
        self, job: JobRecord, answer: Answer, now: float, server: ServerView
    ) -> Check:
        config = job.config
        hint = None
        if answer.hint is not None and config.hints:
            hint = clamp_hint(answer.hint, config)
        hold = job.hold(now, server)
        was_held = answer.held > 0 and answer.wait_applied is not None and not answer.cut_short
        # The first answer (or the first after a failure, retried short) was not held: from
        # the next check on, the server holds them.
        fresh = (job.checks == 1 or job.recovered) and not answer.cut_short
        if hold and fresh and hint is not None and not server.batched:
            # A held check that rides no batch takes a connection of its own, at both ends,
            # for as long as it is held. With the server's estimate of when the job ends, wait
            # half of it first: the answer comes as soon if the estimate holds, and a thousand
            # jobs started together do not open a thousand connections while their first
            # checks are still going out.
            job.backoff.reset()
            return Check(delay=hint / 2, hold=hold, unheld_delay=hint / 2)
        if hold and (was_held or fresh):
            job.backoff.reset()
            return Check(hold=hold)
        return Check(delay=hint if hint is not None else job.backoff.next_delay())

    def first(self, job: JobRecord, now: float, server: ServerView) -> Check:
        """At once: the caller sees pending, and the server's estimate, before anything else."""
        return Check()

    def finished(self, job: JobRecord, now: float) -> None:
        """Nothing to learn."""

    def ended(self, job: JobRecord) -> None:
        """Nothing kept."""


class Learned:
    """The schedule for a server that neither hints nor holds checks, :class:`Hinted`'s
    wherever it does: the client learns how long its jobs take (:mod:`._durations`) and
    checks where completions are likely, ``config.checks_per_job`` checks a job on average
    (Keller's checking density on the duration distribution learnt so far).

    - A job's first check comes near the plan's first point, not at once (a look at age 0 would
      be a check spent where nothing has finished), at a share of the plan's point at the
      job's start drawn in ``FIRST_RANGE``: a fit may bring it forward, and put it off no
      further than that share (at most 1.1 times the point). Jobs' first checks are spread
      over ages (``FIRST_RANGE``), so that the fit sees the shape of F early, not one
      quantile of it. While what the server offers is not known yet, one job looks at once and
      the others wait for its answer.
    - A fit that the data contradict (outside their nonparametric bounds at a quartile, as
      bimodal durations are) falls back to even checks, the median over ``checks_per_job``
      less a half, capped by ``max_delay``.
    - A job's own ``expected_duration`` is its median; the learnt spread is kept.
    - Waits are spread by up to ``SPREAD`` either way, so that jobs of one age do not check in
      step; ``max_delay``, ``max_attempts`` and the deadline bound them as any schedule's.
    """

    def __init__(self, config: StatusPollingConfig) -> None:
        self.checks = config.checks_per_job
        self.model = DurationModel(guess=GUESS_DELAYS * config.initial_delay)
        self._hinted = Hinted()
        #: The jobs pending now (right-censored), by identity: forgotten when they end.
        self._pending: dict[int, JobRecord] = {}
        #: Jobs not answered yet, by identity: the age their plan first put a check at.
        self._first_due: dict[int, float] = {}
        #: The job whose first look finds out what the server offers, by identity, and the
        #: 429s the client had when it took the look.
        self._looking: int | None = None
        self._look_refused = 0

    def first(self, job: JobRecord, now: float, server: ServerView) -> Check:
        if server.plain:
            return self._learned(job, now)
        if server.heard:
            return Check()
        if self._looking in (None, id(job)) or server.refused > self._look_refused:
            # The first look of the client: the others wait for what it shows of the server.
            # A 429 shows nothing (and delays only its own job): the next job to ask looks.
            self._looking, self._look_refused = id(job), server.refused
            return Check(alone=True)
        return Check(replan=True)

    def after_pending(
        self, job: JobRecord, answer: Answer, now: float, server: ServerView
    ) -> Check:
        self._pending[id(job)] = job
        self._first_due.pop(id(job), None)
        self.model.seen += 1
        if not server.plain:
            return self._hinted.after_pending(job, answer, now, server)
        return self._learned(job, now)

    def finished(self, job: JobRecord, now: float) -> None:
        self._pending.pop(id(job), None)
        self.model.add(job.pending_age or 0.0, now - job.started)

    def ended(self, job: JobRecord) -> None:
        self._pending.pop(id(job), None)
        self._first_due.pop(id(job), None)
        if self._looking == id(job):
            # Ended (its deadline, its caller's scope) before the server showed anything: the
            # next job to ask looks instead.
            self._looking = None

    def _learned(self, job: JobRecord, now: float) -> Check:
        """The next check by the plan. Not committed to when it is far: the job looks again
        at the plan after a while (a quarter of its age), by then fitted to more jobs, so
        that a fit misled early on (a few short jobs, a guess) does not hold a job back."""
        config = job.config
        age = now - job.started
        # A job that has been pending a while is next checked by 1 + GROWTH times its age at the
        # latest: early on, a fit that puts it deep in the left tail (few jobs seen yet) would
        # otherwise leave it unchecked for many times its age.
        due = self._due(job, now)
        seen = job.pending_age
        if seen is not None:
            due = min(due, seen + max(config.initial_delay, GROWTH * seen))
        else:
            # A job's first check is put off no later than its plan at the start put it: while
            # few jobs have finished, the jobs still pending move the fit's median up, and
            # every job's first look with it, past the early finishers (seen seconds late).
            first = self._first_due.get(id(job))
            if first is None:
                earliest, latest = FIRST_RANGE
                spread = earliest + (latest - earliest) * job.random()
                first = self._first_due[id(job)] = due * spread
            due = min(due, first)
        # No longer between checks than max_delay, however far the plan puts the next: the
        # looks again at the plan on the way there are not checks.
        due = min(due, (seen or 0.0) + config.max_delay)
        due -= age
        replan_after = max(config.initial_delay * REPLAN, age * REPLAN / 4)
        if due > replan_after:
            return Check(delay=replan_after, replan=True)
        return Check(delay=self._spread(job, max(0.0, due)))

    def _spread(self, job: JobRecord, delay: float) -> float:
        delay *= 1 - SPREAD + 2 * SPREAD * job.random()
        return min(job.config.max_delay, max(MIN_HINT, delay))

    def _due(self, job: JobRecord, now: float) -> float:
        """The age at which the plan checks the job next, from the fit as it is now."""
        fit = self.model.fitted(lambda: [j.pending_age or 0.0 for j in self._pending.values()])
        scale = job.expected if job.expected else fit.median
        age = job.pending_age or 0.0
        if self.model.poor:
            return age + scale / (self.checks - 0.5)
        return self._plan(fit.sigma).next(age, scale)

    def _plan(self, sigma: float) -> Plan:
        """The plan for this spread rounded to 0.05 (:func:`plan` keeps them)."""
        return plan(max(0.05, round(sigma * 20) / 20), self.checks * BUDGET_SHARE)
