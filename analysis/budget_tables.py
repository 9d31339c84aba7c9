"""Pass@1 by budget level and LoRA rank, one table per init (and per other setting the sweep varies), when the runs
reach several budget levels (milestones, or an explicit budget sweep: analysis.budget_axis).

A row is a budget level, from the smallest up, with the cells of that level's metric table: the mean final Pass@1
of the runs at that level, the change against the untrained baseline and its mark from that level's own comparisons
(one Holm family per level, as the per-level tables have it), so a mark means the same thing wherever it appears.
Under the table a line names where two ranks cross between levels (which rank is ahead changes) and where an arm
collapses after a level (above the baseline's margin at one level, below it at a later one).

CSV (<benchmark>_pass1_budget_x_rank_<init>[_<setting>].csv): index `budget_level`; the displayed columns
(`baseline`, `r=8`, ...), then per rank column C `C_pass1` (mean, %), `C_runs`, `C_delta`, `C_marked`, and
`training_hours` (the mean the level's runs spent training).
"""

from __future__ import annotations

import math

import pandas as pd

from .budget_axis import LEVEL, level_order, varies_budget
from .comparisons import (
    SIGNIFICANT,
    SPLIT_BY,
    Comparison,
    column_label,
    rank_order,
    setting_label,
    settings_groups,
    slug,
)
from .render import CELL_NOTE, GAP, Table
from .seed_stats import MIN_RUNS


def budget_groups(runs: pd.DataFrame) -> list[tuple]:
    """(setting without the budget level, init, runs) of each budget x rank table."""
    return [
        (setting, init, group)
        for setting, of_setting in settings_groups(runs, tuple(c for c in SPLIT_BY if c != LEVEL))
        for init, group in of_setting.groupby("init", sort=True)
        if group[LEVEL].nunique() > 1
    ]


def budget_tables(
    runs: pd.DataFrame, benchmark: str, compared: dict[tuple, Comparison], collapse_margin: float
) -> list[Table]:
    """The budget x rank tables of `benchmark`; `compared`: analysis.comparisons.all_comparisons of these runs."""
    from .tables import metric_table

    if not varies_budget(runs):
        return []
    made = []
    for setting, init, group in budget_groups(runs):
        rows, numbers, hours, notes, per_level = {}, {}, {}, [], {}
        for level in level_order(group):
            at_level = group[group[LEVEL] == level]
            found = {
                key[1:]: c
                for key, c in compared.items()
                if key[1] == init and dict(key[0]).get(LEVEL) == level and _same_setting(key[0], setting)
            }
            table = metric_table(at_level, benchmark, "pass@1", collapse_margin, found)
            rows[level] = table.frame.loc[init]
            numbers[level] = table.values.loc[init]
            per_level[level] = (table, found)
            done = at_level[at_level["status"] == "completed"]["training_hours"].dropna()
            hours[level] = float(done.mean()) if len(done) else math.nan
        ranks = rank_order(group["rank"].unique())
        frame = (
            pd.DataFrame(rows).T.reindex(columns=["baseline", *map(column_label, ranks)]).fillna(f"{GAP} (no runs)")
        )
        values = pd.DataFrame(numbers).T.reindex(columns=["baseline", *ranks]).astype(float)
        first_table = next(iter(per_level.values()))[0]
        notes.append(
            "Rows: budget levels (milestones of the runs, or separate runs of that budget: analysis.budget_axis), "
            "each with its own comparisons (one Holm family per level). Values in %: Pass@1 at that budget (change "
            f"against the untrained baseline). {CELL_NOTE}"
        )
        notes.append(
            f"{SIGNIFICANT} as in each level's own table: the training run is the unit, >= {MIN_RUNS} runs a side, "
            "Holm's correction over that level's comparisons (significance.csv, setting budget_level=...)."
        )
        notes += [n for n in first_table.notes[1:] if n.startswith(("One run", "Fewer than"))]
        notes += crossings(values, collapse_margin)
        notes += level_notes({level: table.notes for level, (table, _) in per_level.items()})
        label = setting_label(setting)
        name = f"{benchmark}/pass@1_budget_x_rank_{init}" + (f"_{slug(label)}" if label else "")
        title = f"{benchmark} Pass@1 by budget and LoRA rank, {init}" + (f" ({label})" if label else "")
        made.append(Table(name, title, frame, values, notes, _csv(frame, values, per_level, init, hours), LEVEL))
    return made


def level_notes(notes: dict[str, list[str]]) -> list[str]:
    """The gap and left-out notes of the levels' tables, each once, with the levels it holds at."""
    found: dict[str, list[str]] = {}
    for level, texts in notes.items():
        for text in texts:
            if text.startswith(("‡", GAP)):
                found.setdefault(text, []).append(level)
    return [
        f"{text.rstrip('.')} ({'every level' if len(levels) == len(notes) else 'at ' + ', '.join(levels)})."
        for text, levels in found.items()
    ]


def _same_setting(full: tuple, without_level: tuple) -> bool:
    return tuple((c, v) for c, v in full if c != LEVEL) == tuple(without_level)


def crossings(values: pd.DataFrame, collapse_margin: float) -> list[str]:
    """Lines on where ranks cross between budget levels, and where an arm collapses after a level. `values`: rows
    = levels (ascending), columns "baseline" and ranks, mean Pass@1 (fractions; NaN for a gap)."""
    ranks = [c for c in values.columns if c != "baseline"]
    lines = []
    for i, low in enumerate(ranks):
        for high in ranks[i + 1 :]:
            diff = (values[high] - values[low]).dropna()
            ahead = diff[diff > 0].index.tolist()
            behind = diff[diff < 0].index.tolist()
            if ahead and behind:
                at = ", ".join(f"{level} ({diff[level] * 100:+.1f})" for level in diff.index)
                lines.append(
                    f"{column_label(high)} and {column_label(low)} cross: {column_label(high)} minus "
                    f"{column_label(low)} is {at} points (means over runs; the marks above say which differences "
                    "the seeds support)."
                )
    for rank in ranks:
        series, base = values[rank], values["baseline"]
        below = (series < base - collapse_margin).fillna(False)
        healthy = (series >= base - collapse_margin).fillna(False)
        for position, level in enumerate(values.index):
            earlier = [lv for lv in values.index[:position] if healthy[lv]]
            if below[level] and earlier:
                lines.append(
                    f"{column_label(rank)} collapses after {earlier[-1]}: {series[earlier[-1]] * 100:.1f} there, "
                    f"{series[level] * 100:.1f} at {level} (baseline {base[level] * 100:.1f}; margin "
                    f"{collapse_margin * 100:.1f} points)."
                )
                break
    return lines


def _csv(frame: pd.DataFrame, values: pd.DataFrame, per_level: dict, init, hours: dict) -> pd.DataFrame:
    columns = {}
    for rank in rank_order([c for c in values.columns if c != "baseline"]):
        label = column_label(rank)
        found = [per_level[level][1].get((init, rank, "baseline")) for level in values.index]
        columns[f"{label}_pass1"] = values[rank] * 100
        columns[f"{label}_runs"] = [c.seeds.runs if c else 0 for c in found]
        columns[f"{label}_delta"] = (values[rank] - values["baseline"]) * 100
        columns[f"{label}_marked"] = [bool(c and c.marked) for c in found]
    columns["training_hours"] = [hours[level] for level in values.index]
    return frame.join(pd.DataFrame(columns, index=values.index))
