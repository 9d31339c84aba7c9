"""Pass@k and scoring: the estimator against brute force, math-verify on known pairs."""

from __future__ import annotations

import itertools
import random
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from rlvr_sweeps.errors import UserError
from rlvr_sweeps.evaluation.evaluator import CheckpointSelection, flat_metrics, pass_at_k, score
from rlvr_sweeps.generation.sampling import Benchmark, Completion, benchmarks_from_config
from rlvr_sweeps.tasks.verifier import MathVerifier


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier()
    yield v
    v.close()


def brute_force_pass_at_k(outcomes: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_estimator_equals_enumeration_over_all_k_subsets():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 10)
        outcomes = [rng.random() < rng.random() for _ in range(n)]
        k = rng.randint(1, n)
        assert pass_at_k(n, sum(outcomes), k) == pytest.approx(brute_force_pass_at_k(outcomes, k), abs=1e-12)


def test_estimator_edge_cases():
    assert pass_at_k(16, 0, 16) == 0.0 and pass_at_k(16, 1, 16) == 1.0 and pass_at_k(16, 4, 1) == 0.25
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 8)


@pytest.mark.parametrize(
    "gold,prediction,equal",
    [
        ("1/2", "\\boxed{0.5}", True),
        ("\\frac{1}{2}", "The answer is \\boxed{1/2}.", True),
        ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\sqrt{3}/2}", True),
        ("\\frac{\\sqrt{3}}{2}", "so it is $\\frac{\\sqrt{3}}{2}$", True),
        ("\\frac{\\sqrt{3}}{2}", "\\boxed{sqrt(3)/2}", True),
        ("12", "\\boxed{13}", False),
        ("12", "\\boxed{12}", True),
        ("-4", "\\boxed{4}", False),
    ],
)
def test_math_verify_on_known_pairs(verifier, gold, prediction, equal):
    assert verifier.verify(gold, prediction).correct is equal


def bench(n=4, ks=(1, 4)) -> Benchmark:
    return Benchmark("t", OmegaConf.create({}), n, ks, 0.6, 0.95, 32)


def test_score_counts_truncated_completions_as_wrong(verifier):
    problems = [
        {"problem_id": "a", "answer": "2", "question": "1+1"},
        {"problem_id": "b", "answer": "3", "question": "1+2"},
    ]
    completions = [
        [
            Completion("\\boxed{2}", 5, False),
            Completion("\\boxed{2}", 32, True),
            Completion("\\boxed{5}", 6, False),
            Completion("", 32, True),
        ],
        [Completion("\\boxed{1}", 5, False)] * 4,
    ]
    metrics, samples = score(bench(), problems, completions, verifier)
    assert metrics["pass@1"] == pytest.approx(1 / 8)  # only the first completion counts; the truncated "2" does not
    assert metrics["pass@4"] == pytest.approx(0.5)
    assert metrics["truncated"] == pytest.approx(2 / 8) and metrics["mean_length"] == pytest.approx(
        (5 + 32 + 6 + 32 + 20) / 8
    )
    assert [s.correct for s in samples[:4]] == [True, False, False, False] and samples[1].extracted == "2"


def test_n_below_k_is_refused_with_the_fix():
    cfg = OmegaConf.create(
        {"benchmarks": {"aime24": {"n": 4, "k": [1, 16], "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 8}}}
    )
    with pytest.raises(UserError, match="eval.sampling.n to at least 16"):
        benchmarks_from_config(cfg)


def test_selection_benchmark_must_be_evaluated():
    cfg = OmegaConf.create({"select_on": "math500", "benchmarks": {}})
    with pytest.raises(UserError, match="eval=\\[math500"):
        benchmarks_from_config(cfg)


def test_flat_metrics_have_stable_names_and_deltas():
    flat = flat_metrics(
        {
            "baseline": {"aime24": {"pass@1": 0.289, "pass@16": 0.6, "problems": 30}},
            "final": {"aime24": {"pass@1": 0.4, "pass@16": 0.7, "problems": 30}},
        }
    )
    assert flat["eval/aime24/pass@1"] == 0.4 and flat["baseline/aime24/pass@1"] == 0.289
    assert flat["delta/aime24/pass@1"] == pytest.approx(0.111) and "eval/aime24/problems" not in flat


def test_the_baseline_cache_key_changes_with_everything_that_changes_a_baseline(monkeypatch):
    from dataclasses import replace

    from rlvr_sweeps.evaluation import evaluator as evaluation

    prompt = OmegaConf.create({"system": None, "template": "{question}\nAnswer in \\boxed{}."})
    eval_cfg = OmegaConf.create({"seed": 0, "batch_size": 64})
    problems = OmegaConf.create({"source": "reasoning_gym", "seed": 1, "size": 16})
    benchmark = Benchmark("b", problems, 4, (1, 4), 0.6, 0.95, 64)

    def key(model="folder@None:auto", bench=benchmark, prompt_cfg=prompt, cfg=eval_cfg, backend="HF", exclude=()):
        return evaluation.baseline_cache_key(model, bench, prompt_cfg, cfg, backend, set(exclude))

    same = key()
    assert key() == same
    changed = {
        "model revision": key(model="folder@v2:auto"),
        "dtype": key(model="folder@None:bfloat16"),
        "benchmark problems": key(bench=replace(benchmark, cfg=OmegaConf.merge(problems, {"seed": 2}))),
        "samples per problem": key(bench=replace(benchmark, n=8)),
        "temperature": key(bench=replace(benchmark, temperature=1.0)),
        "max_new_tokens": key(bench=replace(benchmark, max_new_tokens=128)),
        "problem subset": key(bench=replace(benchmark, max_problems=8)),
        "prompt": key(prompt_cfg=OmegaConf.create({"system": "Be brief.", "template": "{question}"})),
        "seed": key(cfg=OmegaConf.create({"seed": 1, "batch_size": 64})),
        "backend": key(backend="TrainerVLLMGenerator"),
        "excluded problems": key(exclude=["1 + 1"]),
    }
    assert all(value != same for value in changed.values()), [k for k, v in changed.items() if v == same]
    monkeypatch.setattr(evaluation.metadata, "version", lambda name: "9.9.9")
    assert key() != same  # another version of this project may score differently


def test_a_resumed_selection_keeps_its_best_checkpoint_from_rotation(tmp_path):
    """A resumed trainer state is the one saved before its own step was scored: the best checkpoint of
    the earlier attempt is named before the next save, whose rotation would otherwise delete it."""
    from transformers import TrainerState

    def checkpoint_of(step: int):
        return tmp_path / f"checkpoint-{step}"

    no_evaluator = SimpleNamespace(selection=None)  # only the scores of the earlier attempt take part here
    selection = CheckpointSelection(no_evaluator, None, None, checkpoint_of, earlier_scores={"2": 0.5, "4": 0.25})
    state = TrainerState()  # as loaded from checkpoint-4's trainer_state.json: no best recorded yet
    selection.on_step_begin(None, state, None)
    assert state.best_model_checkpoint == str(checkpoint_of(2))
    selection.scores[6] = 0.5  # equal scores: the earliest stays the best
    assert selection.best_step == 2
