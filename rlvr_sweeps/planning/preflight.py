"""Preflight: a short job per model, on the cluster the sweep will use, that measures what the sweep's cost and
survival depend on before its device-hours are spent.

    python launch.py -m experiment=study lora.rank=8,64,256 model=instruct,math hydra/launcher=slurm_a40 preflight=true

The launcher submits, through the sweep's own launcher, resources and environment, one job per model at the sweep's
most memory-hungry arm (full fine-tuning, then DoRA, then the largest rank, the longest completions, the largest
micro-batch). Each job (rlvr_sweeps.preflight_job) trains STEPS steps of that arm in `<sweep>/preflight/<arm>/`:
step FORCED_STEP with every completion at trainer.max_completion_length (the memory worst case), a save at
SAVE_STEPS, at step SIGNAL_STEP the scheduler's stop signal (the time-limit path: save, requeue, resume in the same
folder), then PROBLEMS problems of every benchmark and of the selection benchmark at their full answer lengths.
It writes preflight.json: what it measured and one verdict, ready or not ready with each cause and its fix. The next
plan of the sweep (dry_run=true) estimates from those measurements (this module is read by the plan: no torch).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

FOLDER = "preflight"
RECORD = "preflight.json"
STEPS = 4  # 1: warm-up (and vLLM's log-prob floor), 2: full length + save + selection, 3: signal, 4: resumed
FORCED_STEP = 2
SAVE_STEPS = 2
SIGNAL_STEP = 3
PROBLEMS = 4  # per benchmark, at its full answer length
REQUEUE_WAIT_MIN = 5  # the scheduler's requeue, in the job time the plan asks for


def preflight_dir(run_dir: str | Path) -> Path:
    """Where the preflight of the arm whose run folder is `run_dir` lives: <sweep>/preflight/<arm>."""
    run_dir = Path(run_dir)
    return run_dir.parent / FOLDER / run_dir.name


def memory_rank(cfg) -> tuple:
    """How memory-hungry an arm is, for choosing each model's preflight arm: full fine-tuning, then DoRA, then the
    largest rank, the longest completions, the largest micro-batch."""
    rank = cfg.lora.get("rank")
    variant = str(cfg.lora.get("variant") or "lora")
    completion = int(cfg.trainer.get("max_completion_length") or 0)
    return (rank is None, variant == "dora", int(rank or 0), completion, int(cfg.trainer.per_device_train_batch_size))


def hungriest_arms(arms: list[tuple[object, object]]) -> list[int]:
    """The index of each model's most memory-hungry arm among (key, config) pairs, in the order models first appear."""
    chosen: dict[str, int] = {}
    for index, (_, cfg) in enumerate(arms):
        model = str(cfg.model.name)
        if model not in chosen or memory_rank(cfg) > memory_rank(arms[chosen[model]][1]):
            chosen[model] = index
    return list(chosen.values())


def read(folder: str | Path) -> dict | None:
    try:
        return json.loads((Path(folder) / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def measurements(sweep_dir: str | Path, model_name: str) -> dict | None:
    """What the newest finished preflight of this model in the sweep measured (preflight.json "measured"), or None."""
    found = []
    for path in Path(sweep_dir, FOLDER).glob(f"*/{RECORD}"):
        record = read(path.parent)
        if record and record.get("model") == model_name and record.get("measured") and record.get("verdict"):
            found.append(record)
    return max(found, key=lambda r: r.get("finished_at") or "")["measured"] if found else None


def status_line(record: dict | None, alive: bool = False) -> str:
    """One line on a preflight: its verdict, or where it stands."""
    if record is None:
        return "not started"
    verdict = record.get("verdict")
    if verdict:
        if verdict.get("ready"):
            notes = "; ".join(verdict.get("notes") or [])
            return "READY" + (f" ({notes})" if notes else "")
        return "NOT READY: " + " | ".join(f"{c['cause']} -> {c['fix']}" for c in verdict.get("causes") or [])
    requeue = record.get("requeue") or {}
    if requeue.get("requested_at") and not requeue.get("resumed_at"):
        waited = (time.time() - float(requeue["requested_epoch"])) / 60 if requeue.get("requested_epoch") else 0
        return f"waiting for the requeued job ({waited:.0f} min since the stop signal)" + (
            "" if alive else "; no job of it is queued: the scheduler did not requeue it (NOT READY)"
        )
    return f"running (step {record.get('step', 0)} of {STEPS})"


def format_measured(record: dict) -> list[str]:
    """The measured numbers of a finished preflight, a few lines."""
    measured = record.get("measured") or {}
    lines = []
    memory = measured.get("memory") or {}
    if memory:
        estimate = memory.get("estimate_gb")
        lines.append(
            f"memory: peak {memory.get('peak_gb')} GB at {memory.get('completion_tokens')}-token completions "
            f"(micro-batch {memory.get('micro_batch')}), estimate {estimate if estimate is not None else '-'} GB"
        )
    if measured.get("step_s"):
        lines.append(
            f"step {measured['step_s']:.1f} s (slowest {measured.get('max_step_s', 0):.1f} s), save "
            f"{measured.get('save_s', 0):.1f} s ({measured.get('checkpoint_gb', 0):.2f} GB); "
            f"signal to resumed step {measured.get('signal_to_resumed_step_s') or '-'} s"
        )
    for name, bench in (measured.get("evaluation") or {}).items():
        lines.append(
            f"{name}: {bench['completion_tokens']:.0f} tokens per answer, {bench['tokens_per_s']:.0f} tokens/s"
            f" ({bench['completions']} answers, {100 * bench.get('truncated', 0):.0f}% cut at the limit)"
        )
    return lines
