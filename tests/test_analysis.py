"""python -m analysis: tables and plots from run folders or from W&B, the same either way."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.__main__ import main as analysis_main
from analysis.comparisons import EVAL_NOISE
from analysis.rank_lr import BEST, lr_labels
from analysis.render import GAP
from analysis.sources import load_local, load_wandb, run_row
from analysis.tables import all_tables, metric_table
from conftest import ROOT, OfflineWandbApi, OfflineWandbRun

pytestmark = pytest.mark.xdist_group("tiny_sweep")


@pytest.fixture(scope="module")
def sweep(tiny_sweep) -> Path:
    """A real offline sweep (conftest.tiny_sweep): 2 ranks x 2 seeds, a failed run and one without evaluation."""
    return tiny_sweep.folder


def recomputed_pass1(run_dir: Path, benchmark: str = "sums_heldout", phase: str = "final") -> float:
    samples = [json.loads(line) for line in (run_dir / "eval" / phase / f"{benchmark}.jsonl").read_text().splitlines()]
    return sum(s["correct"] for s in samples) / len(samples)


def test_table_cells_equal_a_recomputation_from_the_run_records(sweep):
    runs, _ = load_local([str(sweep)])
    table = metric_table(runs, "sums_heldout", "pass@1", collapse_margin=0.02)
    for rank in (8, 64):
        run_dirs = [
            d
            for d in sweep.iterdir()
            if (d / "summary.json").exists()
            and json.loads((d / "summary.json").read_text())["lora"]["rank"] == rank
            and any(o.startswith("trainer.seed=") for o in json.loads((d / "summary.json").read_text())["overrides"])
        ]
        assert len(run_dirs) == 2
        expected = np.mean([recomputed_pass1(d) for d in run_dirs])  # from the per-sample records
        assert table.values.loc["tiny_math", rank] == pytest.approx(expected)
        baseline = np.mean([recomputed_pass1(d, phase="baseline") for d in run_dirs])
        assert table.values.loc["tiny_math", "baseline"] == pytest.approx(baseline)
        values = sorted(recomputed_pass1(d) * 100 for d in run_dirs)  # two seeds: their own values
        shown = table.frame.loc["tiny_math", f"r={rank}"].split("; runs ")[1]
        assert sorted(float(v) for v in shown.split(", ")) == pytest.approx(values, abs=0.051)


def test_failed_runs_and_missing_metrics_are_marked_gaps(sweep):
    runs, _ = load_local([str(sweep)])
    table = metric_table(runs, "sums_heldout", "pass@1", collapse_margin=0.02)
    assert table.frame.loc["tiny_math", "r=256"] == f"{GAP} (failed)"
    assert math.isnan(table.values.loc["tiny_math", 256])
    assert table.frame.loc["tiny_math", "full FT"] == f"{GAP} (missing)"  # trained without evaluation
    assert any("r=256: failed" in note for note in table.notes)


def test_cli_writes_markdown_latex_csv_and_plots(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert analysis_main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| init | baseline | r=8 | r=64 | r=256 | full FT |" in printed and "collapse" in printed
    assert r"\toprule" in (out / "sums_heldout_pass1.tex").read_text()
    csv = pd.read_csv(out / "sums_heldout_pass1.csv", index_col="init")
    per_rank = ("runs", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high", "delta_df", "marked")
    assert list(csv.columns) == [
        "baseline",
        "r=8",
        "r=64",
        "r=256",
        "full FT",
        *(
            f"{rank}_{column}"
            for rank in ("r=8", "r=64", "r=256", "full FT")
            for column in (*per_rank, "eval_noise_ci_low", "eval_noise_ci_high")
        ),
    ]
    assert list(csv["r=8_runs"]) == [2] and list(csv["r=256_runs"]) == [0]  # two seeds; the failed run: none
    for suffix in ("md", "tex", "csv"):
        assert (out / f"significance.{suffix}").exists()
    assert len(pd.read_csv(out / "runs.csv")) == 6
    for png in (
        "reward_curves.png",
        "completion_length_curves.png",
        "sums_heldout_pass1_vs_rank.png",
        "sums_heldout_pass1_vs_cost.png",
    ):
        assert (out / png).stat().st_size > 10_000


def test_the_wandb_source_gives_the_same_tables_as_the_run_folders(sweep):
    local_runs, local_curves = load_local([str(sweep)])
    offline = [next((d / "wandb").glob("offline-run-*")) for d in sweep.iterdir() if (d / "wandb").is_dir()]
    api = OfflineWandbApi([OfflineWandbRun(d) for d in offline])
    wandb_runs, wandb_curves = load_wandb("me/rlvr-sweeps", group="tiny_sweep", api=api)
    assert len(wandb_runs) == len(local_runs) == 6
    local_tables, remote_tables = all_tables(local_runs, 0.02), all_tables(wandb_runs, 0.02)
    assert [t.name for t in local_tables] == [t.name for t in remote_tables]
    assert "significance" in {t.name for t in remote_tables}  # the seed level needs only the summaries
    for local, remote in zip(local_tables, remote_tables):
        # only the evaluation noise needs the per-sample records of the run folders
        noise = "evaluation noise, these runs"
        pd.testing.assert_frame_equal(
            local.frame.drop(columns=noise, errors="ignore"), remote.frame.drop(columns=noise, errors="ignore")
        )
    key = ["run", "step"]
    merged = local_curves.merge(wandb_curves.drop_duplicates(key, keep="last"), on=key, suffixes=("", "_wandb"))
    assert len(merged) == len(local_curves) and (merged["reward"] == merged["reward_wandb"]).all()


def test_collapse_rule_and_bootstrap_interval():
    rows = [
        {
            "run": f"{init}{seed}",
            "init": init,
            "rank": 8,
            "status": "completed",
            "seed": seed,
            "baseline/b/pass@1": base,
            "eval/b/pass@1": final,
        }
        for init, base, final in (("instruct", 0.30, 0.35), ("math", 0.50, 0.40))
        for seed in (0, 1)
    ]
    table = metric_table(pd.DataFrame(rows), "b", "pass@1", collapse_margin=0.02)
    assert "†" in table.frame.loc["math", "r=8"] and "†" not in table.frame.loc["instruct", "r=8"]
    assert any("Collapsed: math r=8" in note for note in table.notes)
    assert table.frame.loc["math", "r=8"] == "40.0 (-10.0) †; runs 40.0, 40.0"


def test_log_to_wandb_publishes_tables_and_plots_offline(sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    assert analysis_main([str(sweep), "--out", str(out), "--log-to-wandb"]) == 0
    (offline,) = (out / "wandb").glob("offline-run-*")
    records = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(offline)], capture_output=True, text=True
    ).stdout
    assert "tables/sums_heldout/pass@1" in records and "plots/reward_curves" in records


def test_unreachable_wandb_gets_one_clear_message(tmp_path):
    env = {**os.environ, "WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-m", "analysis", "--wandb", "me/rlvr-sweeps", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        "Could not read the runs of me/rlvr-sweeps from W&B" in done.stderr
        and "python -m analysis runs/" in done.stderr
    )


def test_a_folder_that_does_not_exist_is_named(tmp_path, capsys):
    missing = str(tmp_path / "runs" / "does-not-exist")
    assert analysis_main([missing, "--out", str(tmp_path / "out")]) == 2
    assert f"{missing}: no such folder" in capsys.readouterr().err


# --- rank x learning rate: hand-written run folders (no training) -----------------------------------


def pattern(*counts: int, n: int = 4) -> dict[str, list[bool]]:
    """Problems p00, p01, ... with counts[i] correct samples out of n."""
    return {f"p{i:02d}": [s < c for s in range(n)] for i, c in enumerate(counts)}


def write_run(
    folder: Path, rank: int, lr: float, seed: int = 0, final: dict | None = None, variant: str | None = None
) -> None:
    """A run folder as the analysis reads it: summary.json, config.yaml and the per-sample records
    eval/<phase>/b.jsonl (benchmark b); no `final` = a failed run. With `variant`, the config has the
    new lora keys (the optimizer's learning rate in lora.effective_learning_rate, trainer.learning_rate
    another input value); without, it is an older run's config."""

    def pass1(outcomes):
        return float(np.mean([ok for samples in outcomes.values() for ok in samples]))

    run_dir = folder / f"r{rank}-lr{lr}-s{seed}{'-' + variant if variant else ''}"
    summary = {"status": "failed" if final is None else "completed", "lora": {"rank": rank, "alpha": 2 * rank}}
    if final is not None:
        summary["metrics"] = {"eval/b/pass@1": pass1(final), "baseline/b/pass@1": pass1(RL_BASELINE)}
    lora = {"rank": rank}
    trainer = {"seed": seed, "learning_rate": lr}
    if variant:
        lora.update(variant=variant, lr_rule="sqrt_rank", effective_learning_rate=lr)
        trainer["learning_rate"] = 0.5
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "tiny"}, "lora": lora, "trainer": trainer}))
    for phase, outcomes in (("baseline", RL_BASELINE), ("final", final)):
        if final is not None:
            path = run_dir / "eval" / phase / "b.jsonl"
            path.parent.mkdir(parents=True)
            path.write_text(
                "".join(
                    json.dumps({"problem_id": problem, "sample": i, "correct": ok}) + "\n"
                    for problem, samples in outcomes.items()
                    for i, ok in enumerate(samples)
                )
            )


