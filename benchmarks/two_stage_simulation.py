"""How well does search=two_stage pick each rank's best learning rate, and is its rank verdict calibrated?

    .venv/bin/python benchmarks/two_stage_simulation.py [--searches 2000] [--seed 0]

A simulated landscape in the shape "LoRA Without Regret" reports (each rank has its own best learning rate, the
lower the rank the higher; a run takes off or never leaves the untrained model, the seed deciding which), with a
score at the stage-1 milestone that tracks the final one imperfectly: the earlier the milestone, the more of the
early score is a transient that does not last; and a rate one step above a rank's best is ahead early and falls
back later (it learns fast, then collapses more often). Promotion (planning.search.promote) sees only the early
score on a 100-problem selection benchmark (n=4). Printed: per milestone and stage-1 seeds, how often each rank's
promoted rate is its truly best one. Then, on a flat landscape (no rank better than another at any rate), how often
the verdict between ranks on the stage-2 seeds (Welch's t, Holm over the rank pairs, analysis.seed_stats) marks a
difference: the nominal 5% when promotion and verdict use different runs.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.seed_stats import between_arms, holm  # noqa: E402
from rlvr_sweeps.planning.search import TwoStage, promote  # noqa: E402

RANKS = (1, 8, 64, 256)
RATES = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4)
BEST = {1: 4, 8: 3, 64: 2, 256: 1}  # index of each rank's best rate: lower ranks want higher rates
UNTRAINED, GAIN = 0.05, 0.40  # Pass@1 of the untrained model; what a run that takes off gains
SELECTION_SAMPLES = 100 * 4  # the selection benchmark: 100 problems x 4 samples
EVAL_SAMPLES = 30 * 16  # a reported benchmark (AIME-sized) at n=16


class Landscape:
    """Final take-off probability p(rank, rate) (0.8 at a rank's best rate, falling off two ways), and a score at a
    milestone m that is GAIN x (sqrt(m) x took_off + (1 - sqrt(m)) x transient) plus, one rate above the best, an
    early lead that fades by the end; every score is measured with the binomial noise of its benchmark."""

    def __init__(self, seed: int, flat: bool = False):
        self.rng = np.random.default_rng(seed)
        self.flat = flat

    def takeoff(self, rank: int, rate: int) -> float:
        if self.flat:
            return 0.5
        return 0.8 * float(np.exp(-((rate - BEST[rank]) ** 2)))

    def run(self, rank: int, rate: int, milestone: float) -> tuple[float, float]:
        """One run: its selection score at the milestone and its final Pass@1 on a reported benchmark."""
        took_off = self.rng.random() < self.takeoff(rank, rate)
        transient = self.rng.random() < 0.5
        weight = np.sqrt(milestone)
        lead = 0.0 if self.flat or rate != BEST[rank] + 1 else 0.5 * (1 - milestone)
        early = UNTRAINED + GAIN * (weight * took_off + (1 - weight) * transient + lead)
        final = UNTRAINED + GAIN * took_off
        return self.measure(min(early, 1.0), SELECTION_SAMPLES), self.measure(final, EVAL_SAMPLES)

    def measure(self, accuracy: float, samples: int) -> float:
        return self.rng.binomial(samples, accuracy) / samples


def one_search(landscape: Landscape, design: TwoStage) -> tuple[dict, dict]:
    """Stage 1 and promotion: the promoted rate index per rank, and stage 2's final scores per rank."""
    scores = {
        (rank, rate): [landscape.run(rank, rate, design.milestone)[0] for _ in range(design.stage1_seeds)]
        for rank in RANKS
        for rate in range(len(RATES))
    }
    chosen = {rank: int(rates[0]) for rank, rates in promote(scores, design.promote).items()}
    stage2 = {rank: [landscape.run(rank, chosen[rank], 1.0)[1] for _ in range(design.stage2_seeds)] for rank in RANKS}
    return chosen, stage2


def picking_rate(design: TwoStage, searches: int, seed: int) -> float:
    """The share of (search, rank) pairs whose promoted rate is the rank's truly best one."""
    landscape = Landscape(seed)
    hits = []
    for _ in range(searches):
        chosen, _ = one_search(landscape, design)
        hits += [chosen[rank] == BEST[rank] for rank in RANKS]
    return float(np.mean(hits))


def false_positive_rate(design: TwoStage, searches: int, seed: int) -> float:
    """On a flat landscape, the share of rank pairs the verdict marks (stage-2 seeds, Holm over the pairs)."""
    landscape = Landscape(seed, flat=True)
    marks = []
    for _ in range(searches):
        _, stage2 = one_search(landscape, design)
        tests = [between_arms(stage2[low], stage2[high]) for low, high in itertools.combinations(RANKS, 2)]
        marks += holm(tests)[0]
    return float(np.mean(marks))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--searches", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("milestone  stage-1 seeds  best rate picked (share of ranks)")
    for milestone, seeds in itertools.product((0.125, 0.25, 0.5), (1, 2, 3)):
        rate = picking_rate(TwoStage(milestone, seeds, 1, 3), args.searches, args.seed)
        print(f"{milestone:9g}  {seeds:13d}  {rate:.3f}")
    design = TwoStage(0.25, 1, 1, 3)
    rate = false_positive_rate(design, args.searches, args.seed)
    print(f"flat landscape, stage 2 at 3 seeds per rank: {rate:.3f} of rank pairs marked (nominal 0.05 or less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
