"""A shared, adaptive, FIFO token-bucket rate limiter for anyio (trio and asyncio).

No maintained limiter for trio/anyio does what many-job polling needs (a pause until a
server's ``Retry-After``, and a rate that finds the server's own), so this is written here.

- **Token bucket**: ``burst`` tokens, refilled at the current rate; one token per request.
  Over any interval of length t, at most ``burst + rate * t`` acquisitions succeed. With no
  rate (``None``) nothing is paced until the server throttles: from then on, its own rate.
- **FIFO**: callers are served in the order they asked (anyio's ``Lock`` is fair), so no job
  starves behind luckier ones.
- **Pause**: ``pause(seconds)`` stops everyone until then (a 429's ``Retry-After``).
- **Adaptive**: the limiter counts the answers the server accepts (``accepted()``) and the
  429s it gets (``refused()``). Refusals thick enough (``OVERRUN_REFUSALS``, at least
  ``OVERRUN_SHARE`` of requests) show an overrun, and while it lasts the answers accepted per
  second *are* the server's rate, whatever its headers say: at most every ``cooldown``
  seconds the limiter settles just under that measure, and every request waits out each
  refusal's pause. Thinner refusals cannot be told from a server's or a proxy's 429s at
  random: on their own they lower nothing and pause only their own request. If they persist
  (``TRIAL_REFUSALS``), the rate is put on trial: it settles under what the server accepted
  meanwhile and holds there; a limit then refuses nothing (``TRIAL_ANSWERS_AFTER`` answers),
  and the measure stands, while a refusal shows them random: the rate goes back, and the
  next trial waits for twice as many. Without 429s the rate probes upwards, slowly at first
  and faster the longer no 429 comes (``probe`` times the square of the seconds since the
  last decrease or trial), up to the configured rate; a 429 past the rate settled under the
  last measure sends it back there, and makes the next probe half as steep. A stale or wrong
  ``RateLimit-Policy`` cannot pin the rate low, random 429s do not lower it (but for a trial
  they happen to pass, which holds for a minute at most), and a server that raises its limit
  is found.
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
#: say nothing of its rate). The shortest span a rate is measured over.
OVERRUN_GAP = 2.0
MIN_MEASURE = 0.1
#: Seconds of answers remembered for measuring.
ANSWERS_MEMORY = 5.0
#: A rate climbing past this many requests a second is no limit any more.
UNLIMITED = 1e6
#: A measure within this share of the last one finds the server's rate unchanged.
STABLE = 0.1
#: Refusals that show an overrun, where the measure begins: at least this many in it, and
#: this share of its requests. Random 429s at a few percent of requests rarely come so thick.
OVERRUN_REFUSALS = 5
OVERRUN_SHARE = 0.3
#: How far above the rate it settled at a probe has climbed while it still counts as there.
SETTLED = 0.005
#: Thin refusals that persist, this many within ``ANSWERS_MEMORY`` seconds, put the rate on
#: trial: it settles under what the server accepted meanwhile and holds for ``TRIAL`` seconds
#: at least. A refusal then (after ``TRIAL_GRACE``, for answers to requests sent before)
#: shows them random, and doubles the count the next trial waits for (up to 4 times). A
#: measure a trial confirmed lasts ``TRIAL_MEASURE_LIFE`` seconds, unless an overrun's
#: thick refusals measure the rate meanwhile.
TRIAL_REFUSALS = 5
TRIAL = 5.0
TRIAL_GRACE = 1.0
TRIAL_MEASURE_LIFE = 60.0
#: The fewest answers a trial's measure is taken from, and the fewest it lasts for: random
#: refusals at 5% of requests leave 60 answers in a row unrefused 5% of the time.
TRIAL_ANSWERS = 5
TRIAL_ANSWERS_AFTER = 60
#: A pause this long (a Retry-After in whole seconds) holds every request for longer than a
#: server's burst makes up for after it: no rate is measured across one.
LONG_PAUSE = 1.0


@dataclass(slots=True)
class _Trial:
    """A measure from thin refusals on trial: the rate holds under it until ``until`` and
    ``TRIAL_ANSWERS_AFTER`` answers have passed with no refusal."""

    started: float
    until: float
    #: The rate in force before it: where a refuted trial goes back to.
    before: float
    answers: int = 0


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
        self._paused_until = -math.inf
        #: The end of the last pause of ``LONG_PAUSE`` or more: rates are measured after it.
        self._long_pause_until = -math.inf
        #: The first 429 of the current overrun, and the last one.
        self._overrun_since = self._last_throttled = -math.inf
        #: Whether a probe past the last measure was ended in the current overrun.
        self._probe_ended = False
        self._refused: deque[float] = deque()
        #: The trial on now, if any; when the last one ended; the refusals the next waits for.
        self._trial: _Trial | None = None
        self._trial_ended = -math.inf
        self._trial_refusals = TRIAL_REFUSALS
        self._measure_expires = math.inf
        self._answers: deque[float] = deque()
        # Per event loop: one limiter may serve a trio run and later an asyncio one.
        self._lock: RunVar[anyio.Lock | None] = RunVar("RateLimiter lock", default=None)
        self._run: RunVar[bool] = RunVar("RateLimiter run", default=False)
        self._acquired = 0
        self._waiting = 0
        self._wait_time = 0.0
        #: When a request last waited for a token (not a pause): the client was sending as
        #: fast as the rate allows, not as fast as its own work came.
        self._token_wait_at = -math.inf
        self._decreases = 0

    def __repr__(self) -> str:
        return f"<RateLimiter rate={self.rate:g}/s burst={self.burst}>"

    def _now(self) -> float:
        """The running loop's clock. Each run (a second ``trio.run``, an ``asyncio.run``) has
        a clock of its own, started anywhere: the times kept from an earlier run (the bucket's
        refill, a pause, the refusals and answers remembered, a trial) would hold requests
        for as long as the clocks differ. They are dropped; the rate learnt is kept, and
        probes on as if just settled."""
        now = anyio.current_time()
        if not self._run.get():
            self._run.set(True)
            self._updated = None
            self._tokens = self._burst_now()  # a new run starts as a new limiter does: full
            self._paused_until = self._long_pause_until = -math.inf
            self._overrun_since = self._last_throttled = self._trial_ended = -math.inf
            self._token_wait_at = -math.inf
            self._decreased_at = now if self._current < self.rate else -math.inf
            self._refused.clear()
            self._answers.clear()
            if self._trial is not None:
                self._target = max(self._target, self._trial.before)
                self._trial = None
            if self._measure_expires < math.inf:
                self._measure_expires = now + TRIAL_MEASURE_LIFE
        return now

    def current_rate(self) -> float:
        self._refill(self._now())
        return self._current

    def _burst_now(self) -> float:
        """The bucket's size, shrunk in proportion to a lowered rate: a second's worth of the
        configured rate would overrun the server that made us lower it. (Without a configured
        rate, a lowered one allows no burst.)"""
        if self.rate == math.inf:
            return float(self.burst)
        return max(1.0, self.burst * self._current / self.rate)

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
            # Back to just under the server's rate within a cooldown...
            back = min(1.0, elapsed / self.cooldown) if self.cooldown else 1.0
            self._current += (self._target - self._current) * back
            if self._current >= self._target * (1 - STABLE / 10):
                self._current = self._target  # there: probe from it (never there otherwise)
        elif self._trial is None:
            # ...then beyond it, slowly at first, faster the longer no 429 comes (a trial
            # holds the rate where it settled).
            since = now - max(self._decreased_at, self._trial_ended)
            self._current = max(self._current, self._target * (1 + self._probe * since * since))
        self._current = min(self.rate, self._current)
        if self._current > UNLIMITED:
            self._current = self.rate
        # The trapezoid: exact for a linear climb, close enough for the rest.
        self._tokens = min(self._burst_now(), self._tokens + elapsed * (before + self._current) / 2)

    async def acquire(self) -> None:
        """Wait for a token, in FIFO order with the other callers."""
        lock = self._lock.get()
        if lock is None:
            lock = anyio.Lock()
            self._lock.set(lock)
        self._waiting += 1
        try:
            async with lock:
                while True:
                    now = self._now()
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
                        self._token_wait_at = now
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
        if seconds >= LONG_PAUSE:
            self._long_pause_until = max(self._long_pause_until, now + seconds)
        # One request goes as the pause ends: the server said it would take one then.
        self._tokens = 1.0

    def refused(self, retry_after: float | None = None, quota: float | None = None) -> None:
        """A 429: every request waits out its ``retry_after`` while the server is overrun."""
        if self.throttled(quota) and retry_after is not None:
            self.pause(retry_after)

    def accepted(self) -> None:
        """The server accepted a request (any answer but a 429): what the rate is measured by."""
        now = self._now()
        self._answers.append(now)
        _forget_before(self._answers, now - ANSWERS_MEMORY)
        trial = self._trial
        if trial is not None:
            trial.answers += 1
            if now >= trial.until and trial.answers >= TRIAL_ANSWERS_AFTER:
                # Under a limit, nothing is refused: so it was one.
                self._trial = None
                self._trial_ended = now
                self._trial_refusals = TRIAL_REFUSALS

    def throttled(self, quota: float | None = None) -> bool:
        """The server said 429: lower the rate if it is overrun, at most once per
        ``cooldown``; True if every request should wait out this refusal's pause.

        ``quota``, the rate a ``RateLimit-Policy`` declares, is not trusted: a server that
        misdeclares (or a stale policy) would pin the rate far below what it accepts. The rate
        the server is seen to accept while refusing is the measure. A 429 now and then (a
        proxy's, an injected fault's) says nothing of that rate, and taking the client's own
        pace at that moment for it would pin the client there; so refusals pause every request
        only while they come thick (``OVERRUN_REFUSALS``, ``OVERRUN_SHARE``) or end a probe
        past the last measure itself, and lower the rate only then, or when a probe passes the
        rate settled under that measure. Thinner refusals that persist are put to the test:
        the rate settles under what the server accepted meanwhile and holds there for
        ``TRIAL`` seconds at least; a limit then refuses nothing, while refusals at random go
        on, and one of them ends the trial and restores the rate.
        """
        now = self._now()
        self._refill(now)
        self._refused.append(now)
        _forget_before(self._refused, now - ANSWERS_MEMORY)
        if now - self._last_throttled > OVERRUN_GAP:
            self._overrun_since = now
            self._probe_ended = False
        self._last_throttled = now
        trial = self._trial
        if trial is not None and now - trial.started >= max(self.cooldown, TRIAL_GRACE):
            self._refuted(now, trial)
            return False
        if self._server_rate is not None and now > self._measure_expires:
            self._server_rate = None  # a trial's measure, not confirmed by an overrun since
            self._probe = self.probe
        overrun = max(self._overrun_since, now - ANSWERS_MEMORY)
        if now - self._decreased_at < self.cooldown:
            # The answer to a request sent before the last decrease, most likely.
            return self._thick(overrun)[0]
        # Measured since the last decrease, if it came in this overrun (answers before it
        # came at another rate), and since the last long pause (which held every request
        # longer than the server's burst would make up for after it).
        since = max(overrun, self._decreased_at, self._long_pause_until)
        thick, accepted = self._thick(since)
        known = self._server_rate
        if thick:
            if accepted and now - since >= MIN_MEASURE:
                self._measured(now, accepted / (now - since))
                self._trial_refusals = TRIAL_REFUSALS
            elif not accepted and known is None and self._current < math.inf:
                self._decrease(now, self._current / 2)  # nothing accepted to measure: halve
            return True
        if since != overrun and self._thick(overrun)[0]:
            return True  # still thick over the whole overrun: every request waits
        settled = known is not None and self._current <= known * MARGIN * (1 + SETTLED)
        if known is not None and not settled and not self._probe_ended:
            # A probe went past the rate settled under the last measure: back there, and
            # probe half as fast next time (the limit is most likely where it was). Every
            # request waits only if it went past the measure itself.
            self._probe_ended = True
            self._probe = max(self.probe / 1000, self._probe / 2)
            past = self._current > known
            self._decrease(now, known * MARGIN)
            return past
        # Thin refusals that persist (since the last decrease and the last trial): try what
        # the server accepted meanwhile.
        since = max(
            self._decreased_at, now - ANSWERS_MEMORY, self._long_pause_until, self._trial_ended
        )
        refused = [t for t in self._refused if t >= since]
        # Only while the client sent as fast as its rate allowed: sending less (app-limited, as
        # BBR says), what the server accepted is the client's own pace, no measure of the
        # server, and random refusals would pin the rate to that pace.
        limited = bool(refused) and self._token_wait_at >= refused[0]
        if limited and len(refused) >= self._trial_refusals:
            # From the first of them: the server's bucket was empty then.
            accepted = sum(1 for t in self._answers if t > refused[0])
            if accepted >= TRIAL_ANSWERS and now - refused[0] >= MIN_MEASURE:
                before = self._current
                self._measured(now, self._accepted_rate(accepted, now - refused[0]), trial=True)
                self._trial = _Trial(started=now, until=now + TRIAL, before=before)
        return False

    @staticmethod
    def _accepted_rate(accepted: int, span: float) -> float:
        """The server's rate from the answers it accepted over a span that began and ended
        with a refusal (its bucket empty at both ends), less the token the bucket may have
        held at either: so that a limit there refuses nothing."""
        return (accepted - 1) / span

    def _thick(self, since: float) -> tuple[bool, int]:
        """Whether the refusals since then are thick enough to show an overrun, and the
        answers accepted since then (strictly after: the answers that came with the first
        429 were the server's burst)."""
        refused = sum(1 for t in self._refused if t >= since)
        accepted = sum(1 for t in self._answers if t > since)
        thick = refused >= OVERRUN_REFUSALS and refused >= OVERRUN_SHARE * (accepted + refused)
        return thick, accepted

    def _measured(self, now: float, measured: float, *, trial: bool = False) -> None:
        """Settle under a measure: one from thick refusals stands, one from a trial for
        ``TRIAL_MEASURE_LIFE`` seconds (a trial that refusals at random happened to spare
        would otherwise hold the rate for good)."""
        known = self._server_rate
        self._measure_expires = now + TRIAL_MEASURE_LIFE if trial else math.inf
        if known is not None and abs(measured - known) <= STABLE * known:
            # Found where it was: probe half as fast next time (cycles grow by sqrt 2).
            self._probe = max(self.probe / 1000, self._probe / 2)
        else:
            self._probe = self.probe
        self._server_rate = measured
        self._trial = None
        self._decrease(now, measured * MARGIN)

    def _refuted(self, now: float, trial: _Trial) -> None:
        """Refused during a trial, under a rate the server had been seen to accept: the
        refusals are at random, not a limit. The measure is forgotten, the rate goes back to
        where it was, and the next trial waits for twice as many refusals."""
        self._trial = None
        self._trial_ended = now
        self._server_rate = None
        self._probe = self.probe
        self._target = max(self._target, trial.before)
        self._trial_refusals = min(TRIAL_REFUSALS * 4, self._trial_refusals * 2)

    def _decrease(self, now: float, lowered: float) -> None:
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
        )


def _forget_before(times: deque[float], oldest: float) -> None:
    while times and times[0] < oldest:
        times.popleft()
