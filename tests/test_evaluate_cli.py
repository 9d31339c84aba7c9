"""`python -m rlvr_sweeps.evaluate`: a trained adapter evaluated on its own, reproducibly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.e2e

SMALL_EVAL = ("eval.sampling.n=4", "eval.sampling.k=[1,4]")


def evaluate(tmp_path, model_cache, *args: str) -> dict:
    env = {**os.environ, "RLVR_SWEEPS_RUNS": str(tmp_path / "runs"), "RLVR_SWEEPS_CACHE": str(model_cache)}
    done = subprocess.run(
        [sys.executable, "-m", "rlvr_sweeps.evaluate", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (summary,) = (tmp_path / "runs" / "evaluate").glob("*/summary.json")
    return json.loads(summary.read_text())


def test_standalone_evaluation_reproduces_the_runs_final_numbers(launch, tmp_path, model_cache):
    trained = launch("model=tiny", "budget.max_steps=2", "trainer.learning_rate=0.05", *SMALL_EVAL)
    assert trained.returncode == 0, trained.output
    (run_dir,) = trained.run_dirs()
    run_final = trained.summary(run_dir)["eval"]["final"]["reasoning_gym_heldout"]

    adapter = f"adapter='{run_dir}'"
    first = evaluate(tmp_path, model_cache, "model=tiny", adapter, *SMALL_EVAL)
    second = evaluate(tmp_path, model_cache, "model=tiny", adapter, *SMALL_EVAL)
    assert first["status"] == "completed" and first["adapter"] == str(run_dir / "final")
    keys = ("pass@1", "pass@4", "mean_length", "truncated")
    assert [first["eval"]["final"]["reasoning_gym_heldout"][k] for k in keys] == [run_final[k] for k in keys]
    assert first["metrics"] == second["metrics"]  # same seed, same numbers


def test_checkpoint_selection_evaluates_every_checkpoint_and_picks_the_best(launch):
    result = launch(
        "model=tiny",
        "budget.max_steps=3",
        "trainer.save_steps=1",
        "trainer.save_total_limit=1",
        "eval.select_on=reasoning_gym_heldout",
        "eval.baseline=false",
        "trainer.learning_rate=0.05",
        *SMALL_EVAL,
    )
    assert result.returncode == 0, result.output
    (run_dir,) = result.run_dirs()
    summary = result.summary(run_dir)
    scores = {int(step): score for step, score in summary["eval"]["checkpoints"].items()}
    assert sorted(scores) == [1, 2, 3]
    best = max(sorted(scores), key=lambda step: scores[step])  # the earliest of equal scores wins
    assert summary["eval"]["selected_step"] == best
    assert (run_dir / "checkpoints" / f"checkpoint-{best}").is_dir()  # kept despite save_total_limit=1
    assert summary["eval"]["final"]["reasoning_gym_heldout"]["pass@1"] == pytest.approx(scores[best])
    for step in (1, 2, 3):
        assert (run_dir / "eval" / f"step-{step:06d}" / "reasoning_gym_heldout.jsonl").exists()
