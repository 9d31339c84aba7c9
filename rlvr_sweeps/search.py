"""Each LoRA rank at its own best learning rate, for less than a grid costs (search=two_stage).

Stage 1 trains every (rank, learning rate) arm to an early milestone of the budget (budget.milestones: the early
checkpoint *is* the short run) with `search.stage1_seeds` seeds. Promotion reads only the selection benchmark at
that milestone (never a reported one) and keeps, per rank, the `search.promote` learning rates of highest mean
score. Stage 2 trains each rank at its promoted rate(s) with `search.stage2_seeds` new seeds to the full budget.
The verdict between ranks is made on the stage-2 seeds only: the stage-1 runs that won were picked for being good,
and counting them would bias every comparison towards the winners (they are reported beside, labelled).

This module holds what the plan and the promotion read: the design (`TwoStage`), the promotion rule (`promote`)
and the arithmetic of what both stages cost against the grids (`costs`). It imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class TwoStage:
    """search=two_stage: the design of one search."""

    milestone: float
    """The fraction of the budget stage 1 trains to (a milestone of it)."""
    stage1_seeds: int
    promote: int
    """Learning rates promoted per rank."""
    stage2_seeds: int

    @classmethod
    def from_config(cls, search_cfg) -> TwoStage:
        try:
            design = cls(
                float(search_cfg.milestone),
                int(search_cfg.stage1_seeds),
                int(search_cfg.promote),
                int(search_cfg.stage2_seeds),
            )
        except (TypeError, ValueError) as err:
            raise UserError(f"search: milestone, stage1_seeds, promote and stage2_seeds must be numbers ({err}).")
        if not 0 < design.milestone < 1:
            raise UserError(f"search.milestone={design.milestone}: a fraction of the budget in (0, 1).")
        if min(design.stage1_seeds, design.promote, design.stage2_seeds) < 1:
            raise UserError("search.stage1_seeds, search.promote and search.stage2_seeds must each be at least 1.")
        return design


def promote(scores: dict[tuple, list[float]], count: int) -> dict[object, list[float]]:
    """Per rank, the `count` learning rates whose stage-1 runs scored highest on the selection benchmark at the
    milestone (mean over the arm's seeds; a tie goes to the lower rate). `scores`: (rank, learning rate) -> the
    arm's scores; an arm without a score (its runs failed) is never promoted."""
    by_rank: dict[object, list[tuple[float, float]]] = {}
    for (rank, lr), values in scores.items():
        kept = [v for v in values if v is not None and not math.isnan(v)]
        if kept:
            by_rank.setdefault(rank, []).append((sum(kept) / len(kept), float(lr)))
    return {
        rank: [lr for _, lr in sorted(arms, key=lambda arm: (-arm[0], arm[1]))[:count]]
        for rank, arms in by_rank.items()
    }


@dataclass(frozen=True)
class StageCosts:
    """Device-hours of a two-stage search and of the grids it replaces, with the runs behind each figure."""

    stage1_runs: int
    stage1_hours: float
    continued_runs: int
    continued_hours: float
    stage2_runs: int
    stage2_hours: float
    grid_runs: int
    grid_hours: float  # the one-seed grid
    grid3_hours: float  # the three-seed grid

    @property
    def total_hours(self) -> float:
        return self.stage1_hours + self.continued_hours + self.stage2_hours


def costs(design: TwoStage, ranks: int, learning_rates: int, run_hours: float, stage1_run_hours: float) -> StageCosts:
    """What both stages cost, from the device-hours of one full run of the grid (`run_hours`: training and every
    evaluation) and of one stage-1 run to the milestone (`stage1_run_hours`: that share of the training and of the
    selection evaluations, and the baseline). Stage 1: every arm's seeds to the milestone; the promoted stage-1 runs
    continue from the milestone to the full budget (what remains of a full run); stage 2: new seeds of each promoted
    arm, full runs."""
    arms = ranks * learning_rates
    stage1_runs = arms * design.stage1_seeds
    continued_runs = ranks * design.promote * design.stage1_seeds
    stage2_runs = ranks * design.promote * design.stage2_seeds
    return StageCosts(
        stage1_runs,
        stage1_runs * stage1_run_hours,
        continued_runs,
        continued_runs * (run_hours - stage1_run_hours),
        stage2_runs,
        stage2_runs * run_hours,
        arms,
        arms * run_hours,
        3 * arms * run_hours,
    )


def cost_lines(found: StageCosts, design: TwoStage, device: str = "device") -> list[str]:
    """The plan's lines on a two-stage search: each stage with its arithmetic, and the grids beside it."""
    return [
        f"search=two_stage: stage 1 trains {found.stage1_runs} runs to {design.milestone:g} of the budget "
        f"({found.stage1_hours:.1f} {device}-hours), promotes {design.promote} learning rate(s) per rank on the "
        f"selection benchmark, continues the {found.continued_runs} promoted stage-1 run(s) to the full budget "
        f"({found.continued_hours:.1f}), and trains {found.stage2_runs} stage-2 runs ({design.stage2_seeds} new seeds "
        f"per rank, {found.stage2_hours:.1f}): {found.total_hours:.1f} {device}-hours in all",
        f"the grid instead: {found.grid_runs} runs with one seed each, {found.grid_hours:.1f} {device}-hours (no "
        f"seed-level verdict possible); with three seeds each, {found.grid3_hours:.1f}",
    ]


def check_search(search_cfg, plan_only: bool) -> None:
    """The design must be one that can run; and until the staged launch (stage 1, the promotion job, stage 2) is
    built, a two-stage search is priced (dry_run=true) but not launched, rather than silently run as a grid."""
    if (search_cfg or {}).get("name") != "two_stage":
        return
    TwoStage.from_config(search_cfg)
    if not plan_only:
        raise UserError(
            "search=two_stage: the staged launch (stage 1, promotion, stage 2) is not built yet; dry_run=true prints "
            "what both stages would cost. Meanwhile run the grid (search=grid) or its stage 1 by hand with "
            "budget.milestones."
        )
