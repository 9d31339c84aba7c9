"""The study's comparison tables: initializations x LoRA ranks against the untrained baseline, every
comparison with its verdict, and the runs each comparison would need.

A cell is the mean over the runs (seeds) of one init and rank, with the runs' own values (up to 5 runs) or
the t interval of their mean; a cell whose runs failed, were damaged or lack the metric is a marked gap,
never a zero. The verdicts come from analysis.comparisons: the training run is the unit (`*`), the
evaluation noise of the runs at hand is a column of its own (`°` only when one run per arm is all there is).

The CSV files, values in percentage points:

- <benchmark>_pass1.csv: index `init`; the displayed columns (`baseline`, `r=8`, ..., `full FT`, cells as
  shown), then for each rank column C in the same order: `C_runs` (runs averaged), `C_ci_low`, `C_ci_high`
  (t 95% interval of the mean final Pass@1 over runs; empty with one run), `C_delta` (mean change against
  the baseline), `C_delta_ci_low`, `C_delta_ci_high`, `C_delta_df` (its seed-level interval and degrees of
  freedom; empty with one run), `C_marked` (the `*`), `C_eval_noise_ci_low`, `C_eval_noise_ci_high` (the
  paired problem bootstrap of these runs; empty without per-sample records, e.g. from W&B).
- significance.csv: index `init`; one row per comparison: [`setting` when the sweep varies the learning
  rate, adapter variant or budget,] `benchmark`, `comparison` ("r=8 vs baseline", "r=256 vs r=8": the first
  minus the second), `delta`, `ci_low`, `ci_high`, `df`, `p` (seed level: `test` is "welch", "one-sample t",
  "t + baseline noise", or "none" when a side has one run), `p_holm` (Holm-adjusted within the table,
  comparisons with >= 3 runs a side), `runs`, `runs_reference` (empty against the baseline), `marked` (exactly
  the `*`), then the evaluation noise of these runs: `eval_noise_ci_low`, `eval_noise_ci_high`, `problems`,
  `beyond_eval_noise`.
- runs_needed.csv: one row per comparison of two ranks with >= 2 runs each: `setting`, `benchmark`,
  `comparison`, `delta`, `effect` (the difference planned for: observed, or --min-effect), `sd` (pooled SD of
  the runs), `sd_ci_low`, `sd_ci_high`, `runs`, `runs_reference`, `runs_per_arm` (80% power, two-sided 5%),
  `runs_per_arm_low`, `runs_per_arm_high` (at the ends of the SD's interval), `more_runs`, `device_hours`,
  `cost_usd` (of the more runs, from the runs' own summary.json), `line` (the sentence printed).
- <benchmark>_pass1_rank_x_lr_<init>[_<setting>].csv (analysis.rank_lr), when the completed runs have
  several learning rates (the one given to the optimizer): index `rank`; per learning rate L (`lr=1e-05`,
  ascending) `L_pass1`, `L_runs`, `L_delta`, `L_delta_ci_low`, `L_delta_ci_high`, `L_marked`, then
  `best_learning_rate`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .budget_axis import COLUMNS as BUDGET_COLUMNS
from .budget_tables import budget_tables
from .comparisons import (
    EVAL_NOISE,
    SIGNIFICANT,
    Comparison,
    all_comparisons,
    baseline,
    column_label,
    cost_text,
    finals,
    left_out,
    needed_line,
    rank_order,
    setting_label,
    settings_groups,
    slug,
)
from .rank_lr import rank_lr_tables, varies_learning_rate
from .render import CELL_NOTE, GAP, Table, cell
from .seed_stats import MAX_RUNS, MIN_RUNS, t_interval
from .two_stage import is_two_stage, two_stage_tables, verdict_rows

LEFT_OUT = "‡"  # a cell whose arm lost runs (failed, still running, damaged): named under the table


def metric_table(
    runs: pd.DataFrame,
    benchmark: str,
    metric: str,
    collapse_margin: float,
    compared: dict[tuple, Comparison] | None = None,
) -> Table:
    """Final `metric` on `benchmark` per init (rows) and rank (columns), with the change against the
    baseline in parentheses; cells below the baseline by more than the margin are flagged. For Pass@1 the
    change carries its mark (`compared`: comparisons.compare() of these runs, computed when not given), and
    the CSV the changes with their intervals."""
    final_key, base_key = f"eval/{benchmark}/{metric}", f"baseline/{benchmark}/{metric}"
    if compared is None:
        from .comparisons import compare

        compared = compare(runs, benchmark) if metric == "pass@1" else {}
    ranks = rank_order(runs["rank"].unique())
    frame, values, runs_per_arm, gaps, collapsed, partial = {}, {}, {}, [], [], []
    for init, group in runs.groupby("init", sort=True):
        base = baseline(group, base_key)
        frame[init] = {"baseline": GAP if math.isnan(base) else f"{base * 100:.1f}"}
        values[init], runs_per_arm[init] = {"baseline": base}, {}
        for rank in ranks:
            every = group[group["rank"] == rank]
            arm, reason = finals(every, final_key)
            finals_of_arm = arm[final_key].astype(float).tolist()
            runs_per_arm[init][rank] = finals_of_arm
            lost = left_out(every, final_key)
            if not finals_of_arm:
                frame[init][rank] = f"{GAP} ({reason})"
                values[init][rank] = math.nan
                gaps.append(f"{init} {column_label(rank)}: {reason}" + (f" ({'; '.join(lost)})" if lost else ""))
                continue
            comparison = compared.get((init, rank, "baseline"))
            collapse = not math.isnan(base) and np.mean(finals_of_arm) < base - collapse_margin
            if collapse:
                collapsed.append(f"{init} r={rank}")
            mark = comparison.symbol if comparison else ""
            flag = ("†" if collapse else "") + (LEFT_OUT if lost else "")
            frame[init][rank] = cell(finals_of_arm, baseline=base, mark=mark, flag=flag)
            if lost:  # an arm that lost runs is not read as complete
                frame[init][rank] += f"; {len(finals_of_arm)} of {len(every)} runs"
                partial.append(f"{init} {column_label(rank)} {'; '.join(lost)}")
            values[init][rank] = float(np.mean(finals_of_arm))
    columns = ["baseline", *ranks]
    labels = ["baseline", *map(column_label, ranks)]
    notes = [
        f"Values in %: final {metric} (change against the untrained baseline). {CELL_NOTE} † collapse: the "
        f"final {metric} is below the baseline by more than {collapse_margin * 100:.1f} points."
    ]
    if metric == "pass@1" and compared:
        notes += mark_notes(compared)
    if collapsed:
        notes.append("Collapsed: " + ", ".join(collapsed) + ".")
    if partial:
        notes.append(
            f"{LEFT_OUT} runs left out of an arm (its cell averages the others): " + " | ".join(partial) + "."
        )
    if gaps:
        notes.append(f"{GAP} marks a gap: " + "; ".join(gaps) + ".")
    shown = pd.DataFrame(frame).T.reindex(columns=columns)
    shown.columns = labels
    numbers = pd.DataFrame(values).T.reindex(columns=columns)
    csv = shown.join(pass1_columns(runs_per_arm, numbers, ranks, compared)) if metric == "pass@1" else None
    return Table(
        f"{benchmark}/{metric}", f"{benchmark} {metric} by initialization and LoRA rank", shown, numbers, notes, csv
    )


def mark_notes(compared: dict[tuple, Comparison]) -> list[str]:
    """What the marks of one table mean, with the number of comparisons Holm's correction ran over and
    why arms with fewer runs get none."""
    tests = list(compared.values())
    family = sum(c.seeds.eligible for c in tests)
    notes = [
        f"{SIGNIFICANT}: the training run is the unit. Against the baseline, the t 95% interval of the runs' "
        f"changes (with the noise of the shared baseline evaluation) excludes 0 after Holm's correction over the "
        f"{family} comparison{'s' if family != 1 else ''} of this table with >= {MIN_RUNS} runs a side "
        f"(significance.csv)."
    ]
    against = [c for c in tests if c.low == "baseline"]
    single = [column_label(c.high) + f" ({c.init})" for c in against if c.seeds.runs == 1]
    few = [column_label(c.high) + f" ({c.init})" for c in against if 1 < c.seeds.runs < MIN_RUNS]
    if single:
        notes.append(
            f"One run: {', '.join(single)}. The variation between training seeds is not measured, so these "
            f"changes get no {SIGNIFICANT}; {EVAL_NOISE} marks a change beyond the evaluation noise of that single "
            f"run (paired bootstrap over the problems), which another seed may not repeat."
        )
    if few:
        notes.append(
            f"Fewer than {MIN_RUNS} runs: {', '.join(few)}: the seed-level interval is in significance.csv, "
            f"no mark (the spread of 2 runs is a guess)."
        )
    return notes


def pass1_columns(
    runs_per_arm: dict, values: pd.DataFrame, ranks: list, compared: dict[tuple, Comparison]
) -> pd.DataFrame:
    """Per rank column C the numbers behind the shown cells (see the module's docstring)."""
    columns = {}
    for rank in ranks:
        label = column_label(rank)
        arms = [runs_per_arm[init].get(rank, []) for init in values.index]
        found = [compared.get((init, rank, "baseline")) for init in values.index]
        intervals = [t_interval(arm) if arm else (math.nan, math.nan) for arm in arms]
        columns[f"{label}_runs"] = [len(arm) for arm in arms]
        columns[f"{label}_ci_low"] = [low * 100 for low, _ in intervals]
        columns[f"{label}_ci_high"] = [high * 100 for _, high in intervals]
        columns[f"{label}_delta"] = (values[rank] - values["baseline"]) * 100
        columns[f"{label}_delta_ci_low"] = [c.seeds.low * 100 if c else math.nan for c in found]
        columns[f"{label}_delta_ci_high"] = [c.seeds.high * 100 if c else math.nan for c in found]
        columns[f"{label}_delta_df"] = [c.seeds.df if c else math.nan for c in found]
        columns[f"{label}_marked"] = [bool(c and c.marked) for c in found]
        columns[f"{label}_eval_noise_ci_low"] = [
            c.eval_noise.low * 100 if c and c.eval_noise else math.nan for c in found
        ]
        columns[f"{label}_eval_noise_ci_high"] = [
            c.eval_noise.high * 100 if c and c.eval_noise else math.nan for c in found
        ]
    return pd.DataFrame(columns, index=values.index)


def _pm(value: float, digits: int = 1) -> str:
    return "" if math.isnan(value) else f"{value:+.{digits}f}"


def significance_table(compared: list[tuple[str, str, dict[tuple, Comparison]]]) -> Table | None:
    """Every comparison, one row each, from (setting label, benchmark, compare()) triples; None without any."""
    with_setting = any(setting for setting, _, _ in compared)
    rows, shown, index = [], [], []
    for setting, benchmark, found in compared:
        for (init, _, _), c in found.items():
            index.append(init)
            noise = c.eval_noise
            row = {
                **({"setting": setting} if with_setting else {}),
                "benchmark": benchmark,
                "comparison": c.label,
                "delta": c.seeds.delta * 100,
                "ci_low": c.seeds.low * 100,
                "ci_high": c.seeds.high * 100,
                "df": c.seeds.df,
                "p": c.seeds.p,
                "p_holm": c.p_holm,
                "test": c.seeds.test,
                "runs": c.seeds.runs,
                "runs_reference": c.seeds.runs_reference,
                "marked": c.marked,
                "eval_noise_ci_low": noise.low * 100 if noise else math.nan,
                "eval_noise_ci_high": noise.high * 100 if noise else math.nan,
                "problems": noise.problems if noise else None,
                "beyond_eval_noise": c.beyond_eval_noise if noise else None,
                "left_out": "; ".join(c.left_out),
            }
            rows.append(row)
            runs = f"{c.seeds.runs} vs " + (
                "baseline" if c.seeds.runs_reference is None else str(c.seeds.runs_reference)
            )
            shown.append(
                {
                    **({"setting": setting} if with_setting else {}),
                    "benchmark": benchmark,
                    "comparison": c.label,
                    "runs": runs,
                    "delta": f"{c.seeds.delta * 100:+.1f}",
                    "95% interval over runs": f"[{_pm(row['ci_low'])}, {_pm(row['ci_high'])}]"
                    if c.seeds.measured
                    else "not measured (1 run)",
                    "df": "" if math.isnan(c.seeds.df) else f"{c.seeds.df:.1f}",
                    "marked": SIGNIFICANT if c.marked else "",
                    "evaluation noise, these runs": f"[{_pm(row['eval_noise_ci_low'])}, "
                    f"{_pm(row['eval_noise_ci_high'])}]{' ' + EVAL_NOISE if c.symbol == EVAL_NOISE else ''}"
                    if noise
                    else "",
                }
            )
    if not rows:
        return None
    numbers = pd.DataFrame(rows, index=index)
    notes = [
        "Pass@1 differences in points: 'r=256 vs r=8' is r=256 minus r=8 (means over their runs), 'r=8 vs baseline' "
        "the mean change of r=8's runs over their untrained init. The 95% interval over runs treats each training "
        "run as one observation: Welch's t between two arms; against the baseline a t interval of the runs' "
        "changes, widened by the sampling noise of the one baseline evaluation they share (df: degrees of freedom). "
        f"'marked' ({SIGNIFICANT}) needs >= {MIN_RUNS} runs a side and the interval excluding 0 after Holm's "
        "correction over the comparisons of the same benchmark and setting (p_holm in significance.csv). With 2 "
        "runs a side the interval is shown, unmarked; with 1 run the seed variation is not measured at all.",
        "Evaluation noise, these runs: a paired bootstrap over the benchmark's problems (10000 resamples, seeds "
        "averaged per problem) of the same runs. It covers which problems and samples were drawn, not which "
        f"training seed was, and never decides {SIGNIFICANT}; {EVAL_NOISE} flags a single-run comparison beyond it.",
    ]
    return Table(
        "significance",
        "Pass@1 comparisons: training runs as the unit",
        pd.DataFrame(shown, index=index),
        numbers,
        notes,
        numbers,
    )


def runs_needed_table(
    compared: list[tuple[str, str, dict[tuple, Comparison]]], min_effect: float | None
) -> Table | None:
    """The runs per arm each comparison of two ranks would need, and what the extra runs cost."""
    rows, shown, index = [], [], []
    for setting, benchmark, found in compared:
        for (init, _, _), c in found.items():
            needed = c.needed
            if needed is None:
                continue
            more = needed.more_runs
            line = needed_line(c, min_effect)
            index.append(init)
            rows.append(
                {
                    "setting": setting,
                    "benchmark": benchmark,
                    "comparison": c.label,
                    "delta": c.seeds.delta * 100,
                    "effect": needed.effect * 100,
                    "sd": needed.sd * 100,
                    "sd_ci_low": needed.sd_low * 100,
                    "sd_ci_high": needed.sd_high * 100,
                    "runs": needed.runs_now[0],
                    "runs_reference": needed.runs_now[1],
                    "runs_per_arm": needed.per_arm,
                    "runs_per_arm_low": needed.per_arm_low,
                    "runs_per_arm_high": needed.per_arm_high,
                    "more_runs": more,
                    "device_hours": more * c.hours_per_run if more is not None else math.nan,
                    "cost_usd": more * c.cost_per_run if more is not None else math.nan,
                    "line": line,
                }
            )
            shown.append(
                {
                    "setting": setting,
                    "benchmark": benchmark,
                    "comparison": c.label,
                    "delta": f"{c.seeds.delta * 100:+.1f}",
                    "runs now": f"{needed.runs_now[0]} + {needed.runs_now[1]}",
                    "SD": f"{needed.sd * 100:.1f}",
                    "runs per arm": _count(needed.per_arm),
                    "range": ""
                    if needed.per_arm is None
                    else f"{_count(needed.per_arm_low)} to {_count(needed.per_arm_high)}",
                    "more runs": "" if more is None else f"{more:,}",
                    "cost of more runs": cost_text(
                        more * c.hours_per_run if more else math.nan,
                        more * c.cost_per_run if more else math.nan,
                        c.device,
                    ),
                }
            )
    if not rows:
        return None
    frame = pd.DataFrame(shown, index=index)
    if not any(row["setting"] for row in rows):
        frame = frame.drop(columns="setting")
    planned = "the observed difference" if min_effect is None else f"a difference of {min_effect * 100:g} points"
    notes = [
        f"Runs per arm for 80% power to detect {planned} with a two-sided test at 5% (statsmodels' TTestIndPower), "
        "from the pooled spread (SD) of both arms' runs; the range comes from the 95% interval of that SD, which "
        "2-3 runs a side barely pin down. Costs: the more runs at the mean device-hours and dollars the runs "
        "recorded (training and evaluation). Holm's correction over a table's comparisons needs somewhat more. "
        "Each comparison in one sentence: the 'Runs needed' lines printed by python -m analysis (runs_needed.csv, "
        "column line)."
    ]
    return Table(
        "runs_needed",
        "Runs each comparison would need",
        frame,
        pd.DataFrame(rows, index=index),
        notes,
        pd.DataFrame(rows, index=index),
    )


def _count(runs: int | None) -> str:
    """Runs per arm as the runs-needed table shows them ("?" when no spread or no difference to plan from)."""
    if runs is None:
        return "?"
    return f"over {MAX_RUNS:,}" if runs >= MAX_RUNS else f"{runs:,}"


def length_table(runs: pd.DataFrame) -> Table:
    """How much each init x rank lengthened its completions over training (tokens, end - start)."""
    ranks = rank_order(runs["rank"].unique())
    frame, values = {}, {}
    for init, group in runs.groupby("init", sort=True):
        frame[init], values[init] = {}, {}
        for rank in ranks:
            ok = group[(group["rank"] == rank) & (group["status"] == "completed")]
            ok = ok.sort_values("seed", kind="stable") if "seed" in ok else ok  # seed order, as the other cells
            change = (ok["length_end"] - ok["length_start"]).dropna().tolist() if len(ok) else []
            frame[init][rank] = cell(change, 1, 0, signed=True) if change else GAP
            values[init][rank] = float(np.mean(change)) if change else math.nan
    notes = [
        "Change in mean completion length (tokens) between the first and the last logged training step; "
        f"a rise means the model elongated its chain of thought. {CELL_NOTE}"
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


def all_tables(runs: pd.DataFrame, collapse_margin: float, min_effect: float | None = None) -> list[Table]:
    """The metric and length tables of each setting, the rank x learning-rate tables (when the sweep
    varies the learning rate), then every comparison (significance) and the runs each would need. Each
    benchmark's comparisons are computed once (comparisons.all_comparisons) for all of them."""
    everything, runs = runs, verdict_rows(runs)  # a two-stage search: the stage-2 runs only, at the chosen rates
    pass1 = [bench for bench, metric in benchmarks_and_metrics(runs) if metric == "pass@1"]
    by_bench = {bench: all_comparisons(runs, bench, min_effect) for bench in pass1}
    tables, compared = [], []
    for setting, group in settings_groups(runs):
        label, made = setting_label(setting), []
        for bench, metric in benchmarks_and_metrics(group):
            found = {}
            if metric == "pass@1":
                found = {key[1:]: c for key, c in by_bench.get(bench, {}).items() if key[0] == setting}
                compared.append((label, bench, found))
            made.append(metric_table(group, bench, metric, collapse_margin, found))
        made.append(length_table(group))
        provenance = provenance_notes(group)
        for table in made:
            table.notes += provenance
            if label:
                table.name = f"{table.name}/{slug(label)}"
                table.title = f"{table.title} ({label})"
        tables += made
    if varies_learning_rate(runs):  # its comparisons are those of the settings above: not added again
        for bench in pass1:
            tables += rank_lr_tables(runs, bench, by_bench[bench])
    for bench in pass1:  # when the runs reach several budget levels: the same comparisons, by budget level
        tables += budget_tables(runs, bench, by_bench[bench], collapse_margin)
    if is_two_stage(everything):  # each rank at its chosen rate, and the stage-1 landscape that chose
        for bench in pass1:
            tables += two_stage_tables(everything, runs, bench, by_bench[bench])
    extra = [significance_table(compared), runs_needed_table(compared, min_effect)]
    return tables + [table for table in extra if table is not None]


VERSIONED = ("torch", "transformers", "trl", "peft", "vllm")


def provenance_notes(runs: pd.DataFrame) -> list[str]:
    """Runs trained under more than one code or library version (their attempts differ), and a table whose runs
    come from different project commits or library versions: both named under it."""
    notes = []
    mixed = runs[runs["mixed_versions"].notna()] if "mixed_versions" in runs else runs.iloc[0:0]
    if len(mixed):
        named = [
            f"{r['init']} {column_label(r['rank'])} seed {r['seed']} ({r['mixed_versions']})"
            for _, r in mixed.iterrows()
        ]
        notes.append(
            "Trained under more than one version (its attempts differ; a different experiment): "
            + "; ".join(named)
            + "."
        )
    found = []
    columns = {"git commit": runs["git_commit"] if "git_commit" in runs else None}
    if "versions" in runs:
        columns.update({name: runs["versions"].map(lambda v, n=name: (v or {}).get(n)) for name in VERSIONED})
    for name, values in columns.items():
        counts = values.dropna().value_counts() if values is not None else []
        if len(counts) > 1:
            found.append(f"{name} " + ", ".join(f"{value} ({count} runs)" for value, count in counts.items()))
    if found:
        notes.append("The runs of this table come from different code or library versions: " + "; ".join(found) + ".")
    return notes


NOT_CSV = ("settings", "versions", "budget_config", "spend")  # read by the analysis, not CSV columns


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run at each budget level (analysis.budget_axis), one row: the CSV users filter themselves."""
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
        *BUDGET_COLUMNS,
        "seed",
        "search_stage",
        "milestone_selection",
        "status",
        "stop_reason",
        "global_step",
        "gpu_hours",
        "cost_usd",
        "device",
        "reward_start",
        "reward_end",
        "length_start",
        "length_end",
        "path",
    ]
    kept = [c for c in runs if c not in NOT_CSV]
    return runs[[c for c in first if c in kept] + sorted(c for c in kept if c not in first)]
