"""One baseline per model: runs that start from the same untrained model at the same moment (the ranks of a
job array) compute its evaluation once; the others wait for it and read the same records."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

from conftest import compose_config
from rlvr_sweeps.sampling import Completion


class SlowCountingGenerator:
    """Answers every prompt with the same completions, slowly, and counts its calls in a file."""

    def __init__(self, counter: Path, seconds: float = 2.0):
        self.counter, self.seconds = counter, seconds

    def generate(self, prompt_ids, benchmark, seed):
        with self.counter.open("a") as handle:
            handle.write("generate\n")
        time.sleep(self.seconds)
        return [[Completion(f"\\boxed{{{i % 3}}}", 8, False) for i in range(benchmark.n)] for _ in prompt_ids]


def evaluate_baseline(tiny_folder: str, cache: str, out: str, counter: str, barrier) -> str:
    """One job's baseline evaluation (in a process of its own)."""
    from transformers import AutoTokenizer

    from rlvr_sweeps.evaluation import Evaluator
    from rlvr_sweeps.verifier import MathVerifier

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
    assert counter.read_text().splitlines() == ["generate"]  # generated once, by whichever job came first
    assert first == second and len(first.splitlines()) > 10
    (cached,) = (tmp_path / "cache").glob("sums_heldout-*.json")
    assert len(json.loads(cached.read_text())["samples"]) == len(first.splitlines())