RL_BASELINE = pattern(*[1] * 30)  # 1 of 4 on every problem: Pass@1 25%
NOISE = pattern(*[2, 0] * 5, *[1] * 20)  # +1 and -1 sample on 5 problems each: 25%, +0.0 not significant
HALF, THREE_QUARTERS = pattern(*[2] * 30), pattern(*[3] * 30)  # 50%, 75% on every problem
MIXED = pattern(*[2, 4] * 15)  # 75%: +50 points


@pytest.fixture
def rank_lr_sweep(tmp_path) -> Path:
    """1 init x ranks 8, 64 x learning rates 1e-5, 1e-4; r=8 at 1e-4 has two seeds (50% and 75%), r=256
    only failed at 1e-5. Best: r=8 at 1e-4 (62.5 > 25.0), r=64 at 1e-5 (75.0 > 50.0)."""
    folder = tmp_path / "rank_vs_lr"
    write_run(folder, 8, 1e-5, final=NOISE)  # an older run's config: trainer.learning_rate
    write_run(folder, 8, 1e-4, seed=0, final=HALF, variant="lora")
    write_run(folder, 8, 1e-4, seed=1, final=THREE_QUARTERS, variant="lora")
    write_run(folder, 64, 1e-5, final=MIXED, variant="lora")
    write_run(folder, 64, 1e-4, final=HALF, variant="lora")
    write_run(folder, 256, 1e-5, final=None, variant="lora")
    return folder


