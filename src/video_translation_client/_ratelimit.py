"""A shared, adaptive, FIFO token-bucket rate limiter for anyio (trio and asyncio).

No maintained limiter for trio/anyio does what many-job polling needs (a pause until a
server's ``Retry-After``, and a rate that finds the server's own), so this is written here.

- **Token bucket**: ``burst`` tokens, refilled at the current rate; one token per request.
  Over any interval of length t, at most ``burst + rate * t`` acquisitions succeed. With no
  rate (``None``) nothing is paced until the server throttles: from then on, its own rate.
- **FIFO**: callers are served in the order they asked (anyio's ``Lock`` is fair), so no job
  starves behind luckier ones.
- **Pause**: ``pause(seconds)`` stops everyone until then (a 429's ``Retry-After``, or a
  ``cooldown`` for one that says nothing of when to come back).
- **Adaptive**: the limiter counts the answers the server accepts (``accepted()``) and the
  429s it gets (``refused()``), and learns the server's rate by one law:

  - *An overrun is told from refusals at random by a binomial test*: refusals since the
    first 429 of a run of them (429s ``OVERRUN_GAP`` apart at most) are an overrun when
    the share of requests a server refuses at random (the *base share*: 1 in ``PRIOR``
    until trials teach it) explains as many with a chance below ``ALPHA`` (the Chernoff
    bound). The test looks back ``ANSWERS_MEMORY``, or over ``PRIOR`` requests at the
    limiter's rate if that is longer (under 10 requests a second), the gap stretched alike.
    Random 429s are common (concurrency caps, proxies) and lower nothing once learnt.
  - *While overrun, what the server accepts is its rate*, whatever its ``RateLimit-Policy``
    says (a stale or wrong one cannot pin the rate): the rate is cut to ``MARGIN`` of the
    answers accepted per second since the overrun began (over ``MIN_MEASURE`` at least),
    and since the last pause longer than a ``cooldown`` (the server's bucket refilled in
    it); with fewer than ``MEASURE_ANSWERS``, halved (with no rate to halve, cut only once
    as many are refused, most of what was sent); at most once per ``cooldown``.
  - *Every measured cut is a trial*, the rate held while two tests at the same level judge
    it (from half of it, climbing back within a ``cooldown``: the overrun emptied the
    server's bucket, and requests arriving bunched would be refused at the measure itself):
    a limit, if fewer are refused under the cut than in the window that started it
    (G-test); random, if more are refused under it than the base share explains. Outcomes
    within a ``cooldown`` of the cut, and those of the requests in flight at it (first in,
    first out), answer requests sent before it, and are not counted. A
    limit's measure stands (with nothing refused under the cut, the rate goes back to just
    under all that was measured: the cut left out a token the server's bucket may have
    held); refusals at random restore the rate from before the first cut no trial
    confirmed (within a ``cooldown`` or so), and teach the base share.
  - *A refusal holds every request for its* ``Retry-After`` (a ``cooldown`` if it says
    nothing) only where a limit is likely:
    once a trial has found one, or while more requests are refused than accepted.
    Otherwise only its own request waits (the client sees to that).
  - *A lowered rate allows no burst*: the server that lowered it takes bursts of a size we
    do not know.
  - *Without 429s the rate probes upwards* from where it settled, slowly at first and
    faster the longer none comes (``probe`` times the square of the seconds since), up to
    the configured rate: a server that raises its limit is found. A 429 past the measure
    sends the rate back under it, and a probe ended there or by a halving, or a measure
    within two answers of the last one (the counting error of a token at either end of
    its span), makes the next one half as steep (the limit is most likely where it was).
    A probe that doubles the rate, the mirror of a halving, finds no limit left: the rate
    goes back to the configured one, none if none was.

Six tuned constants, each named below with why; the rest is the cooldown, the counting
error of a measure (and the fewest answers a measure is taken from, which follows from it),
and halving.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import anyio
from anyio.lowlevel import RunVar

from . import _validate as check

_EPSILON = 1e-9
#: The share of the measured server rate the limiter settles at: clocks differ.
MARGIN = 0.97
#: Seconds without a 429 after which an overrun is over: the next 429 starts a new one, whose
#: rate is measured afresh (between overruns the server's bucket refills, and answers then
#: say nothing of its rate). Stretched with the memory (``RateLimiter._memory``).
OVERRUN_GAP = 2.0
#: The shortest span a rate is measured over: answers come in clumps (a pool's connections
#: answered together), and a few over an instant would measure any rate at all.
MIN_MEASURE = 0.1
#: Seconds of answers remembered for measuring (at least: see ``RateLimiter._memory``).
ANSWERS_MEMORY = 5.0
#: Refusals show an overrun when the base share (refusals at random, learnt from trials
#: refuted, a prior of 1 in ``PRIOR`` before any) explains as many with a chance below
#: ``ALPHA``: one run in a thousand a false alarm, which one trial then takes back.
PRIOR = 50
ALPHA = 1e-3
#: Not tuned: a rate measured as (answers - 1) / span errs by a token at each end of the
#: span, two answers' worth.
_COUNTING_ERROR = 2
#: Not tuned: the fewest answers a measure is taken from, so that its counting error is at
#: most half of what it counts, no coarser than the halving that stands in for a measure
#: with fewer (5).
MEASURE_ANSWERS = 1 + 2 * _COUNTING_ERROR


@dataclass(slots=True)
class _Trial:
    """A cut on trial: the rate holds under a measure while the refusals under it are judged
    a limit's (fewer than in the window that started it) or random (more than the base
    share explains); see :meth:`RateLimiter._judge`."""

    started: float
    #: The rate in force before it: where a refuted trial goes back to.
    before: float
    #: The refusals and outcomes that put it on trial: random, if it is refuted.
    window: tuple[int, int]
    #: The measure without the token the bucket may have held: settled under once nothing
    #: is refused under the cut.
    unbiased: float = 0.0
    #: The outcomes reported before the first of a request sent under the cut (the requests
    #: in flight at the cut answered first).
    sent_before: int = 0
    #: The outcomes since the grace for requests sent before it: answers, refusals.
    answers: int = 0
    refused: int = 0


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    #: The configured rate (requests/s), ``inf`` when unlimited.
    rate: float
    #: The rate in force now, lowered by throttling.
    current_rate: float
    burst: int
    #: Acquisitions granted.
    acquired: int
    #: Callers waiting right now.
    waiting: int
    #: Seconds the line of callers was held for the rate (a token, or a pause), summed: the
    #: time the rate cost, not the time callers spent queued behind one another.
    wait_time: float
    #: Times the rate was lowered.
    decreases: int
    #: Seconds left of a pause, 0 if none.
    paused_for: float
    #: The rate the server was last measured to accept when it throttled, if it has.
    server_rate: float | None
    #: Whether a cut is on trial: held while its refusals are judged a limit's or random.
    trial: bool = False
    #: The share of requests the server refuses at random, as learnt from trials (a prior of
    #: 1 in ``PRIOR`` before any).
    base_share: float = 0.0


class Limiter(Protocol):
    """What a client asks of its rate limiter: :class:`RateLimiter`, or one of your own
    (``VideoTranslationClient(rate_limiter=...)``), such as a limit shared by many processes.

    The client reports each request's outcome and nothing else: whether a refusal means the
    server is overrun (and every request should wait out its ``Retry-After``) or is one at
    random (only the refused request waits, which the client sees to) is the limiter's call.
    """

    #: The configured rate (requests/s), ``inf`` when unlimited.
    rate: float

    async def acquire(self) -> None:
        """Return when the next request may go."""

    def accepted(self) -> None:
        """The server took a request (any answer but a 429)."""

    def refused(self, retry_after: float | None = None, quota: float | None = None) -> None:
        """The server refused a request with 429. ``retry_after`` is its hint (seconds,
        already bounded by the client's ``max_hint``), ``quota`` the rate its
        ``RateLimit-Policy`` declares, if it says."""

    def statistics(self) -> RateLimiterStatistics:
        """A snapshot, for ``client.statistics()``."""


class RateLimiter:
    """``await limiter.acquire()`` before each request; share one limiter among many tasks."""

    def __init__(
        self,
        rate: float | None,
        burst: int | None = None,
        *,
        probe: float = 0.002,
        cooldown: float = 0.25,
        min_rate: float | None = None,
    ) -> None:
        check.optional_number("rate", rate, low=0, inclusive=False)
        self.rate = math.inf if rate is None else float(rate)
        if burst is None:
            burst = 1 if rate is None else max(1, math.ceil(self.rate))
        self.burst = check.integer("burst", burst, low=1)
        self.probe = check.number("probe", probe, low=0, inclusive=False)
        #: The probe now: it slows each time a probe finds the server's rate where it was.
        self._probe = self.probe
        self.cooldown = check.number("cooldown", cooldown, low=0)
        check.optional_number("min_rate", min_rate, low=0, inclusive=False)
        self.min_rate = min(self.rate, 1.0) if min_rate is None else float(min_rate)
        self._tokens = float(burst)
        self._updated: float | None = None
        self._current = self.rate
        #: Where the rate climbs back to quickly after a decrease, and probes on from.
        self._target = self.rate
        self._server_rate: float | None = None
        self._decreased_at = -math.inf
        #: When the rate last settled under a measure: a halving, which measured nothing, does
        #: not restart the overrun's measure (the client sent above the server's rate all along).
        self._measured_at = -math.inf
        self._paused_until = -math.inf
        #: The end of the last long pause (see :meth:`pause`): rates are measured after it.
        self._long_pause_until = -math.inf
        #: The first 429 of the current overrun, and the last one.
        self._overrun_since = self._last_throttled = -math.inf
        #: The rate before the first cut that no trial has found a limit's since: where
        #: refusals found random go back to.
        self._unconfirmed_from = -math.inf
        #: Whether a probe past the last measure was ended in the current overrun.
        self._probe_ended = False
        self._refused: deque[float] = deque()
        #: The trial on now, if any; when the last one ended; the refusals the next waits for.
        self._trial: _Trial | None = None
        self._trial_ended = -math.inf
        #: Outcomes seen on trials, and the refusals among them: the base share's evidence.
        self._base_refused = 0
        self._base_outcomes = 0
        #: Whether a trial has found a limit: from then on, every overrun pauses everyone.
        self._confirmed = False
        self._answers: deque[float] = deque()
        #: The first answer on this clock: what the server took "over the last seconds" is
        #: taken over no more seconds than answers have been coming.
        self._first_answer = math.inf
        # Per event loop: one limiter may serve a trio run and later an asyncio one. A run
        # with a lock is one the limiter has joined (see :meth:`_joined`).
        self._lock: RunVar[anyio.Lock | None] = RunVar("RateLimiter lock", default=None)
        self._acquired = 0
        #: Outcomes reported (answers and refusals): those past the requests acquired are of
        #: requests sent since.
        self._reported = 0
        self._waiting = 0
        self._wait_time = 0.0
        self._decreases = 0

    def __repr__(self) -> str:
        return f"<RateLimiter rate={self.rate:g}/s burst={self.burst}>"

    def _now(self) -> float:
        """The running loop's clock, the run joined first (see :meth:`_joined`)."""
        self._joined()
        return anyio.current_time()

    def _joined(self) -> anyio.Lock:
        """This run's lock, made when the limiter first serves the run. Each run (a second
        ``trio.run``, an ``asyncio.run``) has a clock of its own, started anywhere: the times
        kept from an earlier run (the bucket's refill, a pause, the refusals and answers
        remembered, a trial) would hold requests for as long as the clocks differ. They are
        dropped then; the rate learnt is kept, and probes on as if just settled. (A run
        variable costs microseconds to read: asked once an acquisition, not at each look at
        the clock.)"""
        lock = self._lock.get()
        if lock is None:
            lock = anyio.Lock()
            self._lock.set(lock)
            now = anyio.current_time()
            self._updated = None
            self._tokens = self._burst_now()  # a new run starts as a new limiter does: full
            self._paused_until = self._long_pause_until = -math.inf
            self._overrun_since = self._last_throttled = self._trial_ended = -math.inf
            self._measured_at = -math.inf
            self._decreased_at = now if self._current < self.rate else -math.inf
            self._refused.clear()
            self._answers.clear()
            self._first_answer = math.inf
            if self._trial is not None:  # judged on another clock: not judged
                self._target = max(self._target, self._trial.before)
                self._server_rate = None
                self._trial = None
        return lock

    def current_rate(self) -> float:
        self._refill(self._now())
        return self._current

    def _burst_now(self) -> float:
        """The bucket's size: the configured burst, none while the rate is lowered. The
        server that made us lower it takes bursts of its own size, which we do not know: a
        bucket shrunk in proportion (72 tokens at 72/s, from 300 at 300/s) filled in a lull
        of the client's own work and sent them at once, refused past the server's burst of
        10 (a tenth of a run's requests refused, and the trial of a limit refuted)."""
        return 1.0 if self._current < self.rate else float(self.burst)

    def _refill(self, now: float) -> None:
        if self._current == math.inf:  # no limit, configured or learnt
            self._tokens = float(self.burst)
            self._updated = now
            return
        if self._updated is None:
            self._updated = now
            return
        elapsed = now - max(self._updated, self._paused_until)
        self._updated = max(self._updated, now)
        if elapsed <= 0:
            return
        before = self._current
        if self._current < self._target:
            # Back to just under the server's rate within a cooldown or so...
            back = min(1.0, elapsed / self.cooldown) if self.cooldown else 1.0
            self._current += (self._target - self._current) * back
            if (self._target - self._current) * self.cooldown < 1:
                # ...there once less than a request a cooldown short of it (never otherwise):
                # the probe starts from there.
                self._current = self._target
        if self._current >= self._target and self._trial is None:
            # ...then beyond it, slowly at first, faster the longer no 429 comes (a trial
            # holds the rate where it settled).
            since = now - max(self._decreased_at, self._trial_ended)
            self._current = max(self._current, self._target * (1 + self._probe * since * since))
        if self._current >= 2 * self._target:
            # Twice what the server was last found to take, and not a refusal: its limit
            # is gone, or far above the client's needs (a halving's mirror).
            self._current = self.rate
        self._current = min(self.rate, self._current)
        # The trapezoid: exact for a linear climb, close enough for the rest.
        self._tokens = min(self._burst_now(), self._tokens + elapsed * (before + self._current) / 2)

    async def acquire(self) -> None:
        """Wait for a token, in FIFO order with the other callers."""
        lock = self._joined()
        self._waiting += 1
        try:
            async with lock:
                while True:
                    now = anyio.current_time()
                    self._refill(now)
                    wait = self._paused_until - now
                    if wait <= 0:
                        # The tolerance: a refill of 0.02 s x 50/s sums to 0.99999...; waiting
                        # for the missing 1e-16 of a token would be a sleep too short for the
                        # clock to see, forever.
                        if self._tokens >= 1 - _EPSILON:
                            self._tokens = max(0.0, self._tokens - 1)
                            self._acquired += 1
                            return
                        wait = (1 - self._tokens) / self._current
                    # Only this sleep is time the rate cost: callers queued behind the lock
                    # wait for one another, and summing their hand-offs would count the same
                    # second once per caller (and something when there is no rate at all).
                    try:
                        await anyio.sleep(wait)
                    finally:
                        self._wait_time += anyio.current_time() - now
        finally:
            self._waiting -= 1

    def pause(self, seconds: float) -> None:
        """Nobody acquires for ``seconds`` from now (extends, never shortens, a pause), and no
        tokens gather meanwhile: the server's own bucket is empty, and a burst at the end of
        the pause would only be refused again."""
        now = self._now()
        self._refill(now)
        self._paused_until = max(self._paused_until, now + max(0.0, seconds))
        if seconds > self.cooldown:
            # Long: longer than answers to requests sent before a change take to come back,
            # and what the server accepts just after (its bucket refilled) says nothing of
            # its rate.
            self._long_pause_until = max(self._long_pause_until, now + seconds)
        # One request goes as the pause ends: the server said it would take one then.
        self._tokens = 1.0

    def refused(self, retry_after: float | None = None, quota: float | None = None) -> None:
        """A 429: every request waits out its ``retry_after`` while the server is overrun, or a
        ``cooldown`` if it says nothing of when to come back."""
        if self.throttled(quota):
            if retry_after is not None:
                self.pause(retry_after)
            elif self.cooldown:  # a pause of nothing would hand out a token
                self.pause(self.cooldown)

    def accepted(self) -> None:
        """The server accepted a request (any answer but a 429): what the rate is measured by."""
        now = self._now()
        self._answers.append(now)
        _forget_before(self._answers, now - self._memory())
        self._first_answer = min(self._first_answer, now)
        trial = self._trial
        self._reported += 1
        if trial is not None and self._under(now, trial):
            trial.answers += 1
            self._judge(now, trial)

    def throttled(self, quota: float | None = None) -> bool:
        """The server said 429: lower the rate if it is overrun, at most once per
        ``cooldown``; True if every request should wait out this refusal's pause.

        ``quota``, the rate a ``RateLimit-Policy`` declares, is not trusted: a server that
        misdeclares (or a stale policy) would pin the rate far below what it accepts. The rate
        the server is seen to accept while it refuses more than chance explains is the
        measure, and the cut to it is on trial until the refusals under it show a limit or
        chance (see the module's law).
        """
        now = self._now()
        self._refill(now)
        self._refused.append(now)
        self._reported += 1
        memory = self._memory()
        _forget_before(self._refused, now - memory)
        if now - self._last_throttled > OVERRUN_GAP * memory / ANSWERS_MEMORY:
            self._overrun_since = now
            self._probe_ended = False
        self._last_throttled = now
        trial = self._trial
        known = self._server_rate
        if trial is not None:
            if self._under(now, trial):
                trial.refused += 1
                self._judge(now, trial)
            return False
        overrun = max(self._overrun_since, now - memory)
        if now - self._decreased_at < self.cooldown:
            # The answer to a request sent before the last decrease, most likely.
            thick, accepted, refused = self._thick(overrun)
            return thick and self._pauses(refused, accepted)
        # Measured since the last decrease, if it came in this overrun (answers before it
        # came at another rate), and since the last long pause (which held every request
        # longer than the server's burst would make up for after it).
        since = max(overrun, self._measured_at, self._long_pause_until, self._trial_ended)
        thick, accepted, refused = self._thick(since)
        if thick:
            # Whether every request waits is judged over the whole overrun, not over the
            # span a rate is measured on: that restarts at each long pause, and the first
            # outcomes after one (a burst answered at one instant) were two refusals before
            # two answers often enough, at 20% refusals at random, for pauses to follow one
            # another for good (200 jobs of 2 s took 25 s, not 7).
            overrun_accepted, overrun_refused = (
                (accepted, refused) if since == overrun else self._counts(overrun)
            )
            pause = self._pauses(overrun_refused, overrun_accepted)
            if accepted >= MEASURE_ANSWERS and now - since >= MIN_MEASURE:
                # A cut on trial: under a limit, refusals stop under what the server
                # accepted; refusals at random go on, refute it and teach the base share.
                shown = refused, refused + accepted
                before = max(self._current, self._target, self._unconfirmed_from)
                self._measured(now, self._accepted_rate(accepted, now - since), now - since)
                self._trial = _Trial(
                    now,
                    before,
                    window=shown,
                    unbiased=accepted / (now - since),
                    sent_before=max(self._reported, self._acquired),
                )
                return pause
            elif self._current < math.inf or (
                overrun_refused >= MEASURE_ANSWERS and overrun_refused > overrun_accepted
            ):
                # Too little to measure yet. With no rate to halve, a cut without a measure
                # needs as many refusals as a measure needs answers, most of what was sent:
                # a client with none checks a job or two a second at the start of a run (the
                # learning schedule's probes), and 3 refusals in 4 at 20% at random cut it to
                # 1 request/s before the jobs came due (one run in six held so for 8 s and
                # more). Otherwise, at least halve, and no faster than the server
                # accepted since the overrun began, but to no less than half of what it
                # accepted over the last seconds (it took that much: a few refusals in a lull
                # of the client's own work would otherwise pin it to the lull's pace). No
                # trial: a refusal there says nothing.
                span = max(now - since, _EPSILON)
                if self._current > self._target:
                    # A probe ended here: the next one climbs half as fast, as after a
                    # measure found where it was (the limit is most likely still here).
                    self._slow_probe()
                lowered = min(self._current / 2, max(accepted, 1) / span)
                answered = max(MIN_MEASURE, min(memory, now - self._first_answer))
                self._decrease(now, max(lowered, len(self._answers) / answered / 2))
            return pause
        if known is not None and self._current > known and not self._probe_ended:
            # A probe went past the last measure, and a refusal came: back under it, every
            # request waiting this refusal out, and the next probe half as fast (the limit is
            # most likely where it was). Under the measure, a refusal the test does not find
            # thick is one at random.
            self._probe_ended = True
            self._slow_probe()
            self._decrease(now, known * MARGIN)
            return True
        return False

    def _memory(self) -> float:
        """Seconds of answers and refusals remembered: ``ANSWERS_MEMORY``, or as long as
        ``PRIOR`` requests take at the limiter's rate if longer (under 10 requests a second:
        a rate configured so, or cut so once), the gap that ends an overrun stretched in
        proportion. At a few requests a second, a few seconds hold too few for the binomial
        test to tell an overrun: a client at 2.4/s against a server taking 2/s was refused
        once every 2.5 s, each refusal seen alone, one request in six for good. (Not the rate
        the client sends at: over an idle spell it is low, and a span holding one would
        measure the server's rate low.)"""
        return max(ANSWERS_MEMORY, PRIOR / self._current)

    def _under(self, now: float, trial: _Trial) -> bool:
        """Whether an outcome reported now is of a request sent under the trial's cut: a
        ``cooldown`` after it, and once the requests in flight at the cut have been answered
        (first in, first out; a burst of 600 at a server answering 1,000 a second took longer
        than a cooldown, and the refusals of requests sent before the cut refuted 1 trial in
        10 of a real limit). Requests that are never answered (a timeout, a cancelled check)
        or held longer stop being waited for after the limiter's memory."""
        if now - trial.started < self.cooldown:
            return False
        return self._reported > trial.sent_before or now - trial.started >= self._memory()

    def _slow_probe(self) -> None:
        """The next probe climbs half as fast (down to a thousandth of ``probe``): the limit is
        most likely where the last one found it."""
        self._probe = max(self.probe / 1000, self._probe / 2)

    @staticmethod
    def _accepted_rate(accepted: int, span: float) -> float:
        """The server's rate from the answers it accepted over a span that began and ended
        with a refusal (its bucket empty at both ends), less the token the bucket may have
        held at either: so that a limit there refuses nothing."""
        return (accepted - 1) / span

    def _pauses(self, refused: int, accepted: int) -> bool:
        """Whether an overrun's refusals hold every request for their ``Retry-After``: once a
        trial has shown the server limits, or while more are refused than accepted (a client
        at twice the server's rate or more). Fewer, and they may be refusals at random that
        the base share has not learnt yet: the cut on trial stops a limit's without a pause,
        while a pause would hold every job for one refusal at random."""
        return self._confirmed or refused > accepted

    def _thick(self, since: float) -> tuple[bool, int, int]:
        """Whether the refusals since then are more than the base share explains (a binomial
        test: the Chernoff bound on the chance of as many, below ``ALPHA``), and the counts
        it was judged on (see :meth:`_counts`)."""
        accepted, refused = self._counts(since)
        thick = refused > 1 and unlikely(refused, refused + accepted, self._base_share())
        return thick, accepted, refused

    def _counts(self, since: float) -> tuple[int, int]:
        """The answers accepted since then (strictly after: the answers that came with the
        first 429 were the server's burst) and the refusals."""
        refused = sum(1 for t in self._refused if t >= since)
        accepted = sum(1 for t in self._answers if t > since)
        return accepted, refused

    def _base_share(self) -> float:
        return (self._base_refused + 1) / (self._base_outcomes + PRIOR)

    def _measured(self, now: float, measured: float, span: float) -> None:
        """Settle just under a measure, up or down (halvings while nothing could be measured
        may have gone below it), to be judged by a trial."""
        known = self._server_rate
        if known is not None and abs(measured - known) * span <= _COUNTING_ERROR:
            # Found where it was, within what counting answers can tell (a token at each end
            # of the span): probe half as fast next time (cycles grow by sqrt 2).
            self._slow_probe()
        else:
            self._probe = self.probe
        self._server_rate = measured
        self._measured_at = now
        self._current = max(self._current, min(self.rate, measured * MARGIN))
        self._decrease(now, measured * MARGIN)
        # The overrun emptied the server's bucket, and requests arriving bunched (a busy
        # machine, a network's jitter) were refused under a cut at the measure as often as
        # in the window that started it: the trial took the limit for chance and the rate
        # went back over it (32 senders against 100/s with 2-50 ms of jitter each way
        # learnt a base share of 0.23-0.31 in 6 runs of 30, none halved). Halved, the rate
        # climbs back within a cooldown (see _refill), and the server's bucket refills
        # meanwhile.
        self._current = max(self.min_rate, self._current / 2)

    def _judge(self, now: float, trial: _Trial) -> None:
        """One more outcome under the cut. A limit: fewer refused under it than in the window
        that started it, beyond chance (the window, chosen for looking thick, is set against
        the cut as a sample of its own: two-sample test). Random: refused under it more than
        the base share explains. Neither yet: the cut holds."""
        refused, outcomes = trial.refused, trial.refused + trial.answers
        share = refused / outcomes
        if _fewer(trial.window, (refused, outcomes)):
            limit = True
        elif refused > 1 and not unlikely(*trial.window, share):
            # As many refused under the cut as here, however long it went on, the window
            # would not be shown thicker: nothing a limit would do.
            limit = False
        elif refused and unlikely(refused, outcomes, self._base_share()):
            limit = False
        else:
            return
        self._trial = None
        self._trial_ended = now
        self._base_refused += refused
        self._base_outcomes += outcomes
        if limit:
            self._confirmed = True
            self._unconfirmed_from = -math.inf
            if not refused and self._server_rate is not None:
                # Nothing refused under the cut: the server's rate is not below the measure
                # of all it accepted.
                self._target = max(self._target, min(self.rate, trial.unbiased * MARGIN))
            return  # the measure stands
        # Refusals at random: the measure is forgotten and the rate goes back to where it was.
        self._base_refused += trial.window[0]
        self._base_outcomes += trial.window[1]
        self._server_rate = None
        self._probe = self.probe
        self._target = max(self._target, trial.before)
        self._unconfirmed_from = -math.inf

    def _decrease(self, now: float, lowered: float) -> None:
        if self._unconfirmed_from == -math.inf:
            self._unconfirmed_from = max(self._current, self._target)
        self._current = max(self.min_rate, min(self._current, lowered))
        self._target = self._current
        self._decreased_at = now
        self._decreases += 1
        # The burst was what got us throttled: start again from an empty bucket (but for the
        # one request a pause lets go at its end).
        self._tokens = min(self._tokens, 1.0 if self._paused_until > now else 0.0)

    def statistics(self) -> RateLimiterStatistics:
        now = self._now()
        return RateLimiterStatistics(
            rate=self.rate,
            current_rate=self.current_rate(),
            burst=self.burst,
            acquired=self._acquired,
            waiting=self._waiting,
            wait_time=self._wait_time,
            decreases=self._decreases,
            paused_for=max(0.0, self._paused_until - now),
            server_rate=self._server_rate,
            trial=self._trial is not None,
            base_share=self._base_share(),
        )


def _kl(q: float, p: float) -> float:
    """The Kullback-Leibler divergence of a coin of chance q from one of chance p."""
    return sum(x * math.log(x / y) for x, y in ((q, p), (1 - q, 1 - p)) if x > 0)


def unlikely(k: int, n: int, p: float) -> bool:
    """Whether k or more successes in n trials of chance p are less likely than ``ALPHA``, by
    the Chernoff bound exp(-n KL(k/n || p)) (Hoeffding 1963): no tail sums, and on the safe
    side."""
    return k / n > p and n * _kl(k / n, p) > -math.log(ALPHA)


def _fewer(first: tuple[int, int], second: tuple[int, int]) -> bool:
    """Whether the second sample's share (successes, trials) is below the first's beyond a
    chance of ``ALPHA``: the likelihood ratio of two shares against one (the G-test)."""
    (k1, n1), (k2, n2) = first, second
    if not n1 or not n2 or k2 / n2 >= k1 / n1:
        return False
    pooled = (k1 + k2) / (n1 + n2)
    return n1 * _kl(k1 / n1, pooled) + n2 * _kl(k2 / n2, pooled) > -math.log(ALPHA)


def _forget_before(times: deque[float], oldest: float) -> None:
    while times and times[0] < oldest:
        times.popleft()
