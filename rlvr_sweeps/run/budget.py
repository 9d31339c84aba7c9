"""The compute budget: what a run may spend on training, what it has spent, and the callback that stops it.

`budget.minutes` counts training only: rollouts, updates and checkpoint saves. Evaluations (baseline,
checkpoint selection, final) are timed beside it and never shorten training, so that every arm of a
sweep trains for the same compute whatever its evaluations cost or whether its baseline came from
the cache. The count survives requeues: a resumed run continues from the training seconds recorded
with the checkpoint it resumes from. Training stops when the next step and a checkpoint save,
predicted from the measured times, would not end within the budget. Steps and generated tokens can
be capped too.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

from omegaconf import DictConfig
from tqdm.auto import tqdm
from transformers import TrainerCallback

from ..infra.hardware import Hardware
from .milestones import FOLDER as MILESTONES
from .milestones import SELECTED, fractions, keep, kept_milestones, label
from .record import COMPLETE_MARKER, RunRecord, atomic_write, now_iso

log = logging.getLogger(__name__)

WALL_CLOCK, MAX_STEPS, MAX_TOKENS, EPOCHS_DONE = "wall_clock", "max_steps", "max_generated_tokens", "epochs_done"
STOP_AT = "stop_at"  # budget.stop_at: paused at a fraction of the budget; a relaunch without it trains on
EVALUATION_PHASES = ("baseline", "selection", "final", "milestones")


@dataclass(frozen=True)
class Budget:
    """What one run may spend (the `budget` config group)."""

    name: str
    """The budget's name, e.g. `a40_24h` or `smoke`."""
    device: str
    """What the hours are counted on: `cpu`, or a GPU kind such as `a40` (which needs CUDA)."""
    seconds: float
    """Training seconds (`budget.minutes` x 60): rollouts, updates and checkpoint saves; no evaluation."""
    max_steps: int | None
    """Optional cap on optimizer steps, on top of the training time."""
    max_generated_tokens: int | None
    """Optional cap on generated rollout tokens, on top of the training time."""
    price_per_hour: float
    """USD per device-hour (per GPU, or per CPU core on a CPU budget)."""

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Budget:
        return cls(
            name=str(cfg.name),
            device=str(cfg.device),
            seconds=float(cfg.minutes) * 60.0,
            max_steps=int(cfg.max_steps) if cfg.max_steps else None,
            max_generated_tokens=int(cfg.max_generated_tokens) if cfg.max_generated_tokens else None,
            price_per_hour=float(cfg.price_per_hour),
        )


