"""Evaluations are not paid twice: runs that start from the same untrained model at the same moment (the
ranks of a job array) compute its baseline once, the others wait for it and read the same records; and a
job requeued during a long final evaluation reuses the benchmarks finished on the same weights."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from conftest import compose_config
from rlvr_sweeps.generation.sampling import Completion


class SlowCountingGenerator:
    """Answers every prompt with the same completions, slowly, and counts its calls in a file; after
    `killed_after` calls it raises, as a job killed in the middle of an evaluation."""

    def __init__(self, counter: Path, seconds: float = 2.0, killed_after: int | None = None):
        self.counter, self.seconds, self.killed_after = counter, seconds, killed_after

    def generate(self, prompt_ids, benchmark, seed):
        calls = self.counter.read_text().splitlines() if self.counter.exists() else []
        if self.killed_after is not None and len(calls) >= self.killed_after:
            raise KilledJob(benchmark.name)
        with self.counter.open("a") as handle:
            handle.write(f"{benchmark.name}\n")
        time.sleep(self.seconds)
        return [[Completion(f"\\boxed{{{i % 3}}}", 8, False) for i in range(benchmark.n)] for _ in prompt_ids]


class KilledJob(BaseException):
    pass


def evaluate_baseline(tiny_folder: str, cache: str, out: str, counter: str, barrier) -> str:
    """One job's baseline evaluation (in a process of its own)."""
    from transformers import AutoTokenizer

    from rlvr_sweeps.evaluation.evaluator import Evaluator
    from rlvr_sweeps.tasks.verifier import MathVerifier

    cfg = compose_config("data=sums", "eval=[sums_heldout]")
    verifier = MathVerifier()
    try:
        evaluator = Evaluator(
            cfg.eval,
            cfg.prompt,
            AutoTokenizer.from_pretrained(tiny_folder),
            verifier,
            Path(out),
            baseline_cache=Path(cache),
            model_key="tiny-untrained",
        )
        barrier.wait(timeout=120)  # both jobs reach the baseline together
        evaluator.run(SlowCountingGenerator(Path(counter)), "baseline")
    finally:
        verifier.close()
    return (Path(out) / "baseline" / "sums_heldout.jsonl").read_text()


def test_two_jobs_compute_one_baseline_and_read_the_same_records(tiny_folder, tmp_path):
    counter = tmp_path / "calls"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as pool:
        barrier = manager.Barrier(2)
        jobs = [
            (str(tiny_folder), str(tmp_path / "cache"), str(tmp_path / f"run{i}"), str(counter), barrier)
            for i in range(2)
        ]
        first, second = pool.starmap(evaluate_baseline, jobs)
    assert counter.read_text().splitlines() == ["sums_heldout"]  # generated once, by whichever job came first
    assert first == second and len(first.splitlines()) > 10
    (cached,) = (tmp_path / "cache").glob("sums_heldout-*.json")
    assert len(json.loads(cached.read_text())["samples"]) == len(first.splitlines())


def test_a_requeued_final_evaluation_reuses_the_benchmarks_finished_on_the_same_weights(tiny_folder, tmp_path):
    from transformers import AutoTokenizer

    from rlvr_sweeps.evaluation.evaluator import Evaluator
    from rlvr_sweeps.tasks.verifier import MathVerifier

    cfg = compose_config("data=sums", "eval=[sums_heldout,reasoning_gym_heldout]")
    verifier = MathVerifier()
    try:
        evaluator = Evaluator(cfg.eval, cfg.prompt, AutoTokenizer.from_pretrained(tiny_folder), verifier, tmp_path)
        first_job = tmp_path / "first"
        with pytest.raises(KilledJob):  # killed after its first benchmark
            evaluator.run(SlowCountingGenerator(first_job, 0, killed_after=1), "final", weights="step-6@t0")
        assert first_job.read_text().splitlines() == ["sums_heldout"]
        kept = (tmp_path / "final" / "sums_heldout.jsonl").read_text()

        next_job = tmp_path / "next"
        results = evaluator.run(SlowCountingGenerator(next_job, 0), "final", weights="step-6@t0")
        assert next_job.read_text().splitlines() == ["reasoning_gym_heldout"]  # only what was left
        assert results["sums_heldout"]["reused"] and "reused" not in results["reasoning_gym_heldout"]
        assert (tmp_path / "final" / "sums_heldout.jsonl").read_text() == kept

        other_weights = tmp_path / "other"
        evaluator.run(SlowCountingGenerator(other_weights, 0), "final", weights="step-8@t1")
        assert len(other_weights.read_text().splitlines()) == 2  # other weights: nothing reused
    finally:
        verifier.close()
