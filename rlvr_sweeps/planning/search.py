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

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError


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
    return {rank: [lr for _, lr in arms[:count]] for rank, arms in _ranked(scores).items()}


def ties(scores: dict[tuple, list[float]], count: int) -> dict[object, list[float]]:
    """Per rank whose choice the tie rule made rather than the scores: the learning rates (ascending) that scored
    exactly what the last promoted one scored, promoted or not. Ranks the scores decided are absent."""
    found = {}
    for rank, arms in _ranked(scores).items():
        if len(arms) > count and math.isclose(arms[count - 1][0], arms[count][0], rel_tol=0, abs_tol=1e-12):
            edge = arms[count - 1][0]
            found[rank] = sorted(lr for mean, lr in arms if math.isclose(mean, edge, rel_tol=0, abs_tol=1e-12))
    return found


def _ranked(scores: dict[tuple, list[float]]) -> dict[object, list[tuple[float, float]]]:
    """rank -> (mean score, learning rate) of its scored arms, best first (the lower rate first on ties)."""
    by_rank: dict[object, list[tuple[float, float]]] = {}
    for (rank, lr), values in scores.items():
        kept = [v for v in values if v is not None and not math.isnan(v)]
        if kept:
            by_rank.setdefault(rank, []).append((sum(kept) / len(kept), float(lr)))
    return {rank: sorted(arms, key=lambda arm: (-arm[0], arm[1])) for rank, arms in by_rank.items()}


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


def cost_lines(found: StageCosts, design: TwoStage, device: str = "device", price: float | None = None) -> list[str]:
    """The plan's lines on a two-stage search: each stage with its arithmetic, and the grids beside it; in dollars
    too at `price` per device-hour."""

    def at(hours: float) -> str:
        return f"{hours:.1f} {device}-hours" + (f", ${hours * price:,.0f}" if price else "")

    return [
        f"search=two_stage: stage 1 trains {found.stage1_runs} runs to {design.milestone:g} of the budget "
        f"({at(found.stage1_hours)}), promotes {design.promote} learning rate(s) per rank on the selection "
        f"benchmark, continues the {found.continued_runs} promoted stage-1 run(s) to the full budget "
        f"({at(found.continued_hours)}), and trains {found.stage2_runs} stage-2 runs ({design.stage2_seeds} new "
        f"seeds per rank, {at(found.stage2_hours)}): {at(found.total_hours)} in all",
        f"the grid instead: {found.grid_runs} runs with one seed each, {at(found.grid_hours)} (no seed-level "
        f"verdict possible); with three seeds each, {at(found.grid3_hours)}",
    ]


def check_search(search_cfg, eval_cfg=None) -> None:
    """The design must be one that can run: its numbers, and a selection benchmark to promote on (never a reported
    one: eval.select_on scores its own subset with its own seed)."""
    if (search_cfg or {}).get("name") != "two_stage":
        return
    TwoStage.from_config(search_cfg)
    if eval_cfg is not None and not eval_cfg.get("select_on"):
        raise UserError(
            "search=two_stage promotes on the selection benchmark at the milestone, and eval.select_on is not set: "
            "set eval.select_on=<one of eval's benchmarks> (experiment=study selects on math500)."
        )


SWEEP_LAUNCHERS = ("SlurmSweepLauncher", "LocalSweepLauncher")  # hydra_plugins/rlvr_sweeps_launcher


def check_launcher(search_cfg, launcher_target: str | None, dry_run: bool) -> None:
    """A two-stage search runs its stages through the project's sweep launchers; any other (Hydra's basic one, a
    single run) would train every arm as a grid, so it is refused before anything runs. A plan is fine anywhere."""
    if (search_cfg or {}).get("name") != "two_stage" or dry_run:
        return
    if not str(launcher_target or "").endswith(SWEEP_LAUNCHERS):
        raise UserError(
            "search=two_stage runs its stages through the sweep launchers: python launch.py -m ... "
            "hydra/launcher=local (or hydra/launcher=slurm_a40); dry_run=true prices it without them."
        )


# The staged launch. A two-stage sweep is a set of plain runs in one sweep folder, told apart by their overrides:
# stage 1 is each arm with trainer.seed=0..stage1_seeds-1 and budget.stop_at=<milestone> (a pause: the run keeps
# the step the milestone's budget would have stopped at, scores it on the selection benchmark, and ends "paused");
# search.json records the promotion; stage 2 is each promoted arm's paused runs without budget.stop_at (they train
# on, the same run folders) and its new seeds. budget.stop_at, like search.*, stays out of folder names, so the
# launcher derives every stage from the sweep's arms and search.json: a relaunch resumes wherever the search stands.
RECORD = "search.json"
SEED_KEY = "trainer.seed"
STOP_KEY = "budget.stop_at"


def check_arms(job_overrides) -> None:
    for overrides in job_overrides:
        given = [o for o in overrides if o.lstrip("+~").split("=")[0] in (SEED_KEY, STOP_KEY)]
        if given:
            raise UserError(
                f"search=two_stage chooses the seeds and the stop itself ({given[0]} given): drop it and set "
                "search.stage1_seeds / search.stage2_seeds."
            )