class BudgetMeter:
    """Training seconds and generated tokens spent by one run (earlier attempts included), and the
    evaluation seconds beside them. The training clock runs only between `start_training` and
    `stop_training`, and pauses while `evaluating`."""

    def __init__(
        self,
        budget: Budget,
        hardware: Hardware,
        training_s: float = 0.0,
        generated_tokens: int = 0,
        evaluation_s: dict | None = None,
        clock=time.monotonic,
    ):
        self.budget = budget
        self.hardware = hardware
        self.generated_tokens = int(generated_tokens)
        self.evaluation_s = {phase: float((evaluation_s or {}).get(phase, 0.0)) for phase in EVALUATION_PHASES}
        self.evaluations = {phase: 0 for phase in EVALUATION_PHASES}  # evaluations timed in this attempt
        self._clock = clock
        self._counted_s = float(training_s)
        self._running_since: float | None = None

    @property
    def training_s(self) -> float:
        running = self._clock() - self._running_since if self._running_since is not None else 0.0
        return self._counted_s + running

    @property
    def training_left_s(self) -> float:
        return self.budget.seconds - self.training_s

    def start_training(self) -> None:
        if self._running_since is None:
            self._running_since = self._clock()

    def stop_training(self) -> None:
        if self._running_since is not None:
            self._counted_s += self._clock() - self._running_since
            self._running_since = None

    @contextmanager
    def evaluating(self, phase: str):
        """Time an evaluation; the training clock, when running, pauses meanwhile."""
        was_training = self._running_since is not None
        self.stop_training()
        started = self._clock()
        try:
            yield
        finally:
            self.evaluation_s[phase] += self._clock() - started
            self.evaluations[phase] += 1
            if was_training:
                self.start_training()

    def rewind(self, training_s: float, generated_tokens: int) -> None:
        """Forget the training time and tokens after a point (a step that was abandoned, and will be redone)."""
        was_training = self._running_since is not None
        self.stop_training()
        self._counted_s, self.generated_tokens = float(training_s), int(generated_tokens)
        if was_training:
            self.start_training()

    def add_generated_tokens(self, count: int) -> None:
        self.generated_tokens += int(count)

    def fraction_used(self, step: int = 0) -> float:
        fractions = [self.training_s / self.budget.seconds]
        if self.budget.max_steps:
            fractions.append(step / self.budget.max_steps)
        if self.budget.max_generated_tokens:
            fractions.append(self.generated_tokens / self.budget.max_generated_tokens)
        return max(fractions)

    def usage(self) -> dict:
        """The budget section of summary.json: the limit, training and evaluation time, device-hours and cost."""
        training_s, evaluation_s = self.training_s, sum(self.evaluation_s.values())
        hours = {
            "training": training_s / 3600.0 * self.hardware.count,
            "evaluation": evaluation_s / 3600.0 * self.hardware.count,
        }
        price = self.budget.price_per_hour
        selections = self.evaluations["selection"]
        return {
            "name": self.budget.name,
            "device": self.hardware.device,
            "device_name": self.hardware.name,
            "device_count": self.hardware.count,
            "limit_s": self.budget.seconds,
            "training_s": round(training_s, 3),  # counted against the limit
            "training_fraction": round(training_s / self.budget.seconds, 4),
            "evaluation_s": round(evaluation_s, 3),  # not counted
            **{f"{phase}_evaluation_s": round(seconds, 3) for phase, seconds in self.evaluation_s.items()},
            "selection_evaluation_mean_s": round(self.evaluation_s["selection"] / selections, 3)
            if selections
            else None,
            # GPU-hours on a GPU; core-hours on a CPU (count = cores this process may use)
            "training_device_hours": round(hours["training"], 6),
            "evaluation_device_hours": round(hours["evaluation"], 6),
            "device_hours": round(hours["training"] + hours["evaluation"], 6),
            "price_per_hour": price,
            "training_cost_usd": round(hours["training"] * price, 6),
            "evaluation_cost_usd": round(hours["evaluation"] * price, 6),
            "cost_usd": round((hours["training"] + hours["evaluation"]) * price, 6),
            "generated_tokens": self.generated_tokens,
            "max_generated_tokens": self.budget.max_generated_tokens,
            "max_steps": self.budget.max_steps,
        }


RECENT_STEPS = 4


def budget_ends(fraction: float, meter: BudgetMeter, budget_callback, step: int) -> bool:
    """Whether a budget of `fraction` times this one would have stopped after this step, by the rule the budget
    stops with: the step whose end leaves no room for another step and its save, the step f x max_steps, or the
    first step that reaches f x max_generated_tokens."""
    budget = meter.budget
    if budget.max_steps:
        return step >= max(1, round(fraction * budget.max_steps))
    if budget.max_generated_tokens:
        return meter.generated_tokens >= fraction * budget.max_generated_tokens
    room = budget_callback.predicted_step_s() + budget_callback.predicted_save_s()
    return meter.training_s + room > fraction * budget.seconds


