"""Verdicts in the analysis: the training run decides `*`, the evaluation noise of the runs at hand is a
column of its own, the runs a comparison needs, and damaged run folders. The problem bootstrap itself
(rlvr_sweeps.evaluation.significance) is checked first.

Fast: synthetic run folders with per-sample records, no training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from analysis.__main__ import NO_INTERVALS_WANDB
from analysis.__main__ import main as analysis_main
from analysis.comparisons import EVAL_NOISE
from analysis.render import GAP
from analysis.tables import all_tables
from conftest import OfflineWandbApi, OfflineWandbRun
from rlvr_sweeps.evaluation.significance import (
    Interval,
    evaluation_variance,
    paired_bootstrap,
    per_problem_accuracy,
    read_outcomes,
    run_delta,
)


def write_samples(path: Path, outcomes: dict[str, list[bool]]) -> None:
    """Per-sample records shaped like the Evaluator's eval/<phase>/<benchmark>.jsonl."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            json.dumps(
                {
                    "problem_id": problem,
                    "sample": i,
                    "answer": "1",
                    "extracted": None,
                    "correct": ok,
                    "length": 10,
                    "truncated": False,
                }
            )
            + "\n"
            for problem, samples in outcomes.items()
            for i, ok in enumerate(samples)
        )
    )


def pattern(*counts: int, n: int = 4) -> dict[str, list[bool]]:
    """Problems p00, p01, ... with counts[i] correct samples out of n."""
    return {f"p{i:02d}": [s < c for s in range(n)] for i, c in enumerate(counts)}


# the hand-computed pair: per-problem accuracy a = 0, .25, .5, 1 and b = .25, .75, .5, .75
HAND_A = pattern(0, 1, 2, 4)
HAND_B = pattern(1, 3, 2, 3)
HAND_DELTA = (0.25 + 0.5 + 0.0 - 0.25) / 4  # 0.125


