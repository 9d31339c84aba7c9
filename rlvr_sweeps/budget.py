"""The compute budget: what a run may spend, what it has spent, and the callback that stops it.

The wall clock counts the whole run (setup, training, saving, evaluation) across every attempt of
the run (a requeued job continues the count). Training stops when the next step, predicted from
the measured step times, would not end before `minutes - reserve_minutes`; the reserve pays for
the final save and evaluation. Steps and generated tokens can be capped too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from omegaconf import DictConfig
from tqdm.auto import tqdm
from transformers import TrainerCallback

from .hardware import Hardware

WALL_CLOCK, MAX_STEPS, MAX_TOKENS, EPOCHS_DONE = "wall_clock", "max_steps", "max_generated_tokens", "epochs_done"


@dataclass(frozen=True)
class Budget:
    name: str
    device: str
    seconds: float
    reserve_seconds: float
    max_steps: int | None
    max_generated_tokens: int | None
    price_per_hour: float

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Budget:
        return cls(
            name=str(cfg.name),
            device=str(cfg.device),
            seconds=float(cfg.minutes) * 60.0,
            reserve_seconds=float(cfg.reserve_minutes) * 60.0,
            max_steps=int(cfg.max_steps) if cfg.max_steps else None,
            max_generated_tokens=int(cfg.max_generated_tokens) if cfg.max_generated_tokens else None,
            price_per_hour=float(cfg.price_per_hour),
        )

    @property
    def training_seconds(self) -> float:
        return self.seconds - self.reserve_seconds


class BudgetMeter:
    """Time and generated tokens spent by one run, including earlier attempts of it."""

    def __init__(self, budget: Budget, hardware: Hardware, spent_s: float = 0.0, generated_tokens: int = 0, clock=time.monotonic):
        self.budget = budget
        self.hardware = hardware
        self.spent_before_s = float(spent_s)
        self.generated_tokens = int(generated_tokens)
        self._clock = clock
        self._start = clock()

    @property
    def elapsed_s(self) -> float:
        return self.spent_before_s + (self._clock() - self._start)

    @property
    def training_left_s(self) -> float:
        return self.budget.training_seconds - self.elapsed_s

    def add_generated_tokens(self, count: int) -> None:
        self.generated_tokens += int(count)

    def fraction_used(self, step: int = 0) -> float:
        fractions = [self.elapsed_s / self.budget.seconds]
        if self.budget.max_steps:
            fractions.append(step / self.budget.max_steps)
        if self.budget.max_generated_tokens:
            fractions.append(self.generated_tokens / self.budget.max_generated_tokens)
        return max(fractions)

    def usage(self) -> dict:
        """The budget section of summary.json: limits, use, device-hours and their cost."""
        hours = self.elapsed_s / 3600.0
        device_hours = hours * self.hardware.count
        return {
            "name": self.budget.name,
            "device": self.hardware.device,
            "device_name": self.hardware.name,
            "device_count": self.hardware.count,
            "limit_s": self.budget.seconds,
            "reserve_s": self.budget.reserve_seconds,
            "used_s": round(self.elapsed_s, 3),
            "earlier_attempts_s": round(self.spent_before_s, 3),  # of used_s: spent before a requeue or relaunch
            "used_fraction": round(self.elapsed_s / self.budget.seconds, 4),
            # GPU-hours on a GPU; core-hours on a CPU (count = cores this process may use)
            "device_hours": round(device_hours, 6),
            "price_per_hour": self.budget.price_per_hour,
            "cost_usd": round(device_hours * self.budget.price_per_hour, 6),
            "generated_tokens": self.generated_tokens,
            "max_generated_tokens": self.budget.max_generated_tokens,
            "max_steps": self.budget.max_steps,
        }


class BudgetCallback(TrainerCallback):
    """Stops training before the budget runs out, saves, and says why it stopped."""

    def __init__(self, meter: BudgetMeter, lookahead_steps: int = 3, clock=time.monotonic):
        self.meter = meter
        self.lookahead_steps = max(1, lookahead_steps)  # a generation step recurs every this many steps
        self.stop_reason: str | None = None
        self.step_seconds: list[float] = []
        self.save_seconds: list[float] = []
        self._clock = clock
        self._mark = clock()

    def predicted_step_s(self) -> float:
        """The slowest of the last generation cycle's steps; the first (warm-up) step only until others exist."""
        timed = self.step_seconds[1:] or self.step_seconds
        recent = timed[-self.lookahead_steps :]
        return max(recent) if recent else 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._mark = self._clock()

    def on_step_end(self, args, state, control, **kwargs):
        now = self._clock()
        self.step_seconds.append(now - self._mark)
        self._mark = now
        budget = self.meter.budget
        if budget.max_generated_tokens and self.meter.generated_tokens >= budget.max_generated_tokens:
            self._stop(control, MAX_TOKENS)
        elif self.meter.elapsed_s + self.predicted_step_s() + self._save_ahead(args, state) > budget.training_seconds:
            self._stop(control, WALL_CLOCK)
        elif budget.max_steps and state.global_step >= budget.max_steps:
            self.stop_reason = MAX_STEPS  # the trainer stops by itself at max_steps
        return control

    def _save_ahead(self, args, state) -> float:
        """The slowest save so far (with any evaluation at it) when the next step will save."""
        saves_next = (args is not None and self.save_seconds and args.save_strategy == "steps" and args.save_steps
                      and (state.global_step + 1) % args.save_steps == 0)
        return max(self.save_seconds) if saves_next else 0.0

    def on_save(self, args, state, control, **kwargs):
        now = self._clock()
        self.save_seconds.append(now - self._mark)
        self._mark = now

    def on_train_end(self, args, state, control, **kwargs):
        if self.stop_reason is None:
            self.stop_reason = MAX_STEPS if state.max_steps > 0 and state.global_step >= state.max_steps and self.meter.budget.max_steps else EPOCHS_DONE

    def _stop(self, control, reason: str) -> None:
        self.stop_reason = reason
        control.should_training_stop = True
        control.should_save = True

    def timings(self) -> dict:
        steps = self.step_seconds
        return {
            "steps_timed": len(steps),
            "first_step_s": round(steps[0], 3) if steps else None,
            "mean_step_s": round(sum(steps[1:]) / len(steps[1:]), 3) if len(steps) > 1 else (round(steps[0], 3) if steps else None),
            "max_step_s": round(max(steps), 3) if steps else None,
            "mean_checkpoint_save_s": round(sum(self.save_seconds) / len(self.save_seconds), 3) if self.save_seconds else None,
        }


class BudgetProgressBar(TrainerCallback):
    """One progress bar for the share of the budget spent, with the latest reward and length."""

    SHOWN = {"reward": "reward", "rewards/accuracy_reward/mean": "acc", "completions/mean_length": "len", "loss": "loss"}

    def __init__(self, meter: BudgetMeter, disable: bool = False):
        self.meter = meter
        self.disable = disable
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=100, desc=f"budget {self.meter.budget.name}", unit="%", disable=self.disable,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}] {postfix}")
        self._update(state)

    def on_step_end(self, args, state, control, **kwargs):
        self._update(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            shown = {short: f"{logs[key]:.3g}" for key, short in self.SHOWN.items() if isinstance(logs.get(key), (int, float))}
            self.bar.set_postfix({"step": state.global_step, **shown}, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self._update(state)
            self.bar.close()

    def _update(self, state) -> None:
        if self.bar is not None:
            self.bar.n = min(100.0, round(100 * self.meter.fraction_used(state.global_step), 1))
            self.bar.refresh()