def rank_lr_table(runs: pd.DataFrame):
    (table,) = [t for t in all_tables(runs, 0.02) if "rank_x_lr" in t.name]
    return table


def test_run_row_reads_the_optimizer_learning_rate_and_the_adapter_variant():
    new = {"lora": {"rank": 8, "variant": "dora", "lr_rule": "sqrt_rank", "effective_learning_rate": 2e-5}}
    row = run_row({}, {**new, "trainer": {"learning_rate": 1e-5}}, "new")
    assert (row["learning_rate"], row["base_learning_rate"], row["variant"], row["lr_rule"]) == (
        2e-5,
        1e-5,
        "dora",
        "sqrt_rank",
    )
    old = run_row(
        {}, {"lora": {"rank": 8, "effective_learning_rate": None}, "trainer": {"learning_rate": 1e-5}}, "old"
    )
    assert (old["learning_rate"], old["base_learning_rate"], old["variant"], old["lr_rule"]) == (
        1e-5,
        1e-5,
        "lora",
        "fixed",
    )


def test_lr_labels_are_compact_exact_and_distinct():
    assert lr_labels([3e-6, 1e-5]) == {3e-6: "lr=3e-06", 1e-5: "lr=1e-05"}
    assert lr_labels([1e-5, 1.2e-5]) == {1e-5: "lr=1.0e-05", 1.2e-5: "lr=1.2e-05"}
    assert lr_labels([1.5e-5, 5e-5, 1.5e-4]) == {1.5e-5: "lr=1.5e-05", 5e-5: "lr=5.0e-05", 1.5e-4: "lr=1.5e-04"}


