"""Statistics whose unit is the training run (seed): is an arm better than another, or than its start?

In RLVR on small models the training seed dominates: one run takes off, the next one never leaves the
untrained score. A comparison between arms (LoRA ranks, initializations) therefore rests on each run's
Pass@1, one number per run, never on the problems or samples pooled over runs (Agarwal et al. 2021;
Colas et al. 2018: Welch's t-test, seeds chosen by a power analysis):

- between two arms: Welch's t-test on the runs' Pass@1 (scipy.stats.ttest_ind, unequal variances);
- an arm against its untrained baseline: a t interval on the runs' changes. Every run of one model
  shares ONE baseline evaluation (the baseline cache), whose sampling noise does not shrink with more
  seeds; its variance (`baseline_var`: rlvr_sweeps.evaluation.significance.evaluation_variance) is added to
  the seeds' (with the seeds' k - 1 degrees of freedom: conservative). Runs with baselines of their own: a one-sample t
  on the per-run changes (scipy.stats.ttest_1samp);
- a verdict (`marked`) only with >= MIN_RUNS runs on each side, and with Holm's correction over the
  comparisons of one table (statsmodels' multipletests);
- how many runs a comparison needs: statsmodels' TTestIndPower from the runs' own spread, with the
  range that the spread's own uncertainty (chi-square interval of the SD) allows.

All numbers are fractions (0.25 = 25 %); tables multiply by 100.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower

LEVEL = 0.95  # every interval here
MIN_RUNS = 3  # runs on each side before a comparison may be marked: below, the spread is a guess
POWER = 0.8
MAX_RUNS = 10_000  # "more than this many runs per arm": the power search's ceiling


@dataclass(frozen=True)
class SeedTest:
    """A difference of mean Pass@1 over runs (b - a, or the arm's change over its baseline) with its t interval.

    `low`, `high`, `df` and `p` are NaN when a side has a single run: the variation between training
    seeds is not measured then, and nothing can be said beyond the evaluation noise of those runs."""

    delta: float
    low: float
    high: float
    df: float
    p: float
    runs: int  # runs of the compared arm (b)
    runs_reference: int | None  # runs of the reference arm (a); None against the untrained baseline
    test: str  # "welch", "one-sample t", "t + baseline noise", or "none" (a side with one run)

    @property
    def measured(self) -> bool:
        """Whether the seeds' spread was measured on every side (an interval exists)."""
        return not math.isnan(self.low)

    @property
    def eligible(self) -> bool:
        """Whether the comparison may be marked: at least MIN_RUNS runs on each side."""
        return self.measured and min(self.runs, self.runs_reference or self.runs) >= MIN_RUNS

    @property
    def excludes_zero(self) -> bool:
        return self.measured and (self.low > 0 or self.high < 0)


def _quiet(function):
    """scipy warns about "catastrophic cancellation" when runs agree to the last digits; such runs are
    handled here (_no_spread), and a table's reader cannot act on the warning."""

    def wrapped(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return function(*args, **kwargs)

    wrapped.__doc__, wrapped.__name__ = function.__doc__, function.__name__
    return wrapped


def _degenerate(delta: float) -> tuple[float, float, float]:
    """Interval and p of a difference whose runs agree exactly on each side (no spread at all)."""
    return delta, delta, 0.0 if abs(delta) > TIE else 1.0


TIE = 1e-12  # runs closer than this agree: Pass@1 is a ratio of counts, equal ones may differ in the last bit


def _no_spread(*sides) -> bool:
    return all(np.ptp(side) <= TIE for side in sides)


@_quiet
def between_arms(a: list[float], b: list[float], level: float = LEVEL) -> SeedTest:
    """b's runs against a's runs: mean(b) - mean(a) with Welch's t interval (scipy.stats.ttest_ind)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not len(a) or not len(b):
        raise ValueError("between_arms needs at least one run on each side")
    delta = float(b.mean() - a.mean())
    if min(len(a), len(b)) < 2:
        return SeedTest(delta, math.nan, math.nan, math.nan, math.nan, len(b), len(a), "none")
    if _no_spread(a, b):  # scipy's t is nan or inf without any spread
        low, high, p = _degenerate(delta)
        return SeedTest(delta, low, high, float(len(a) + len(b) - 2), p, len(b), len(a), "welch")
    result = stats.ttest_ind(b, a, equal_var=False)
    low, high = result.confidence_interval(level)
    return SeedTest(delta, float(low), float(high), float(result.df), float(result.pvalue), len(b), len(a), "welch")


@_quiet
def against_baseline(finals: list[float], baselines: list[float], baseline_var: float = 0.0, level: float = LEVEL):
    """An arm's change over its untrained model: the mean over runs of final - baseline, with a t interval.

    Args:
        finals, baselines: each run's final and baseline Pass@1 (same order).
        baseline_var: the sampling variance of the baseline evaluation when the runs share one
            (rlvr_sweeps.evaluation.significance.evaluation_variance); 0 when unknown. Ignored when the runs'
            baselines differ (each run's change then carries its own baseline's noise, and the spread of
            the changes covers it).
    """
    finals, baselines = np.asarray(finals, dtype=float), np.asarray(baselines, dtype=float)
    changes, k = finals - baselines, len(finals)
    if not k:
        raise ValueError("against_baseline needs at least one run")
    delta = float(changes.mean())
    if k < 2:
        return SeedTest(delta, math.nan, math.nan, math.nan, math.nan, k, None, "none")
    shared = _no_spread(baselines)
    if not shared or baseline_var <= 0:
        if _no_spread(changes):
            low, high, p = _degenerate(delta)
            return SeedTest(delta, low, high, float(k - 1), p, k, None, "one-sample t")
        result = stats.ttest_1samp(changes, 0.0)
        (low, high), p = result.confidence_interval(level), result.pvalue
        return SeedTest(delta, float(low), float(high), float(result.df), float(p), k, None, "one-sample t")
    # one shared baseline evaluation: its noise adds to the seeds' and stays whatever k is. The t quantile keeps
    # the seeds' k - 1 degrees of freedom (Welch-Satterthwaite would raise them as if the baseline's variance
    # were exact, and then more noise could give a narrower interval)
    seeds_var = 0.0 if _no_spread(changes) else float(changes.var(ddof=1)) / k
    se, df = math.sqrt(seeds_var + baseline_var), float(k - 1)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * stats.t.sf(abs(delta) / se, df))
    return SeedTest(delta, delta - half, delta + half, df, p, k, None, "t + baseline noise")


def init_tests(finals: dict, baselines: dict, baseline_var: float = 0.0) -> dict[tuple, SeedTest]:
    """The seed-level tests of one initialization's arms, in the order the tables list them.

    Args:
        finals: rank -> the runs' final Pass@1, ranks in table order (an arm without runs is left out).
        baselines: rank -> the baseline Pass@1 of the same runs, for the arms that have it.
        baseline_var: the shared baseline evaluation's sampling variance (against_baseline).

    Returns keys (rank, "baseline") for each arm with a baseline, then (higher, lower) for each pair of
    arms, the later rank first."""
    tests = {
        (rank, "baseline"): against_baseline(finals[rank], baselines[rank], baseline_var)
        for rank in finals
        if len(baselines.get(rank, ()))
    }
    ranks = list(finals)
    for i, high in enumerate(ranks):
        for low in ranks[:i]:
            tests[(high, low)] = between_arms(finals[low], finals[high])
    return tests


def holm(tests: list[SeedTest], alpha: float = 1 - LEVEL) -> tuple[list[bool], list[float]]:
    """The `*` decision of each test of one table, and its Holm-adjusted p (NaN when not eligible): a test
    is marked when it is eligible (MIN_RUNS runs a side) and Holm's step-down correction over the eligible
    tests rejects it (statsmodels' multipletests)."""
    eligible = [i for i, test in enumerate(tests) if test.eligible]
    marked, adjusted = [False] * len(tests), [math.nan] * len(tests)
    if eligible:
        rejected, corrected = multipletests([tests[i].p for i in eligible], alpha=alpha, method="holm")[:2]
        for i, reject, p in zip(eligible, rejected, corrected):
            marked[i], adjusted[i] = bool(reject), float(p)
    return marked, adjusted


@_quiet
def t_interval(values: list[float], level: float = LEVEL) -> tuple[float, float]:
    """The t interval of the mean of a few runs' values (NaN, NaN with one run)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    if _no_spread(values):
        return float(values.mean()), float(values.mean())
    low, high = stats.ttest_1samp(values, 0.0).confidence_interval(level)
    return float(low), float(high)


@dataclass(frozen=True)
class RunsNeeded:
    """Runs per arm for POWER to detect `effect` with Welch's test, from the runs' pooled spread."""

    effect: float  # the difference to detect (fraction): the observed one, or the minimum effect asked for
    sd: float  # pooled standard deviation of the runs' Pass@1 (fraction)
    sd_low: float  # its 95% chi-square interval: with 2-3 runs a side the spread itself is uncertain
    sd_high: float
    runs_now: tuple[int, int]
    per_arm: int | None  # None: no spread (the runs agree) or no effect to detect
    per_arm_low: int | None  # per_arm at sd_low and at sd_high
    per_arm_high: int | None

    @property
    def more_runs(self) -> int | None:
        return None if self.per_arm is None else sum(max(0, self.per_arm - k) for k in self.runs_now)


@_quiet
def _per_arm(effect: float, sd: float, alpha: float, power: float) -> int | None:
    """The fewest runs per arm whose two-sided test has `power` (statsmodels' TTestIndPower.power, searched
    by bisection over whole runs: its solve_power does not converge for very large or small effects)."""
    if sd <= 0 or effect == 0 or not math.isfinite(sd):
        return None
    size, analysis = abs(effect) / sd, TTestIndPower()

    def enough(runs: int) -> bool:  # statsmodels gives NaN where the power is 1 to machine precision
        return not analysis.power(effect_size=size, nobs1=runs, alpha=alpha, ratio=1.0) < power

    low, high = 2, MAX_RUNS
    if enough(low):
        return low
    if not enough(high):
        return MAX_RUNS
    while high - low > 1:  # enough(high) and not enough(low)
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def runs_needed(
    a: list[float], b: list[float], effect: float | None = None, power: float = POWER, alpha: float = 1 - LEVEL
) -> RunsNeeded:
    """Runs per arm that a two-sided Welch/Student test at `alpha` needs for `power` to detect `effect`
    (default: the observed difference mean(b) - mean(a)), with the pooled SD of both arms' runs. Needs >= 2
    runs on each side."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < 2:
        raise ValueError("runs_needed needs at least two runs on each side")
    effect = float(b.mean() - a.mean()) if effect is None else float(effect)
    df = len(a) + len(b) - 2
    sd = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / df)
    low_q, high_q = stats.chi2.ppf([(1 - LEVEL) / 2, (1 + LEVEL) / 2], df)
    sd_low, sd_high = sd * math.sqrt(df / high_q), sd * math.sqrt(df / low_q)
    return RunsNeeded(
        effect,
        sd,
        sd_low,
        sd_high,
        (len(b), len(a)),
        _per_arm(effect, sd, alpha, power),
        _per_arm(effect, sd_low, alpha, power),
        _per_arm(effect, sd_high, alpha, power),
    )
