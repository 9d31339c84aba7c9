"""Which arm beats which: each LoRA rank against its untrained init and each pair of ranks of one init,
with the training run as the unit (seed_stats) and, beside it, the evaluation noise of the runs at hand.

An arm is the completed runs (seeds) of one init x rank in one setting (learning rate, adapter variant
and budget, when the sweep varies them). For a benchmark's Pass@1, every comparison gets:

- `seeds`: the seed-level estimate: the mean over runs, Welch's t interval between two arms, the t
  interval of the runs' changes against the baseline (seed_stats). This alone decides `marked` (`*`):
  >= 3 runs on each side and Holm's correction over the comparisons of one table (one benchmark and
  setting: every init, against the baseline and between ranks);
- `eval_noise`: a paired bootstrap over the benchmark's problems of these very runs (seeds averaged per
  problem; rlvr_sweeps.evaluation.significance). It says whether a difference is larger than the noise of
  evaluating these runs on this benchmark, not whether another seed would give it: it never decides
  `*`. With one run per arm (the study's own design) it is all there is, flagged `°`;
- `needed` (between two ranks with >= 2 runs each): the runs per arm that 80% power needs, and what the
  extra runs cost from the device-hours and dollars the runs recorded.

Local run folders give everything; the W&B source has no per-sample records, so no `eval_noise`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rlvr_sweeps.evaluation.significance import (
    Interval,
    evaluation_variance,
    paired_bootstrap,
    per_problem_accuracy,
    read_outcomes,
)

from .budget_axis import LEVEL, level_order
from .seed_stats import (
    MAX_RUNS,
    RunsNeeded,
    SeedTest,
    holm,
    init_tests,
    runs_needed,
)

SIGNIFICANT = "*"  # seed-level: >= 3 runs a side, the t interval excludes 0 after Holm's correction
EVAL_NOISE = "°"  # one run a side: beyond the evaluation noise of these runs (problem bootstrap), seeds unmeasured

# settings that, when a sweep varies them, get tables of their own (a cell averages seeds only)
SPLIT_BY = ("learning_rate", "variant", "budget", "budget_level")
# config keys that are the tables' own axes, the seed, or what SPLIT_BY's columns already carry: every other
# result-changing key (run.record.result_settings) that differs between the runs of one arm is a setting too
NOT_SETTINGS = (
    "model",
    "lora.rank",
    "lora.alpha",
    "trainer.seed",
    "trainer.learning_rate",
    "lora.effective_learning_rate",
    "lora.variant",
    "budget.name",
    "budget.minutes",  # the budget's size and its milestones are the budget_level axis (analysis.budget_axis)
    "budget.max_steps",
    "budget.max_generated_tokens",
    "budget.milestones",
)


def rank_order(ranks) -> list:
    numeric = sorted(r for r in ranks if r != "full")
    return numeric + (["full"] if "full" in set(ranks) else [])


def column_label(rank) -> str:
    return "full FT" if rank == "full" else f"r={rank}"


def comparison_label(high, low) -> str:
    return f"{column_label(high)} vs {low if low == 'baseline' else column_label(low)}"


Setting = tuple  # ((column, value), ...) in SPLIT_BY order: the values a settings group shares


def setting_label(setting: Setting) -> str:
    return ", ".join(f"{column}={value}" for column, value in setting)


def slug(label: str) -> str:
    """A setting's label ("learning_rate=1e-05, budget=a40") as a table name's suffix."""
    return label.replace(", ", "_").replace("=", "").replace(" ", "").replace(",", "")


def settings_groups(runs: pd.DataFrame, by: tuple[str, ...] = SPLIT_BY) -> list[tuple[Setting, pd.DataFrame]]:
    """The runs split by the settings that vary: those among `by`, then every other result-changing config key
    whose value differs between the runs of one arm (derived_settings: e.g. trainer.beta=0,0.04 swept across
    seeds), so that a cell never pools runs of different settings as if they were seeds. One group, key (),
    when none varies. A run whose config could not be read (damaged) belongs to no setting: it is named apart."""
    derived = derived_settings(runs)
    if "settings" in runs:
        runs = runs[runs["settings"].map(bool) | (runs["status"] != "damaged")]
    if derived:
        runs = runs.assign(
            **{key: runs["settings"].map(lambda s, k=key: hashable((s or {}).get(k))) for key in derived}
        )
    varying = [c for c in (*by, *derived) if c in runs and runs[c].nunique(dropna=False) > 1]
    if not varying:
        return [((), runs)]
    groups = [
        (tuple(zip(varying, key if isinstance(key, tuple) else (key,))), group)
        for key, group in runs.groupby(varying, dropna=False, sort=True)
    ]
    levels = level_order(runs)  # budget levels from the smallest budget up, not alphabetically ("12 h" < "3 h")
    if not levels:
        return groups
    return sorted(groups, key=lambda g: [levels.index(v) if c == LEVEL and v in levels else 0 for c, v in g[0]])


def derived_settings(runs: pd.DataFrame) -> list[str]:
    """The result-changing config keys (beyond NOT_SETTINGS) with two values among the runs of one arm (an init and
    rank at one of SPLIT_BY's settings). Keys that differ only between inits or ranks (an init's answer limit, alpha
    = 2 x rank) are properties of the arm, not settings; a key a run's config lacks (written by an older version of
    the project) is unknown there, not a value of its own."""
    if "settings" not in runs:
        return []
    sound = runs[runs["settings"].map(bool)]
    keys = sorted(set().union(*sound["settings"])) if len(sound) else []
    arms = [sound["init"].astype(str), sound["rank"].astype(str)]
    arms += [sound[c].astype(str) for c in SPLIT_BY if c in sound]
    found = []
    for key in keys:
        if any(key == p or key.startswith(p + ".") for p in NOT_SETTINGS):
            continue
        values = sound["settings"].map(lambda s, k=key: hashable(s[k]) if k in s else MISSING)
        present = values != MISSING
        by_arm = values[present].groupby([a[present] for a in arms], dropna=False)
        if present.any() and (by_arm.nunique(dropna=False) > 1).any():
            found.append(key)
    return found


MISSING = "<missing>"


def hashable(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def setting_order(column: str) -> tuple:
    """SPLIT_BY's columns first, in their order, then derived settings by name."""
    return (0, SPLIT_BY.index(column), "") if column in SPLIT_BY else (1, 0, column)


