"""Pass@1 by LoRA rank and learning rate (experiment=rank_vs_lr): one grid per init (and per adapter variant
and budget when the sweep varies them), each cell the runs of one rank at one learning rate.

A cell's change against the untrained baseline and its `*` are those of the metric table of that learning
rate (analysis.comparisons.all_comparisons: the same runs, the same Holm family), so a mark means the same
thing wherever it appears. Each rank's best learning rate (highest mean final Pass@1) is marked ▲: a
description of these runs, not a test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .comparisons import (
    SPLIT_BY,
    Comparison,
    Setting,
    baseline,
    column_label,
    final_values,
    gap_reason,
    rank_order,
    setting_label,
    setting_order,
    settings_groups,
    slug,
)
from .render import CELL_NOTE, GAP, Table, cell

BEST = " ▲"  # after each rank's best learning rate in the rank x learning-rate tables


def varies_learning_rate(runs: pd.DataFrame) -> bool:
    """Whether the completed runs have several learning rates: the sweeps with rank x learning-rate tables."""
    ok = runs[runs["status"] == "completed"] if "status" in runs else runs
    return "learning_rate" in ok and ok["learning_rate"].nunique() > 1


def lr_labels(lrs: list[float]) -> dict[float, str]:
    """Compact labels ("lr=1e-05", "lr=3e-06") that read back as the rates themselves: the fewest digits, the same
    for every rate, at which each label is exact (1.5e-05 is "lr=1.5e-05", never a rounded "lr=2e-05")."""
    for digits in range(17):
        labels = {lr: f"lr={lr:.{digits}e}" for lr in lrs}
        if all(float(label.removeprefix("lr=")) == lr for lr, label in labels.items()):
            return labels
    return {lr: f"lr={lr!r}" for lr in lrs}


def rank_lr_groups(runs: pd.DataFrame) -> list[tuple[Setting, object, pd.DataFrame]]:
    """(setting, init, runs) of each rank x learning-rate table: settings_groups without the learning
    rate (the table's columns), then each init."""
    return [
        (setting, init, group)
        for setting, runs_of_setting in settings_groups(runs, tuple(c for c in SPLIT_BY if c != "learning_rate"))
        for init, group in runs_of_setting.groupby("init", sort=True)
    ]


def with_learning_rate(setting: Setting, lr: float) -> Setting:
    """The metric tables' setting of the runs of `setting` at learning rate `lr` (keys in SPLIT_BY order)."""
    return tuple(sorted((*setting, ("learning_rate", lr)), key=lambda item: setting_order(item[0])))


@dataclass
class RankLrGrid:
    """One init's final Pass@1 by LoRA rank and learning rate (fractions), cells keyed (rank, lr)."""

    ranks: list  # rank_order
    lrs: list[float]  # ascending
    finals: dict[tuple, list[float]]  # the seeds' final Pass@1 (seed order); empty for a gap
    gaps: dict[tuple, str]  # why a cell is empty: "failed", "damaged", "no runs", "missing"
    baselines: dict[float, float]  # per lr: the untrained baseline of its runs (NaN when none)
    against_baseline: dict[tuple, Comparison]  # the change against the baseline, as its metric table has it
    best: dict  # rank -> its lr of highest mean final Pass@1 (the lowest such lr on ties); absent without cells

    def mean(self, rank, lr) -> float:
        finals = self.finals[(rank, lr)]
        return float(np.mean(finals)) if finals else math.nan

    def delta(self, rank, lr) -> float:
        return self.mean(rank, lr) - self.baselines[lr]

    def mark(self, rank, lr) -> str:
        comparison = self.against_baseline.get((rank, lr))
        return comparison.symbol if comparison else ""


def rank_lr_grid(runs: pd.DataFrame, benchmark: str, setting: Setting, comparisons: dict[tuple, Comparison]):
    """The cells of one init's runs in one setting; `comparisons` are all_comparisons() of the whole sweep."""
    final_key, base_key = f"eval/{benchmark}/pass@1", f"baseline/{benchmark}/pass@1"
    ranks = rank_order(runs["rank"].unique())
    lrs = sorted(float(lr) for lr in runs["learning_rate"].dropna().unique())
    finals, gaps, baselines, against = {}, {}, {}, {}
    for lr in lrs:
        runs_lr = runs[runs["learning_rate"] == lr]
        baselines[lr] = baseline(runs_lr, base_key)
        for rank in ranks:
            cell_runs = runs_lr[runs_lr["rank"] == rank]
            finals[(rank, lr)] = final_values(cell_runs, final_key)
            if not finals[(rank, lr)]:
                gaps[(rank, lr)] = gap_reason(cell_runs, final_key)
            found = comparisons.get((with_learning_rate(setting, lr), runs["init"].iloc[0], rank, "baseline"))
            if found is not None:
                against[(rank, lr)] = found
    best = {}
    for rank in ranks:
        means = [(float(np.mean(finals[(rank, lr)])), lr) for lr in lrs if finals[(rank, lr)]]
        if means:
            best[rank] = max(means, key=lambda mean_lr: mean_lr[0])[1]  # max keeps the first of equals
    return RankLrGrid(ranks, lrs, finals, gaps, baselines, against, best)


def rank_lr_tables(runs: pd.DataFrame, benchmark: str, comparisons: dict[tuple, Comparison]) -> list[Table]:
    """Final Pass@1 on `benchmark` by LoRA rank (rows) and learning rate (columns), one table per init
    (and per adapter variant / budget when they vary), with the change against the baseline and each
    rank's best learning rate marked."""
    tables = []
    for setting, init, group in rank_lr_groups(runs):
        grid = rank_lr_grid(group, benchmark, setting, comparisons)
        if not grid.lrs:
            continue
        labels = lr_labels(grid.lrs)
        frame, values, numbers, gaps = {}, {}, {}, []
        for rank in grid.ranks:
            row = column_label(rank)
            frame[row], values[rank], numbers[row] = {}, {}, {}
            for lr in grid.lrs:
                label, comparison = labels[lr], grid.against_baseline.get((rank, lr))
                if grid.finals[(rank, lr)]:
                    text = cell(grid.finals[(rank, lr)], baseline=grid.baselines[lr], mark=grid.mark(rank, lr))
                    frame[row][label] = text + (BEST if grid.best.get(rank) == lr else "")
                else:
                    frame[row][label] = f"{GAP} ({grid.gaps[(rank, lr)]})"
                    gaps.append(f"{row} {label}: {grid.gaps[(rank, lr)]}")
                values[rank][lr] = grid.mean(rank, lr)
                seeds = comparison.seeds if comparison else None
                numbers[row].update(
                    {
                        f"{label}_pass1": grid.mean(rank, lr) * 100,
                        f"{label}_runs": len(grid.finals[(rank, lr)]),
                        f"{label}_delta": grid.delta(rank, lr) * 100,
                        f"{label}_delta_ci_low": seeds.low * 100 if seeds else math.nan,
                        f"{label}_delta_ci_high": seeds.high * 100 if seeds else math.nan,
                        f"{label}_marked": bool(comparison and comparison.marked),
                    }
                )
            numbers[row]["best_learning_rate"] = grid.best.get(rank, math.nan)
        notes = [
            "Values in %: final Pass@1 (change against the untrained baseline of the runs with that learning "
            f"rate). {CELL_NOTE} Columns: the learning rate given to the optimizer.{BEST} marks each rank's best "
            "learning rate (highest mean final Pass@1; the lower learning rate on ties): a description of these "
            "runs, not a test."
        ]
        base_values = {lr: b for lr, b in grid.baselines.items() if not math.isnan(b)}
        if len({f"{b * 100:.1f}" for b in base_values.values()}) == 1:
            notes.append(f"Untrained baseline: {next(iter(base_values.values())) * 100:.1f}%.")
        elif base_values:
            notes.append(
                "Untrained baseline: "
                + ", ".join(f"{labels[lr]} {b * 100:.1f}%" for lr, b in base_values.items())
                + "."
            )
        if grid.against_baseline:
            notes.append(
                "Marks as in the Pass@1 table of each learning rate (significance.csv, rows of that learning rate): "
                "* the seed-level interval of the change excludes 0 after Holm's correction (>= 3 runs); "
                "° one run, the change is beyond the evaluation noise of that run only."
            )
        if gaps:
            notes.append(f"{GAP} marks a gap: " + "; ".join(gaps) + ".")
        label = setting_label(setting)
        name = f"{benchmark}/pass@1_rank_x_lr/{init}" + (f"/{slug(label)}" if label else "")
        title = f"{benchmark} Pass@1 by LoRA rank and learning rate ({init}{', ' + label if label else ''})"
        tables.append(
            Table(
                name,
                title,
                pd.DataFrame.from_dict(frame, orient="index"),
                pd.DataFrame.from_dict(values, orient="index"),
                notes,
                pd.DataFrame.from_dict(numbers, orient="index"),
                index_label="rank",
            )
        )
    return tables
