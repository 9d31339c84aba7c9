"""The budget: a training clock that evaluations never touch, and a callback that stops from measured
step and save times, saves, and says why."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from conftest import train_in_process, training_bounds
from rlvr_sweeps.infra.hardware import Hardware
from rlvr_sweeps.run.budget import MAX_STEPS, MAX_TOKENS, WALL_CLOCK, Budget, BudgetCallback, BudgetMeter


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    seconds=100.0, max_steps=None, max_tokens=None, spent=0.0, lookahead=1, earlier_save_s=None, earlier_step_s=None
):
    clock = Clock()
    budget = Budget("t", "cpu", seconds, max_steps, max_tokens, price_per_hour=2.0)
    meter = BudgetMeter(budget, Hardware("cpu", "cpu", 4), training_s=spent, clock=clock)
    callback = BudgetCallback(
        meter, lookahead_steps=lookahead, earlier_save_s=earlier_save_s, earlier_step_s=earlier_step_s
    )
    callback.on_train_begin(None, None, None)
    return clock, meter, callback


def step(clock, callback, seconds, global_step):
    clock.now += seconds
    control = TrainerControl()
    callback.on_step_end(None, SimpleNamespace(global_step=global_step, max_steps=-1), control)
    return control


def save(clock, callback, seconds):
    clock.now += seconds
    callback.on_save(None, None, TrainerControl())


def test_a_slow_first_step_is_the_prediction_only_until_others_are_timed():
    clock, meter, callback = make(seconds=100)
    step(clock, callback, 50.0, 1)
    assert callback.predicted_step_s() == 50.0
    step(clock, callback, 10.0, 2)
    assert callback.predicted_step_s() == 10.0


def test_stops_when_the_next_step_would_cross_the_budget():
    clock, meter, callback = make(seconds=90)
    stopped_at = None
    for i in range(1, 20):
        control = step(clock, callback, 20.0, i)
        if control.should_training_stop:
            stopped_at = i
            break
    # 20 s steps, 90 s of training: after step 4 (80 s) a fifth would end at 100 s > 90 s
    assert stopped_at == 4 and callback.stop_reason == WALL_CLOCK
    assert control.should_save  # the last state is checkpointed
    assert meter.training_s <= meter.budget.seconds


def test_the_closing_save_is_part_of_the_prediction():
    clock, meter, callback = make(seconds=100)
    step(clock, callback, 10.0, 1)
    step(clock, callback, 10.0, 2)
    save(clock, callback, 15.0)  # a 15 s checkpoint save: a stop must leave room for one
    assert callback.predicted_save_s() == 15.0
    stops = [step(clock, callback, 10.0, i).should_training_stop for i in range(3, 8)]
    # after step 6 (75 s) a step and a save fit exactly (100 s); after step 7 (85 s) they would not
    assert stops == [False, False, False, False, True]
    assert meter.training_s + callback.predicted_save_s() <= 100


def test_a_resumed_attempt_leaves_room_for_a_save_measured_by_an_earlier_one():
    # a requeued job resumes at 60 s; its first save will be the closing one, 5 s like the last job's
    clock, meter, callback = make(seconds=100, spent=60.0, earlier_save_s=5.0)
    stops = [step(clock, callback, 10.0, i).should_training_stop for i in range(1, 4)]
    # at 80 s a step and a save end at 95 s; at 90 s they would end at 105 s (without the earlier save: 100 s)
    assert stops == [False, False, True]
    assert callback.timings()["max_checkpoint_save_s"] == 5.0


def test_a_job_requeued_a_step_short_of_the_budget_starts_no_step():
    # the last job stopped at 99 s of 100 (its time limit); its steps took up to 2 s and a save 0.5 s
    clock, meter, callback = make(seconds=100, spent=99.0, earlier_save_s=0.5, earlier_step_s=2.0)
    assert not callback.room_for_a_step()
    clock, meter, callback = make(seconds=100, spent=97.0, earlier_save_s=0.5, earlier_step_s=2.0)
    assert callback.room_for_a_step()  # 97 + 2 + 0.5 fits
    assert make(seconds=100)[2].room_for_a_step()  # a new run


def test_the_closing_save_ends_the_training_clock():
    clock, meter, callback = make(seconds=100)
    step(clock, callback, 10.0, 1)
    control = TrainerControl(should_training_stop=True)  # a stop: the trainer saves, then wraps up
    clock.now += 2.0
    callback.on_save(None, None, control)
    clock.now += 5.0  # the trainer's own wrap-up after the last save is not training
    assert meter.training_s == 12.0


def test_slowest_step_of_the_last_generation_cycle_is_the_prediction():
    clock, meter, callback = make(seconds=99, lookahead=3)  # a rollout every 3 steps
    step(clock, callback, 2.0, 1)  # warm-up step: not representative once others are timed
    step(clock, callback, 30.0, 2)  # generates
    assert not step(clock, callback, 5.0, 3).should_training_stop
    assert not step(clock, callback, 5.0, 4).should_training_stop  # 42 s used, 30 s predicted, 99 s allowed
    assert step(clock, callback, 30.0, 5).should_training_stop  # 72 s used, 30 s predicted


def test_evaluations_pause_the_training_clock_and_are_timed_apart():
    clock, meter, callback = make(seconds=100)
    step(clock, callback, 10.0, 1)
    with meter.evaluating("selection"):  # e.g. the selection benchmark at a checkpoint
        clock.now += 500.0
    save(clock, callback, 2.0)
    assert meter.training_s == pytest.approx(12.0) and callback.save_seconds == [pytest.approx(2.0)]
    assert not step(clock, callback, 10.0, 2).should_training_stop  # 500 s of evaluation cost no training time
    with meter.evaluating("selection"):
        clock.now += 300.0
    usage = meter.usage()
    assert usage["training_s"] == pytest.approx(22.0) and usage["selection_evaluation_s"] == pytest.approx(800.0)
    assert usage["selection_evaluation_mean_s"] == pytest.approx(400.0) and usage["evaluation_s"] == pytest.approx(
        800.0
    )


def test_the_clock_stands_outside_training():
    clock, meter, callback = make(seconds=100)
    step(clock, callback, 10.0, 1)
    callback.on_train_end(None, SimpleNamespace(global_step=1, max_steps=-1), None)
    clock.now += 1000.0  # saving the final adapter, the final evaluation, writing the summary
    assert meter.training_s == pytest.approx(10.0)


def test_training_spent_by_earlier_attempts_counts():
    clock, meter, callback = make(seconds=100, spent=85.0)
    assert step(clock, callback, 10.0, 1).should_training_stop


def test_generated_token_limit():
    clock, meter, callback = make(max_tokens=1000)
    meter.add_generated_tokens(600)
    assert not step(clock, callback, 1.0, 1).should_training_stop
    meter.add_generated_tokens(600)
    assert step(clock, callback, 1.0, 2).should_training_stop and callback.stop_reason == MAX_TOKENS


def test_step_limit_is_reported():
    clock, meter, callback = make(max_steps=2)
    step(clock, callback, 1.0, 1)
    step(clock, callback, 1.0, 2)
    assert callback.stop_reason == MAX_STEPS


def test_usage_counts_device_hours_and_cost_of_training_and_evaluation():
    clock, meter, callback = make(seconds=7200)
    clock.now += 1800  # half an hour of training on 4 cores
    with meter.evaluating("final"):
        clock.now += 900  # a quarter of an hour of evaluation
    usage = meter.usage()
    assert usage["training_device_hours"] == pytest.approx(2.0) and usage["training_cost_usd"] == pytest.approx(4.0)
    assert usage["evaluation_device_hours"] == pytest.approx(1.0) and usage["evaluation_cost_usd"] == pytest.approx(
        2.0
    )
    assert usage["device_hours"] == pytest.approx(3.0) and usage["cost_usd"] == pytest.approx(6.0)
    assert usage["training_fraction"] == pytest.approx(0.25)


@pytest.mark.e2e
def test_a_cached_baseline_buys_no_extra_training(tmp_path, model_cache):
    """Two arms of the same config: the first evaluates its baseline, the second takes it from the cache;
    both train for the same budget (within one step), because evaluation is never counted. (In this process:
    the budget is train()'s; a launch's own exit code and messages are test_launch's.)"""
    same = (
        "model=tiny",
        "budget.minutes=0.25",
        "trainer.max_completion_length=8",
        "eval.sampling.n=8",
        "eval.sampling.k=[1,8]",
        "eval.sampling.max_new_tokens=48",
        "eval.final=false",  # only the baseline matters here
        "logger=none",
    )
    summaries = [train_in_process(tmp_path / "runs", model_cache, f"name={arm}", *same) for arm in ("first", "second")]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert "cached" not in summaries[0]["eval"]["baseline"]["reasoning_gym_heldout"]
    assert summaries[1]["eval"]["baseline"]["reasoning_gym_heldout"]["cached"] is True
    one_step = max(s["timings"]["max_step_s"] + (s["timings"]["mean_checkpoint_save_s"] or 0) for s in summaries)
    assert summaries[0]["budget"]["baseline_evaluation_s"] > one_step  # counted, it would show as a difference
    trained = [s["budget"]["training_s"] for s in summaries]
    assert abs(trained[0] - trained[1]) <= one_step
    assert all(low <= t <= high for t, (low, high) in zip(trained, map(training_bounds, summaries)))  # 15 s each


@pytest.mark.e2e
def test_a_job_requeued_after_the_last_step_of_a_step_budget_trains_no_further(tmp_path, model_cache):
    """A job that ends (a SLURM time limit) in the final evaluation, after all budget.max_steps steps: the relaunch
    resumes at that step, evaluates and completes there. It trained one step more before (the trainer, resumed at
    its max_steps, still runs a step: a 13th of 12 in a real sweep)."""
    args = (
        "name=requeued",
        "model=tiny",
        "budget.max_steps=2",
        "trainer.save_steps=1",
        "trainer.max_completion_length=8",
        "eval.sampling.n=2",
        "eval.sampling.k=[1,2]",
        "eval.max_problems=8",
        "logger=none",
    )
    done = train_in_process(tmp_path / "runs", model_cache, *args)
    assert done["status"] == "completed" and done["global_step"] == 2
    path = Path(done["run_dir"]) / "summary.json"  # as a job stopped in its final evaluation leaves it
    path.write_text(json.dumps({**json.loads(path.read_text()), "status": "interrupted"}))
    again = train_in_process(tmp_path / "runs", model_cache, *args)
    assert again["status"] == "completed" and again["stop_reason"] == "max_steps" and len(again["attempts"]) == 2
    assert again["global_step"] == 2 and not (Path(done["run_dir"]) / "checkpoints" / "checkpoint-3").exists()
