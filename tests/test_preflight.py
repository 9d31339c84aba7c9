"""The preflight (planning.preflight, preflight_job): which arm each model is measured at, what a preflight run
records and concludes, and how the sweep's plan uses it. The whole path on SLURM, requeue included, is
tests/test_slurm.py's preflight test."""

from __future__ import annotations

import json
import time

import pytest

from conftest import compose_config, train_in_process
from rlvr_sweeps.errors import UserError
from rlvr_sweeps.planning.preflight import FORCED_STEP, RECORD, STEPS, hungriest_arms, status_line
from rlvr_sweeps.sweep import format_plan, measured_throughput, plan_run, stop_window_s

TINY = ("model=tiny", "data=sums", "eval=[sums_heldout]", "eval.select_on=sums_heldout", "logger=none")


def test_each_model_is_measured_at_its_most_memory_hungry_arm():
    arms = [
        ("a", compose_config("model=tiny", "lora.rank=256")),
        ("b", compose_config("model=tiny_math", "lora.rank=8")),
        ("c", compose_config("model=tiny", "lora.rank=64", "lora.variant=dora")),
        ("d", compose_config("model=tiny_math", "lora.rank=64")),
        ("e", compose_config("model=tiny", "lora.rank=8", "trainer.max_completion_length=64")),
    ]
    assert hungriest_arms(arms) == [2, 3]  # tiny: DoRA before a larger rank; tiny_math: its largest rank
    full = ("f", compose_config("model=tiny", "lora=none"))
    assert hungriest_arms([*arms, full]) == [5, 3]  # full fine-tuning above all


def test_a_preflight_whose_micro_batch_cannot_fit_trains_a_split_and_says_not_ready(tmp_path, model_cache):
    """The device (guards.device_memory_gb) is too small for 8 completions per micro-batch: the preflight trains as the
    runs would (a smaller micro-batch at the same completions per update), measures, and is not ready until the
    split is made explicit. No scheduler here: the requeue is left untested, and it says so."""
    runs = tmp_path / "runs"
    summary = train_in_process(runs, model_cache, *TINY, "guards.device_memory_gb=0.09", "preflight=true")
    (path,) = runs.glob(f"default/preflight/*/{RECORD}")
    assert summary["run_dir"] == str(path.parent)  # the arm's own folder stays untouched
    record = json.loads(path.read_text())
    verdict, measured = record["verdict"], record["measured"]
    assert summary["status"] == "completed" and summary["global_step"] == STEPS and not verdict["ready"]
    (cause,) = verdict["causes"]
    micro = measured["memory"]["micro_batch"]
    assert micro < 8 and "per_device_train_batch_size=8 does not fit" in cause["cause"]
    assert f"trainer.per_device_train_batch_size={micro} trainer.gradient_accumulation_steps=" in cause["fix"]
    assert any("requeue not tested" in note for note in verdict["notes"])
    steps = record["steps"]
    assert steps[str(FORCED_STEP)]["completion_tokens"]["min"] == 32 and measured["memory"]["full_length"]
    assert measured["evaluation"]["sums_heldout"]["completions"] == 4 * 2  # a few problems, the run's own n
    # a new preflight in the same folder starts afresh: a relaunch measures anew
    again = train_in_process(runs, model_cache, *TINY, "preflight=true")
    record = json.loads(path.read_text())
    assert again["global_step"] == STEPS and record["verdict"]["ready"] and len(again["attempts"]) == 1


def test_a_preflight_that_fails_is_not_ready_with_the_cause(tmp_path, model_cache):
    runs = tmp_path / "runs"
    with pytest.raises(UserError):
        train_in_process(
            runs, model_cache, *TINY, "data=open_rs", "data.path=/nonexistent/problems.jsonl", "preflight=true"
        )
    (path,) = runs.glob(f"default/preflight/*/{RECORD}")
    verdict = json.loads(path.read_text())["verdict"]
    assert not verdict["ready"] and "/nonexistent/problems.jsonl" in verdict["causes"][0]["cause"]


def write_preflight(sweep, model: str, **measured) -> None:
    folder = sweep / "preflight" / f"lora.rank=256,model={model}"
    folder.mkdir(parents=True)
    record = {"model": model, "arm": [], "finished_at": "2026-12-03T10:00:00", "verdict": {"ready": True}}
    (folder / RECORD).write_text(json.dumps({**record, "measured": measured}))


def test_the_plan_estimates_from_the_preflight_until_runs_measure_for_themselves(tmp_path):
    cfg = compose_config("experiment=study", "lora.rank=8")
    sweep = tmp_path / "study"
    assumed = plan_run(cfg, sweep / "lora.rank=8", [], max_time_min=1440)
    # before any measurement: each model's documented answer length (instruct: 2,000 tokens) at 2,500 tokens/s
    assert not assumed.measured and assumed.updates == 1260 * 60 // 250 and not assumed.measured_by
    evaluation = {name: {"completion_tokens": 6000.0, "tokens_per_s": 1500.0} for name in ("aime24", "math500")}
    write_preflight(sweep, "instruct", step_s=180.0, max_step_s=420.0, save_s=30.0, evaluation=evaluation)
    write_preflight(sweep, "math", step_s=90.0, max_step_s=100.0, save_s=10.0)
    plan = plan_run(cfg, sweep / "lora.rank=8", [], max_time_min=1440)
    assert plan.measured and plan.measured_by == "the sweep's preflight" and plan.updates == 1260 * 60 // 180
    assert plan.evaluation_hours > assumed.evaluation_hours  # 6,000-token answers at 1,500/s on two benchmarks
    assert stop_window_s(cfg, sweep) == (420.0 + 30.0 + 60, True)
    text = format_plan([plan])
    assert "measured by the sweep's preflight" in text and f"{plan.updates}m" in text
    # a finished run of the sweep measured the same model: its numbers win
    (sweep / "lora.rank=64").mkdir()
    aime = {"problems": 30, "n": 16, "generated_tokens": 30 * 16 * 3000, "seconds": 30 * 16 * 3000 / 2000}
    summary = {"model": {"name": "instruct"}, "timings": {"max_step_s": 300.0, "mean_step_s": 200.0}}
    summary["eval"] = {"final": {"aime24": {**aime, "tokens_per_s": 2000.0}}}
    (sweep / "lora.rank=64" / "summary.json").write_text(json.dumps(summary))
    throughput = measured_throughput(sweep, "instruct")
    assert throughput["aime24"].completion_tokens == 3000 and throughput["math500"].completion_tokens == 6000
    later = plan_run(cfg, sweep / "lora.rank=8", [], max_time_min=1440)
    assert later.measured_by == "earlier runs of the sweep" and later.updates == 1260 * 60 // 200


def test_a_preflight_waiting_for_a_requeue_that_never_comes_reads_not_ready():
    record = {"requeue": {"requested_at": "x", "requested_epoch": time.time() - 600}}
    assert "NOT READY" in status_line(record, alive=False) and "10 min" in status_line(record, alive=False)
    assert "NOT READY" not in status_line(record, alive=True)
