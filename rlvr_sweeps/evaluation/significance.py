"""The evaluation noise of the runs at hand: is a change in Pass@1 more than the luck of the benchmark?

On benchmarks of a few dozen problems a difference of 10 points can come from which problems happen
to be in the benchmark and which samples were drawn. The per-sample records every run writes
(eval/<phase>/<benchmark>.jsonl) give each problem's accuracy; resampling the PROBLEMS with
replacement, the same problems for both sides, gives a percentile interval for the difference of
Pass@1 between two evaluations on the same problems (samples of one problem stay together).

This covers the evaluation of these runs, NOT the training seed: another seed of the same arm can end
far away (RLVR runs on small models take off or not). Comparisons between arms use the runs as their
unit (analysis.seed_stats); this interval stays beside them as "evaluation noise", and is what a
single run's end-of-run verdict can say about itself.

Pure numpy and the standard library: the training run's verdict and its evaluation use it too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A difference of Pass@1 (b - a, as a fraction) with its paired bootstrap interval."""

    delta: float  # mean over the common problems of b's accuracy minus a's: the difference of Pass@1
    low: float  # lower end of the percentile interval
    high: float  # upper end of the percentile interval
    problems: int  # number of problems both sides were evaluated on (the ones resampled)

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0: the difference is unlikely to be noise."""
        return self.low > 0 or self.high < 0

    def describe(self, scale: float = 100, digits: int = 1) -> str:
        """One line for a run's verdict: '+11.0 points [-2.3, +24.1] over 30 problems (evaluation noise of this
        run, not another seed): includes 0'."""
        delta, low, high = (f"{value * scale:+.{digits}f}" for value in (self.delta, self.low, self.high))
        verdict = "excludes 0" if self.excludes_zero else "includes 0"
        return (
            f"{delta} points [{low}, {high}] over {self.problems} problems "
            f"(evaluation noise of this run, not another seed): {verdict}"
        )


def read_outcomes(path: str | Path) -> dict[str, list[bool]]:
    """Per problem, the outcome of each sample (in sample order) from one per-sample jsonl file.

    Args:
        path: an eval/<phase>/<benchmark>.jsonl file, one JSON object per sample with at least
            `problem_id`, `sample` (index) and `correct`. A repeated (problem_id, sample) keeps
            its last record, so a rewritten sample is not counted twice.
    """
    by_problem: dict[str, dict[int, bool]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_problem.setdefault(str(record["problem_id"]), {})[int(record["sample"])] = bool(record["correct"])
    return {problem: [samples[i] for i in sorted(samples)] for problem, samples in by_problem.items()}


def evaluation_variance(outcomes: dict[str, list[bool]]) -> float:
    """Sampling variance of one evaluation's Pass@1 with its problems held fixed: the sum over problems of
    p(1-p)/n, divided by problems^2, each p(1-p)/n estimated without bias as p_hat(1-p_hat)/(n-1). With one
    sample per problem the per-problem variance cannot be told from the problems' spread, so the binomial
    bound pass@1 (1 - pass@1) / problems is used. 0 for no outcome.

    It is the noise that evaluating the same model again (other samples) would show: the part of a
    shared baseline's uncertainty that more training seeds do not reduce."""
    kept = [samples for samples in outcomes.values() if samples]
    if not kept:
        return 0.0
    if min(map(len, kept)) < 2:
        p = sum(sum(samples) / len(samples) for samples in kept) / len(kept)
        return p * (1 - p) / len(kept)
    accuracy = [sum(samples) / len(samples) for samples in kept]
    return sum(a * (1 - a) / (len(s) - 1) for a, s in zip(accuracy, kept)) / len(kept) ** 2


def per_problem_accuracy(outcomes_by_seed: list[dict[str, list[bool]]]) -> dict[str, float]:
    """Mean accuracy per problem: the samples of each seed averaged, then the seeds averaged.

    Only problems present in every input are kept, so that every seed weighs the same on each
    problem (a problem missing from one seed would otherwise be judged by fewer runs); the
    length of the result is the number of problems kept. No input gives an empty result.

    Args:
        outcomes_by_seed: one read_outcomes() result per run (seed) of the same arm and phase.
    """
    if not outcomes_by_seed:
        return {}
    common = set.intersection(*({p for p, samples in outcomes.items() if samples} for outcomes in outcomes_by_seed))
    return {
        problem: float(np.mean([np.mean(outcomes[problem]) for outcomes in outcomes_by_seed]))
        for problem in sorted(common)
    }


def paired_bootstrap(
    a: dict[str, float], b: dict[str, float], resamples: int = 10000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Difference of Pass@1 (b - a) over the problems both were evaluated on, with a percentile interval.

    Each resample draws as many problems as there are, with replacement, and uses the SAME drawn
    problems for a and b (paired): the difference of two arms on one problem is much less noisy
    than either arm's accuracy, because both face the same easy and hard problems.

    Args:
        a, b: per-problem accuracy (per_problem_accuracy()) of the reference and the compared arm.
        resamples: bootstrap resamples; the draw is one (resamples x problems) array of indices.
        seed: numpy default_rng seed; a fixed seed gives the same interval every time.
        level: coverage of the interval (0.95: the 2.5th and 97.5th percentiles of the resampled means).

    The common problems are taken in sorted order of their id; the indices are
    default_rng(seed).integers(0, problems, size=(resamples, problems)).
    """
    common = sorted(a.keys() & b.keys())
    if not common:
        raise ValueError("paired_bootstrap: the two sides have no problem in common")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"paired_bootstrap needs resamples >= 1 and 0 < level < 1 (got {resamples}, {level})")
    diffs = np.array([b[p] for p in common], dtype=float) - np.array([a[p] for p in common], dtype=float)
    indices = np.random.default_rng(seed).integers(0, len(common), size=(resamples, len(common)))
    means = diffs[indices].mean(axis=1)
    low, high = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(diffs.mean()), float(low), float(high), len(common))


def run_delta(
    run_dir: str | Path, benchmark: str, resamples: int = 10000, seed: int = 0, level: float = 0.95
) -> Interval | None:
    """One run's change on `benchmark`: its final evaluation against its untrained baseline.

    Args:
        run_dir: the run folder, holding eval/baseline/<benchmark>.jsonl and eval/final/<benchmark>.jsonl.
        benchmark: the benchmark's name (the jsonl file's stem).
        resamples, seed, level: as in paired_bootstrap().

    Returns None when either file is missing (no baseline evaluated, or the run did not finish).
    """
    files = [Path(run_dir) / "eval" / phase / f"{benchmark}.jsonl" for phase in ("baseline", "final")]
    if not all(f.exists() for f in files):
        return None
    baseline, final = (per_problem_accuracy([read_outcomes(f)]) for f in files)
    if not baseline.keys() & final.keys():
        return None
    return paired_bootstrap(baseline, final, resamples, seed, level)