@dataclass
class Comparison:
    """`high` against `low` (a rank, or "baseline") on one init's Pass@1: `delta` = high - low."""

    init: object
    high: object
    low: object
    seeds: SeedTest
    eval_noise: Interval | None = None  # paired problem bootstrap of these runs (local run folders only)
    marked: bool = False  # the `*` decision (seed_stats.holm over the table's comparisons)
    p_holm: float = math.nan
    needed: RunsNeeded | None = None
    hours_per_run: float = math.nan  # device-hours (training + evaluation) of one run, as the runs recorded
    cost_per_run: float = math.nan
    device: str = ""
    left_out: list[str] = field(default_factory=list)  # the runs of both arms that are not averaged, with why

    @property
    def label(self) -> str:
        return comparison_label(self.high, self.low)

    @property
    def single_runs(self) -> bool:
        return self.seeds.runs == 1 and self.seeds.runs_reference in (None, 1)

    @property
    def beyond_eval_noise(self) -> bool:
        return self.eval_noise is not None and self.eval_noise.excludes_zero

    @property
    def symbol(self) -> str:
        if self.marked:
            return SIGNIFICANT
        return EVAL_NOISE if self.single_runs and self.beyond_eval_noise else ""


def finals(cell: pd.DataFrame, final_key: str) -> tuple[pd.DataFrame, str]:
    """A cell's completed runs with the metric (in seed order), or why there is none: "failed",
    "damaged" (its files could not be read), "no runs", "missing" (completed without the metric)."""
    ok = cell[cell["status"] == "completed"]
    ok = ok.dropna(subset=[final_key]) if final_key in ok else ok.iloc[0:0]
    if len(ok):
        return ok.sort_values("seed", na_position="last", kind="stable") if "seed" in ok else ok, ""
    if not len(cell):
        return ok, "no runs"
    if (cell["status"] == "damaged").all():
        return ok, "damaged"
    return ok, "failed" if (cell["status"] != "completed").all() else "missing"


def left_out(cell: pd.DataFrame, final_key: str) -> list[str]:
    """The runs of an arm that its cell does not average, each with why ("seed 2: failed (CUDA out of memory)",
    "seed 3: still running"): dropping them without a word would bias the arm that crashes."""
    kept, _ = finals(cell, final_key)
    metric = final_key.rsplit("/", 1)[-1]
    found = []
    for _, run in cell.loc[cell.index.difference(kept.index)].iterrows():
        seed = run.get("seed")
        found.append(f"seed {seed if isinstance(seed, (int, str)) else '?'}: {_why_left_out(run, metric)}")
    return found


def _why_left_out(run, metric: str) -> str:
    status = run.get("status")
    if status == "failed":
        return f"failed ({run.get('error') or 'no error recorded'})"
    if status == "running":
        return "still running"
    if status == "interrupted":
        step = run.get("global_step")
        return f"interrupted at step {int(step) if step == step and step is not None else 0} (a relaunch resumes it)"
    if status == "damaged":
        return "damaged (its files could not be read)"
    return f"completed without {metric}" if status == "completed" else str(status)


