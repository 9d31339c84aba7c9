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

from analysis.__main__ import main as analysis_main
from analysis.sources import load_local, load_wandb
from analysis.tables import GAP, all_tables, bootstrap_ci, metric_table
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
        assert "[" in table.frame.loc["tiny_math", f"r={rank}"]  # two seeds: a bootstrap interval


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
    assert list(csv.columns) == [
        "baseline",
        "r=8",
        "r=64",
        "r=256",
        "full FT",
        "r=8_delta",
        "r=8_delta_ci_low",
        "r=8_delta_ci_high",
        "r=64_delta",
        "r=64_delta_ci_low",
        "r=64_delta_ci_high",
        "r=256_delta",
        "r=256_delta_ci_low",
        "r=256_delta_ci_high",
        "full FT_delta",
        "full FT_delta_ci_low",
        "full FT_delta_ci_high",
    ]
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
    for local, remote in zip(all_tables(local_runs, 0.02), all_tables(wandb_runs, 0.02)):
        assert local.name == remote.name
        pd.testing.assert_frame_equal(
            local.frame.replace(r"\*\)", ")", regex=True), remote.frame
        )  # * needs per-sample records
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
    assert table.frame.loc["math", "r=8"].endswith("†") and not table.frame.loc["instruct", "r=8"].endswith("†")
    assert any("Collapsed: math r=8" in note for note in table.notes)
    low, high = bootstrap_ci([0.1, 0.2, 0.3, 0.4])
    assert 0.1 <= low < 0.25 < high <= 0.4


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
