"""The budget axis from one run: milestone checkpoints are the shorter budgets (`budget.milestones`).

With the study's trainer settings nothing in training depends on the total budget (a constant learning rate, no
warm-up, the data order fixed by the seed): the budget only decides where training stops. So the checkpoint a
21-hour run holds at hour 3 *is* the 3-hour run. At each fraction f of `budget.milestones` the run saves the step
a budget of f times its own would have stopped at, by the same rule the budget stops with (BudgetCallback): the
step whose end leaves no room for another step and its save in f x the training seconds, the step f x
budget.max_steps, or the first step that reaches f x budget.max_generated_tokens. The checkpoint is kept in
`milestones/<f>/` (hard links: no extra disk), out of reach of checkpoint rotation, with what it had spent; with
eval.select_on, the best checkpoint up to it by the selection benchmark is kept beside it (`milestones/<f>/selected`).
A milestone reached at a stop signal is kept all the same, and one already kept is never saved again.

The callback that saves them is budget.MilestoneCallback; this module holds what plans and checks read (no torch).
`check_milestones` refuses, before anything loads, what would make a milestone another run than the shorter budget
(MILESTONE_BREAKERS, also listed in the README).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ..errors import UserError
from .record import COMPLETE_MARKER, RunRecord

log = logging.getLogger(__name__)

FOLDER = "milestones"
SELECTED = "selected"
# GRPOConfig settings whose effect depends on the total number of steps: with them, the checkpoint at a fraction of
# the budget is not what a run of that shorter budget would have trained
MILESTONE_BREAKERS = {
    "lr_scheduler_type": "a learning-rate schedule other than constant (or constant_with_warmup) decays over the "
    "whole run's steps",
    "warmup_ratio": "warm-up as a share of the total steps",
    "warmup_steps": "warm-up that ends after the first milestone",
    "save_steps": "save_steps below 1 (a share of the total steps)",
    "logging_steps": "logging_steps below 1 (a share of the total steps)",
}
CONSTANT_SCHEDULES = ("constant", "constant_with_warmup")


def fractions(budget_cfg) -> list[float]:
    """budget.milestones as sorted fractions of the budget, the end of the budget (1) left out: it is the run."""
    return sorted({float(f) for f in (budget_cfg.get("milestones") or []) if float(f) < 1})


def stop_at(budget_cfg) -> float | None:
    """budget.stop_at: the fraction of the budget a run pauses at (a two-stage search's stage 1), else None."""
    value = budget_cfg.get("stop_at")
    return float(value) if value is not None else None


def label(fraction: float) -> str:
    return f"{fraction:g}"


def check_milestones(budget_cfg, trainer_cfg) -> None:
    """Refuse, in one line, milestones that are not fractions of the budget, and the settings that would make a
    milestone another run than the shorter budget."""
    pause = budget_cfg.get("stop_at")
    if pause is not None:
        try:
            if not 0 < float(pause) < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise UserError(f"budget.stop_at={pause}: a fraction of the budget in (0, 1), or null.") from None
    given = list(budget_cfg.get("milestones") or [])
    if not given:
        return
    try:
        values = [float(f) for f in given]
    except (TypeError, ValueError):
        raise UserError(f"budget.milestones={given}: give fractions of the budget, e.g. [0.125,0.25,0.5].") from None
    if any(not 0 < f <= 1 for f in values):
        raise UserError(f"budget.milestones={given}: each must be a fraction of the budget in (0, 1].")
    first = min(values)
    problems = []
    schedule = str(trainer_cfg.get("lr_scheduler_type") or "linear")
    if schedule not in CONSTANT_SCHEDULES:
        problems.append(f"trainer.lr_scheduler_type={schedule} ({MILESTONE_BREAKERS['lr_scheduler_type']})")
    if float(trainer_cfg.get("warmup_ratio") or 0) > 0:
        problems.append(f"trainer.warmup_ratio={trainer_cfg.warmup_ratio} ({MILESTONE_BREAKERS['warmup_ratio']})")
    warmup = int(trainer_cfg.get("warmup_steps") or 0)
    if warmup > 0:
        steps = budget_cfg.get("max_steps")
        if not steps:
            problems.append(
                f"trainer.warmup_steps={warmup} with a budget in time or tokens (where the first milestone's step "
                "is not known in advance, the warm-up may outlast it)"
            )
        elif warmup > first * int(steps):
            problems.append(
                f"trainer.warmup_steps={warmup} ({MILESTONE_BREAKERS['warmup_steps']} at step {first * int(steps):g})"
            )
    for key in ("save_steps", "logging_steps"):
        value = trainer_cfg.get(key)
        if value is not None and 0 < float(value) < 1:
            problems.append(f"trainer.{key}={value} ({MILESTONE_BREAKERS[key]})")
    if problems:
        raise UserError(
            "budget.milestones: a milestone must be the run a shorter budget would have made, but "
            + "; ".join(problems)
            + ". Use trainer.lr_scheduler_type=constant without warm-up, or drop budget.milestones."
        )


def keep(checkpoint: Path, folder: Path) -> None:
    """A checkpoint kept out of rotation: its files hard-linked into `folder` (copied where links fail). The
    milestone counts as kept once its milestone.json is written, after this."""
    for source in sorted(Path(checkpoint).rglob("*")):
        target = folder / source.relative_to(checkpoint)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def kept_milestones(record: RunRecord) -> dict[str, dict]:
    """The milestones a run has kept (milestones/<f>/milestone.json), by label."""
    found = {}
    for path in sorted((record.dir / FOLDER).glob("*/milestone.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        found[label(float(entry["fraction"]))] = entry
    return found


def milestone_weights(record: RunRecord, entry: dict) -> tuple[Path, str]:
    """The weights a milestone is evaluated with (its selected checkpoint with eval.select_on, else its own), and a
    label that changes when they do (for reusing a finished evaluation after a requeue)."""
    folder = record.dir / FOLDER / label(float(entry["fraction"]))
    chosen = folder / SELECTED if (folder / SELECTED / COMPLETE_MARKER).exists() else folder
    marker = json.loads((chosen / COMPLETE_MARKER).read_text())
    return chosen, f"milestone-{label(float(entry['fraction']))}-step-{marker.get('step')}@{marker['at']}"
