"""The budget axis in the analysis (analysis.budget_axis, analysis.budget_tables): each run at each budget level it
passed through (its milestones, and its own budget), compared per level like the arms, with the budget x rank table,
its crossing and collapse lines, and the Pass@1-against-training-hours figure.

Fast: synthetic run folders shaped like real ones (summary.json with milestones, per-sample records per phase).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.__main__ import main as analysis_main
from analysis.budget_axis import budget_rows, level
from analysis.budget_tables import crossings
from analysis.sources import load_local
from analysis.tables import all_tables
from rlvr_sweeps.run.record import flat_summary

PROBLEMS = 20


def outcomes(correct: int) -> dict[str, list[bool]]:
    """`correct` of 4 samples right on every problem: Pass@1 correct / 4."""
    return {f"p{i}": [s < correct for s in range(4)] for i in range(PROBLEMS)}


def noisy(correct: int, seed: int) -> dict[str, list[bool]]:
    """About `correct` of 4 right, varying by seed: runs of one arm differ as seeds do."""
    rng = np.random.default_rng(seed)
    return {f"p{i}": list(rng.random(4) < correct / 4) for i in range(PROBLEMS)}


def pass1(found: dict[str, list[bool]]) -> float:
    return float(np.mean([ok for samples in found.values() for ok in samples]))


def write_samples(path: Path, found: dict[str, list[bool]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            json.dumps({"problem_id": p, "sample": i, "correct": bool(ok)}) + "\n"
            for p, samples in found.items()
            for i, ok in enumerate(samples)
        )
    )


BASE = outcomes(1)  # 25%
# per rank: Pass@1 (of 4) at 0.25, 0.5 and the whole budget; r=64 leads early, r=8 catches up and passes it
LEVELS = {8: (1.2, 2.0, 3.4), 64: (2.6, 2.8, 2.2)}


def write_run(sweep: Path, rank: int, seed: int, minutes: float = 1260, milestones=(0.25, 0.5)) -> Path:
    """A completed run as train.finish writes it: the final and each milestone's evaluation with its records."""
    run_dir = sweep / f"r{rank}-s{seed}-m{minutes:g}"
    finals = {
        "final": noisy(LEVELS[rank][2], 100 * rank + seed),
        **{f"milestone-{f:g}": noisy(LEVELS[rank][i], 10 * rank + seed + i) for i, f in enumerate(milestones)},
    }
    training_s = minutes * 60 * 0.99
    write_samples(run_dir / "eval" / "baseline" / "b.jsonl", BASE)
    metrics = {"baseline/b/pass@1": pass1(BASE)}
    entries = {}
    for phase, found in finals.items():
        write_samples(run_dir / "eval" / phase / "b.jsonl", found)
        prefix = "" if phase == "final" else f"milestone/{phase.split('-', 1)[1]}/"
        metrics[f"{prefix}eval/b/pass@1"] = pass1(found)
        metrics[f"{prefix}delta/b/pass@1"] = pass1(found) - pass1(BASE)
    for f in milestones:
        entries[f"{f:g}"] = {"fraction": f, "step": int(300 * f), "training_s": training_s * f, "generated_tokens": 1}
    summary = {
        "status": "completed",
        "global_step": 300,
        "lora": {"rank": rank, "alpha": 2 * rank},
        "metrics": metrics,
        "milestones": entries,
        "budget": {
            "name": "a40_24h",
            "device": "cuda",
            "device_name": "NVIDIA A40",
            "device_count": 1,
            "training_s": training_s,
            "training_device_hours": training_s / 3600,
            "baseline_evaluation_s": 600,
            "final_evaluation_s": 600,
            "device_hours": training_s / 3600 + 1,
            "price_per_hour": 0.44,
            "cost_usd": (training_s / 3600 + 1) * 0.44,
            "generated_tokens": 4,
        },
    }
    config = {
        "model": {"name": "instruct"},
        "lora": {"rank": rank},
        "trainer": {"seed": seed, "learning_rate": 1e-5},
        "budget": {"name": "a40_24h", "minutes": minutes, "milestones": list(milestones)},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


@pytest.fixture
def sweep(tmp_path) -> Path:
    for rank in LEVELS:
        for seed in range(3):
            write_run(tmp_path / "sweep", rank, seed)
    return tmp_path / "sweep"


def test_levels_are_named_by_the_budget_that_stops_the_run():
    assert level({"minutes": 1260}, 0.25) == ("5.25 h", "minutes", 315.0)
    assert level({"minutes": 5.5}, 0.5) == ("2.75 min", "minutes", 2.75)
    assert level({"minutes": 1260, "max_steps": 12}, 0.5) == ("6 steps", "steps", 6.0)
    assert level({"minutes": 1260, "max_generated_tokens": 2e6}, 0.5)[0] == "1,000,000 tokens"


def test_milestone_keys_reach_the_flat_summary_that_w_and_b_holds(sweep):
    summary = json.loads(next(sweep.glob("r8-s0*/summary.json")).read_text())
    flat = flat_summary(summary)
    assert flat["milestone/0.25/step"] == 75 and flat["milestone/0.25/training_s"] == pytest.approx(
        1260 * 60 * 0.99 / 4
    )
    assert "milestone/0.5/eval/b/pass@1" in flat


def test_each_run_gives_a_row_per_budget_level_with_that_levels_results(sweep):
    runs, _ = load_local([str(sweep)])
    levels = budget_rows(runs)
    assert len(levels) == 3 * len(runs) and set(levels["budget_level"]) == {"5.25 h", "10.5 h", "21 h"}
    row = levels[(levels["run"] == "r8-s0-m1260") & (levels["budget_level"] == "5.25 h")].iloc[0]
    records = sweep / "r8-s0-m1260" / "eval" / "milestone-0.25" / "b.jsonl"
    found = {}
    for line in records.read_text().splitlines():
        sample = json.loads(line)
        found.setdefault(sample["problem_id"], []).append(sample["correct"])
    assert row["eval/b/pass@1"] == pytest.approx(pass1(found)) and row["steps"] == 75 and row["global_step"] == 75
    assert row["training_hours"] == pytest.approx(21 * 0.99 / 4) and row["stop_reason"] == "milestone 0.25"
    assert row["gpu_hours"] == pytest.approx(21 * 0.99 / 4 + 1200 / 3600)  # its training, a baseline and a final
    own = levels[(levels["run"] == "r8-s0-m1260") & levels["milestone"].isna()].iloc[0]
    assert (
        own["budget_level"] == "21 h"
        and own["eval/b/pass@1"] == runs.set_index("run").loc["r8-s0-m1260", "eval/b/pass@1"]
    )


def test_every_level_gets_its_own_tables_and_comparisons_and_the_budget_x_rank_table(sweep):
    levels = budget_rows(load_local([str(sweep)])[0])
    tables = {t.name: t for t in all_tables(levels, 0.02)}
    for label in ("budget_level5.25h", "budget_level10.5h", "budget_level21h"):
        assert f"b/pass@1/{label}" in tables
    significance = tables["significance"].csv
    assert list(dict.fromkeys(significance["setting"])) == [f"budget_level={x}" for x in ("5.25 h", "10.5 h", "21 h")]
    budget = tables["b/pass@1_budget_x_rank_instruct"]
    assert list(budget.frame.index) == ["5.25 h", "10.5 h", "21 h"]
    for label in ("5.25 h", "10.5 h", "21 h"):  # each row is that level's table, mark for mark
        per_level = tables[f"b/pass@1/budget_level{label.replace(' ', '')}"]
        assert budget.frame.loc[label].tolist() == per_level.frame.loc["instruct"].tolist()
    # the eval-noise interval of a milestone level comes from that milestone's own records
    early = significance[
        (significance["setting"] == "budget_level=5.25 h") & (significance["comparison"] == "r=64 vs r=8")
    ]
    assert early["eval_noise_ci_low"].iloc[0] > 0  # r=64 ahead at 5.25 h ...
    late = significance[
        (significance["setting"] == "budget_level=21 h") & (significance["comparison"] == "r=64 vs r=8")
    ]
    assert late["eval_noise_ci_high"].iloc[0] < 0  # ... and behind at 21 h
    assert any(note.startswith("r=64 and r=8 cross") for note in budget.notes)


def test_crossings_and_collapses_are_named_under_the_table():
    values = pd.DataFrame(
        {"baseline": [0.3, 0.3, 0.3], 8: [0.35, 0.4, 0.2], 64: [0.4, 0.45, 0.5]}, index=["3 h", "6 h", "12 h"]
    )
    lines = crossings(values, 0.02)
    assert not any("cross" in line for line in lines)  # r=64 ahead throughout
    assert lines == ["r=8 collapses after 6 h: 40.0 there, 20.0 at 12 h (baseline 30.0; margin 2.0 points)."]
    values[64] = [0.3, 0.39, 0.5]
    assert any(line.startswith("r=64 and r=8 cross") and "3 h (-5.0)" in line for line in crossings(values, 0.02))


def test_separate_runs_of_a_budget_fall_on_the_same_axis_and_one_training_counts_once(sweep):
    write_run(sweep, 8, 3, minutes=315, milestones=())  # a separate 5.25-hour run of a new seed
    write_run(sweep, 8, 0, minutes=315, milestones=())  # the same seed as a 21-hour run's milestone: the same training
    warned = []
    levels = budget_rows(load_local([str(sweep)])[0], warn=warned.append)
    early = levels[(levels["budget_level"] == "5.25 h") & (levels["rank"] == 8)]
    assert sorted(early["seed"]) == [0, 1, 2, 3]
    assert early[early["seed"] == 0]["milestone"].isna().all()  # the separate run is the one kept
    assert len(warned) == 1 and "r8-s0-m1260 milestone 0.25" in warned[0]


def test_the_cli_writes_runs_csv_per_level_the_budget_table_and_the_curve(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert analysis_main([str(sweep), "--out", str(out)]) == 0
    runs_csv = pd.read_csv(out / "runs.csv")
    assert len(runs_csv) == 18 and {"budget_level", "training_hours", "steps", "generated_tokens"} <= set(runs_csv)
    table = pd.read_csv(out / "b_pass1_budget_x_rank_instruct.csv", index_col="budget_level")
    assert list(table.index) == ["5.25 h", "10.5 h", "21 h"] and table["r=8_runs"].tolist() == [3, 3, 3]
    assert (out / "b_pass1_vs_training_hours.png").exists()
    assert "6 runs" in capsys.readouterr().out


def test_a_damaged_run_opens_no_budget_level_of_its_own(sweep, tmp_path):
    (sweep / "r8-s0-m1260" / "config.yaml").write_text("model: [unclosed\n")  # its budget cannot be read
    levels = budget_rows(load_local([str(sweep)], warn=lambda line: None)[0])
    damaged = levels[levels["run"] == "r8-s0-m1260"]
    assert len(damaged) == 1 and damaged["milestone"].isna().all()  # its results, milestones included, unused
    names = [t.name for t in all_tables(levels, 0.02)]
    assert not any("unknown" in name for name in names) and "b/pass@1/budget_level5.25h" in names