class BudgetCallback(TrainerCallback):
    """Runs the training clock, stops training before the budget runs out, saves, and says why it stopped."""

    def __init__(
        self,
        meter: BudgetMeter,
        lookahead_steps: int = 3,
        earlier_save_s: float | None = None,
        earlier_step_s: float | None = None,
        stop_at: float | None = None,
    ):
        self.meter = meter
        self.stop_at = stop_at  # budget.stop_at: pause where a budget of this fraction would have stopped
        self.lookahead_steps = max(1, lookahead_steps)  # a generation step recurs every this many steps
        self.earlier_save_s = earlier_save_s  # the slowest save of the attempts this one continues
        self.earlier_step_s = earlier_step_s  # and their slowest step (a resumed job's first step warms up too)
        self.stop_reason: str | None = None
        self.step_seconds: list[float] = []
        self.save_seconds: list[float] = []
        self._mark = 0.0
        self.last_step_end = (0.0, 0)  # training seconds and generated tokens when the last step ended

    def predicted_step_s(self) -> float:
        """The slowest of the last generation cycle's steps (at least the last RECENT_STEPS: on a shared
        machine one step can run slower than the one before); the first (warm-up) step only until others exist."""
        timed = self.step_seconds[1:] or self.step_seconds
        recent = timed[-max(self.lookahead_steps, RECENT_STEPS) :]
        return max(recent) if recent else 0.0

    def predicted_save_s(self) -> float:
        """A stop always ends with a checkpoint save: the slowest one so far, earlier attempts of the run
        included (a requeued job may reach its budget before it saves once); 0 before the first."""
        return max([*self.save_seconds, self.earlier_save_s or 0.0])

    def room_for_a_step(self) -> bool:
        """Whether one more step and the closing save fit what is left of the budget; before this attempt has
        timed a step, from the slowest step earlier attempts measured (a job requeued just short of the
        budget must not start a step it cannot finish within it)."""
        step = self.predicted_step_s() if self.step_seconds else (self.earlier_step_s or 0.0)
        return self.meter.training_s + step + self.predicted_save_s() <= self.meter.budget.seconds

    def ended(self, step: int) -> str | None:
        """Why the budget allows no step after `step` (MAX_TOKENS, WALL_CLOCK, MAX_STEPS), None when it allows one:
        checked at every step's end, and before training by a job requeued at (or a step short of) the end."""
        budget = self.meter.budget
        if budget.max_generated_tokens and self.meter.generated_tokens >= budget.max_generated_tokens:
            return MAX_TOKENS
        if not self.room_for_a_step():
            return WALL_CLOCK
        if budget.max_steps and step >= budget.max_steps:
            return MAX_STEPS
        return None

    def on_train_begin(self, args, state, control, **kwargs):
        self.meter.start_training()
        self._mark = self.meter.training_s
        self.last_step_end = (self._mark, self.meter.generated_tokens)

    def on_step_end(self, args, state, control, **kwargs):
        now = self.meter.training_s
        self.step_seconds.append(now - self._mark)
        self._mark = now
        self.last_step_end = (now, self.meter.generated_tokens)
        reason = self.ended(state.global_step)
        if reason in (MAX_TOKENS, WALL_CLOCK):
            self._stop(control, reason)
        elif reason == MAX_STEPS:
            self.stop_reason = MAX_STEPS  # the trainer stops by itself at max_steps
        elif self.stop_at and budget_ends(self.stop_at, self.meter, self, state.global_step):
            self._stop(control, STOP_AT)
        return control

    def on_save(self, args, state, control, **kwargs):
        now = self.meter.training_s  # evaluations at the save pause the clock
        self.save_seconds.append(now - self._mark)
        self._mark = now
        self.last_step_end = (now, self.meter.generated_tokens)  # the save is part of the step it keeps
        if control.should_training_stop:  # the closing save: training ends here, not when the trainer's
            self.meter.stop_training()  # own wrap-up (final logs, callbacks, checkpoint rotation) is done

    def abandon_step(self) -> None:
        """The step in flight was abandoned (SIGTERM): its time and tokens are not spent, it is redone."""
        self.meter.rewind(*self.last_step_end)
        self._mark = self.last_step_end[0]

    def on_train_end(self, args, state, control, **kwargs):
        self.meter.stop_training()
        if self.stop_reason is None:
            at_max = state.max_steps > 0 and state.global_step >= state.max_steps and self.meter.budget.max_steps
            self.stop_reason = MAX_STEPS if at_max else EPOCHS_DONE

    def _stop(self, control, reason: str) -> None:
        self.stop_reason = reason
        control.should_training_stop = True
        control.should_save = True

    def timings(self) -> dict:
        steps = self.step_seconds
        later = steps[1:]
        return {
            "steps_timed": len(steps),
            "first_step_s": round(steps[0], 3) if steps else None,
            "mean_step_s": round(sum(later) / len(later), 3) if later else (round(steps[0], 3) if steps else None),
            "max_step_s": round(max(steps), 3) if steps else None,
            "mean_checkpoint_save_s": round(sum(self.save_seconds) / len(self.save_seconds), 3)
            if self.save_seconds
            else None,
            "max_checkpoint_save_s": round(self.predicted_save_s(), 3) or None,  # earlier attempts included
        }


