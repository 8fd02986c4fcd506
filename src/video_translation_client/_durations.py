"""How long jobs take, learnt from the run's own jobs, and when to check them for it.

A job's duration is seen only through checks: a finished job's lies between its last pending
answer and its first final one (interval-censored), a pending job's exceeds its age
(right-censored). :class:`DurationModel` keeps both and fits a lognormal to them by maximum a
posteriori, with a weak prior (a median a factor e² either way of the guess, a spread near 1),
and checks the fit against the data themselves (the nonparametric bounds on F at the fitted
quartiles); a poor fit is reported as such, and its users fall back to even checks.

:class:`Plan` places the checks. Barlow, Hunter & Proschan (1963, "Optimum checking
procedures") give the optimal check times for a duration distribution F, a cost c1 per check
and c2 per second of lag; Keller (1974) their near-optimal smooth form, a checking density

    n(t) = sqrt(h(t) / (2 τ)),   h = f / (1 - F) the hazard,  τ = c1 / c2,

checking next, after a pending answer at age a, at the x where ∫_a^x n(t) dt = 1. For a budget
of R checks per job, τ = I² / (2 (R - ½)²) with I = ∫ sqrt(f(t) (1 - F(t))) dt. A lognormal's
plan is the same table whatever its median (the family scales: with T = s·T0, N(t) = N0(t/s)),
so one table per spread and budget serves every job, a job's own expected duration included.
Keller's density minimises the mean lag; the plan holds it from a quantile of F on
(``TAIL_HELD``), so that the longest jobs, where a lognormal's hazard falls, are not checked
ever more rarely: their lags were a run's worst.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

#: Finished jobs remembered for the fit: the latest, so that a drift in durations is followed.
WINDOW = 1000
#: Spread of the prior on the log-median, and the prior's spread: weak, so that a few jobs
#: outweigh it (a guess six times off is e^1.8, within one prior standard deviation).
PRIOR_MU_SD = 2.0
PRIOR_SIGMA = 1.0
PRIOR_LOG_SIGMA_SD = 1.0
#: A fit is poor when it strays this far outside the nonparametric bounds at a quartile.
POOR_FIT = 0.15
#: Past this quantile of F the plan checks at least as densely as it does there. Keller's
#: density minimises the mean lag; a lognormal's hazard falls in its tail, and the plan's gaps
#: grow with it (at sigma 1, 6-9 s between checks of jobs of 20-60 s), which is where the few
#: worst lags are. The plan is then scaled to cost what it would without the hold, so that
#: the budget stands at any spread.
TAIL_HELD = 0.9
#: Points of the plan's table, log-spaced over the bulk of the distribution.
GRID = 400
_SQRT2 = math.sqrt(2.0)


def _cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


def _logsf(z: float) -> float:
    """log(1 - Φ(z)), accurate in the far tail."""
    if z < 5:
        # A comparison rather than max() (NaN to 1e-300 as max gives): the fit's cost calls
        # this for every group of pending ages, a hundred times a fit.
        sf = 0.5 * math.erfc(z / _SQRT2)
        return math.log(sf if sf > 1e-300 else 1e-300)
    # Mills' ratio: 1 - Φ(z) ≈ φ(z)/z (1 - 1/z² + 3/z⁴).
    return -z * z / 2 - math.log(z * math.sqrt(2 * math.pi)) + math.log1p(-1 / z**2 + 3 / z**4)


@dataclass(frozen=True, slots=True)
class Lognormal:
    mu: float
    sigma: float

    @property
    def median(self) -> float:
        return math.exp(self.mu)

    def quantile(self, p: float) -> float:
        return math.exp(self.mu + self.sigma * _probit(p))


def _probit(p: float) -> float:
    """Φ⁻¹(p), by bisection on erfc: called a handful of times per fit."""
    low, high = -10.0, 10.0
    for _ in range(60):
        mid = (low + high) / 2
        if _cdf(mid) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


class DurationModel:
    """What is known of the run's job durations (see the module's docstring)."""

    def __init__(self, guess: float) -> None:
        self.prior = Lognormal(math.log(guess), PRIOR_SIGMA)
        #: Finished jobs: (last age seen pending, age seen final), seconds.
        self.finished: deque[tuple[float, float]] = deque(maxlen=WINDOW)
        self.fit: Lognormal = self.prior
        self.poor = False
        #: Answers about jobs so far, pending and final: what a refit waits on.
        self.seen = 0
        self._fitted_at = 0

    def add(self, low: float, high: float) -> None:
        """A job finished: its duration is in (low, high]."""
        self.finished.append((low, high))
        self.seen += 1

    def fitted(self, pending: Callable[[], list[float]]) -> Lognormal:
        """The fit, refreshed when the answers seen grew by a tenth (or 5) since the last:
        often while little is known, rarely once much is; ``pending()`` gives the ages of the
        jobs still pending (right-censored), asked only for a refit: every job asks for the
        fit at each of its checks, and listing every pending job each time cost time
        quadratic in the jobs."""
        if self.seen >= max(self._fitted_at + 5, self._fitted_at * 11 // 10):
            self._fitted_at = self.seen
            ages = pending()
            self.fit = self._map(ages)
            self.poor = len(self.finished) >= 20 and self._strays(ages)
        return self.fit

    def _map(self, pending: list[float]) -> Lognormal:
        """The maximum a posteriori lognormal, by Nelder-Mead over (mu, log sigma)."""
        # In logs once, not at each of the hundred or so costs the search takes.
        intervals = [
            (math.log(low) if low > 0 else None, math.log(high)) for low, high in self.finished
        ]
        ages = [(math.log(age), count) for age, count in _binned(pending)]
        prior = self.prior

        # The search's inner loop, over up to a thousand intervals a hundred times: the names
        # it calls bound here once, and a comparison for max() (NaN to 1e-300, as max gives).
        cdf, logsf, log = _cdf, _logsf, math.log

        def cost(mu: float, log_sigma: float) -> float:
            sigma = math.exp(log_sigma)
            total = ((mu - prior.mu) / PRIOR_MU_SD) ** 2 / 2
            total += ((log_sigma - math.log(PRIOR_SIGMA)) / PRIOR_LOG_SIGMA_SD) ** 2 / 2
            for log_low, log_high in intervals:
                a = cdf((log_low - mu) / sigma) if log_low is not None else 0.0
                mass = cdf((log_high - mu) / sigma) - a
                total -= log(mass if mass > 1e-300 else 1e-300)
            for log_age, count in ages:
                total -= count * logsf((log_age - mu) / sigma)
            return total

        start = self.fit
        mu, log_sigma = _nelder_mead(cost, (start.mu, math.log(start.sigma)))
        return Lognormal(mu, min(3.0, max(0.05, math.exp(log_sigma))))

    def _strays(self, pending: list[float]) -> bool:
        """Whether the fit leaves the nonparametric bounds by more than ``POOR_FIT`` at a
        fitted quartile. A duration lies in its interval, so the share of jobs surely done
        by t (right ends <= t) bounds F(t) from below, and the share possibly done (left
        ends < t, pending ages counting as left ends) from above (the bounds Turnbull's
        estimate lies between)."""
        lows = sorted([low for low, _ in self.finished] + pending)
        highs = sorted(high for _, high in self.finished)
        total = len(lows)
        for q in (0.25, 0.5, 0.75):
            t = self.fit.quantile(q)
            surely = bisect.bisect_right(highs, t) / total
            possibly = bisect.bisect_left(lows, t) / total
            if q < surely - POOR_FIT or q > possibly + POOR_FIT:
                return True
        return False


def _binned(ages: list[float], bins: int = 64) -> list[tuple[float, int]]:
    """Pending ages grouped on a log scale, each group at its members' geometric mean: the
    fit costs the same for 100 or 100,000 pending jobs."""
    positive = [a for a in ages if a > 0]
    if len(positive) <= bins:
        return [(a, 1) for a in positive]
    low, high = math.log(min(positive)), math.log(max(positive))
    width = (high - low) / bins
    groups: dict[int, list[float]] = {}
    for age in positive:
        log_age = math.log(age)
        index = min(bins - 1, int((log_age - low) / width)) if width > 0 else 0
        groups.setdefault(index, []).append(log_age)
    return [(math.exp(sum(g) / len(g)), len(g)) for g in groups.values()]


def _nelder_mead(cost: object, start: tuple[float, float], steps: int = 80) -> tuple[float, float]:
    """A minimum of ``cost(x, y)`` near ``start``: Nelder-Mead, enough for a smooth 2-D bowl."""
    assert callable(cost)
    simplex = [start, (start[0] + 0.5, start[1]), (start[0], start[1] + 0.3)]
    values = [cost(*p) for p in simplex]
    for _ in range(steps):
        order = sorted(range(3), key=values.__getitem__)
        simplex = [simplex[i] for i in order]
        values = [values[i] for i in order]
        best, good, worst = simplex
        centre = ((best[0] + good[0]) / 2, (best[1] + good[1]) / 2)

        reflected = _toward(centre, worst, -1.0)
        r = cost(*reflected)
        if r < values[0]:
            expanded = _toward(centre, worst, -2.0)
            e = cost(*expanded)
            simplex[2], values[2] = (expanded, e) if e < r else (reflected, r)
        elif r < values[1]:
            simplex[2], values[2] = reflected, r
        else:
            contracted = _toward(centre, worst, 0.5)
            c = cost(*contracted)
            if c < values[2]:
                simplex[2], values[2] = contracted, c
            else:
                simplex = [best] + [
                    ((best[0] + p[0]) / 2, (best[1] + p[1]) / 2) for p in simplex[1:]
                ]
                values = [values[0]] + [cost(*p) for p in simplex[1:]]
        if abs(values[2] - values[0]) < 1e-7:
            break
    return simplex[min(range(3), key=values.__getitem__)]


def _toward(
    centre: tuple[float, float], point: tuple[float, float], t: float
) -> tuple[float, float]:
    return (centre[0] + t * (point[0] - centre[0]), centre[1] + t * (point[1] - centre[1]))


class Plan:
    """Keller's checking density for a lognormal of median 1 and spread ``sigma``, with a
    budget of ``checks`` per job: ``next(age, scale)`` is when a job of median ``scale``,
    pending at ``age``, is next checked."""

    def __init__(self, sigma: float, checks: float) -> None:
        dist = Lognormal(0.0, sigma)
        low, high = dist.quantile(1e-4), dist.quantile(1 - 1e-5)
        step = math.log(high / low) / GRID
        times = [low * math.exp(step * k) for k in range(GRID + 1)]
        root_h = []
        integrand = []
        survivals = []
        for t in times:
            z = math.log(t) / sigma
            f = math.exp(-z * z / 2) / (sigma * t * math.sqrt(2 * math.pi))
            survival = math.exp(_logsf(z))
            survivals.append(survival)
            root_h.append(math.sqrt(f / max(survival, 1e-300)))
            integrand.append(math.sqrt(f * survival))
        integral = _trapezoid(times, integrand)
        tau = integral**2 / (2 * max(0.1, checks - 0.5) ** 2)
        density = [r / math.sqrt(2 * tau) for r in root_h]

        # Held past the quantile, then scaled back to the checks a job costs without the hold
        # (a job alive at t is checked at rate n(t): ∫ n(t) (1 - F(t)) dt), so that the budget
        # holds at any spread: unscaled, the hold cost 9% more checks at sigma 1.5, 24% at 2.
        def spent(density: list[float]) -> float:
            return _trapezoid(times, [n * s for n, s in zip(density, survivals, strict=True)])

        unheld = spent(density)
        held = bisect.bisect_left(times, dist.quantile(TAIL_HELD))
        for k in range(held, len(density)):
            density[k] = max(density[k], density[held])
        now = spent(density)
        density = [n * unheld / now for n in density]
        # N(t): the checks expected by age t; from 0 to the grid's first point, its density
        # there (the hazard of a lognormal vanishes at 0, so this overestimates slightly).
        cumulative = [density[0] * times[0]]
        for k in range(1, len(times)):
            cumulative.append(
                cumulative[-1] + (density[k] + density[k - 1]) / 2 * (times[k] - times[k - 1])
            )
        self.sigma = sigma
        self.checks = checks
        self._times = times
        self._cumulative = cumulative
        self._last_density = density[-1]

    def next(self, age: float, scale: float) -> float:
        """The age at which a job of median ``scale``, pending at ``age``, is checked next."""
        u = max(0.0, age / scale)
        target = self._count(u) + 1.0
        cumulative = self._cumulative
        if target >= cumulative[-1]:
            # Past the table: the density at its end, held.
            return scale * (self._times[-1] + (target - cumulative[-1]) / self._last_density)
        k = bisect.bisect_left(cumulative, target)
        if k == 0:
            return scale * self._times[0] * target / cumulative[0]
        t0, t1 = self._times[k - 1], self._times[k]
        c0, c1 = cumulative[k - 1], cumulative[k]
        return scale * (t0 + (t1 - t0) * (target - c0) / (c1 - c0))

    def _count(self, u: float) -> float:
        times, cumulative = self._times, self._cumulative
        if u <= times[0]:
            return cumulative[0] * u / times[0]
        if u >= times[-1]:
            return cumulative[-1] + (u - times[-1]) * self._last_density
        k = bisect.bisect_left(times, u)
        t0, t1 = times[k - 1], times[k]
        return cumulative[k - 1] + (cumulative[k] - cumulative[k - 1]) * (u - t0) / (t1 - t0)


@functools.lru_cache(maxsize=128)
def plan(sigma: float, checks: float) -> Plan:
    """The plan for a spread and a budget, built once for every client that asks: a table of
    ``GRID`` points takes milliseconds, and each client asked for it anew (a test run's
    clients built 244 tables of a few dozen)."""
    return Plan(sigma, checks)


def _trapezoid(xs: list[float], ys: list[float]) -> float:
    return sum((ys[k] + ys[k - 1]) / 2 * (xs[k] - xs[k - 1]) for k in range(1, len(xs)))