def test_rank_x_lr_table_cells_best_learning_rates_and_significance(rank_lr_sweep):
    runs, _ = load_local([str(rank_lr_sweep)])
    table = rank_lr_table(runs)
    assert table.name == "b/pass@1_rank_x_lr/tiny" and table.index_label == "rank"
    assert list(table.frame.index) == ["r=8", "r=64", "r=256"]
    assert list(table.frame.columns) == ["lr=1e-05", "lr=1e-04"]  # ascending
    # hand computation: means over seeds of the summaries' Pass@1, baseline 25%
    assert table.values.loc[8, 1e-5] == pytest.approx(0.25) and table.values.loc[8, 1e-4] == pytest.approx(0.625)
    assert table.values.loc[64, 1e-5] == pytest.approx(0.75) and table.values.loc[64, 1e-4] == pytest.approx(0.50)
    assert table.frame.loc["r=8", "lr=1e-05"] == "25.0 (+0.0)"  # noise: within the evaluation noise, no mark
    assert table.frame.loc["r=8", "lr=1e-04"] == f"62.5 (+37.5); runs 50.0, 75.0{BEST}"  # 2 runs: never marked
    # one run each: beyond the evaluation noise of that run (°), never a seed-level *
    assert table.frame.loc["r=64", "lr=1e-05"] == f"75.0 (+50.0{EVAL_NOISE}){BEST}"
    assert table.frame.loc["r=64", "lr=1e-04"] == f"50.0 (+25.0{EVAL_NOISE})"
    assert list(table.frame.loc["r=256"]) == [f"{GAP} (failed)", f"{GAP} (no runs)"]
    assert [sum(BEST in cell for cell in row) for _, row in table.frame.iterrows()] == [1, 1, 0]
    assert any(BEST.strip() in note and "best learning rate" in note for note in table.notes)
    assert any("r=256 lr=1e-05: failed" in note for note in table.notes)
    assert "Untrained baseline: 25.0%." in table.notes


def test_rank_x_lr_adds_no_significance_rows(rank_lr_sweep):
    """The per-learning-rate settings already compare each rank with the baseline: counted once."""
    runs, _ = load_local([str(rank_lr_sweep)])
    tables = {t.name: t for t in all_tables(runs, 0.02)}
    assert {"b/pass@1/learning_rate1e-05", "b/pass@1/learning_rate0.0001"} <= set(tables)
    rows = tables["significance"].csv
    assert sorted(zip(rows["setting"], rows["comparison"])) == sorted(
        [
            ("learning_rate=1e-05", "r=8 vs baseline"),
            ("learning_rate=1e-05", "r=64 vs baseline"),
            ("learning_rate=1e-05", "r=64 vs r=8"),
            ("learning_rate=0.0001", "r=8 vs baseline"),
            ("learning_rate=0.0001", "r=64 vs baseline"),
            ("learning_rate=0.0001", "r=64 vs r=8"),
        ]
    )