def baseline(runs: pd.DataFrame, base_key: str) -> float:
    """The untrained baseline of the completed runs (mean; NaN when none has it)."""
    base = runs.loc[runs["status"] == "completed", base_key].dropna() if base_key in runs else pd.Series(dtype=float)
    return float(base.mean()) if len(base) else math.nan


def problem_accuracy(cell: pd.DataFrame, phase: str, benchmark: str) -> dict[str, float]:
    """Per-problem accuracy of a cell's runs (seeds averaged per problem) from their run folders'
    eval/<phase>/<benchmark>.jsonl; empty when any run lacks the file, since an average over some
    of the seeds would not be the cell the table shows."""
    files = _sample_files(cell, phase, benchmark)
    if not files or len(files) < len(cell) or not all(f.exists() for f in files):
        return {}
    return per_problem_accuracy([read_outcomes(f) for f in files])


def _sample_files(cell: pd.DataFrame, phase: str, benchmark: str) -> list[Path]:
    """The per-sample records of a cell's runs; "final" is each row's own evaluation (`eval_phase`: a milestone row's
    is milestone-<f>, analysis.budget_axis)."""
    if "path" not in cell:
        return []
    phases = cell["eval_phase"] if phase == "final" and "eval_phase" in cell else pd.Series(phase, index=cell.index)
    return [
        Path(p) / "eval" / (own if isinstance(own, str) else phase) / f"{benchmark}.jsonl"
        for p, own in zip(cell["path"], phases)
        if isinstance(p, str)
    ]


def baseline_variance(cell: pd.DataFrame, benchmark: str) -> float:
    """Sampling variance of the baseline evaluation the runs share: from the summaries' se_pass@1 (W&B
    too), else from the per-sample records; 0 when neither is known (then the interval against the
    baseline covers the seeds only)."""
    key = f"baseline/{benchmark}/se_pass@1"
    if key in cell and cell[key].notna().any():
        return float(cell[key].dropna().iloc[0]) ** 2
    files = [f for f in _sample_files(cell, "baseline", benchmark) if f.exists()]
    return evaluation_variance(read_outcomes(files[0])) if files else 0.0


def _costs(cell: pd.DataFrame) -> tuple[float, float, str]:
    """Mean device-hours and dollars of one run (training + evaluation), and the device they count."""
    hours = cell["gpu_hours"].dropna().astype(float) if "gpu_hours" in cell else pd.Series(dtype=float)
    cost = cell["cost_usd"].dropna().astype(float) if "cost_usd" in cell else pd.Series(dtype=float)
    devices = cell["device"].dropna().unique() if "device" in cell else []
    return (
        float(hours.mean()) if len(hours) else math.nan,
        float(cost.mean()) if len(cost) else math.nan,
        str(devices[0]) if len(devices) == 1 else "device",
    )


def compare(runs: pd.DataFrame, benchmark: str, min_effect: float | None = None) -> dict[tuple, Comparison]:
    """Pass@1 on `benchmark`, per init of `runs` (one setting: one table): each rank against the init's
    untrained baseline, key (init, rank, "baseline"), then each pair of ranks, key (init, higher, lower),
    the higher rank first. The runs are those the table averages (completed, with the metric). `*` is
    decided over all of them at once (Holm). `min_effect` (fraction) replaces the observed difference in
    the runs-needed estimate."""
    final_key, base_key = f"eval/{benchmark}/pass@1", f"baseline/{benchmark}/pass@1"
    found: dict[tuple, Comparison] = {}
    if final_key not in runs:
        return found
    for init, group in runs.groupby("init", sort=True):
        arms = {
            rank: finals(group[group["rank"] == rank], final_key)[0] for rank in rank_order(group["rank"].unique())
        }
        arms = {rank: arm for rank, arm in arms.items() if len(arm)}
        base_side = {
            rank: arm.dropna(subset=[base_key]) if base_key in arm else arm.iloc[0:0] for rank, arm in arms.items()
        }
        tests = init_tests(
            {rank: arm[final_key].tolist() for rank, arm in arms.items()},
            {rank: arm[base_key].tolist() for rank, arm in base_side.items() if len(arm)},
            baseline_variance(group[group["status"] == "completed"], benchmark),
        )
        lost = {rank: left_out(group[group["rank"] == rank], final_key) for rank in group["rank"].unique()}
        for (high, low), test in tests.items():
            comparison = found[(init, high, low)] = Comparison(init, high, low, test)
            comparison.left_out = [
                f"{column_label(rank)} {why}" for rank in (high, low) if rank != "baseline" for why in lost[rank]
            ]
            if low != "baseline" and min(len(arms[low]), len(arms[high])) >= 2:
                a, b = arms[low][final_key].tolist(), arms[high][final_key].tolist()
                effect = None if min_effect is None else math.copysign(min_effect, test.delta or 1)
                comparison.needed = runs_needed(a, b, effect)
                both = pd.concat([arms[low], arms[high]])
                comparison.hours_per_run, comparison.cost_per_run, comparison.device = _costs(both)
        _eval_noise(found, init, group, arms, base_side, benchmark)
    keys = list(found)
    tests = [found[key].seeds for key in keys]
    for key, marked, p in zip(keys, *holm(tests)):
        found[key].marked, found[key].p_holm = marked, p
    return found


