"""Schedules: when to check a job again after the server answered it pending.

A schedule is a policy object the job's decisions ask (:class:`~._decide.Schedule`); one per
client, asked for every job. :class:`Hinted` is the schedule for a server that says when to
ask again or holds checks, and the backoff for one that does neither.
"""

from __future__ import annotations

from ._backoff import clamp_hint
from ._decide import Check, JobRecord, ServerView
from ._http import Answer


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