def test_cli_writes_the_rank_x_lr_table_and_heatmap(rank_lr_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert analysis_main([str(rank_lr_sweep), "--out", str(out)]) == 0
    assert "| rank | lr=1e-05 | lr=1e-04 |" in capsys.readouterr().out
    csv = pd.read_csv(out / "b_pass1_rank_x_lr_tiny.csv", index_col="rank")
    assert list(csv.columns) == [
        *(
            f"lr={lr}_{c}"
            for lr in ("1e-05", "1e-04")
            for c in ("pass1", "runs", "delta", "delta_ci_low", "delta_ci_high", "marked")
        ),
        "best_learning_rate",
    ]
    assert list(csv.index) == ["r=8", "r=64", "r=256"]
    assert list(csv["lr=1e-04_pass1"][:2]) == pytest.approx([62.5, 50.0])
    assert list(csv["lr=1e-05_delta"][:2]) == pytest.approx([0.0, 50.0])
    assert list(csv["lr=1e-04_runs"]) == [2, 1, 0] and not csv["lr=1e-04_marked"].any()
    assert csv.loc["r=8", "lr=1e-04_delta_ci_low"] < 0 < csv.loc["r=8", "lr=1e-04_delta_ci_high"]  # 2 runs: wide
    assert math.isnan(csv.loc["r=64", "lr=1e-04_delta_ci_low"])  # one run: the seeds' spread is not measured
    assert list(csv["best_learning_rate"][:2]) == [1e-4, 1e-5] and math.isnan(csv.loc["r=256", "best_learning_rate"])
    tex = (out / "b_pass1_rank_x_lr_tiny.tex").read_text()
    assert r"rank & lr=1e-05 & lr=1e-04 \\" in tex and r"$\triangle$" in tex
    assert (out / "rank_x_lr_b.png").stat().st_size > 10_000
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.columns[:8]) == [
        "run",
        "init",
        "rank",
        "variant",
        "alpha",
        "learning_rate",
        "base_learning_rate",
        "lr_rule",
    ]


def test_one_learning_rate_gives_no_rank_x_lr_table(tmp_path, capsys):
    """Only completed runs count: a second learning rate whose run failed adds no column to compare."""
    folder = tmp_path / "one_lr"
    write_run(folder, 8, 1e-5, final=NOISE)
    write_run(folder, 64, 1e-5, final=MIXED)
    write_run(folder, 64, 1e-4, final=None)
    runs, _ = load_local([str(folder)])
    assert not [t for t in all_tables(runs, 0.02) if "rank_x_lr" in t.name]
    out = tmp_path / "out"
    assert analysis_main([str(folder), "--out", str(out)]) == 0
    assert not list(out.glob("*rank_x_lr*"))


def test_adapter_variants_get_rank_x_lr_tables_of_their_own(tmp_path):
    folder = tmp_path / "variants"
    for variant, finals in (("lora", (NOISE, HALF)), ("dora", (MIXED, THREE_QUARTERS))):
        for lr, final in zip((1e-5, 1e-4), finals):
            write_run(folder, 8, lr, final=final, variant=variant)
    runs, _ = load_local([str(folder)])
    tables = {t.name: t for t in all_tables(runs, 0.02)}
    assert "b/pass@1/learning_rate1e-05_variantdora" in tables
    dora, lora = tables["b/pass@1_rank_x_lr/tiny/variantdora"], tables["b/pass@1_rank_x_lr/tiny/variantlora"]
    assert list(dora.values.loc[8]) == pytest.approx([0.75, 0.75]) and list(lora.values.loc[8]) == pytest.approx(
        [0.25, 0.50]
    )
    assert dora.frame.loc["r=8", "lr=1e-05"].endswith(BEST) and lora.frame.loc["r=8", "lr=1e-04"].endswith(BEST)
    assert "variant=dora" in dora.title