def test_read_outcomes_groups_samples_by_problem_in_sample_order(tmp_path):
    path = tmp_path / "b.jsonl"
    lines = [
        {"problem_id": "q", "sample": 1, "correct": False},
        {"problem_id": "q", "sample": 0, "correct": True},
        {"problem_id": 7, "sample": 0, "correct": True},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    assert read_outcomes(path) == {"q": [True, False], "7": [True]}


def test_interval_equals_a_direct_resampling_of_problems(tmp_path):
    write_samples(tmp_path / "a.jsonl", HAND_A)
    write_samples(tmp_path / "b.jsonl", HAND_B)
    a = per_problem_accuracy([read_outcomes(tmp_path / "a.jsonl")])
    b = per_problem_accuracy([read_outcomes(tmp_path / "b.jsonl")])
    assert a == {"p00": 0.0, "p01": 0.25, "p02": 0.5, "p03": 1.0} and b["p01"] == 0.75
    got = paired_bootstrap(a, b, resamples=500, seed=7)
    # the same resampling written out: draw 4 problems with replacement, the same ones for a and b
    problems = sorted(a)
    drawn = np.random.default_rng(7).integers(0, len(problems), size=(500, len(problems)))
    means = [np.mean([b[problems[i]] for i in row]) - np.mean([a[problems[i]] for i in row]) for row in drawn]
    low, high = np.percentile(means, [2.5, 97.5])
    assert got.delta == pytest.approx(HAND_DELTA) and got.problems == 4
    assert (got.low, got.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert got == paired_bootstrap(a, b, resamples=500, seed=7)  # deterministic for a fixed seed
    assert paired_bootstrap(a, b, resamples=500, seed=8) != got


def test_level_sets_the_percentiles():
    a = {f"p{i}": 0.0 for i in range(10)}
    b = {f"p{i}": i / 10 for i in range(10)}
    wide, narrow = paired_bootstrap(a, b, level=0.95), paired_bootstrap(a, b, level=0.5)
    assert wide.low < narrow.low < narrow.high < wide.high
    with pytest.raises(ValueError):
        paired_bootstrap(a, b, level=1.0)


def test_identical_arms_and_noise_give_intervals_that_include_zero():
    a = per_problem_accuracy([pattern(*[i % 5 for i in range(30)])])
    same = paired_bootstrap(a, dict(a))
    assert same == Interval(0.0, 0.0, 0.0, 30) and not same.excludes_zero
    # a few problems move, up and down (accuracies stay in [0, 1]): +0.25 over 30 problems in all
    noisy = dict(a, p00=a["p00"] + 0.5, p07=a["p07"] + 0.25, p14=a["p14"] - 0.5, p13=a["p13"] - 0.25, p20=0.25)
    assert all(0 <= acc <= 1 for acc in noisy.values())
    interval = paired_bootstrap(a, noisy)
    assert interval.delta == pytest.approx(0.25 / 30)
    assert interval.low < 0 < interval.high and not interval.excludes_zero


def test_a_consistent_gain_excludes_zero_because_the_problems_are_paired():
    """Problems alternate between hard and easy and b gains 10 points on every one: unpaired, the
    spread of the problems would swamp the gain; paired, the interval sits at +10."""
    a = {f"p{i:02d}": 0.0 if i % 2 else 0.8 for i in range(30)}
    b = {p: acc + 0.1 for p, acc in a.items()}
    interval = paired_bootstrap(a, b)
    assert interval.excludes_zero and interval.low == pytest.approx(0.1) and interval.high == pytest.approx(0.1)
    worse = paired_bootstrap(b, a)
    assert worse.excludes_zero and worse.delta == pytest.approx(-0.1)


def test_one_problem_and_no_common_problem():
    assert paired_bootstrap({"p": 0.25}, {"p": 0.75, "q": 1.0}) == Interval(0.5, 0.5, 0.5, 1)
    with pytest.raises(ValueError, match="no problem in common"):
        paired_bootstrap({"p": 0.25}, {"q": 0.75})


def test_seeds_are_averaged_per_problem_over_the_problems_every_seed_has():
    seed0 = {"p1": [True, False], "p2": [False, False], "only0": [True]}
    seed1 = {"p1": [True, True, True, True], "p2": [True, False, False, False]}
    # p1: (1/2 + 4/4) / 2, not the pooled 5/6; a problem missing from one seed is left out
    assert per_problem_accuracy([seed0, seed1]) == {"p1": 0.75, "p2": 0.125}
    assert per_problem_accuracy([]) == {}


def test_run_delta_compares_final_with_baseline_and_needs_both_files(tmp_path):
    write_samples(tmp_path / "eval" / "baseline" / "b.jsonl", HAND_A)
    assert run_delta(tmp_path, "b") is None
    write_samples(tmp_path / "eval" / "final" / "b.jsonl", HAND_B)
    interval = run_delta(tmp_path, "b", resamples=500, seed=7)
    assert interval == paired_bootstrap(per_problem_accuracy([HAND_A]), per_problem_accuracy([HAND_B]), 500, 7)
    assert interval.delta == pytest.approx(HAND_DELTA)
    assert "+12.5 points" in interval.describe() and "includes 0" in interval.describe()
    assert "evaluation noise of this run, not another seed" in interval.describe()


# --- the analysis: run folders shaped like real ones ----------------------------------------------

BASELINE = pattern(*[1] * 30)  # every problem 1 of 4: Pass@1 25%
FINALS = {
    8: pattern(*[2, 0] * 5, *[1] * 20),  # +1 and -1 sample on 5 problems each: +0 points, noise
    64: pattern(*[2, 4] * 15),  # +1 or +3 samples on every problem: +50 points
}


def pass1(outcomes: dict[str, list[bool]]) -> float:
    return float(np.mean([ok for samples in outcomes.values() for ok in samples]))


def shifted(correct: int) -> dict[str, list[bool]]:
    """`correct` of 4 samples right on every problem: Pass@1 correct / 4."""
    return pattern(*[correct] * 30)


def write_run(run_dir: Path, rank: int, final: dict[str, list[bool]], seed: int = 0, hours: float = 2.0) -> None:
    base, end = pass1(BASELINE), pass1(final)
    summary = {
        "status": "completed",
        "global_step": 2,
        "lora": {"rank": rank, "alpha": 2 * rank},
        "metrics": {"eval/b/pass@1": end, "baseline/b/pass@1": base, "delta/b/pass@1": end - base},
        "budget": {"device": "cuda", "device_name": "NVIDIA A40", "device_hours": hours, "cost_usd": hours * 0.44},
    }
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(
            {"model": {"name": "tiny"}, "lora": {"rank": rank}, "trainer": {"seed": seed, "learning_rate": 1e-5}}
        )
    )
    write_samples(run_dir / "eval" / "baseline" / "b.jsonl", BASELINE)
    write_samples(run_dir / "eval" / "final" / "b.jsonl", final)


@pytest.fixture
def sweep(tmp_path) -> Path:
    """One run per arm, the paper's design."""
    for rank, final in FINALS.items():
        write_run(tmp_path / "sweep" / f"rank{rank}", rank, final)
    return tmp_path / "sweep"


def test_one_run_per_arm_marks_nothing_and_says_why(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert analysis_main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "The variation between training seeds is not measured, so these changes get no *" in printed
    assert "| init | benchmark | comparison | runs | delta | 95% interval over runs | df | marked |" in printed

    rows = pd.read_csv(out / "significance.csv", index_col="init")
    assert list(rows.columns) == [
        "benchmark",
        "comparison",
        "delta",
        "ci_low",
        "ci_high",
        "df",
        "p",
        "p_holm",
        "test",
        "runs",
        "runs_reference",
        "marked",
        "eval_noise_ci_low",
        "eval_noise_ci_high",
        "problems",
        "beyond_eval_noise",
        "left_out",  # the runs of the two arms the comparison does not count (failed, still running...)
    ]
    rows = rows.set_index("comparison")
    assert list(rows.index) == ["r=8 vs baseline", "r=64 vs baseline", "r=64 vs r=8"]
    assert list(rows["delta"]) == pytest.approx([0.0, 50.0, 50.0])
    assert not rows["marked"].any() and rows["ci_low"].isna().all() and set(rows["test"]) == {"none"}
    # the problem bootstrap of these runs stays, under its own name
    assert list(rows["beyond_eval_noise"]) == [False, True, True] and list(rows["problems"]) == [30, 30, 30]
    assert rows.loc["r=8 vs baseline", "eval_noise_ci_low"] < 0 < rows.loc["r=8 vs baseline", "eval_noise_ci_high"]
    assert (
        25
        < rows.loc["r=64 vs baseline", "eval_noise_ci_low"]
        < 50
        < rows.loc["r=64 vs baseline", "eval_noise_ci_high"]
    )
    assert r"\toprule" in (out / "significance.tex").read_text()

    table = pd.read_csv(out / "b_pass1.csv", index_col="init")
    assert table.loc["tiny", "r=64"] == f"75.0 (+50.0{EVAL_NOISE})" and table.loc["tiny", "r=8"] == "25.0 (+0.0)"
    assert list(table["r=64_marked"]) == [False] and list(table["r=64_runs"]) == [1]
    assert table.loc["tiny", "r=64_eval_noise_ci_low"] == pytest.approx(
        rows.loc["r=64 vs baseline", "eval_noise_ci_low"]
    )
    assert not (out / "runs_needed.csv").exists()  # one run a side: no spread to plan from
    assert "path" in pd.read_csv(out / "runs.csv").columns


@pytest.fixture
def seeded_sweep(tmp_path) -> Path:
    """Three seeds per arm: r=8 stays at the baseline (25, 25, 25.8%), r=64 reaches 75, 75, 74.2%."""
    folder = tmp_path / "seeded"
    for seed, final in enumerate(R8_SEEDS):
        write_run(folder / f"rank8-seed{seed}", 8, final, seed=seed)
    for seed, final in enumerate(R64_SEEDS):
        write_run(folder / f"rank64-seed{seed}", 64, final, seed=seed)
    return folder


R8_SEEDS = [BASELINE, BASELINE, pattern(2, *[1] * 29)]
R64_SEEDS = [shifted(3), shifted(3), pattern(2, *[3] * 29)]


def test_three_seeds_a_side_decide_the_mark_with_welch_and_holm(seeded_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert analysis_main([str(seeded_sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = pd.read_csv(out / "significance.csv").set_index("comparison")
    r8, r64 = [pass1(final) for final in R8_SEEDS], [pass1(final) for final in R64_SEEDS]
    welch = stats.ttest_ind(r64, r8, equal_var=False)
    pair = rows.loc["r=64 vs r=8"]
    assert pair["delta"] == pytest.approx((np.mean(r64) - np.mean(r8)) * 100)
    assert (pair["ci_low"], pair["ci_high"]) == pytest.approx(tuple(np.array(welch.confidence_interval()) * 100))
    assert pair["df"] == pytest.approx(welch.df) and pair["test"] == "welch"
    assert (pair["runs"], pair["runs_reference"]) == (3, 3)
    assert list(rows["marked"]) == [False, True, True]  # r=8 did not move; r=64 did, and beats r=8
    assert list(rows["test"][:2]) == ["t + baseline noise"] * 2
    assert (rows["p_holm"] >= rows["p"]).all()
    table = pd.read_csv(out / "b_pass1.csv", index_col="init")
    assert table.loc["tiny", "r=64"] == "74.7 (+49.7*); runs 75.0, 75.0, 74.2"
    assert list(table["r=64_marked"]) == [True] and list(table["r=8_marked"]) == [False]
    assert table.loc["tiny", "r=64_delta_ci_low"] == pytest.approx(rows.loc["r=64 vs baseline", "ci_low"])
    assert "Holm's correction over the 3 comparisons of this table" in printed
    needed = pd.read_csv(out / "runs_needed.csv", index_col="init").iloc[0]  # a clear difference: enough runs
    assert needed["comparison"] == "r=64 vs r=8" and needed["runs_per_arm"] <= 3 and needed["more_runs"] == 0
    assert f"Runs needed:\n- tiny r=64 vs r=8: {pair['delta']:+.1f} points (3 + 3 runs" in printed
    assert "the runs at hand suffice. With 3 runs on a side the spread itself is uncertain" in printed


def test_min_effect_plans_for_a_given_difference_with_its_cost(seeded_sweep, tmp_path, capsys):
    """Half a point between arms whose runs spread by about half a point: many more runs, at the 2
    A40-hours and $0.88 each run recorded."""
    out = tmp_path / "out"
    assert analysis_main([str(seeded_sweep), "--out", str(out), "--min-effect", "0.5"]) == 0
    needed = pd.read_csv(out / "runs_needed.csv").iloc[0]
    assert needed["effect"] == pytest.approx(0.5) and needed["more_runs"] == 2 * (needed["runs_per_arm"] - 3) > 10
    assert needed["device_hours"] == pytest.approx(2.0 * needed["more_runs"])
    assert needed["cost_usd"] == pytest.approx(0.88 * needed["more_runs"])
    printed = capsys.readouterr().out
    assert f"to detect 0.5 points (--min-effect): about {needed['runs_per_arm']} runs per arm for 80% power" in printed
    assert f"{needed['more_runs']} more runs, {needed['device_hours']:.0f} A40-hours" in printed


def test_a_seed_lacking_per_sample_records_removes_only_the_evaluation_noise_column(sweep):
    """A second r=64 seed without its final records: an evaluation-noise interval from the other seed alone
    would not be the cell the table shows, so r=64 gets none; the seed level needs only the summaries."""
    from analysis.sources import load_local

    write_run(sweep / "rank64-seed1", 64, BASELINE, seed=1)
    (sweep / "rank64-seed1" / "eval" / "final" / "b.jsonl").unlink()
    runs, _ = load_local([str(sweep)])
    tables = {table.name: table for table in all_tables(runs, 0.02)}
    significance = tables["significance"].csv.set_index("comparison")
    assert math.isnan(significance.loc["r=64 vs baseline", "eval_noise_ci_low"])
    assert significance.loc["r=64 vs baseline", "runs"] == 2 and significance.loc["r=64 vs baseline", "ci_low"] < 0
    pass1_csv = tables["b/pass@1"].csv
    assert math.isnan(pass1_csv.loc["tiny", "r=64_eval_noise_ci_low"])
    assert pass1_csv.loc["tiny", "r=64_delta"] == pytest.approx(25.0)  # the summaries' mean still counts: (50 + 0) / 2
    assert tables["b/pass@1"].frame.loc["tiny", "r=64"] == "50.0 (+25.0); runs 75.0, 25.0"


def test_a_sweep_over_learning_rates_compares_within_each_setting(tmp_path):
    from analysis.sources import load_local

    for lr, final in ((1e-5, FINALS[8]), (1e-4, FINALS[64])):
        run_dir = tmp_path / f"lr{lr}"
        write_run(run_dir, 8, final)
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["trainer"]["learning_rate"] = lr
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    runs, _ = load_local([str(tmp_path)])
    rows = next(table for table in all_tables(runs, 0.02) if table.name == "significance").csv
    assert list(rows.columns[:3]) == ["setting", "benchmark", "comparison"]
    assert list(rows["setting"]) == ["learning_rate=1e-05", "learning_rate=0.0001"]
    assert list(rows["comparison"]) == ["r=8 vs baseline"] * 2
    assert list(rows["delta"]) == pytest.approx([0.0, 50.0])


def test_damaged_run_folders_are_named_and_left_out(seeded_sweep, tmp_path, capsys):
    """A job killed while writing: one run's summary.json is cut short, another's per-sample file ends in a
    partial line. Each file is named in one line; those runs are gaps; the rest is analysed."""
    summary = seeded_sweep / "rank64-seed2" / "summary.json"
    summary.write_text(summary.read_text()[:40])
    samples = seeded_sweep / "rank8-seed1" / "eval" / "final" / "b.jsonl"
    samples.write_text(samples.read_text() + '{"problem_id": "p00", "sam')
    out = tmp_path / "out"
    assert analysis_main([str(seeded_sweep), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    damaged = [line for line in captured.err.splitlines() if line.startswith("Damaged, left out")]
    assert len(damaged) == 2
    assert any(str(summary) in line and "not valid JSON" in line for line in damaged)
    assert any(str(samples) in line and "line 121" in line for line in damaged)
    runs = pd.read_csv(out / "runs.csv").set_index("run")
    assert runs.loc["rank64-seed2", "status"] == "damaged" and runs.loc["rank64-seed2", "init"] == "tiny"
    assert runs.loc["rank64-seed2", "rank"] == 64 and math.isnan(runs.loc["rank8-seed1", "eval/b/pass@1"])
    rows = pd.read_csv(out / "significance.csv").set_index("comparison")
    assert (rows.loc["r=64 vs r=8", "runs"], rows.loc["r=64 vs r=8", "runs_reference"]) == (2, 2)
    table = pd.read_csv(out / "b_pass1.csv", index_col="init")
    assert table.loc["tiny", "r=64"] == "75.0 (+50.0) ‡; runs 75.0, 75.0; 2 of 3 runs"  # not read as complete
    assert "tiny r=64 seed 2: damaged (its files could not be read)" in captured.out

    for run in seeded_sweep.iterdir():  # every run of r=64 damaged: a marked gap, as for a failed run
        if run.name.startswith("rank64"):
            (run / "summary.json").write_text("{")
    assert analysis_main([str(seeded_sweep), "--out", str(out)]) == 0
    assert pd.read_csv(out / "b_pass1.csv", index_col="init").loc["tiny", "r=64"] == f"{GAP} (damaged)"


def logged_run(folder: Path, rank: int, final: dict[str, list[bool]], seed: int = 0) -> OfflineWandbRun:
    """A real offline W&B run holding what a finished run of this arm logs (its summary keys, as
    RunRecord/Evaluator write them), read back as the public API would give it."""
    import wandb

    folder.mkdir(exist_ok=True)
    run = wandb.init(
        mode="offline",
        dir=folder,
        name=f"rank{rank}-{seed}",
        group="seeded",
        tags=["tiny", str(rank)],  # as tracking.tags_for
        config={"model": {"name": "tiny"}, "trainer": {"seed": seed}},
        settings=wandb.Settings(silent=True),
    )
    run.summary.update(
        {
            "status": "completed",
            "lora/rank": rank,
            "eval/b/pass@1": pass1(final),
            "baseline/b/pass@1": pass1(BASELINE),
            "baseline/b/se_pass@1": math.sqrt(evaluation_variance(BASELINE)),  # as the Evaluator logs it
        }
    )
    run.finish()
    return OfflineWandbRun(Path(run.dir).parent)


def test_the_wandb_source_gives_the_seed_level_verdicts_without_the_evaluation_noise(tmp_path, capsys):
    logged = tmp_path / "wandb-runs"
    api = OfflineWandbApi(
        [logged_run(logged, 8, final, seed) for seed, final in enumerate(R8_SEEDS)]
        + [logged_run(logged, 64, final, seed) for seed, final in enumerate(R64_SEEDS)]
    )
    out = tmp_path / "out"
    assert analysis_main(["--wandb", "me/rlvr-sweeps", "--out", str(out)], api=api) == 0
    assert NO_INTERVALS_WANDB in capsys.readouterr().out
    rows = pd.read_csv(out / "significance.csv").set_index("comparison")
    assert rows.loc["r=64 vs r=8", "marked"] and rows["eval_noise_ci_low"].isna().all()
    table = pd.read_csv(out / "b_pass1.csv", index_col="init")
    assert table.loc["tiny", "r=64"] == "74.7 (+49.7*); runs 75.0, 75.0, 74.2"


def edit(run_dir: Path, summary: dict | None = None, config: dict | None = None) -> None:
    """Change a run's summary.json and config.yaml (one level deep: {"trainer": {"beta": 0.04}} sets one key)."""
    if summary:
        path = run_dir / "summary.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **summary}))
    if config:
        path = run_dir / "config.yaml"
        loaded = yaml.safe_load(path.read_text())
        for section, values in config.items():
            loaded.setdefault(section, {}).update(values)
        path.write_text(yaml.safe_dump(loaded))


def test_a_table_names_the_runs_it_leaves_out_and_never_reads_a_cell_as_complete(seeded_sweep, tmp_path, capsys):
    """One r=64 seed failed (out of memory), one r=8 seed is still running: each cell averages the others, says
    '2 of 3 runs' with its flag, names what it left out and why, and significance.csv does too."""
    error = "Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: CUDA out of memory."
    edit(seeded_sweep / "rank64-seed1", summary={"status": "failed", "error": error})
    edit(seeded_sweep / "rank8-seed2", summary={"status": "running"})
    out = tmp_path / "out"
    assert analysis_main([str(seeded_sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "b_pass1.csv", index_col="init")
    assert table.loc["tiny", "r=64"].endswith("; 2 of 3 runs") and "‡" in table.loc["tiny", "r=64"]
    assert table.loc["tiny", "r=8"].endswith("; 2 of 3 runs")
    assert "tiny r=64 seed 1: failed (torch.OutOfMemoryError: CUDA out of memory.)" in printed
    assert "tiny r=8 seed 2: still running" in printed
    rows = pd.read_csv(out / "significance.csv").set_index("comparison")
    assert rows.loc["r=64 vs r=8", "runs"] == 2 and rows.loc["r=64 vs r=8", "runs_reference"] == 2
    left_out = rows.loc["r=64 vs r=8", "left_out"]
    assert "r=64 seed 1: failed (torch.OutOfMemoryError" in left_out and "r=8 seed 2: still running" in left_out


def test_runs_of_other_settings_are_never_pooled_as_seeds(seeded_sweep, tmp_path, capsys):
    """Seed 2 of each arm ran with trainer.beta 0.04 and another data set, a key the analysis knows nothing of: the
    runs' own configs split the tables, each titled by the keys that define it."""
    for rank in (8, 64):
        edit(seeded_sweep / f"rank{rank}-seed2", config={"trainer": {"beta": 0.04}, "data": {"name": "deepscaler"}})
        for seed in (0, 1):
            edit(
                seeded_sweep / f"rank{rank}-seed{seed}", config={"trainer": {"beta": 0.0}, "data": {"name": "open_rs"}}
            )
    out = tmp_path / "out"
    assert analysis_main([str(seeded_sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "(data.name=deepscaler, trainer.beta=0.04)" in printed and "(data.name=open_rs, trainer.beta=0.0)" in printed
    )
    pooled = pd.read_csv(out / "b_pass1_datapnamedeepscaler_trainerpbeta0p04.csv", index_col="init")
    assert pooled.loc["tiny", "r=64_runs"] == 1 and pooled.loc["tiny", "r=8_runs"] == 1
    rows = pd.read_csv(out / "significance.csv")
    assert set(rows["setting"]) == {"data.name=deepscaler, trainer.beta=0.04", "data.name=open_rs, trainer.beta=0.0"}


def test_runs_trained_under_several_versions_and_tables_that_mix_versions_are_flagged(seeded_sweep, tmp_path, capsys):
    edit(seeded_sweep / "rank8-seed0", summary={"mixed_versions": {"trl": ["1.13.0", "1.16.0"]}})
    for run in seeded_sweep.iterdir():
        edit(run, summary={"versions": {"trl": "1.13.0" if run.name == "rank64-seed2" else "1.16.0"}})
    assert analysis_main([str(seeded_sweep), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "Trained under more than one version" in printed and "tiny r=8 seed 0 (trl 1.13.0 then 1.16.0)" in printed
    assert "different code or library versions: trl 1.16.0 (5 runs), 1.13.0 (1 runs)" in printed
