"""The benchmark commands keep working (tiny shapes; their numbers are not asserted), and the
study's settings fit one 48 GB A40 by the memory estimate."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def test_grpo_step_benchmark_prints_one_row_per_rank_and_rollout_path(tmp_path, model_cache):
    import os

    out = tmp_path / "rows.json"
    done = run(
        "benchmarks/grpo_step.py",
        "--model",
        "tiny",
        "--ranks",  # one rank: every row is a process of its own (8 s of imports), and ranks only change a number
        "64",
        "--rollouts",
        "merged",
        "unmerged",
        "--steps",
        "2",
        "--prompt-tokens",
        "16",
        "--completion-tokens",
        "8",
        "--json",
        str(out),
        env={**os.environ, "RLVR_SWEEPS_CACHE": str(model_cache)},
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [(r["rank"], r["rollouts"]) for r in rows] == [(64, "merged"), (64, "unmerged")]
    assert all(r["completion_tokens"] == 8 and r["completions"] == 8 and r["generation_s"] > 0 for r in rows)
    assert all(r["decode_ms"] >= r["floor_ms"] > 0 and r["peak_gb"] > 0 for r in rows)
    # r x (inputs + outputs) of the tiny Qwen2's 7 projections (2,048 a layer), in 2 layers
    assert rows[0]["trainable"] == rows[1]["trainable"] == 64 * 2048 * 2
    assert "| 64 | unmerged |" in done.stdout and "rank 64: un-merged / merged step time" in done.stdout


def test_memory_estimate_says_the_study_fits_an_a40_at_every_rank():
    done = run("benchmarks/memory_estimate.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("fits:") == 3 and "DOES NOT FIT" not in done.stdout
    assert "LoRA r=256: 295 M" in done.stdout  # the study's rank-256 adapter on the Qwen2.5-1.5B shape
