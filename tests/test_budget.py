"""The budget callback: stops before the limit from measured step times, saves, says why."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from rlvr_sweeps.budget import MAX_STEPS, MAX_TOKENS, WALL_CLOCK, Budget, BudgetCallback, BudgetMeter
from rlvr_sweeps.hardware import Hardware


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(seconds=100.0, reserve=10.0, max_steps=None, max_tokens=None, spent=0.0, lookahead=1):
    clock = Clock()
    budget = Budget("t", "cpu", seconds, reserve, max_steps, max_tokens, price_per_hour=2.0)
    meter = BudgetMeter(budget, Hardware("cpu", "cpu", 4), spent_s=spent, clock=clock)
    callback = BudgetCallback(meter, lookahead_steps=lookahead, clock=clock)
    return clock, meter, callback


def step(clock, callback, seconds, global_step):
    clock.now += seconds
    control = TrainerControl()
    callback.on_step_end(None, SimpleNamespace(global_step=global_step, max_steps=-1), control)
    return control


def test_a_slow_first_step_is_the_prediction_only_until_others_are_timed():
    clock, meter, callback = make(seconds=100, reserve=0)
    callback.on_train_begin(None, None, None)
    step(clock, callback, 50.0, 1)
    assert callback.predicted_step_s() == 50.0
    step(clock, callback, 10.0, 2)
    assert callback.predicted_step_s() == 10.0


def test_stops_when_the_next_step_would_cross_the_training_limit():
    clock, meter, callback = make(seconds=100, reserve=10)
    callback.on_train_begin(None, None, None)
    stopped_at = None
    for i in range(1, 20):
        control = step(clock, callback, 20.0, i)
        if control.should_training_stop:
            stopped_at = i
            break
    # 20 s steps, 90 s for training: after step 4 (80 s) a fifth would end at 100 s > 90 s
    assert stopped_at == 4 and callback.stop_reason == WALL_CLOCK
    assert control.should_save  # the last state is checkpointed
    assert meter.elapsed_s <= meter.budget.training_seconds


def test_slowest_step_of_the_last_generation_cycle_is_the_prediction():
    clock, meter, callback = make(seconds=100, reserve=1, lookahead=3)  # a rollout every 3 steps
    callback.on_train_begin(None, None, None)
    step(clock, callback, 2.0, 1)  # warm-up step: not representative once others are timed
    step(clock, callback, 30.0, 2)  # generates
    assert not step(clock, callback, 5.0, 3).should_training_stop
    assert not step(clock, callback, 5.0, 4).should_training_stop  # 42 s used, 30 s predicted, 99 s allowed
    assert step(clock, callback, 30.0, 5).should_training_stop  # 72 s used, 30 s predicted


def test_time_spent_by_earlier_attempts_counts():
    clock, meter, callback = make(seconds=100, reserve=0, spent=85.0)
    callback.on_train_begin(None, None, None)
    assert step(clock, callback, 10.0, 1).should_training_stop


def test_generated_token_limit():
    clock, meter, callback = make(max_tokens=1000)
    callback.on_train_begin(None, None, None)
    meter.add_generated_tokens(600)
    assert not step(clock, callback, 1.0, 1).should_training_stop
    meter.add_generated_tokens(600)
    assert step(clock, callback, 1.0, 2).should_training_stop and callback.stop_reason == MAX_TOKENS


def test_step_limit_is_reported():
    clock, meter, callback = make(max_steps=2)
    callback.on_train_begin(None, None, None)
    step(clock, callback, 1.0, 1)
    step(clock, callback, 1.0, 2)
    assert callback.stop_reason == MAX_STEPS


def test_usage_counts_device_hours_and_cost():
    clock, meter, callback = make(seconds=7200, reserve=0)
    clock.now += 1800  # half an hour on 4 cores
    usage = meter.usage()
    assert usage["device_hours"] == pytest.approx(2.0) and usage["cost_usd"] == pytest.approx(4.0)
    assert usage["used_fraction"] == pytest.approx(0.25)
