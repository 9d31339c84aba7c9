"""`python -m rlvr_sweeps.evaluate`: a trained adapter evaluated on its own reproduces its run's final
numbers sample for sample, and the adapter is what makes the difference."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_SWEEP, evaluate_cli, evaluate_in_process

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("tiny_sweep")]
# the sweep's own model, task and sampling, as a user would pass them again
SAME_AS_THE_RUN = [
    o
    for o in TINY_SWEEP
    if o.split("=")[0]
    in {"model", "data", "eval", "eval.sampling.n", "eval.sampling.k", "trainer.max_completion_length"}
]


def evaluate(tmp_path, model_cache, *args: str, cli: bool = True) -> tuple[dict, list[dict]]:
    """The command in a subprocess (cli=True), or the same evaluation in this process."""
    if cli:
        summary, folder = evaluate_cli(tmp_path / "runs", model_cache, *SAME_AS_THE_RUN, *args, timeout=600)
    else:
        summary, folder = evaluate_in_process(tmp_path / "runs", model_cache, *SAME_AS_THE_RUN, *args)
    records = (folder / "eval" / "final" / "sums_heldout.jsonl").read_text().splitlines()
    return summary, [json.loads(line) for line in records]


def run_samples(run_dir, phase: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "eval" / phase / "sums_heldout.jsonl").read_text().splitlines()]


def test_standalone_evaluation_reproduces_the_runs_final_numbers(tiny_sweep, tmp_path, model_cache):
    run_dir = tiny_sweep.run_dir(8, 0)
    summary, samples = evaluate(tmp_path / "adapter", model_cache, f"adapter='{run_dir}'")
    assert summary["status"] == "completed" and summary["adapter"] == str(run_dir / "final")
    assert samples == run_samples(run_dir, "final")  # the same answers, sample by sample
    run_final = json.loads((run_dir / "summary.json").read_text())["eval"]["final"]["sums_heldout"]
    keys = ("pass@1", "pass@4", "mean_length", "truncated", "problems")
    assert [summary["eval"]["final"]["sums_heldout"][k] for k in keys] == [run_final[k] for k in keys]


def test_without_the_adapter_it_is_the_untrained_model(tiny_sweep, tmp_path, model_cache):
    run_dir = tiny_sweep.run_dir(8, 0)
    _, samples = evaluate(tmp_path / "base", model_cache, cli=False)  # the command itself is the test above
    assert samples == run_samples(run_dir, "baseline")  # the baseline, which the trained adapter changed
    assert samples != run_samples(run_dir, "final")
