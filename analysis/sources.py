"""Where runs come from: local run folders, or W&B through its public API. Both give the same
one-row-per-run table (runs_frame) and the same per-step curves (curves_frame)."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pandas as pd
import yaml

from rlvr_sweeps.run_record import flat_summary

# per-step training metrics kept for the curves (W&B logs them with a "train/" prefix)
CURVE_KEYS = {"reward": "reward", "completions/mean_length": "completion_length"}


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
        "status": flat.get("status"),
        "stop_reason": flat.get("stop_reason"),
        "global_step": flat.get("global_step"),
        "gpu_hours": flat.get("budget/device_hours"),
        "cost_usd": flat.get("budget/cost_usd"),
        "reward_start": flat.get("train/first/reward"),
        "reward_end": flat.get("train/last/reward"),
        "length_start": flat.get("train/first/completions/mean_length"),
        "length_end": flat.get("train/last/completions/mean_length"),
    }
    row.update({k: v for k, v in flat.items() if k.split("/")[0] in {"eval", "baseline", "delta"}})
    return row


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


def load_local(paths: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs and curves of local run folders; a run's `path` (its folder) lets the tables read the
    per-sample records eval/<phase>/<benchmark>.jsonl, which W&B does not hold."""
    rows, curves = [], []
    for run_dir in local_run_dirs(paths):
        summary = json.loads((run_dir / "summary.json").read_text())
        if summary.get("kind") == "evaluation":
            continue
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
        row = {**run_row(flat_summary(summary), config, run_dir.name), "path": str(run_dir)}
        rows.append(row)
        metrics = run_dir / "metrics.jsonl"
        for line in metrics.read_text().splitlines() if metrics.exists() else []:
            record = json.loads(line)
            curves.append(
                {
                    "run": row["run"],
                    "init": row["init"],
                    "rank": row["rank"],
                    "seed": row["seed"],
                    "step": record["step"],
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
            import wandb

            from rlvr_sweeps.tracking import wandb_base_url, wandb_server_answers

            if not wandb_server_answers(10.0):  # instead of a minute of retries
                raise ConnectionError(f"no answer from {wandb_base_url()}")
            api = wandb.Api(timeout=60)
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
