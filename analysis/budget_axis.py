"""The budget axis: every run at each budget level it passed through.

A run with `budget.milestones` holds its shorter budgets (run.milestones): the checkpoint at a fraction f of
its budget is the run that budget would have made, evaluated after training like the final one (summary keys
milestone/<f>/eval/<bench>/pass@1, milestone/<f>/step, .../training_s, .../generated_tokens). `budget_rows` turns
each run into one row per budget level: the run's own (its budget) and one per milestone, each with the results of
that level under the run's own names (eval/..., delta/...; the baseline is shared), so that every table and
seed-level comparison exists per level (`budget_level` is a setting: analysis.comparisons.SPLIT_BY). Separate runs
of an explicit budget sweep (budget.minutes=180,720,1260) fall on the same axis.

A level is named by the budget the run had, by the rule that stops it (rlvr_sweeps.run.budget): "120 steps" with
budget.max_steps, "2,000,000 tokens" with budget.max_generated_tokens, else the training time ("3 h", "2.75 min").
Each row also holds what that level actually spent: `training_hours`, `steps`, `generated_tokens`.
"""

from __future__ import annotations

import math

import pandas as pd

LEVEL = "budget_level"
# the budget-axis columns of runs.csv, in order
COLUMNS = ("budget_level", "budget_fraction", "milestone", "training_hours", "steps", "generated_tokens")
UNITS = ("steps", "tokens", "minutes")  # sort order of levels when a sweep mixes budget kinds


def level(budget: dict, fraction: float) -> tuple[str, str, float]:
    """The level of `fraction` of a run's budget: its label, unit and size in that unit."""
    budget = budget or {}
    if budget.get("max_steps"):
        steps = max(1, round(fraction * int(budget["max_steps"])))
        return f"{steps} steps", "steps", float(steps)
    if budget.get("max_generated_tokens"):
        tokens = fraction * float(budget["max_generated_tokens"])
        return f"{tokens:,.0f} tokens", "tokens", tokens
    minutes = fraction * float(budget.get("minutes") or math.nan)
    if math.isnan(minutes):
        return "unknown budget", "minutes", minutes
    label = f"{round(minutes / 60, 2):g} h" if minutes >= 60 else f"{round(minutes, 2):g} min"
    return label, "minutes", minutes


def level_order(runs: pd.DataFrame) -> list[str]:
    """The levels of `runs` from the smallest budget to the largest."""
    if LEVEL not in runs or not len(runs):
        return []
    sizes = runs.groupby(LEVEL)[["budget_unit", "budget_size"]].first()
    return sorted(
        sizes.index, key=lambda name: (UNITS.index(sizes.loc[name, "budget_unit"]), sizes.loc[name, "budget_size"])
    )


def varies_budget(runs: pd.DataFrame) -> bool:
    return LEVEL in runs and runs[LEVEL].nunique() > 1


def milestone_names(row: dict) -> list[str]:
    """The milestones a run row holds (a frame of several runs has every run's columns: NaN where not its own)."""
    found = {
        key.split("/")[1]
        for key, value in row.items()
        if key.startswith("milestone/") and key.endswith("/fraction") and pd.notna(value)
    }
    return sorted(found, key=float)


def budget_rows(runs: pd.DataFrame, curves: pd.DataFrame | None = None, warn=print) -> pd.DataFrame:
    """One row per run and budget level (see the module's docstring); `curves` (analysis.sources) gives a milestone
    row its reward and completion length at the milestone's step. A milestone that a separate run of the same budget,
    init, rank, settings and seed also made is the same training twice: the separate run is kept, the milestone named
    through `warn`."""
    rows = []
    for _, run in runs.iterrows():
        row = run.to_dict()
        budget = row.get("budget_config") or {}
        names = milestone_names(row)
        own = {k: v for k, v in row.items() if not k.startswith("milestone/")}
        rows.append({**own, **_level_columns(budget, 1.0, None), **_spent(row, None)})
        for name in names:
            rows.append(_milestone_row(own, row, name, budget, curves))
    frame = pd.DataFrame(rows)
    if not len(frame):
        return frame
    identity = [c for c in ("init", "rank", "learning_rate", "variant", "budget", LEVEL, "seed") if c in frame]
    settings = frame["settings"] if "settings" in frame else pd.Series([{}] * len(frame), index=frame.index)
    keys = frame[identity].map(repr).agg("|".join, axis=1) + "|" + settings.map(_settings_key)
    twice = keys.duplicated(keep=False) & frame["milestone"].notna()
    for _, row in frame[twice & keys.isin(keys[frame["milestone"].isna()])].iterrows():
        warn(
            f"Left out: {row['run']} milestone {row['milestone']} ({row[LEVEL]}): a separate run of that budget and "
            "seed is the same training, and is kept."
        )
    return frame[~(twice & keys.isin(keys[frame["milestone"].isna()]))].reset_index(drop=True)


