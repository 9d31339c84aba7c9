"""The embedded default (`python launch.py`: SmolLM2-135M-Instruct on procedural sums) learns visibly, on
a shorter budget: a change of defaults that stops it learning fails here, not in a newcomer's first run."""

from __future__ import annotations

import json

import pytest

from conftest import train_in_process
from rlvr_sweeps.verdict import reward_thirds

pytestmark = pytest.mark.e2e
STEPS = 21  # about 4.5 minutes on one core; the full default trains for 5.5 minutes


def test_the_default_run_learns(tmp_path, model_cache):
    summary = train_in_process(
        tmp_path / "runs", model_cache, f"budget.max_steps={STEPS}", "budget.minutes=60", "eval=[]", "logger=none"
    )
    assert (summary["model"]["name"], summary["global_step"]) == ("smollm2", STEPS)  # the default, seeded
    steps = [json.loads(line) for line in open(f"{summary['run_dir']}/metrics.jsonl")]
    first, last = reward_thirds(steps)
    assert last >= first + 0.1 and last >= 1.5 * first, (first, last)  # the reward rises
    lengths = [s["completions/mean_length"] for s in steps]
    assert sum(lengths[-7:]) < 0.75 * sum(lengths[:7])  # answers get brief instead of running out of tokens
