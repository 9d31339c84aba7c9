"""The study's comparison tables: initializations x LoRA ranks, against the untrained baseline.

A cell is the mean over the runs (seeds) of one init and rank, with a bootstrap 95% interval when
there are several; a cell whose runs failed or lack the metric is a marked gap, never a zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

GAP = "—"


@dataclass
class Table:
    name: str
    title: str
    frame: pd.DataFrame  # rows: init; columns: "baseline" and ranks; values: display strings
    values: pd.DataFrame  # the same cells as numbers (NaN for gaps)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        header = "| init | " + " | ".join(str(c) for c in self.frame.columns) + " |"
        rule = "|---|" + "---|" * len(self.frame.columns)
        body = [f"| {idx} | " + " | ".join(str(v) for v in row) + " |" for idx, row in self.frame.iterrows()]
        notes = [f"\n{note}" for note in self.notes]
        return "\n".join([f"**{self.title}**", "", header, rule, *body]) + "".join(notes) + "\n"

    def latex(self) -> str:
        cols = "l" + "r" * len(self.frame.columns)
        lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
                 "init & " + " & ".join(_latex(str(c)) for c in self.frame.columns) + r" \\", r"\midrule"]
        lines += [f"{_latex(str(idx))} & " + " & ".join(_latex(str(v)) for v in row) + r" \\" for idx, row in self.frame.iterrows()]
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_latex(self.title)}. {_latex(' '.join(self.notes))}}}",
                  rf"\label{{tab:{self.name.replace('/', '-').replace('@', 'at')}}}", r"\end{table}"]
        return "\n".join(lines) + "\n"


def _latex(text: str) -> str:
    for char, escaped in (("%", r"\%"), ("&", r"\&"), ("_", r"\_"), ("#", r"\#"), ("†", r"$^\dagger$"), ("—", "--"), ("±", r"$\pm$")):
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
SPLIT_BY = ("learning_rate", "budget")


def settings_groups(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    varying = [c for c in SPLIT_BY if c in runs and runs[c].nunique(dropna=False) > 1]
    if not varying:
        return [("", runs)]
    return [(", ".join(f"{c}={v}" for c, v in zip(varying, key if isinstance(key, tuple) else (key,))), group)
            for key, group in runs.groupby(varying, dropna=False, sort=True)]


def _cell(values: list[float], scale: float, digits: int, baseline: float | None = None, signed: bool = False) -> str:
    mean = float(np.mean(values))
    text = f"{mean * scale:+.{digits}f}" if signed else f"{mean * scale:.{digits}f}"
    if len(values) > 1:
        low, high = bootstrap_ci(values)
        text += f" [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"
    if baseline is not None and not math.isnan(baseline):
        text += f" ({(mean - baseline) * scale:+.{digits}f})"
    return text


def metric_table(runs: pd.DataFrame, benchmark: str, metric: str, collapse_margin: float) -> Table:
    """Final `metric` on `benchmark` per init (rows) and rank (columns), with the change against
    the baseline in parentheses; cells below the baseline by more than the margin are flagged."""
    final_key, base_key = f"eval/{benchmark}/{metric}", f"baseline/{benchmark}/{metric}"
    ranks = rank_order(runs["rank"].unique())
    frame, values, gaps, collapsed = {}, {}, [], []
    for init, group in runs.groupby("init", sort=True):
        base = group.loc[group["status"] == "completed", base_key].dropna() if base_key in group else pd.Series(dtype=float)
        baseline = float(base.mean()) if len(base) else math.nan
        frame[init] = {"baseline": GAP if math.isnan(baseline) else f"{baseline * 100:.1f}"}
        values[init] = {"baseline": baseline}
        for rank in ranks:
            cell = group[group["rank"] == rank]
            ok = cell[cell["status"] == "completed"]
            finals = ok[final_key].dropna().tolist() if final_key in ok else []
            if not finals:
                reason = "failed" if len(cell) and (cell["status"] != "completed").all() else "no runs" if not len(cell) else "missing"
                frame[init][rank] = f"{GAP} ({reason})"
                values[init][rank] = math.nan
                gaps.append(f"{init} r={rank}: {reason}")
                continue
            text = _cell(finals, 100, 1, baseline)
            if not math.isnan(baseline) and np.mean(finals) < baseline - collapse_margin:
                text += " †"
                collapsed.append(f"{init} r={rank}")
            frame[init][rank] = text
            values[init][rank] = float(np.mean(finals))
    columns = ["baseline", *ranks]
    labels = ["baseline", *map(column_label, ranks)]
    notes = [f"Values in %, mean over seeds [bootstrap 95% interval when several], (change against the untrained "
             f"baseline). † collapse: the final {metric} is below the baseline by more than {collapse_margin * 100:.1f} points."]
    if collapsed:
        notes.append("Collapsed: " + ", ".join(collapsed) + ".")
    if gaps:
        notes.append(f"{GAP} marks a gap: " + "; ".join(gaps) + ".")
    shown = pd.DataFrame(frame).T.reindex(columns=columns)
    shown.columns = labels
    return Table(f"{benchmark}/{metric}", f"{benchmark} {metric} by initialization and LoRA rank",
                 shown, pd.DataFrame(values).T.reindex(columns=columns), notes)


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
    notes = ["Change in mean completion length (tokens) between the first and the last logged training step; "
             "a rise means the model elongated its chain of thought."]
    shown = pd.DataFrame(frame).T.reindex(columns=ranks)
    shown.columns = [column_label(r) for r in ranks]
    return Table("completion_length", "Completion length change over training", shown,
                 pd.DataFrame(values).T.reindex(columns=ranks), notes)


def benchmarks_and_metrics(runs: pd.DataFrame) -> list[tuple[str, str]]:
    found = []
    for column in runs.columns:
        parts = column.split("/")
        if len(parts) == 3 and parts[0] == "eval" and parts[2].startswith("pass@") and (parts[1], parts[2]) not in found:
            found.append((parts[1], parts[2]))
    return sorted(found, key=lambda bm: (bm[0], int(bm[1].split("@")[1])))


def all_tables(runs: pd.DataFrame, collapse_margin: float) -> list[Table]:
    tables = []
    for setting, group in settings_groups(runs):
        made = [metric_table(group, bench, metric, collapse_margin) for bench, metric in benchmarks_and_metrics(group)]
        made.append(length_table(group))
        for table in made:
            if setting:
                table.name = f"{table.name}/{setting.replace(', ', '_').replace('=', '')}"
                table.title = f"{table.title} ({setting})"
        tables += made
    return tables


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run, one row: the CSV users filter themselves."""
    first = ["run", "init", "rank", "alpha", "learning_rate", "budget", "seed", "status", "stop_reason", "global_step",
             "gpu_hours", "cost_usd", "reward_start", "reward_end", "length_start", "length_end"]
    return runs[[c for c in first if c in runs] + sorted(c for c in runs if c not in first)]
