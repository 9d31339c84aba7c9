"""Where runs come from: local run folders, or W&B through its public API. Both give the same
one-row-per-run table (runs_frame) and the same per-step curves (curves_frame)."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pandas as pd
import yaml

from rlvr_sweeps.planning.search import stage_of
from rlvr_sweeps.run.record import flat_summary, read_jsonl, result_settings

# per-step training metrics kept for the curves (W&B logs them with a "train/" prefix)
CURVE_KEYS = {"reward": "reward", "completions/mean_length": "completion_length"}
# the first part of the flat keys of a run's results (milestone/<f>/...: those of its shorter budgets, budget_axis)
RESULTS = {"eval", "baseline", "delta", "milestone"}
# The run's own config (conf/config.yaml's groups and keys); a W&B run's config also holds the overrides, the memory
# fit and every TrainingArguments field transformers' W&B callback adds at its top level
CONFIG_KEYS = (
    "name",
    "prompt",
    "model",
    "lora",
    "data",
    "reward",
    "trainer",
    "generation",
    "budget",
    "eval",
    "guards",
    "logger",
    "paths",
    "dry_run",
    "preflight",
    "search",
)


def run_row(flat: dict, config: dict, run: str) -> dict:
    """One run as a flat row: what it was (init, rank, adapter variant, alpha, learning rate, budget,
    seed) and what it did. `learning_rate` is the one given to the optimizer (lora.effective_learning_rate,
    which lora.lr_rule derives from the rank; older runs: trainer.learning_rate), `base_learning_rate`
    the configured trainer.learning_rate."""
    lora, trainer, budget = config.get("lora") or {}, config.get("trainer") or {}, config.get("budget") or {}
    rank = flat.get("lora/rank", lora.get("rank"))
    effective = lora.get("effective_learning_rate")
    row = {
        "run": run,
        "init": (config.get("model") or {}).get("name", flat.get("model/name")),
        "rank": "full" if rank is None else int(rank),
        "variant": lora.get("variant") or "lora",
        "alpha": flat.get("lora/alpha"),
        "learning_rate": trainer.get("learning_rate") if effective is None else effective,
        "base_learning_rate": trainer.get("learning_rate"),
        "lr_rule": lora.get("lr_rule") or "fixed",
        "budget": budget.get("name"),
        "seed": trainer.get("seed"),
        # search=two_stage: 1 for the seeds that chose the learning rate, 2 for the new seeds the verdict uses
        "search_stage": stage_of(trainer.get("seed"), config.get("search")),
        "milestone_selection": flat.get("paused/selection_score"),  # stage 1: its selection score at the pause
        "final_selection": flat.get("selection/selected_score"),  # and a winner's, trained on to the full budget
        "search_milestone": (config.get("search") or {}).get("milestone"),
        "search_promote": (config.get("search") or {}).get("promote"),  # above 1: stage 2 trains several rates
        "selection_benchmark": flat.get("paused/selection_benchmark"),
        "status": flat.get("status"),
        "stop_reason": flat.get("stop_reason"),
        "global_step": flat.get("global_step"),
        "gpu_hours": flat.get("budget/device_hours"),
        "cost_usd": flat.get("budget/cost_usd"),
        "device": device_label(flat),
        "reward_start": flat.get("train/first/reward"),
        "reward_end": flat.get("train/last/reward"),
        "length_start": flat.get("train/first/completions/mean_length"),
        "length_end": flat.get("train/last/completions/mean_length"),
        "error": last_line(flat.get("error")),
        "git_commit": flat.get("git_commit"),
        "mixed_versions": flat.get("mixed_versions"),
        # what the analysis reads but runs.csv does not hold: the versions of its last attempt, and every
        # result-changing setting (the runs' own settings split the tables: comparisons.settings_groups)
        "versions": {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith("versions/")},
        "settings": result_settings({k: v for k, v in config.items() if k in CONFIG_KEYS}),
        # what analysis.budget_axis places the run and its milestones on the budget axis with
        "budget_config": {k: budget.get(k) for k in ("minutes", "max_steps", "max_generated_tokens")},
        "spend": {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith("budget/")},
    }
    row.update({k: v for k, v in flat.items() if k.split("/")[0] in RESULTS})
    return row


def last_line(text) -> str | None:
    """The line an error ends with (a traceback's last: the exception), shortened."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else None


def device_label(flat: dict) -> str | None:
    """What a run's device-hours count: "core" on a CPU (core-hours), the GPU's short name ("A40") on a GPU."""
    device, name = flat.get("budget/device"), flat.get("budget/device_name")
    if device is None:
        return None
    if device == "cpu":
        return "core"
    return str(name or device).removeprefix("NVIDIA ").strip() or str(device)


def local_run_dirs(paths: list[str]) -> list[Path]:
    """Run folders from sweep folders, run folders or globs."""
    found = []
    for pattern in paths:
        for path in sorted(map(Path, glob.glob(pattern))) or [Path(pattern)]:
            if (path / "summary.json").exists():
                found.append(path)
            else:
                found += sorted(p.parent for p in path.glob("*/summary.json"))
    return found


def damage(run_dir: Path) -> list[str]:
    """The files of a run folder the analysis cannot read, each with why: summary.json or config.yaml that
    are not valid JSON / YAML, per-sample records (eval/<phase>/<benchmark>.jsonl) with a line that is not
    a JSON sample (a job killed while writing). Empty for a sound folder."""
    found = []
    try:
        json.loads((run_dir / "summary.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        found.append(f"{run_dir / 'summary.json'} (not valid JSON: {err})")
    if (run_dir / "config.yaml").exists():
        try:
            yaml.safe_load((run_dir / "config.yaml").read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            found.append(f"{run_dir / 'config.yaml'} (not valid YAML: {str(err).splitlines()[0]})")
    for samples in sorted(run_dir.glob("eval/*/*.jsonl")):
        records, bad = read_jsonl(samples)
        bad += [i + 1 for i, r in enumerate(records) if not SAMPLE_KEYS <= r.keys()][:1]
        if bad:
            found.append(f"{samples} (line {bad[0]} is not a complete sample: a job killed while writing?)")
    return found


SAMPLE_KEYS = {"problem_id", "sample", "correct"}  # what the comparisons read of a per-sample record


def _read_config(run_dir: Path) -> dict:
    try:
        return yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (FileNotFoundError, yaml.YAMLError, UnicodeDecodeError):
        return {}


def load_local(paths: list[str], warn=print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs and curves of local run folders; a run's `path` (its folder) lets the tables read the
    per-sample records eval/<phase>/<benchmark>.jsonl, which W&B does not hold.

    A run folder with a damaged file (damage()) is named in one line through `warn` and kept as a gap:
    status "damaged", none of its results used; the other runs are analysed as usual."""
    rows, curves = [], []
    for run_dir in local_run_dirs(paths):
        damaged = damage(run_dir)
        for what in damaged:
            warn(f"Damaged, left out of the comparisons: {what}")
        summary = {} if any(d.startswith(str(run_dir / "summary.json")) for d in damaged) else None
        if summary is None:
            summary = json.loads((run_dir / "summary.json").read_text())
        if summary.get("kind") == "evaluation":
            continue
        config = _read_config(run_dir)
        if damaged:
            flat = {k: v for k, v in flat_summary(summary).items() if k.split("/")[0] not in RESULTS}
            row = {**run_row({**flat, "status": "damaged"}, config, run_dir.name), "path": str(run_dir)}
            rows.append(row)
            continue
        row = {**run_row(flat_summary(summary), config, run_dir.name), "path": str(run_dir)}
        rows.append(row)
        metrics = run_dir / "metrics.jsonl"
        records, bad = read_jsonl(metrics) if metrics.exists() else ([], [])
        if bad:
            warn(f"Skipped {len(bad)} line(s) of {metrics} that are not JSON (a job killed while writing?)")
        for record in records:
            curves.append(
                {
                    "run": row["run"],
                    "init": row["init"],
                    "rank": row["rank"],
                    "seed": row["seed"],
                    "step": record.get("step"),
                    **{name: record.get(key) for key, name in CURVE_KEYS.items()},
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(curves)


def load_wandb(
    path: str, group: str | None = None, tags: list[str] | None = None, state: str | None = None, api=None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs of an entity/project through wandb's public API (`api` defaults to wandb.Api())."""
    filters = {}
    if group:
        filters["group"] = group
    if tags:
        filters["tags"] = {"$in": list(tags)}
    if state:
        filters["state"] = state
    rows, curves = [], []
    try:
        if api is None:
            from rlvr_sweeps.infra.wandb_server import public_api

            api = public_api()
        found = list(api.runs(path, filters=filters or None))
    except Exception as err:  # noqa: BLE001 - wandb raises CommError, ValueError, HTTP errors...
        from rlvr_sweeps.errors import UserError

        raise UserError(
            f"Could not read the runs of {path} from W&B ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            f"Check WANDB_API_KEY and the network, or analyze the local run folders: python -m analysis runs/<sweep>"
        ) from err
    for run in found:
        if run.config.get("kind") == "analysis":
            continue
        row = run_row(dict(run.summary), dict(run.config), run.name)
        rows.append(row)
        keys = ["train/global_step", *(f"train/{k}" for k in CURVE_KEYS)]
        for record in run.scan_history(keys=keys):
            curves.append(
                {
                    "run": row["run"],
                    "init": row["init"],
                    "rank": row["rank"],
                    "seed": row["seed"],
                    "step": record.get("train/global_step"),
                    **{name: record.get(f"train/{key}") for key, name in CURVE_KEYS.items()},
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(curves)
