"""The README's offline study, as a user runs it: 2 initializations x 3 ranks, then the analysis."""

from __future__ import annotations

import os
import subprocess

import pandas as pd
import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e


def test_offline_study_sweep_then_analysis(tmp_path, model_cache):
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "RLVR_SWEEPS_RUNS": str(runs),
        "RLVR_SWEEPS_CACHE": str(model_cache),
        "WANDB_SILENT": "true",
        "PYTHON": os.environ.get("PYTHON", str(ROOT / ".venv" / "bin" / "python")),
    }
    env.pop("WANDB_API_KEY", None)
    done = subprocess.run(
        [str(ROOT / "scripts" / "offline_study.sh")], env=env, capture_output=True, text=True, timeout=3600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| init | baseline | r=8 | r=64 | r=256 |" in done.stdout and "offline study: sweep" in done.stdout
    out = runs / "offline_study" / "analysis"
    table = pd.read_csv(out / "reasoning_gym_heldout_pass1.csv", index_col="init")
    assert list(table.index) == ["smollm2", "smollm2_math"] and list(table.columns) == [
        "baseline",
        "r=8",
        "r=64",
        "r=256",
    ]
    assert not table.astype(str).apply(lambda column: column.str.startswith("—")).any().any()  # every cell measured
    assert len(pd.read_csv(out / "runs.csv").query("status == 'completed'")) == 6
    assert (out / "reward_curves.png").exists() and (out / "reasoning_gym_heldout_pass1_vs_rank.png").exists()
