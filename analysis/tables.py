"""The study's comparison tables: initializations x LoRA ranks, against the untrained baseline.

A cell is the mean over the runs (seeds) of one init and rank, with a bootstrap 95% interval when
there are several; a cell whose runs failed or lack the metric is a marked gap, never a zero.

Per-problem significance (Pass@1, local run folders only: it reads each run's per-sample records
eval/<phase>/<benchmark>.jsonl through the runs' `path` column): for each init and rank, the change
against the untrained baseline and, for each pair of ranks of one init, their difference, each with
a paired bootstrap 95% interval over the benchmark's problems (rlvr_sweeps.significance; seeds
averaged per problem on each side). A change whose interval excludes 0 gets a `*` in the Pass@1
tables. The CSV files, values in percentage points:

- <benchmark>_pass1.csv: index `init`; the displayed columns (`baseline`, `r=8`, ..., `full FT`,
  cells as shown), then for each rank column C in the same order `C_delta` (final minus baseline,
  as shown in the parentheses), `C_delta_ci_low`, `C_delta_ci_high` (the interval of that change;
  empty without per-sample records, e.g. from W&B).
- significance.csv: index `init`; one row per comparison: [`setting` when the sweep varies the
  learning rate or budget,] `benchmark`, `comparison` ("r=8 vs baseline", "r=256 vs r=8": the
  first minus the second), `delta`, `ci_low`, `ci_high`, `problems` (common to both sides),
  `excludes_zero`.
- <benchmark>_pass1_rank_x_lr_<init>[_<setting>].csv, when the completed runs have several learning
  rates (the one given to the optimizer): index `rank` (`r=8`, ...); per learning rate L (`lr=1e-05`,
  ascending) `L_pass1` (final Pass@1, mean over seeds), `L_delta`, `L_delta_ci_low`, `L_delta_ci_high`
  (its change against the untrained baseline, with the per-problem interval), then
  `best_learning_rate` (the rank's learning rate of highest mean final Pass@1, marked ▲ in the table).
  One table per init, and per adapter variant and budget when the sweep varies them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rlvr_sweeps.significance import Interval, paired_bootstrap, per_problem_accuracy, read_outcomes

GAP = "—"
SIGNIFICANT = "*"  # after a change whose paired bootstrap 95% interval over problems excludes 0


@dataclass
class Table:
    name: str
    title: str
    frame: pd.DataFrame  # rows: init; columns: "baseline" and ranks (or comparison fields); values: display strings
    values: pd.DataFrame  # the same cells as numbers (NaN for gaps)
    notes: list[str] = field(default_factory=list)
    csv: pd.DataFrame | None = None  # what the CSV holds when it is not just `frame` (numbers, intervals)
    index_label: str = "init"  # what the rows are: the header of the first column

    def write_csv(self, path: Path) -> None:
        (self.frame if self.csv is None else self.csv).to_csv(path, index_label=self.index_label)

    def markdown(self) -> str:
        header = f"| {self.index_label} | " + " | ".join(str(c) for c in self.frame.columns) + " |"
        rule = "|---|" + "---|" * len(self.frame.columns)
        body = [f"| {idx} | " + " | ".join(str(v) for v in row) + " |" for idx, row in self.frame.iterrows()]
        notes = [f"\n{note}" for note in self.notes]
        return "\n".join([f"**{self.title}**", "", header, rule, *body]) + "".join(notes) + "\n"

    def latex(self) -> str:
        cols = "l" + "r" * len(self.frame.columns)
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            rf"\begin{{tabular}}{{{cols}}}",
            r"\toprule",
            f"{_latex(self.index_label)} & " + " & ".join(_latex(str(c)) for c in self.frame.columns) + r" \\",
            r"\midrule",
        ]
        lines += [
            f"{_latex(str(idx))} & " + " & ".join(_latex(str(v)) for v in row) + r" \\"
            for idx, row in self.frame.iterrows()
        ]
        lines += [
            r"\bottomrule",
            r"\end{tabular}",
            rf"\caption{{{_latex(self.title)}. {_latex(' '.join(self.notes))}}}",
            rf"\label{{tab:{self.name.replace('/', '-').replace('@', 'at')}}}",
            r"\end{table}",
        ]
        return "\n".join(lines) + "\n"


def _latex(text: str) -> str:
    for char, escaped in (
        ("%", r"\%"),
        ("&", r"\&"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("†", r"$^\dagger$"),
        ("—", "--"),
        ("±", r"$\pm$"),
        ("▲", r"$\triangle$"),
    ):
        text = text.replace(char, escaped)
    return text


def bootstrap_ci(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean."""
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = rng.choice(data, size=(resamples, len(data)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def rank_order(ranks) -> list:
    numeric = sorted(r for r in ranks if r != "full")
    return numeric + (["full"] if "full" in set(ranks) else [])


def column_label(rank) -> str:
    return "full FT" if rank == "full" else f"r={rank}"


# settings that, when a sweep varies them, get tables of their own (a cell averages seeds only)
SPLIT_BY = ("learning_rate", "variant", "budget")


def settings_groups(runs: pd.DataFrame, by: tuple[str, ...] = SPLIT_BY) -> list[tuple[str, pd.DataFrame]]:
    varying = [c for c in by if c in runs and runs[c].nunique(dropna=False) > 1]
    if not varying:
        return [("", runs)]
    return [
        (", ".join(f"{c}={v}" for c, v in zip(varying, key if isinstance(key, tuple) else (key,))), group)
        for key, group in runs.groupby(varying, dropna=False, sort=True)
    ]


def _slug(setting: str) -> str:
    """A setting ("learning_rate=1e-05, budget=a40") as a table name's suffix."""
    return setting.replace(", ", "_").replace("=", "")


def _cell(
    values: list[float], scale: float, digits: int, baseline: float | None = None, signed: bool = False, mark: str = ""
) -> str:
    mean = float(np.mean(values))
    text = f"{mean * scale:+.{digits}f}" if signed else f"{mean * scale:.{digits}f}"
    if len(values) > 1:
        low, high = bootstrap_ci(values)
        text += f" [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"
    if baseline is not None and not math.isnan(baseline):
        text += f" ({(mean - baseline) * scale:+.{digits}f}{mark})"
    return text


def _finals(cell: pd.DataFrame, final_key: str) -> tuple[list[float], str]:
    """The final metric of a cell's completed runs, or why there is none: "failed", "no runs", "missing"."""
    ok = cell[cell["status"] == "completed"]
    finals = ok[final_key].dropna().tolist() if final_key in ok else []
    if finals:
        return finals, ""
    if not len(cell):
        return [], "no runs"
    return [], "failed" if (cell["status"] != "completed").all() else "missing"


def _baseline(runs: pd.DataFrame, base_key: str) -> float:
    """The untrained baseline of the completed runs (mean; NaN when none has it)."""
    base = runs.loc[runs["status"] == "completed", base_key].dropna() if base_key in runs else pd.Series(dtype=float)
    return float(base.mean()) if len(base) else math.nan


def problem_accuracy(cell: pd.DataFrame, phase: str, benchmark: str) -> dict[str, float]:
    """Per-problem accuracy of a cell's runs (seeds averaged per problem) from their run folders'
    eval/<phase>/<benchmark>.jsonl; empty when any run lacks the file, since an average over some
    of the seeds would not be the cell the table shows."""
    paths = [p for p in cell["path"] if isinstance(p, str)] if "path" in cell else []
    files = [Path(p) / "eval" / phase / f"{benchmark}.jsonl" for p in paths]
    if not files or len(files) < len(cell) or not all(f.exists() for f in files):
        return {}
    return per_problem_accuracy([read_outcomes(f) for f in files])


def comparisons(runs: pd.DataFrame, benchmark: str) -> dict[tuple, Interval]:
    """Pass@1 on `benchmark` compared problem by problem, per init: each rank against the init's
    untrained baseline, key (init, rank, "baseline"), then each pair of ranks, key (init, higher,
    lower). The runs are those the table averages (completed, with the metric); a comparison is
    left out when a side has no per-sample records (the W&B source has none)."""
    final_key, base_key = f"eval/{benchmark}/pass@1", f"baseline/{benchmark}/pass@1"
    found = {}
    if "path" not in runs:
        return found
    for init, group in runs.groupby("init", sort=True):
        ok = group[group["status"] == "completed"]
        base = problem_accuracy(ok.dropna(subset=[base_key]), "baseline", benchmark) if base_key in ok else {}
        ranks = rank_order(group["rank"].unique())
        arms = (
            {
                rank: problem_accuracy(ok[ok["rank"] == rank].dropna(subset=[final_key]), "final", benchmark)
                for rank in ranks
            }
            if final_key in ok
            else {}
        )
        pairs = [(rank, "baseline") for rank in ranks]
        pairs += [(high, low) for i, high in enumerate(ranks) for low in ranks[:i]]
        sides = {"baseline": base, **arms}
        for high, low in pairs:
            if sides.get(high, {}).keys() & sides.get(low, {}).keys():
                found[(init, high, low)] = paired_bootstrap(sides[low], sides[high])
    return found


def metric_table(
    runs: pd.DataFrame,
    benchmark: str,
    metric: str,
    collapse_margin: float,
    intervals: dict[tuple, Interval] | None = None,
) -> Table:
    """Final `metric` on `benchmark` per init (rows) and rank (columns), with the change against
    the baseline in parentheses; cells below the baseline by more than the margin are flagged.
    For Pass@1, a change whose per-problem interval (`intervals`, from comparisons() when not
    given) excludes 0 is marked, and the CSV carries the changes with their intervals."""
    final_key, base_key = f"eval/{benchmark}/{metric}", f"baseline/{benchmark}/{metric}"
    if intervals is None:
        intervals = comparisons(runs, benchmark) if metric == "pass@1" else {}
    ranks = rank_order(runs["rank"].unique())
    frame, values, gaps, collapsed = {}, {}, [], []
    for init, group in runs.groupby("init", sort=True):
        baseline = _baseline(group, base_key)
        frame[init] = {"baseline": GAP if math.isnan(baseline) else f"{baseline * 100:.1f}"}
        values[init] = {"baseline": baseline}
        for rank in ranks:
            finals, reason = _finals(group[group["rank"] == rank], final_key)
            if not finals:
                frame[init][rank] = f"{GAP} ({reason})"
                values[init][rank] = math.nan
                gaps.append(f"{init} r={rank}: {reason}")
                continue
            interval = intervals.get((init, rank, "baseline"))
            text = _cell(finals, 100, 1, baseline, mark=SIGNIFICANT if interval and interval.excludes_zero else "")
            if not math.isnan(baseline) and np.mean(finals) < baseline - collapse_margin:
                text += " †"
                collapsed.append(f"{init} r={rank}")
            frame[init][rank] = text
            values[init][rank] = float(np.mean(finals))
    columns = ["baseline", *ranks]
    labels = ["baseline", *map(column_label, ranks)]
    notes = [
        f"Values in %, mean over seeds [bootstrap 95% interval when several], (change against the untrained "
        f"baseline). † collapse: the final {metric} is below the baseline by more than "
        f"{collapse_margin * 100:.1f} points."
    ]
    if metric == "pass@1" and intervals:
        notes.append(
            f"A change marked {SIGNIFICANT} has a paired bootstrap 95% interval over the problems "
            f"(per-problem accuracy, seeds averaged per problem) that excludes 0; all intervals are in "
            f"significance.csv."
        )
    if collapsed:
        notes.append("Collapsed: " + ", ".join(collapsed) + ".")
    if gaps:
        notes.append(f"{GAP} marks a gap: " + "; ".join(gaps) + ".")
    shown = pd.DataFrame(frame).T.reindex(columns=columns)
    shown.columns = labels
    numbers = pd.DataFrame(values).T.reindex(columns=columns)
    csv = shown.join(delta_columns(numbers, ranks, intervals)) if metric == "pass@1" else None
    return Table(
        f"{benchmark}/{metric}", f"{benchmark} {metric} by initialization and LoRA rank", shown, numbers, notes, csv
    )


def delta_columns(values: pd.DataFrame, ranks: list, intervals: dict[tuple, Interval]) -> pd.DataFrame:
    """Per rank column C: C_delta (final minus baseline, points), C_delta_ci_low and C_delta_ci_high
    (its per-problem interval; NaN without per-sample records)."""
    columns = {}
    for rank in ranks:
        label, found = column_label(rank), [intervals.get((init, rank, "baseline")) for init in values.index]
        columns[f"{label}_delta"] = (values[rank] - values["baseline"]) * 100
        columns[f"{label}_delta_ci_low"] = [i.low * 100 if i else math.nan for i in found]
        columns[f"{label}_delta_ci_high"] = [i.high * 100 if i else math.nan for i in found]
    return pd.DataFrame(columns, index=values.index)


BEST = " ▲"  # after each rank's best learning rate in the rank x learning-rate tables


def varies_learning_rate(runs: pd.DataFrame) -> bool:
    """Whether the completed runs have several learning rates: the sweeps with rank x learning-rate tables."""
    ok = runs[runs["status"] == "completed"] if "status" in runs else runs
    return "learning_rate" in ok and ok["learning_rate"].nunique() > 1


def lr_labels(lrs: list[float]) -> dict[float, str]:
    """Compact labels ("lr=1e-05", "lr=3e-06"), with more digits when two learning rates would look the same."""
    for digits in range(17):
        labels = {lr: f"lr={lr:.{digits}e}" for lr in lrs}
        if len(set(labels.values())) == len(labels):
            return labels
    return {lr: f"lr={lr!r}" for lr in lrs}


def rank_lr_groups(runs: pd.DataFrame) -> list[tuple[str, object, pd.DataFrame]]:
    """(setting, init, runs) of each rank x learning-rate table: settings_groups without the learning
    rate (the table's columns), then each init."""
    return [
        (setting, init, group)
        for setting, runs_of_setting in settings_groups(runs, tuple(c for c in SPLIT_BY if c != "learning_rate"))
        for init, group in runs_of_setting.groupby("init", sort=True)
    ]


@dataclass
class RankLrGrid:
    """One init's final Pass@1 by LoRA rank and learning rate (fractions), cells keyed (rank, lr)."""

    ranks: list  # rank_order
    lrs: list[float]  # ascending
    finals: dict[tuple, list[float]]  # the seeds' final Pass@1; empty for a gap
    gaps: dict[tuple, str]  # why a cell is empty: "failed", "no runs", "missing"
    baselines: dict[float, float]  # per lr: the untrained baseline of its runs (NaN when none)
    intervals: dict[tuple, Interval]  # the change against the baseline with its per-problem interval
    best: dict  # rank -> its lr of highest mean final Pass@1 (the lowest such lr on ties); absent without cells

    def mean(self, rank, lr) -> float:
        finals = self.finals[(rank, lr)]
        return float(np.mean(finals)) if finals else math.nan

    def delta(self, rank, lr) -> float:
        return self.mean(rank, lr) - self.baselines[lr]


def rank_lr_grid(runs: pd.DataFrame, benchmark: str) -> RankLrGrid:
    """The cells of one init's runs (one setting): each learning rate's runs are the ones its metric
    table averages and compares (comparisons() on them: the same intervals)."""
    final_key, base_key = f"eval/{benchmark}/pass@1", f"baseline/{benchmark}/pass@1"
    ranks = rank_order(runs["rank"].unique())
    lrs = sorted(float(lr) for lr in runs["learning_rate"].dropna().unique())
    finals, gaps, baselines, intervals = {}, {}, {}, {}
    for lr in lrs:
        runs_lr = runs[runs["learning_rate"] == lr]
        baselines[lr] = _baseline(runs_lr, base_key)
        for (_, rank, low), interval in comparisons(runs_lr, benchmark).items():
            if low == "baseline":
                intervals[(rank, lr)] = interval
        for rank in ranks:
            finals[(rank, lr)], reason = _finals(runs_lr[runs_lr["rank"] == rank], final_key)
            if reason:
                gaps[(rank, lr)] = reason
    best = {}
    for rank in ranks:
        means = [(float(np.mean(finals[(rank, lr)])), lr) for lr in lrs if finals[(rank, lr)]]
        if means:
            best[rank] = max(means, key=lambda mean_lr: mean_lr[0])[1]  # max keeps the first of equals
    return RankLrGrid(ranks, lrs, finals, gaps, baselines, intervals, best)


def rank_lr_tables(runs: pd.DataFrame, benchmark: str) -> list[Table]:
    """Final Pass@1 on `benchmark` by LoRA rank (rows) and learning rate (columns), one table per init
    (and per adapter variant / budget when they vary), with the change against the baseline and each
    rank's best learning rate marked."""
    tables = []
    for setting, init, group in rank_lr_groups(runs):
        grid = rank_lr_grid(group, benchmark)
        if not grid.lrs:
            continue
        labels = lr_labels(grid.lrs)
        frame, values, numbers, gaps = {}, {}, {}, []
        for rank in grid.ranks:
            row = column_label(rank)
            frame[row], values[rank], numbers[row] = {}, {}, {}
            for lr in grid.lrs:
                interval, label = grid.intervals.get((rank, lr)), labels[lr]
                if grid.finals[(rank, lr)]:
                    mark = SIGNIFICANT if interval and interval.excludes_zero else ""
                    text = _cell(grid.finals[(rank, lr)], 100, 1, grid.baselines[lr], mark=mark)
                    frame[row][label] = text + (BEST if grid.best.get(rank) == lr else "")
                else:
                    frame[row][label] = f"{GAP} ({grid.gaps[(rank, lr)]})"
                    gaps.append(f"{row} {label}: {grid.gaps[(rank, lr)]}")
                values[rank][lr] = grid.mean(rank, lr)
                numbers[row].update(
                    {
                        f"{label}_pass1": grid.mean(rank, lr) * 100,
                        f"{label}_delta": grid.delta(rank, lr) * 100,
                        f"{label}_delta_ci_low": interval.low * 100 if interval else math.nan,
                        f"{label}_delta_ci_high": interval.high * 100 if interval else math.nan,
                    }
                )
            numbers[row]["best_learning_rate"] = grid.best.get(rank, math.nan)
        notes = [
            "Values in %: final Pass@1, mean over seeds [bootstrap 95% interval when several], (change against "
            "the untrained baseline of the runs with that learning rate). Columns: the learning rate given to "
            f"the optimizer.{BEST} marks each rank's best learning rate (highest mean final Pass@1; the lower "
            "learning rate on ties)."
        ]
        baselines = {lr: b for lr, b in grid.baselines.items() if not math.isnan(b)}
        if len({f"{b * 100:.1f}" for b in baselines.values()}) == 1:
            notes.append(f"Untrained baseline: {next(iter(baselines.values())) * 100:.1f}%.")
        elif baselines:
            notes.append(
                "Untrained baseline: " + ", ".join(f"{labels[lr]} {b * 100:.1f}%" for lr, b in baselines.items()) + "."
            )
        if grid.intervals:
            notes.append(
                f"A change marked {SIGNIFICANT} has a paired bootstrap 95% interval over the problems that excludes "
                f"0 (significance.csv, rows of that learning rate)."
            )
        if gaps:
            notes.append(f"{GAP} marks a gap: " + "; ".join(gaps) + ".")
        name = f"{benchmark}/pass@1_rank_x_lr/{init}" + (f"/{_slug(setting)}" if setting else "")
        title = f"{benchmark} Pass@1 by LoRA rank and learning rate ({init}{', ' + setting if setting else ''})"
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


def comparison_label(high, low) -> str:
    return f"{column_label(high)} vs {low if low == 'baseline' else column_label(low)}"


def significance_table(compared: list[tuple[str, str, dict[tuple, Interval]]]) -> Table | None:
    """Every comparison with an interval, one row each, from (setting, benchmark, comparisons())
    triples; None when there is none (no per-sample records)."""
    with_setting = any(setting for setting, _, _ in compared)
    rows, index = [], []
    for setting, benchmark, intervals in compared:
        for (init, high, low), interval in intervals.items():
            index.append(init)
            rows.append(
                {
                    **({"setting": setting} if with_setting else {}),
                    "benchmark": benchmark,
                    "comparison": comparison_label(high, low),
                    "delta": interval.delta * 100,
                    "ci_low": interval.low * 100,
                    "ci_high": interval.high * 100,
                    "problems": interval.problems,
                    "excludes_zero": interval.excludes_zero,
                }
            )
    if not rows:
        return None
    numbers = pd.DataFrame(rows, index=index)
    shown = pd.DataFrame([_significance_cells(row) for row in rows], index=index)
    notes = [
        "Pass@1 differences in points: 'r=256 vs r=8' is r=256 minus r=8, 'r=8 vs baseline' the change of "
        "r=8 over its untrained init. Each side is the per-problem accuracy (samples averaged, then seeds); the "
        "difference is averaged over the problems both sides share, and its 95% interval is a percentile "
        "bootstrap over those problems (10000 resamples, the same problems for both sides). With one seed per "
        "arm the interval covers the choice of problems and samples, not the training seed; over many "
        "comparisons some exclude 0 by chance."
    ]
    return Table(
        "significance",
        "Pass@1 differences with paired bootstrap 95% intervals over problems",
        shown,
        numbers,
        notes,
        numbers,
    )


def _significance_cells(row: dict) -> dict:
    """A significance.csv row as the printed table shows it."""
    cells = {key: row[key] for key in ("setting", "benchmark", "comparison") if key in row}
    return {
        **cells,
        "delta": f"{row['delta']:+.1f}",
        "95% interval": f"[{row['ci_low']:+.1f}, {row['ci_high']:+.1f}]",
        "problems": row["problems"],
        "excludes 0": "yes" if row["excludes_zero"] else "no",
    }


def length_table(runs: pd.DataFrame) -> Table:
    """How much each init x rank lengthened its completions over training (tokens, end - start)."""
    ranks = rank_order(runs["rank"].unique())
    frame, values = {}, {}
    for init, group in runs.groupby("init", sort=True):
        frame[init], values[init] = {}, {}
        for rank in ranks:
            ok = group[(group["rank"] == rank) & (group["status"] == "completed")]
            change = (ok["length_end"] - ok["length_start"]).dropna().tolist() if len(ok) else []
            frame[init][rank] = _cell(change, 1, 0, signed=True) if change else GAP
            values[init][rank] = float(np.mean(change)) if change else math.nan
    notes = [
        "Change in mean completion length (tokens) between the first and the last logged training step; "
        "a rise means the model elongated its chain of thought."
    ]
    shown = pd.DataFrame(frame).T.reindex(columns=ranks)
    shown.columns = [column_label(r) for r in ranks]
    return Table(
        "completion_length",
        "Completion length change over training",
        shown,
        pd.DataFrame(values).T.reindex(columns=ranks),
        notes,
    )


def benchmarks_and_metrics(runs: pd.DataFrame) -> list[tuple[str, str]]:
    found = []
    for column in runs.columns:
        parts = column.split("/")
        if (
            len(parts) == 3
            and parts[0] == "eval"
            and parts[2].startswith("pass@")
            and (parts[1], parts[2]) not in found
        ):
            found.append((parts[1], parts[2]))
    return sorted(found, key=lambda bm: (bm[0], int(bm[1].split("@")[1])))


def all_tables(runs: pd.DataFrame, collapse_margin: float) -> list[Table]:
    """The metric and length tables of each setting, the rank x learning-rate tables (when the sweep
    varies the learning rate), then the significance table (when the runs have per-sample records);
    each benchmark's comparisons are bootstrapped once for the metric and significance tables."""
    tables, compared = [], []
    for setting, group in settings_groups(runs):
        made = []
        for bench, metric in benchmarks_and_metrics(group):
            intervals = comparisons(group, bench) if metric == "pass@1" else {}
            made.append(metric_table(group, bench, metric, collapse_margin, intervals))
            compared.append((setting, bench, intervals))
        made.append(length_table(group))
        for table in made:
            if setting:
                table.name = f"{table.name}/{_slug(setting)}"
                table.title = f"{table.title} ({setting})"
        tables += made
    if varies_learning_rate(runs):  # its comparisons are those of the settings above: not added again
        for bench, metric in benchmarks_and_metrics(runs):
            if metric == "pass@1":
                tables += rank_lr_tables(runs, bench)
    significance = significance_table(compared)
    return tables + ([significance] if significance else [])


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run, one row: the CSV users filter themselves."""
    first = [
        "run",
        "init",
        "rank",
        "variant",
        "alpha",
        "learning_rate",
        "base_learning_rate",
        "lr_rule",
        "budget",
        "seed",
        "status",
        "stop_reason",
        "global_step",
        "gpu_hours",
        "cost_usd",
        "reward_start",
        "reward_end",
        "length_start",
        "length_end",
        "path",
    ]
    return runs[[c for c in first if c in runs] + sorted(c for c in runs if c not in first)]
