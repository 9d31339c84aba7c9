"""budget.milestones (rlvr_sweeps.run.milestones): the checkpoint at a fraction of the budget is the run a shorter
budget makes, kept out of rotation and evaluated like the final one; what would break that is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis.budget_axis import budget_rows
from analysis.report import budget_level_keys, wandb_keys
from analysis.sources import load_local, load_wandb
from analysis.tables import all_tables
from conftest import OfflineWandbApi, OfflineWandbRun, compose_config, train_in_process
from rlvr_sweeps.errors import UserError
from rlvr_sweeps.run.milestones import check_milestones

LEARNS = (  # tiny_math on 1-digit sums moves its adapter in a few steps
    "model=tiny_math",
    "data=sums",
    "eval=[sums_heldout]",
    "eval.sampling.n=2",
    "eval.sampling.k=[1,2]",
    "trainer.max_completion_length=16",
    "trainer.learning_rate=0.003",
    "trainer.save_steps=2",
    "trainer.save_total_limit=1",  # rotation deletes checkpoint-6 long before the end
)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_milestone_is_the_run_a_shorter_budget_makes(tmp_path, model_cache):
    """12 steps with a milestone at 0.5 against 6 steps of the same seed: the same adapter at step 6, bit for bit,
    and the same evaluation records, sample for sample."""
    runs = tmp_path / "runs"
    logged = ("name=axis", "logger=wandb")  # offline: the budget axis from W&B below
    long = train_in_process(runs, model_cache, *LEARNS, *logged, "budget.max_steps=12", "budget.milestones=[0.5]")
    short = train_in_process(runs, model_cache, *LEARNS, *logged, "budget.max_steps=6")
    kept = long["milestones"]["0.5"]
    assert kept["step"] == 6 and kept["generated_tokens"] > 0 and 0 < kept["training_s"] < long["budget"]["training_s"]
    long_dir, short_dir = Path(long["run_dir"]), Path(short["run_dir"])
    assert not (long_dir / "checkpoints" / "checkpoint-6").exists()  # rotated away; the milestone stays
    milestone = load_adapter(long_dir / "milestones" / "0.5")
    at_six = load_adapter(short_dir / "final")
    assert milestone.keys() == at_six.keys() and all(torch.equal(milestone[k], at_six[k]) for k in milestone)
    assert any(not torch.equal(milestone[k], load_adapter(long_dir / "final")[k]) for k in milestone)  # it trained on
    assert records(long_dir / "eval" / "milestone-0.5" / "sums_heldout.jsonl") == records(
        short_dir / "eval" / "final" / "sums_heldout.jsonl"
    )
    assert long["metrics"]["milestone/0.5/eval/sums_heldout/pass@1"] == short["metrics"]["eval/sums_heldout/pass@1"]
    assert long["budget"]["milestones_evaluation_s"] > 0  # on the evaluation clock, not the training budget
    the_budget_axis_from_run_folders_and_from_wandb_alike(runs / "axis")


def the_budget_axis_from_run_folders_and_from_wandb_alike(sweep: Path) -> None:
    """The two runs on the budget axis (analysis.budget_axis): the 12-step run at 6 and 12 steps, the 6-step run at
    6, where it is the same training as the milestone (kept once). Read from the run folders and from their offline
    W&B runs, the rows, tables and the report's budget panel agree."""
    local = budget_rows(load_local([str(sweep)])[0], warn=lambda line: None)
    offline = [next((d / "wandb").glob("offline-run-*")) for d in sweep.iterdir() if (d / "wandb").is_dir()]
    wandb_runs = [OfflineWandbRun(d) for d in offline]
    found = load_wandb("me/rlvr-sweeps", group="axis", api=OfflineWandbApi(wandb_runs))
    warned = []
    remote = budget_rows(found[0], warn=warned.append)
    assert (
        len(warned) == 1 and "milestone 0.5 (6 steps)" in warned[0]
    )  # the milestone and the 6-step run: one training
    for rows in (local, remote):
        assert sorted(rows["budget_level"]) == ["12 steps", "6 steps"] and rows["milestone"].isna().all()
    local_tables, remote_tables = all_tables(local, 0.02), all_tables(remote, 0.02)
    assert [t.name for t in local_tables] == [t.name for t in remote_tables]
    assert "sums_heldout/pass@1_budget_x_rank_tiny_math" in [t.name for t in local_tables]
    for mine, theirs in zip(local_tables, remote_tables):
        # the evaluation noise needs the per-sample records, which W&B does not hold: its column and its ° mark
        # (a single run beyond it) come from the run folders only
        noise = "evaluation noise, these runs"
        local_only = lambda table: table.frame.drop(columns=noise, errors="ignore").replace("°", "", regex=True)  # noqa: E731
        pd.testing.assert_frame_equal(local_only(mine), local_only(theirs))
    logged = wandb_keys(wandb_runs)
    assert budget_level_keys(logged, "sums_heldout", "pass@1") == [
        "milestone/0.5/eval/sums_heldout/pass@1",
        "eval/sums_heldout/pass@1",
    ]
    assert "milestone/0.5/training_s" in logged.summary and "milestone/0.5/step" in logged.summary


def load_adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("trainer.lr_scheduler_type=cosine",), "trainer.lr_scheduler_type=cosine"),
        (("+trainer.warmup_ratio=0.1",), "trainer.warmup_ratio=0.1"),
        (("trainer.warmup_steps=5", "budget.max_steps=12"), "warm-up that ends after the first milestone at step 3"),
        (("trainer.warmup_steps=5",), "with a budget in time or tokens"),
        (("trainer.save_steps=0.1",), "trainer.save_steps=0.1"),
    ],
)
def test_settings_that_depend_on_the_total_budget_are_refused_with_milestones(overrides, message):
    cfg = compose_config("budget.milestones=[0.25,0.5]", *overrides)
    with pytest.raises(UserError, match="budget.milestones: a milestone must be the run a shorter budget") as refused:
        check_milestones(cfg.budget, cfg.trainer)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_milestones_are_fractions_of_the_budget():
    with pytest.raises(UserError, match="in \\(0, 1\\]"):
        check_milestones(compose_config("budget.milestones=[0.5,3]").budget, compose_config().trainer)
    check_milestones(compose_config("budget.milestones=[0.5,1]").budget, compose_config().trainer)  # 1: the run
    early = compose_config("trainer.warmup_steps=2", "budget.max_steps=12", "budget.milestones=[0.25]")
    check_milestones(early.budget, early.trainer)  # a warm-up over before the first milestone (step 3)


def test_the_plan_prices_the_milestones_beside_separate_runs_of_the_same_budgets(tmp_path):
    from rlvr_sweeps.sweep import format_plan, plan_run

    plain = plan_run(compose_config("experiment=study"), tmp_path / "a", [])
    cfg = compose_config("experiment=study", "budget.milestones=[0.25,0.5]")
    with_milestones = plan_run(cfg, tmp_path / "b", [])
    assert with_milestones.milestones == (0.25, 0.5) and with_milestones.milestone_evaluation_hours > 0
    extra = with_milestones.evaluation_hours - plain.evaluation_hours
    assert extra == pytest.approx(with_milestones.milestone_evaluation_hours)
    # as separate runs: a quarter and a half of the training, each with its own baseline and final evaluation
    assert with_milestones.separate_hours > 0.75 * plain.training_hours + extra
    text = format_plan([with_milestones])
    assert "budget.milestones (0.25, 0.5 of the budget): their evaluations add" in text and "separate runs" in text