def stage1_overrides(arm: list[str], design: TwoStage) -> list[list[str]]:
    return [[*arm, f"{SEED_KEY}={seed}", f"{STOP_KEY}={design.milestone:g}"] for seed in range(design.stage1_seeds)]


def stage2_overrides(arm: list[str], design: TwoStage) -> list[list[str]]:
    """A promoted arm's stage-1 runs continued (the same folders, without the stop) and its new seeds."""
    seeds = range(design.stage1_seeds + design.stage2_seeds)
    return [[*arm, f"{SEED_KEY}={seed}"] for seed in seeds]


def stage_of(seed, search_cfg) -> int | None:
    """A run's stage in a two-stage search (from its own config): 1 for the seeds that chose, 2 for the new ones."""
    if (search_cfg or {}).get("name") != "two_stage" or seed is None:
        return None
    return 1 if int(seed) < int(search_cfg.get("stage1_seeds") or 1) else 2


@dataclass(frozen=True)
class Stage1Run:
    """A stage-1 run as the promotion reads it: its arm and the selection score it paused with."""

    run: str
    """The run folder's name."""
    init: str
    rank: object
    learning_rate: float
    seed: int
    status: str
    step: int | None
    score: float | None
    """The best selection score up to the pause (summary.json paused.selection_score); None when it has none."""


def stage1_run(run_dir, summary: dict, init: str, rank, learning_rate: float, seed: int) -> Stage1Run:
    paused = summary.get("paused") or {}
    score = paused.get("selection_score")
    return Stage1Run(
        Path(run_dir).name,
        init,
        rank,
        float(learning_rate),
        int(seed),
        str(summary.get("status", "new")),
        paused.get("step"),
        float(score) if score is not None else None,
    )


def promotion(runs: list[Stage1Run], design: TwoStage, benchmark: str) -> dict:
    """What search.json holds: every stage-1 arm with its runs and mean selection score at the milestone, what was
    promoted per (init, rank) and why. An arm none of whose runs paused with a score (failed, never ran) is listed
    with score null and never promoted."""
    scores: dict[tuple, list[float]] = {}
    for run in runs:
        scores.setdefault(((run.init, run.rank), run.learning_rate), []).append(run.score)
    chosen, tied = promote(scores, design.promote), ties(scores, design.promote)
    arms = []
    for (key, lr), values in sorted(scores.items(), key=lambda item: (_order(item[0][0]), item[0][1])):
        kept = [v for v in values if v is not None and not math.isnan(v)]
        arms.append(
            {
                "init": key[0],
                "rank": key[1],
                "learning_rate": lr,
                "score": sum(kept) / len(kept) if kept else None,
                "runs": [asdict(r) for r in runs if ((r.init, r.rank), r.learning_rate) == (key, lr)],
                "promoted": lr in chosen.get(key, []),
            }
        )
    unscored = [a for a in arms if a["score"] is None]
    return {
        "design": asdict(design),
        "selection_benchmark": benchmark,
        "promoted": [
            {"init": key[0], "rank": key[1], "learning_rates": lrs, "tied": tied.get(key, [])}
            for key, lrs in sorted(chosen.items(), key=lambda item: _order(item[0]))
        ],
        "rule": f"per init and rank, the {design.promote} learning rate(s) with the highest mean {benchmark} Pass@1 "
        f"at {design.milestone:g} of the budget (mean over {design.stage1_seeds} stage-1 seed(s)); ties go to the "
        "lower rate ('tied': the rates among which the tie rule, not the scores, chose); an arm without a score is "
        "never promoted",
        "unscored": [{"init": a["init"], "rank": a["rank"], "learning_rate": a["learning_rate"]} for a in unscored],
        "arms": arms,
    }


def _order(key: tuple) -> tuple:
    """(init, rank) in reading order: inits by name, ranks by number (a full fine-tune last)."""
    init, rank = key
    return (str(init), (0, float(rank), "") if isinstance(rank, (int, float)) else (1, 0.0, str(rank)))


def promoted_arm(record: dict, init: str, rank, learning_rate: float) -> bool:
    return any(
        p["init"] == init
        and p["rank"] == rank
        and any(math.isclose(float(learning_rate), lr) for lr in p["learning_rates"])
        for p in record.get("promoted", [])
    )


def promotion_lines(record: dict) -> list[str]:
    """The plan's lines on a promotion: per init and rank, each rate's score and the one(s) promoted."""
    lines = [f"promotion on {record['selection_benchmark']} at {record['design']['milestone']:g} of the budget:"]
    by_key: dict[tuple, list[dict]] = {}
    for arm in record["arms"]:
        by_key.setdefault((arm["init"], arm["rank"]), []).append(arm)
    tied = {(p["init"], p["rank"]): p.get("tied") for p in record["promoted"]}
    for (init, rank), arms in by_key.items():
        cells = ", ".join(
            f"{arm['learning_rate']:g}: "
            + ("no score" if arm["score"] is None else f"{100 * arm['score']:.1f}%")
            + (" (promoted)" if arm["promoted"] else "")
            for arm in arms
        )
        if tied.get((init, rank)):
            cells += " - a tie: the lower rate by the tie rule, not by the scores"
        lines.append(f"  {init} r={rank}: {cells}")
    return lines


def read_record(sweep_dir) -> dict | None:
    try:
        return json.loads((Path(sweep_dir) / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None
