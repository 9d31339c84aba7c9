"""Training runs, in process, on the tiny sweep (conftest.tiny_sweep) and a few runs of their own: the
adapter really trains, the selected checkpoint is the one saved and evaluated as final/, a run resumes
from its last checkpoint without losing or repeating a step, a completed run is skipped, the
training budget is spent and not more."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_SWEEP, train_in_process, training_bounds
from rlvr_sweeps.run.record import RunRecord

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("tiny_sweep")]
LORA_RUNS = [(8, 0), (8, 1), (64, 0), (64, 1)]


def adapter(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def steps(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_steps(run_dir) -> list[int]:
    return sorted(int(p.name.split("-")[-1]) for p in (run_dir / "checkpoints").glob("checkpoint-*"))


@pytest.mark.parametrize("arm", LORA_RUNS)
def test_the_tiny_runs_have_varied_rewards_and_adapters_that_move(tiny_sweep, arm):
    """What the other tests of the tiny sweep rely on (whether it learns is test_default_learns' question)."""
    run_dir = tiny_sweep.run_dir(*arm)
    rewards = [s["reward"] for s in steps(run_dir)]
    assert len(set(rewards)) > 1  # rewards vary between steps: there is something to learn from
    saved = [adapter(run_dir / "checkpoints" / f"checkpoint-{step}") for step in checkpoint_steps(run_dir)]
    assert len(saved) == 2  # save_total_limit=2: the best and the last are kept
    assert any(b.abs().sum() > 0 for name, b in saved[0].items() if "lora_B" in name)  # moved from B = 0
    assert any(not torch.equal(saved[0][name], saved[1][name]) for name in saved[0])  # and on between saves


def test_a_run_whose_data_lacks_its_columns_fails_naming_them(tiny_sweep):
    assert "no column" in tiny_sweep.failure
    summary = json.loads(next(tiny_sweep.folder.glob("*data=open_rs*/summary.json")).read_text())
    assert summary["status"] == "failed"


def test_selection_evaluates_every_checkpoint_and_final_holds_the_best(tiny_sweep):
    scores_by_run = {}
    for arm in LORA_RUNS:
        run_dir = tiny_sweep.run_dir(*arm)
        summary = json.loads((run_dir / "summary.json").read_text())
        scores = {int(step): score for step, score in summary["eval"]["checkpoints"].items()}
        assert sorted(scores) == [2, 4, 6]
        best = max(sorted(scores), key=lambda step: scores[step])  # the earliest of equal scores wins
        assert summary["eval"]["selected_step"] == best
        final, chosen = adapter(run_dir / "final"), adapter(run_dir / "checkpoints" / f"checkpoint-{best}")
        assert final.keys() == chosen.keys() and all(torch.equal(final[k], chosen[k]) for k in final)
        # the reported samples are not the samples that chose the checkpoint: selection has its own seed
        reported, chose = (
            {
                (r["problem_id"], r["sample"], r["seed"])
                for r in records(run_dir / "eval" / phase / "sums_heldout.jsonl")
            }
            for phase in ("final", f"step-{best:06d}")
        )
        assert {seed for _, _, seed in reported} == {0} and {seed for _, _, seed in chose} == {1}
        assert not reported & chose and {p for p, _, _ in chose} <= {p for p, _, _ in reported}
        scores_by_run[arm] = scores
    assert any(len(set(scores.values())) > 1 for scores in scores_by_run.values())  # checkpoints are told apart


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_run_resumes_from_its_last_checkpoint_without_losing_or_repeating_a_step(tiny_sweep, tmp_path, model_cache):
    """An attempt that stopped after its second-last save (killed while training, say)."""
    original = tiny_sweep.run_dir(8, 0)
    runs = tmp_path / "runs"
    copy = runs / "tiny_sweep" / original.name
    shutil.copytree(original, copy)
    resume_step = checkpoint_steps(copy)[0]
    shutil.rmtree(copy / "checkpoints" / "checkpoint-6")
    shutil.rmtree(copy / "final")
    shutil.rmtree(copy / "eval" / "final")
    record = RunRecord(copy)
    before = record.read_summary()
    record.update_summary(status="running")
    marker = json.loads((copy / "checkpoints" / f"checkpoint-{resume_step}" / "COMPLETE").read_text())

    summary = train_in_process(runs, model_cache, *TINY_SWEEP, "lora.rank=8", "trainer.seed=0")
    assert summary["status"] == "completed" and summary["global_step"] == 6
    assert [s["step"] for s in steps(copy)] == [1, 2, 3, 4, 5, 6]
    assert summary["attempts"][-1]["resumed_from_step"] == resume_step
    assert summary["attempts"][-1]["metrics_dropped"] == 6 - resume_step
    assert summary["wandb"]["run_id"] == before["wandb"]["run_id"]  # the same W&B run goes on
    assert summary["budget"]["training_s"] > marker["training_s"]  # counted on from the checkpoint's own count
    assert (copy / "final" / "adapter_model.safetensors").exists()


def test_a_completed_run_is_skipped(tiny_sweep, model_cache):
    run_dir = tiny_sweep.run_dir(8, 1)

    def files() -> dict:
        """Every file and when it was written; the debug logs of the W&B service (one process for the whole
        session, which may still write there after a run finished) count by name only."""
        return {
            p: None if "wandb" in p.parts and p.suffix == ".log" else p.stat().st_mtime_ns
            for p in run_dir.rglob("*")
            if p.is_file()
        }

    before = files()
    summary = train_in_process(run_dir.parents[1], model_cache, *TINY_SWEEP, "lora.rank=8", "trainer.seed=1")
    assert summary["status"] == "completed"
    assert files() == before  # nothing touched, no W&B run started


def test_full_fine_tuning_is_the_reference_point(tiny_sweep):
    summary = tiny_sweep.runs[(None, 0)]
    assert summary["model"]["trainable_parameters"] == summary["model"]["parameters"]
    assert summary["status"] == "completed" and summary["lora"]["rank"] is None


def test_the_training_budget_is_spent_and_not_more(tmp_path, model_cache):
    summary = train_in_process(
        tmp_path / "runs",
        model_cache,
        "model=tiny",
        "data=sums",
        "eval=[]",
        "logger=none",
        "budget.minutes=0.1",
        "trainer.max_completion_length=8",
        "trainer.num_train_epochs=50",
    )
    assert summary["stop_reason"] == "wall_clock" and summary["global_step"] > 1
    low, high = training_bounds(summary)
    assert low <= summary["budget"]["training_s"] <= high
    run_dir = RunRecord(summary["run_dir"])
    assert run_dir.checkpoint(summary["global_step"]).is_dir()  # saved where it stopped