def _eval_noise(found: dict, init, group: pd.DataFrame, arms: dict, base_side: dict, benchmark: str) -> None:
    """The paired problem bootstrap of each comparison of `init`, when every run on both sides has its
    per-sample records."""
    if "path" not in group:
        return
    sides = {rank: problem_accuracy(arm, "final", benchmark) for rank, arm in arms.items()}
    for key, comparison in found.items():
        if key[0] != init:
            continue
        if comparison.low == "baseline":
            reference = problem_accuracy(base_side[comparison.high], "baseline", benchmark)
        else:
            reference = sides[comparison.low]
        compared = sides[comparison.high]
        if reference.keys() & compared.keys():
            comparison.eval_noise = paired_bootstrap(reference, compared)


def all_comparisons(runs: pd.DataFrame, benchmark: str, min_effect: float | None = None) -> dict[tuple, Comparison]:
    """compare() on each settings group, keyed (setting, init, high, low): the comparisons every table
    and plot of one benchmark shows, each decided within its own table."""
    return {
        (setting, *key): comparison
        for setting, group in settings_groups(runs)
        for key, comparison in compare(group, benchmark, min_effect).items()
    }


def cost_text(hours: float, cost: float, device: str) -> str:
    """'860 A40-hours, $378' (what is known of it)."""
    parts = []
    if not math.isnan(hours):
        parts.append(f"{hours:,.0f} {device}-hours" if hours >= 10 else f"{hours:.2f} {device}-hours")
    if not math.isnan(cost):
        parts.append(f"${cost:,.0f}" if cost >= 10 else f"${cost:.2f}")
    return ", ".join(parts)


def needed_line(comparison: Comparison, min_effect: float | None = None) -> str:
    """One line on the runs a comparison needs, e.g. 'instruct r=256 vs r=8: +11.8 points (3 + 3 runs, SD 17.0
    points); to detect 11.8 points: about 34 runs per arm for 80% power: 62 more runs, 1,471 A40-hours, $647'."""
    needed = comparison.needed
    head = f"{comparison.init} {comparison.label}: {comparison.seeds.delta * 100:+.1f} points"
    if needed is None:
        return head + " (fewer than 2 runs on a side: no spread to plan from)"
    now = f"{needed.runs_now[0]} + {needed.runs_now[1]} runs, SD {needed.sd * 100:.1f} points"
    if needed.per_arm is None:
        why = "the runs agree exactly, no spread measured" if needed.sd == 0 else "no difference to detect"
        return f"{head} ({now}); {why}: give --min-effect POINTS to plan for an effect"
    target = f"{abs(needed.effect) * 100:.1f} points" + (" (--min-effect)" if min_effect is not None else "")
    line = f"{head} ({now}); to detect {target}: "
    if needed.per_arm >= MAX_RUNS:
        line += f"more than {MAX_RUNS:,} runs per arm for 80% power, a difference seeds cannot settle"
    else:
        line += f"about {needed.per_arm:,} runs per arm for 80% power"
        more = needed.more_runs
        spent = cost_text(more * comparison.hours_per_run, more * comparison.cost_per_run, comparison.device)
        line += f": {more:,} more runs" + (f", {spent}" if spent else "") if more else ": the runs at hand suffice"
    spread = (
        f"the SD's 95% interval [{needed.sd_low * 100:.1f}, {needed.sd_high * 100:.1f}] points means "
        f"{_runs(needed.per_arm_low)} to {_runs(needed.per_arm_high)} runs per arm"
    )
    if min(needed.runs_now) <= 3:
        return f"{line}. With {min(needed.runs_now)} runs on a side the spread itself is uncertain: {spread}"
    return f"{line} ({spread})"


def _runs(count: int | None) -> str:
    return "?" if count is None else f"over {MAX_RUNS:,}" if count >= MAX_RUNS else f"{count:,}"


def gap_reason(cell: pd.DataFrame, final_key: str) -> str:
    return finals(cell, final_key)[1]


def final_values(cell: pd.DataFrame, final_key: str) -> list[float]:
    arm, _ = finals(cell, final_key)
    return arm[final_key].astype(float).tolist() if len(arm) else []


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan
