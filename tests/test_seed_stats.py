"""Seed-level statistics: the training run as the unit, checked against scipy / statsmodels and calibrated
by simulation (a null difference must be marked about as often as the nominal 5%, a large one nearly always).

Fast: numpy simulations of per-sample outcomes, no training.
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestIndPower

from analysis.comparisons import compare
from analysis.seed_stats import (
    MIN_RUNS,
    SeedTest,
    against_baseline,
    between_arms,
    holm,
    init_tests,
    runs_needed,
    t_interval,
)
from rlvr_sweeps.evaluation.significance import evaluation_variance, paired_bootstrap, per_problem_accuracy


def test_between_arms_is_welchs_t_on_the_runs():
    a, b = [0.10, 0.20, 0.30], [0.30, 0.55, 0.40]
    test = between_arms(a, b)
    welch = stats.ttest_ind(b, a, equal_var=False)
    assert test.delta == pytest.approx(np.mean(b) - np.mean(a))
    assert (test.low, test.high) == pytest.approx(tuple(welch.confidence_interval(0.95)))
    assert test.df == pytest.approx(welch.df) and test.p == pytest.approx(welch.pvalue)
    assert (test.runs, test.runs_reference, test.test) == (3, 3, "welch") and test.eligible


def test_one_run_a_side_measures_no_seed_variation():
    test = between_arms([0.1], [0.3, 0.4, 0.5])
    assert test.delta == pytest.approx(0.3) and not test.measured and not test.eligible
    assert math.isnan(test.low) and test.test == "none"
    assert holm([test])[0] == [False]


def test_two_runs_get_an_interval_but_are_never_marked():
    test = between_arms([0.10, 0.11], [0.60, 0.61])  # p tiny, but 2 runs cannot tell the spread
    assert test.measured and test.excludes_zero and test.p < 0.001
    assert not test.eligible and holm([test])[0] == [False]


def test_runs_that_agree_exactly_are_handled():
    same = between_arms([0.2, 0.2, 0.2], [0.2, 0.2, 0.2])
    assert (same.delta, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)
    apart = between_arms([0.2, 0.2, 0.2], [0.5, 0.5, 0.5])
    assert apart.low == apart.high == pytest.approx(0.3) and apart.p == 0.0


def test_against_baseline_without_a_shared_baseline_is_a_one_sample_t():
    finals, baselines = [0.30, 0.42, 0.25, 0.50], [0.10, 0.12, 0.09, 0.11]
    test = against_baseline(finals, baselines)
    changes = np.subtract(finals, baselines)
    one_sample = stats.ttest_1samp(changes, 0.0)
    assert test.test == "one-sample t" and test.runs_reference is None
    assert (test.low, test.high) == pytest.approx(tuple(one_sample.confidence_interval(0.95)))
    assert test.p == pytest.approx(one_sample.pvalue) and test.df == 3


def test_a_shared_baseline_adds_its_evaluation_noise():
    """One baseline evaluation for every run: its noise is one draw for all of them, so its variance adds to
    the variance of the runs' mean change; the t quantile keeps the seeds' k - 1 degrees of freedom."""
    finals, base, variance = [0.30, 0.42, 0.25, 0.50], 0.10, 0.02**2
    test = against_baseline(finals, [base] * 4, variance)
    scale = math.sqrt(stats.sem(finals) ** 2 + variance)
    expected = stats.t.interval(0.95, 3, loc=np.mean(finals) - base, scale=scale)
    assert test.test == "t + baseline noise" and test.df == 3
    assert (test.low, test.high) == pytest.approx(expected)
    assert test.p == pytest.approx(2 * stats.t.sf(test.delta / scale, 3))
    plain = against_baseline(finals, [base] * 4)  # noise unknown: the seeds alone
    assert plain.test == "one-sample t" and test.low < plain.low < plain.high < test.high


def test_t_interval_over_a_few_seeds_is_not_their_range():
    values = [0.386, 0.091, 0.036]
    low, high = t_interval(values)
    expected = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert (low, high) == pytest.approx(expected)
    assert low < min(values) and high > max(values)  # a percentile bootstrap of 3 seeds would give [min, max]
    assert all(math.isnan(v) for v in t_interval([0.2]))


def test_holm_corrects_within_a_table():
    tests = [SeedTest(0.1, 0.01, 0.2, 4.0, p, 3, 3, "welch") for p in (0.03, 0.04, 0.2)]
    marked, adjusted = holm(tests)
    assert marked == [False, False, False]  # each < 0.05 alone, none after Holm (0.03 x 3 > 0.05)
    assert adjusted == pytest.approx([0.09, 0.09, 0.2])
    assert holm(tests[:1])[0] == [True]
    tests.append(SeedTest(0.1, 0.01, 0.2, 4.0, 0.001, 2, 3, "welch"))  # 2 runs: out of the family, unmarked
    marked, adjusted = holm(tests)
    assert marked[-1] is False and math.isnan(adjusted[-1]) and adjusted[:3] == pytest.approx([0.09, 0.09, 0.2])


def test_runs_needed_follows_statsmodels_and_says_how_uncertain_the_spread_is():
    a, b = [0.4, 0.6], [0.4 + 0.1 / math.sqrt(2), 0.6 + 0.1 / math.sqrt(2)]  # pooled SD 0.1414, effect d = 0.5
    needed = runs_needed(a, b)
    expected = math.ceil(TTestIndPower().solve_power(effect_size=0.5, alpha=0.05, power=0.8))
    assert needed.sd == pytest.approx(0.2 / math.sqrt(2)) and needed.per_arm == expected == 64
    assert needed.more_runs == 2 * (64 - 2)
    low_q, high_q = stats.chi2.ppf([0.025, 0.975], 2)
    assert needed.sd_low == pytest.approx(needed.sd * math.sqrt(2 / high_q))
    assert needed.sd_high == pytest.approx(needed.sd * math.sqrt(2 / low_q))
    assert needed.per_arm_low < needed.per_arm < needed.per_arm_high
    assert runs_needed(a, b, effect=0.2).per_arm < needed.per_arm  # a larger effect needs fewer runs
    assert runs_needed(a, a).per_arm is None  # nothing to detect


def test_evaluation_variance_of_fixed_problems():
    # two problems, 2 samples each: p_hat 0.5 and 1.0 -> p(1-p)/(n-1) = 0.25 and 0; sum / problems^2
    assert evaluation_variance({"a": [True, False], "b": [True, True]}) == pytest.approx(0.25 / 4)
    # one sample per problem: the binomial bound p(1-p)/problems
    assert evaluation_variance({"a": [True], "b": [False]}) == pytest.approx(0.25 / 2)
    assert evaluation_variance({}) == 0.0


# --- calibration by simulation ------------------------------------------------------------------------

PROBLEMS, SAMPLES = 110, 2  # the README's offline benchmark: 110 held-out problems x 2 samples


class Simulated:
    """RLVR-like runs: a problem's untrained accuracy is low; a run either takes off (every problem gains
    40 points) or never leaves the untrained model. That is the seed-level random effect: which seeds
    take off, not which problems were drawn, decides an arm's mean. One sweep = one init, one arm per
    rank, one baseline evaluation that all runs share (the baseline cache)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.untrained = self.rng.beta(0.3, 5, size=PROBLEMS)
        self.trained = np.clip(self.untrained + 0.4, 0, 1)

    def evaluate(self, accuracy: np.ndarray) -> np.ndarray:
        """One evaluation: outcomes of SAMPLES samples of every problem."""
        return self.rng.random((PROBLEMS, SAMPLES)) < accuracy[:, None]

    def sweep(self, takeoff: dict, seeds: int) -> tuple[dict, np.ndarray]:
        """rank -> its runs' final outcomes, and the shared baseline's outcomes."""
        runs = {
            rank: [self.evaluate(self.trained if self.rng.random() < p else self.untrained) for _ in range(seeds)]
            for rank, p in takeoff.items()
        }
        return runs, self.evaluate(self.untrained)


def outcomes(evaluation: np.ndarray) -> dict[str, list[bool]]:
    return {f"p{i}": list(row) for i, row in enumerate(evaluation)}


def decide(runs: dict, base: np.ndarray) -> dict[str, bool]:
    """The analysis' `*` decisions on one simulated sweep (one table), by comparison label."""
    finals = {rank: [run.mean() for run in arm] for rank, arm in runs.items()}
    baselines = {rank: [base.mean()] * len(arm) for rank, arm in runs.items()}
    tests = init_tests(finals, baselines, evaluation_variance(outcomes(base)))
    return {label(key): marked for key, marked in zip(tests, holm(list(tests.values()))[0])}


def label(key: tuple) -> str:
    high, low = key
    return f"r={high} vs {low if low == 'baseline' else f'r={low}'}"


@pytest.fixture(autouse=True)
def no_full_collections(monkeypatch):
    """statsmodels' Holm branch runs gc.collect() on every call: with torch loaded in the test process that
    costs about 0.1 s, and the simulations call it thousands of times."""
    monkeypatch.setattr(gc, "collect", lambda *args: 0)


def marked_rate(simulated: Simulated, takeoff: dict, seeds: int, sweeps: int, which: set[str]) -> float:
    decisions = [
        marked
        for _ in range(sweeps)
        for name, marked in decide(*simulated.sweep(takeoff, seeds)).items()
        if name in which
    ]
    return float(np.mean(decisions))


def nominal_bound(count: int, level: float = 0.05) -> float:
    """The nominal rate plus three binomial standard errors of a rate simulated over `count` comparisons."""
    return level + 3 * math.sqrt(level * (1 - level) / count)


def test_the_analysis_decides_as_the_simulation_does(tmp_path):
    """compare() on run rows shaped like a sweep's (summaries only) gives the decisions decide() counts."""
    simulated = Simulated(seed=5)
    for _ in range(5):
        runs, base = simulated.sweep({8: 0.0, 256: 1.0}, 3)
        rows = [
            {
                "init": "sim",
                "rank": rank,
                "seed": seed,
                "status": "completed",
                "eval/b/pass@1": run.mean(),
                "baseline/b/pass@1": base.mean(),
                "baseline/b/se_pass@1": math.sqrt(evaluation_variance(outcomes(base))),
            }
            for rank, arm in runs.items()
            for seed, run in enumerate(arm)
        ]
        found = compare(pd.DataFrame(rows), "b")
        assert {c.label: c.marked for c in found.values()} == decide(runs, base)


@pytest.mark.parametrize("seeds", [3, 6])
def test_a_null_difference_between_arms_is_marked_at_most_at_the_nominal_rate(seeds):
    """Both ranks take off with the same probability: r=256 vs r=8 is a null comparison, marked in about 5%
    of sweeps or fewer. The same comparisons through a bootstrap over problems of the seed-averaged accuracy
    (the earlier `*`, now the evaluation-noise column) exclude 0 in most of them: it must not decide `*`."""
    simulated, sweeps = Simulated(seed=seeds), 1000
    assert marked_rate(simulated, {8: 0.5, 256: 0.5}, seeds, sweeps, {"r=256 vs r=8"}) <= nominal_bound(sweeps)
    flagged = []
    for _ in range(100):
        runs, _ = simulated.sweep({8: 0.5, 256: 0.5}, seeds)
        a, b = (per_problem_accuracy([outcomes(run) for run in runs[rank]]) for rank in (8, 256))
        flagged.append(paired_bootstrap(a, b, resamples=1000).excludes_zero)
    assert np.mean(flagged) > 0.3


def test_runs_that_never_move_are_not_marked_against_their_shared_baseline():
    """No run learns anything: each is the untrained model evaluated again. Against ONE shared baseline
    evaluation a plain one-sample t on the runs' changes would mark about 1 in 5 (the baseline's own noise
    does not shrink with seeds); with that noise counted, about 5% or fewer."""
    sweeps = 1000
    rate = marked_rate(Simulated(seed=1), {8: 0.0, 64: 0.0}, 3, sweeps, {"r=8 vs baseline", "r=64 vs baseline"})
    assert rate <= nominal_bound(2 * sweeps)


def test_a_large_true_difference_is_found_with_enough_seeds():
    rate = marked_rate(Simulated(seed=2), {8: 0.0, 256: 1.0}, 5, 200, {"r=256 vs r=8"})
    assert rate >= 0.9


def test_the_minimum_runs_rule_is_the_documented_one():
    assert MIN_RUNS == 3
