"""The trainer callbacks that write the run record: every logged step to metrics.jsonl, and the COMPLETE marker
of each checkpoint (run_record.py reads both without importing transformers: sweeps and analysis stay light)."""

from __future__ import annotations

import json

from transformers import TrainerCallback

from .record import COMPLETE_MARKER, RunRecord, atomic_write, now_iso


class MetricsCallback(TrainerCallback):
    """Appends every logged training step to metrics.jsonl and keeps the summary's budget current."""

    def __init__(self, record: RunRecord, meter):
        self.record = record
        self.meter = meter
        self.train_summary: dict = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "train_runtime" in logs:  # the trainer's end-of-training totals: a summary, not a step
            self.train_summary = logs
            return
        self.record.append_metrics({"step": state.global_step, "training_s": round(self.meter.training_s, 3), **logs})
        self.record.update_summary(global_step=state.global_step, budget=self.meter.usage())


class CheckpointMarker(TrainerCallback):
    """Marks a checkpoint complete once the trainer has written all of it, with the training seconds and
    tokens spent up to it; resumes use marked checkpoints only and continue the budget from them."""

    def __init__(self, record: RunRecord, meter):
        self.record = record
        self.meter = meter

    def on_save(self, args, state, control, **kwargs):
        folder = self.record.checkpoint(state.global_step)
        if folder.is_dir():
            marker = {
                "step": state.global_step,
                "at": now_iso(),
                "training_s": round(self.meter.training_s, 3),
                "generated_tokens": self.meter.generated_tokens,
            }
            atomic_write(folder / COMPLETE_MARKER, json.dumps(marker) + "\n")
