"""search=two_stage launched (hydra_plugins/rlvr_sweeps_launcher/two_stage.py, planning.search) and read back
(analysis.two_stage): a paused run trains on to the run it would have been; the stages' overrides; the promotion
record; the verdict on the runs that did not choose; the whole flow with the local launcher. The flow on SLURM,
promotion job included, is in test_slurm.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from analysis.__main__ import main as analysis_main
from analysis.rank_lr import lr_labels
from analysis.sources import load_local
from analysis.tables import all_tables
from analysis.two_stage import CHOSEN as CHOSEN_COLUMN
from analysis.two_stage import tie_notes, verdict_rows
from conftest import ROOT, train_in_process
from rlvr_sweeps.errors import UserError
from rlvr_sweeps.planning.search import (
    Stage1Run,
    TwoStage,
    check_arms,
    check_launcher,
    check_search,
    promoted_arm,
    promotion,
    promotion_lines,
    stage1_overrides,
    stage2_overrides,
    stage_of,
)
from rlvr_sweeps.sweep import main as sweep_status

DESIGN = TwoStage(milestone=0.25, stage1_seeds=2, promote=1, stage2_seeds=3)


def test_the_stages_are_the_arms_with_their_seeds_and_the_stop():
    arm = ["lora.rank=8", "trainer.learning_rate=1e-05"]
    assert stage1_overrides(arm, DESIGN) == [
        [*arm, "trainer.seed=0", "budget.stop_at=0.25"],
        [*arm, "trainer.seed=1", "budget.stop_at=0.25"],
    ]
    # the stage-1 runs again without the stop (the same folders: budget.stop_at is not in folder names), new seeds
    assert stage2_overrides(arm, DESIGN) == [[*arm, f"trainer.seed={s}"] for s in range(5)]
    assert [stage_of(seed, {"name": "two_stage", "stage1_seeds": 2}) for seed in (0, 1, 2, 4)] == [1, 1, 2, 2]
    assert stage_of(0, {"name": "grid"}) is None


def test_seeds_and_stops_given_by_hand_are_refused_and_promotion_needs_a_selection_benchmark():
    with pytest.raises(UserError, match="chooses the seeds") as refused:
        check_arms([["lora.rank=8", "trainer.seed=0,1"]])
    assert "\n" not in str(refused.value)
    with pytest.raises(UserError, match="hydra/launcher=local"):  # Hydra's basic launcher would run a grid
        check_launcher({"name": "two_stage"}, "hydra._internal.core_plugins.basic_launcher.BasicLauncher", False)
    check_launcher({"name": "two_stage"}, "hydra_plugins.rlvr_sweeps_launcher.launcher.LocalSweepLauncher", False)
    check_launcher({"name": "two_stage"}, None, dry_run=True)  # a plan prices it anywhere
    with pytest.raises(UserError, match="eval.select_on"):
        check_search(OmegaConf.create({"name": "two_stage", **DESIGN.__dict__}), OmegaConf.create({"select_on": None}))


def test_the_promotion_record_names_every_arm_its_score_and_what_was_promoted():
    runs = [
        Stage1Run("a", "instruct", 8, 1e-5, 0, "paused", 75, 0.30),
        Stage1Run("b", "instruct", 8, 1e-5, 1, "paused", 75, 0.34),
        Stage1Run("c", "instruct", 8, 1e-4, 0, "paused", 75, 0.40),
        Stage1Run("d", "instruct", 8, 1e-4, 1, "failed", None, None),  # the arm's mean is over its scored run
        Stage1Run("e", "instruct", 256, 1e-5, 0, "failed", None, None),
        Stage1Run("f", "instruct", 256, 1e-4, 0, "paused", 75, 0.10),
    ]
    record = json.loads(json.dumps(promotion(runs, DESIGN, "math500")))  # as search.json holds it
    assert record["promoted"] == [
        {"init": "instruct", "rank": 8, "learning_rates": [1e-4], "tied": []},
        {"init": "instruct", "rank": 256, "learning_rates": [1e-4], "tied": []},
    ]
    assert record["unscored"] == [{"init": "instruct", "rank": 256, "learning_rate": 1e-5}]
    scores = {(a["rank"], a["learning_rate"]): a["score"] for a in record["arms"]}
    assert scores == {(8, 1e-5): pytest.approx(0.32), (8, 1e-4): 0.40, (256, 1e-5): None, (256, 1e-4): 0.10}
    assert "math500" in record["rule"] and "lower rate" in record["rule"]
    assert promoted_arm(record, "instruct", 8, 0.0001) and not promoted_arm(record, "instruct", 8, 1e-5)


def test_a_choice_made_by_the_tie_rule_is_named_as_such():
    """As in the README's miniature: rank 8 scores the same at every rate, so the lowest is promoted by the rule,
    which search.json, the promotion lines and the landscape say; rank 256's choice is the scores'."""
    runs = [Stage1Run(f"r8-{lr}", "instruct", 8, lr, 0, "paused", 6, 0.0375) for lr in (5e-5, 1.5e-5, 1.5e-4)]
    runs += [Stage1Run(f"x{lr}", "instruct", 256, lr, 0, "paused", 6, s) for lr, s in ((1.5e-5, 0.1), (5e-5, 0.25))]
    record = json.loads(json.dumps(promotion(runs, TwoStage(0.5, 1, 1, 3), "b")))
    assert [(p["rank"], p["learning_rates"], p["tied"]) for p in record["promoted"]] == [
        (8, [1.5e-5], [1.5e-5, 5e-5, 1.5e-4]),
        (256, [5e-5], []),
    ]
    lines = promotion_lines(record)
    assert "tie rule" in lines[1] and "tie rule" not in lines[2]
    two_of_three = promotion(runs[1:], TwoStage(0.5, 1, 2, 3), "b")  # 2 tied rates, 2 promoted: no tie to break
    assert two_of_three["promoted"][0]["tied"] == []

    stage1 = pd.DataFrame(
        [{"rank": r.rank, "learning_rate": r.learning_rate, "seed": 0, "milestone_selection": r.score} for r in runs]
    )
    notes = tie_notes(stage1, lr_labels(sorted({r.learning_rate for r in runs})))
    assert notes == [
        "r=8: 1.5e-05, 5.0e-05, 1.5e-04 scored the same; the tie rule, not the scores, chose the lowest (a later "
        "milestone or more selection problems would decide)."
    ]


# ---- the analysis, on synthetic run folders shaped like a two-stage sweep's ----
PROBLEMS = 40
BASE = 0.25


def write_run(
    sweep: Path,
    rank: int,
    lr: float,
    seed: int,
    status: str,
    final: float | None,
    selection: float,
    full_selection: float | None = None,
    promote: int = 1,
):
    run_dir = sweep / f"r{rank}-lr{lr:g}-s{seed}"
    summary = {"status": status, "global_step": 300 if status == "completed" else 75, "lora": {"rank": rank}}
    if full_selection is not None:  # a stage-1 winner trained on: its selected checkpoint's selection score
        summary["eval"] = {"checkpoints": {"75": selection, "300": full_selection}, "selected_step": 300}
    if seed < 2:  # stage 1: every run paused once, with its selection score
        summary["paused"] = {"fraction": 0.25, "step": 75, "selection_score": selection, "selection_benchmark": "b"}
    if final is not None:
        rng = np.random.default_rng(100 * rank + seed)
        for phase, p in (("baseline", BASE), ("final", final)):
            path = run_dir / "eval" / phase / "b.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = [
                {"problem_id": f"p{i}", "sample": k, "correct": bool(rng.random() < p)}
                for i in range(PROBLEMS)
                for k in range(4)
            ]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        summary["metrics"] = {"eval/b/pass@1": final, "baseline/b/pass@1": BASE, "delta/b/pass@1": final - BASE}
    config = {
        "model": {"name": "instruct"},
        "lora": {"rank": rank},
        "trainer": {"seed": seed, "learning_rate": lr},
        "budget": {"name": "a40_24h", "minutes": 1260},
        "search": {"name": "two_stage", "milestone": 0.25, "stage1_seeds": 2, "promote": promote, "stage2_seeds": 3},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    curves = {"reward": 0.5, "rewards/accuracy_reward/mean": 0.5, "completions/mean_length": 10.0}
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, **curves}) + "\n")  # what the report plots
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


# stage-1 selection scores by (rank, lr) and seed: r=8 promotes 1e-4, r=64 promotes 1e-5 (seed 1 alone would
# have chosen 1e-4 for r=64)
SELECTION = {(8, 1e-5): (0.30, 0.32), (8, 1e-4): (0.40, 0.42), (64, 1e-5): (0.50, 0.30), (64, 1e-4): (0.35, 0.36)}
CHOSEN = {8: 1e-4, 64: 1e-5}
STAGE2 = {8: (0.40, 0.42, 0.44), 64: (0.30, 0.31, 0.29)}
WINNER = 0.90  # the stage-1 winners trained on: far above, so that counting them would change every comparison


@pytest.fixture
def two_stage_sweep(tmp_path) -> Path:
    sweep = tmp_path / "search"
    for (rank, lr), scores in SELECTION.items():
        for seed, score in enumerate(scores):
            promoted = CHOSEN[rank] == lr
            write_run(
                sweep, rank, lr, seed, "completed" if promoted else "paused", WINNER if promoted else None, score
            )
    for rank, finals in STAGE2.items():
        for i, final in enumerate(finals):
            write_run(sweep, rank, CHOSEN[rank], 2 + i, "completed", final, 0)
    return sweep


def test_the_verdict_uses_only_the_runs_that_did_not_choose(two_stage_sweep, tmp_path, capsys):
    runs, _ = load_local([str(two_stage_sweep)])
    verdict = verdict_rows(runs)
    assert sorted(verdict["seed"]) == [2, 2, 3, 3, 4, 4] and verdict["learning_rate"].isna().all()
    out = tmp_path / "out"
    assert analysis_main([str(two_stage_sweep), "--out", str(out)]) == 0
    significance = pd.read_csv(out / "significance.csv").set_index("comparison")
    assert significance.loc["r=64 vs r=8", "runs"] == 3 and significance.loc["r=64 vs r=8", "runs_reference"] == 3
    assert significance.loc["r=64 vs r=8", "delta"] == pytest.approx(100 * (0.30 - 0.42))  # ranks at their own rates
    table = pd.read_csv(out / "b_pass1_two_stage_instruct.csv", index_col="rank")
    assert table.loc["r=8", "chosen_learning_rate"] == 1e-4 and table.loc["r=64", "chosen_learning_rate"] == 1e-5
    assert table.loc["r=8", "stage2_runs"] == 3 and table.loc["r=8", "stage2_pass1"] == pytest.approx(42.0)
    assert table.loc["r=8", "stage1_winner_pass1"] == pytest.approx(90.0)  # reported beside, never tested
    assert table.loc["r=64", "vs_r=8"] == pytest.approx(-12.0)
    shown = (out / "b_pass1_two_stage_instruct.md").read_text()
    assert "stage-1 winner (not tested)" in shown
    landscape = (out / "two_stage_landscape_instruct.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in landscape.splitlines() if line.startswith("| r=")}
    assert rows["r=8"].split("|")[3].strip().endswith("▲") and "▲" not in rows["r=8"].split("|")[2]
    assert rows["r=64"].split("|")[2].strip().endswith("▲")
    assert "r=8 2 of 2; r=64 1 of 2" in landscape  # seed 1 alone would have promoted 1e-4 for r=64
    assert (out / "two_stage_landscape.png").exists()
    names = [t.name for t in all_tables(runs, 0.02)]
    assert not any("rank_x_lr" in name for name in names)  # stage 2's rates are the arms', not a swept setting


def test_with_two_promoted_rates_the_trained_on_stage_one_runs_choose_and_the_other_rate_is_not_tested(tmp_path):
    """search.promote=2: both rates of each rank trained on and got stage-2 seeds. The stage-1 runs, at the full
    budget, choose each rank's rate on the selection benchmark; only that rate's stage-2 seeds are tested (the other
    rate's score far higher, so that pooling them would change the comparison). Until a promoted rate's stage-1 runs
    have finished, its rank has no choice and no verdict."""
    sweep = tmp_path / "search"
    full = {(8, 1e-5): 0.30, (8, 1e-4): 0.50, (64, 1e-5): 0.60, (64, 1e-4): 0.20}  # at the full budget
    for (rank, lr), score in full.items():
        for seed in (0, 1):
            write_run(sweep, rank, lr, seed, "completed", WINNER, 0.4, full_selection=score, promote=2)
    for (rank, lr), finals in {(8, 1e-4): STAGE2[8], (64, 1e-5): STAGE2[64]}.items():  # the rates chosen above
        for i, final in enumerate(finals):
            write_run(sweep, rank, lr, 2 + i, "completed", final, 0, promote=2)
    for rank, lr in ((8, 1e-5), (64, 1e-4)):  # the promoted rates not chosen
        for i in range(3):
            write_run(sweep, rank, lr, 2 + i, "completed", 0.95, 0, promote=2)
    runs, _ = load_local([str(sweep)])
    verdict = verdict_rows(runs)
    assert sorted(zip(verdict["rank"], verdict[CHOSEN_COLUMN])) == [(8, 1e-4)] * 3 + [(64, 1e-5)] * 3
    out = tmp_path / "out"
    assert analysis_main([str(sweep), "--out", str(out)]) == 0
    significance = pd.read_csv(out / "significance.csv").set_index("comparison")
    assert significance.loc["r=64 vs r=8", "delta"] == pytest.approx(100 * (0.30 - 0.42))
    shown = (out / "b_pass1_two_stage_instruct.md").read_text()
    assert "r=8: promoted 1e-05, 0.0001; their stage-1 runs, trained on to the full budget, chose 0.0001" in shown
    assert "(1e-05: 30.0; 0.0001: 50.0); the 3 stage-2 run(s) of the other rate(s) are not tested" in shown
    report = tmp_path / "report.json"  # the W&B report's stage-2 panels: by rank and rate, never pooled
    args = ["--out", str(out), "--wandb", "me/p", "--group", "search", "--report-json", str(report)]
    assert analysis_main([str(sweep), *args]) == 0
    stage2 = next(b for b in json.loads(report.read_text())["blocks"] if b["type"] == "PanelGrid")["runsets"][0]
    assert len(stage2["groupby"]) == 2 and "by promoted rate" in stage2["name"]

    unfinished = sweep / "r8-lr1e-05-s1" / "summary.json"  # one stage-1 run of a promoted rate still training
    summary = json.loads(unfinished.read_text())
    unfinished.write_text(json.dumps({**summary, "status": "running", "eval": {}}))
    runs, _ = load_local([str(sweep)])
    assert set(verdict_rows(runs)["rank"]) == {64}
    assert analysis_main([str(sweep), "--out", str(out)]) == 0
    assert (
        "r=8: promoted 1e-05, 0.0001; the choice between them waits"
        in (out / "b_pass1_two_stage_instruct.md").read_text()
    )


# ---- the real thing, small ----
LEARNS = (  # tiny_math on 1-digit sums moves its adapter in a few steps
    "model=tiny_math",
    "data=sums",
    "eval=[sums_heldout]",
    "eval.select_on=sums_heldout",
    "eval.sampling.n=2",
    "eval.sampling.k=[1,2]",
    "trainer.max_completion_length=16",
    "trainer.learning_rate=0.003",
    "trainer.save_steps=2",
)


def load_adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.e2e
def test_a_paused_run_trains_on_to_the_run_it_would_have_been(tmp_path, model_cache):
    """budget.stop_at=0.5 of 6 steps: paused at step 3 (the closing save), scored on the selection benchmark,
    nothing evaluated finally; relaunched with the stop it stays paused; without it, it trains on to the same
    last checkpoint, bit for bit, as the run that never paused, and to the same results."""
    runs, six = tmp_path / "runs", (*LEARNS, "budget.max_steps=6")
    paused = train_in_process(runs, model_cache, *six, "name=paused", "budget.stop_at=0.5")
    run_dir = Path(paused["run_dir"])
    assert paused["status"] == "paused" and paused["global_step"] == 3 and paused["stop_reason"] == "stop_at"
    assert paused["paused"]["selection_score"] is not None
    assert paused["paused"]["selection_benchmark"] == "sums_heldout" and paused["paused"]["step"] == 3
    assert not (run_dir / "final").exists() and "metrics" not in paused
    at_pause = load_adapter(run_dir / "checkpoints" / "checkpoint-3")
    again = train_in_process(runs, model_cache, *six, "name=paused", "budget.stop_at=0.5")
    assert again["global_step"] == 3 and len(again["attempts"]) == 1  # skipped, not trained a step further
    continued = train_in_process(runs, model_cache, *six, "name=paused")
    assert Path(continued["run_dir"]) == run_dir  # the stop is not part of the folder name
    assert continued["status"] == "completed" and continued["global_step"] == 6 and len(continued["attempts"]) == 2
    assert continued["paused"]["step"] == 3  # the promotion's score stays on record
    whole = train_in_process(runs, model_cache, *six, "name=whole")
    last = Path("checkpoints") / "checkpoint-6"
    mine, theirs = load_adapter(run_dir / last), load_adapter(Path(whole["run_dir"]) / last)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert any(not torch.equal(mine[k], at_pause[k]) for k in mine)  # it did train on
    assert continued["metrics"] == whole["metrics"]


@pytest.mark.e2e
def test_a_two_stage_search_runs_with_one_command_locally_and_resumes(launch, tmp_path, capsys):
    """One rank, two learning rates, one new seed: stage 1 pauses both arms at step 2 of 4, the promotion writes
    search.json, the winner trains on and the new seed trains; the relaunch finds everything done."""
    args = (
        "-m",
        "name=search",
        *[a for a in LEARNS if not a.startswith("trainer.learning_rate")],
        "budget.max_steps=4",
        "lora.rank=4",
        "trainer.learning_rate=0.001,0.01",
        "search=two_stage",
        "search.milestone=0.5",
        "search.stage2_seeds=1",
        "logger=none",
        "hydra/launcher=local",
    )
    done = launch(*args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep = tmp_path / "runs" / "search"
    record = json.loads((sweep / "search.json").read_text())
    (promoted,) = record["promoted"]
    rate = promoted["learning_rates"][0]
    scored = {arm["learning_rate"]: arm["score"] for arm in record["arms"]}
    assert scored[rate] >= max(scored.values()) and all(s is not None for s in scored.values())
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    assert sorted(s["status"] for s in summaries) == ["completed", "completed", "paused"]
    loser = next(s for s in summaries if s["status"] == "paused")
    assert loser["global_step"] == 2 and not any(str(rate) in o for o in loser["overrides"] if "learning_rate" in o)
    winner = next(s for s in summaries if s["status"] == "completed" and len(s["attempts"]) == 2)
    assert winner["global_step"] == 4 and winner["paused"]["step"] == 2
    assert "promotion on sums_heldout at 0.5 of the budget" in done.stdout and "\n2 completed" in done.stdout
    assert "stage 1, not promoted:" in done.stdout and "\n1 paused" in done.stdout

    again = launch(*args)
    assert again.returncode == 0 and "promoted earlier" in again.stdout and "submitted" not in again.stdout
    assert sweep_status([str(sweep)]) == 0
    assert "(promoted)" in capsys.readouterr().out  # python -m rlvr_sweeps.sweep says where the search stands
    out = tmp_path / "analysis"
    assert analysis_main([str(sweep), "--out", str(out)]) == 0
    assert (out / "sums_heldout_pass1_two_stage_tiny_math.csv").exists()
    assert (out / "two_stage_landscape_tiny_math.md").exists()


def test_the_report_shows_the_stage_two_runs_and_the_stage_one_landscape(two_stage_sweep, tmp_path):
    """The W&B report of a two-stage sweep: the per-init panels read only the stage-2 seeds (trainer.seed >= 2),
    a stage-1 runset grouped by rank and learning rate plots the selection score at the milestone, and the two
    tables are among its tables."""
    from wandb_workspaces import expr

    path = tmp_path / "report.json"
    out = tmp_path / "out"
    args = ["--out", str(out), "--wandb", "me/p", "--group", "search", "--report-json", str(path)]
    assert analysis_main([str(two_stage_sweep), *args]) == 0
    report = json.loads(path.read_text())
    grids = [b for b in report["blocks"] if b["type"] == "PanelGrid"]
    assert len(grids) == 2
    verdict, landscape = (g["runsets"][0] for g in grids)
    seed = lambda runset: [  # noqa: E731
        (f.op, f.value) for f in expr.expr_to_filters(runset["filters"]).filters if f.key.name == "trainer.value.seed"
    ]
    assert seed(verdict) == [(">=", 2)] and seed(landscape) == [("<=", 1)]
    assert [expr.groupby_str_to_key(g).name for g in landscape["groupby"]] == [
        "lora.value.rank",
        "trainer.value.learning_rate",
    ]
    (bars,) = grids[1]["panels"]
    assert bars["metrics"] == ["paused/selection_score"]
    text = " ".join(b.get("text", "") for b in report["blocks"] if b["type"] == "MarkdownBlock")
    assert "each LoRA rank at its chosen learning rate" in text and "Stage 1: selection score at the milestone" in text


def test_the_readme_miniature_script_plans_both_stages(tmp_path):
    """scripts/two_stage_miniature.sh with dry_run=true: its overrides compose, and the plan is the README's
    (6 arms to half the budget, 2 promoted, 3 new seeds per rank); nothing is submitted."""
    env = {**os.environ, "RLVR_SWEEPS_RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable}
    done = subprocess.run(
        [str(ROOT / "scripts" / "two_stage_miniature.sh"), "dry_run=true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "stage 1 trains 6 runs to 0.5 of the budget" in done.stdout
    assert "continues the 2 promoted stage-1 run(s)" in done.stdout and "6 stage-2 runs (3 new seeds" in done.stdout
    assert "submitted" not in done.stdout and not list((tmp_path / "runs").rglob("submission.json"))