class BudgetProgressBar(TrainerCallback):
    """The share of the budget spent, with the latest reward and length: a progress bar on a terminal,
    and a log line every 10% where there is none (a SLURM job's log would fill with bar redraws)."""

    SHOWN = {
        "reward": "reward",
        "rewards/accuracy_reward/mean": "acc",
        "completions/mean_length": "len",
        "loss": "loss",
    }

    def __init__(self, meter: BudgetMeter, disable: bool | None = None):
        self.meter = meter
        self.disable = disable  # None: a bar only on a terminal
        self.bar = None
        self.shown: dict = {}
        self._logged_tenths = -1

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(
            total=100,
            desc=f"budget {self.meter.budget.name}",
            unit="%",
            disable=self.disable,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}] {postfix}",
        )
        self._update(state)

    def on_step_end(self, args, state, control, **kwargs):
        self._update(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            numbers = {name: logs[key] for key, name in self.SHOWN.items() if isinstance(logs.get(key), (int, float))}
            self.shown = {"step": state.global_step, **{name: f"{value:.3g}" for name, value in numbers.items()}}
            self.bar.set_postfix(self.shown, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self._update(state)
            self.bar.close()

    def _update(self, state) -> None:
        if self.bar is None:
            return
        percent = min(100.0, round(100 * self.meter.fraction_used(state.global_step), 1))
        self.bar.n = percent
        self.bar.refresh()
        if self.bar.disable and int(percent // 10) > self._logged_tenths:
            self._logged_tenths = int(percent // 10)
            log.info(
                "budget %s: %.0f%% spent, %s",
                self.meter.budget.name,
                percent,
                ", ".join(f"{k}={v}" for k, v in self.shown.items()) or f"step={state.global_step}",
            )


class MilestoneCallback(TrainerCallback):
    """Saves, keeps and records the milestone checkpoints of a run: the shorter budgets, by the rule this module stops
    training with (rlvr_sweeps.run.milestones)."""

    def __init__(self, budget_cfg, record: RunRecord, meter, budget_callback, selection=None):
        self.record = record
        self.meter = meter
        self.budget = meter.budget
        self.budget_callback = budget_callback
        self.selection = selection
        self.fractions = fractions(budget_cfg)
        self.reached = kept_milestones(record)  # kept by earlier attempts: never saved again
        self.due: float | None = None  # a milestone whose step just ended: its save is being made

    def pending(self) -> list[float]:
        return [f for f in self.fractions if label(f) not in self.reached]

    def on_step_end(self, args, state, control, **kwargs):
        for fraction in self.pending():
            if self._ends_here(fraction, state.global_step):
                self.due = fraction
                control.should_save = True
                break
        return control

    def _ends_here(self, fraction: float, step: int) -> bool:
        return budget_ends(fraction, self.meter, self.budget_callback, step)

    def on_save(self, args, state, control, **kwargs):
        if self.due is None:
            return
        fraction, self.due = self.due, None
        step = state.global_step
        folder = self.record.dir / MILESTONES / label(fraction)
        checkpoint = self.record.checkpoint(step)
        if not (checkpoint / COMPLETE_MARKER).exists():
            return
        keep(checkpoint, folder)
        best = self.selection.best_step if self.selection is not None else None
        if best is not None and best != step and (self.record.checkpoint(best) / COMPLETE_MARKER).exists():
            keep(self.record.checkpoint(best), folder / SELECTED)
        entry = {
            "fraction": fraction,
            "step": step,
            "training_s": round(self.meter.training_s, 3),
            "generated_tokens": self.meter.generated_tokens,
            "selected_step": best if best is not None else step,
            "saved_at": now_iso(),
        }
        atomic_write(folder / "milestone.json", json.dumps(entry) + "\n")
        self.reached[label(fraction)] = entry
        summary = self.record.read_summary() or {}
        self.record.update_summary(milestones={**(summary.get("milestones") or {}), label(fraction): entry})
        log.info("Milestone %s of the budget: step %d kept in %s", label(fraction), step, folder)