def _settings_key(settings) -> str:
    """A run's result-changing settings, without the budget's size (which the level carries)."""
    kept = {k: v for k, v in (settings or {}).items() if not k.startswith("budget.")}
    return repr(sorted((k, repr(v)) for k, v in kept.items()))


def _level_columns(budget: dict, fraction: float, milestone: str | None) -> dict:
    label, unit, size = level(budget, fraction)
    return {
        LEVEL: label,
        "budget_unit": unit,
        "budget_size": size,
        "budget_fraction": fraction,
        "milestone": milestone,
        "eval_phase": f"milestone-{milestone}" if milestone else "final",  # its per-sample records: eval/<phase>/
    }


def _spent(row: dict, milestone: str | None) -> dict:
    spend = row.get("spend") or {}
    prefix = f"milestone/{milestone}/" if milestone else None
    training_s = row.get(prefix + "training_s") if prefix else spend.get("training_s")
    return {
        "training_hours": training_s / 3600.0 if isinstance(training_s, (int, float)) else math.nan,
        "steps": row.get(prefix + "step") if prefix else row.get("global_step"),
        "generated_tokens": row.get(prefix + "generated_tokens") if prefix else spend.get("generated_tokens"),
    }


def _milestone_row(own: dict, row: dict, name: str, budget: dict, curves: pd.DataFrame | None) -> dict:
    """A run's milestone as a run of that shorter budget: its results under the run's own names, what it spent, and
    what a separate run of that budget would have cost (its training share, the baseline and final evaluations)."""
    prefix = f"milestone/{name}/"
    results = {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}
    kept = {k: v for k, v in own.items() if k.split("/")[0] not in ("eval", "delta")}
    spent = _spent(row, name)
    spend = own.get("spend") or {}
    share = _share(results.get("training_s"), spend.get("training_s"))
    hours = spend.get("training_device_hours", math.nan) * share + (
        (spend.get("baseline_evaluation_s") or 0) + (spend.get("final_evaluation_s") or 0)
    ) / 3600.0 * (spend.get("device_count") or 1)
    price = spend.get("price_per_hour")
    return {
        **kept,
        **{k: v for k, v in results.items() if k.split("/")[0] in ("eval", "delta")},
        **_level_columns(budget, float(results.get("fraction", math.nan)), name),
        **spent,
        "stop_reason": f"milestone {name}",
        "global_step": spent["steps"],
        "gpu_hours": hours,
        "cost_usd": hours * price if isinstance(price, (int, float)) else math.nan,
        **_curve_at(curves, own.get("run"), spent["steps"]),
    }


def _share(part, whole) -> float:
    if isinstance(part, (int, float)) and isinstance(whole, (int, float)) and whole > 0:
        return part / whole
    return math.nan


def _curve_at(curves: pd.DataFrame | None, run, step) -> dict:
    """The reward and completion length a run logged at `step` (reward_end, length_end of a milestone row)."""
    if curves is None or not len(curves) or step is None or "run" not in curves:
        return {"reward_end": math.nan, "length_end": math.nan}
    logged = curves[(curves["run"] == run) & (curves["step"] <= step)].sort_values("step")
    if not len(logged):
        return {"reward_end": math.nan, "length_end": math.nan}
    last = logged.iloc[-1]
    return {"reward_end": last.get("reward", math.nan), "length_end": last.get("completion_length", math.nan)}
