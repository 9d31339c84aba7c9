"""experiment=rank_vs_lr as a user runs it: its plan at the study's budget (dry_run), and a miniature on
the tiny model (2 ranks x 2 learning rates, one step each) whose analysis has the rank x learning-rate
table and heatmap."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, launch_env

pytestmark = pytest.mark.e2e

# the study's setting, scaled down to what a CPU runs in seconds: the tiny model, the procedural task (the
# table does not depend on the model; SmolLM2 made this test take 1.5 minutes instead of half a minute)
OFFLINE = [
    "model=tiny",
    "budget=smoke",
    "generation=hf",
    "trainer=grpo_cpu",
    "data=sums",
    "reward=strict_math",
    "eval=[sums_heldout]",
    "eval.select_on=null",
    "logger=none",
]
MINIATURE = [
    "budget.max_steps=1",
    "trainer.num_generations=4",
    "trainer.per_device_train_batch_size=4",
    "trainer.max_completion_length=16",
    "eval.sampling.max_new_tokens=16",
    "eval.benchmarks.sums_heldout.size=16",
    "eval.sampling.n=1",
    "eval.sampling.k=[1]",
]


def python(runs, cache, *args: str) -> subprocess.CompletedProcess:
    """`python *args` as a user runs it, with its own runs folder; it must succeed."""
    env = launch_env(runs, cache)
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def launch(runs, cache, *args: str) -> subprocess.CompletedProcess:
    return python(runs, cache, str(ROOT / "launch.py"), "-m", "experiment=rank_vs_lr", *args)


def test_the_full_sweep_is_planned_at_the_studys_budget(tmp_path, model_cache):
    done = launch(tmp_path / "runs", model_cache, "hydra/launcher=slurm_a40", "dry_run=true")
    plan = [line for line in done.stdout.splitlines() if line.startswith("run ")]
    assert len(plan) == 20 and "20 of 20 runs to go" in done.stdout  # ranks 1, 8, 64, 256 x 5 learning rates
    assert all(line.split()[2] == "21.00" for line in plan)  # each with the study's 21 hours of training
    for rank in (1, 8, 64, 256):
        assert sum(f"lora.rank={rank}," in line for line in plan) == 5
    assert "trainer.learning_rate=1e-06" in done.stdout and "trainer.learning_rate=0.0001" in done.stdout
    assert "a40 device-hours" in done.stdout and not list((tmp_path / "runs").glob("**/summary.json"))


def test_a_miniature_sweep_gives_the_rank_by_learning_rate_table(tmp_path, model_cache):
    runs = tmp_path / "runs"
    launch(runs, model_cache, *OFFLINE, *MINIATURE, "lora.rank=8,64", "trainer.learning_rate=1e-4,1e-3")
    out = runs / "rank_vs_lr" / "analysis"
    done = python(runs, model_cache, "-m", "analysis", str(runs / "rank_vs_lr"), "--out", str(out))
    assert "Pass@1 by LoRA rank and learning rate (tiny)" in done.stdout

    runs_csv = pd.read_csv(out / "runs.csv")
    assert len(runs_csv.query("status == 'completed'")) == 4
    assert sorted(runs_csv["learning_rate"].unique()) == [1e-4, 1e-3]  # the rate each run's optimizer got

    table = pd.read_csv(out / "sums_heldout_pass1_rank_x_lr_tiny.csv", index_col="rank")
    assert list(table.index) == ["r=8", "r=64"]
    for lr in ("1e-04", "1e-03"):
        assert table[[f"lr={lr}_pass1", f"lr={lr}_delta"]].notna().all().all()  # every cell measured
        assert list(table[f"lr={lr}_runs"]) == [1, 1] and not table[f"lr={lr}_marked"].any()
        assert table[f"lr={lr}_delta_ci_low"].isna().all()  # one seed a cell: its variation is not measured
    significance = pd.read_csv(out / "significance.csv")
    assert len(significance) == 6 and significance["eval_noise_ci_low"].notna().all()
    assert set(table["best_learning_rate"]) <= {1e-4, 1e-3}
    assert (out / "sums_heldout_pass1_rank_x_lr_tiny.tex").exists()
    assert (out / "rank_x_lr_sums_heldout.png").stat().st_size > 0
