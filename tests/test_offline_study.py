"""The README's offline study as a user runs it (scripts/offline_study.sh), in miniature: 2 initializations
(tiny, and tiny after SFT) x 2 ranks x 2 seeds on the small task, then the analysis with intervals."""

from __future__ import annotations

import os
import subprocess

import pandas as pd
import pytest

from conftest import ROOT, launch_env

pytestmark = pytest.mark.e2e


def test_offline_study_miniature_sweep_then_analysis(tmp_path, model_cache):
    runs = tmp_path / "runs"
    env = launch_env(
        runs,
        model_cache,
        {
            "PYTHON": os.environ.get("PYTHON", str(ROOT / ".venv" / "bin" / "python")),
            "MODELS": "tiny,tiny_math",
            "RANKS": "8,64",
            "SEEDS": "0,1",
            "MINUTES": "5",
        },
    )
    miniature = [
        "data=sums",
        "eval=[sums_heldout]",
        "budget.max_steps=3",
        "trainer.max_completion_length=16",
        "logger=none",
    ]
    done = subprocess.run(
        [str(ROOT / "scripts" / "offline_study.sh"), *miniature], env=env, capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| init | baseline | r=8 | r=64 |" in done.stdout and "offline study: sweep" in done.stdout
    out = runs / "offline_study" / "analysis"
    table = pd.read_csv(out / "sums_heldout_pass1.csv", index_col="init")
    assert list(table.index) == ["tiny", "tiny_math"] and list(table.columns)[:3] == ["baseline", "r=8", "r=64"]
    assert table[["baseline", "r=8", "r=64"]].notna().all().all()  # every cell measured
    assert {"r=8_delta_ci_low", "r=8_delta_ci_high"} <= set(table.columns)  # with per-problem intervals
    runs_csv = pd.read_csv(out / "runs.csv")
    assert len(runs_csv.query("status == 'completed'")) == 8 and set(runs_csv["seed"]) == {0, 1}
    significance = pd.read_csv(out / "significance.csv")
    assert {"r=64 vs r=8", "r=8 vs baseline"} <= set(significance["comparison"])
    assert (out / "reward_curves.png").exists() and (out / "sums_heldout_pass1_vs_rank.png").exists()
