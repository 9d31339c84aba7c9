"""vLLM on CPU (the separate `make test-vllm` stage): evaluation with a LoRA adapter, and GRPO with
TRL's colocated vLLM engine, whose weights must follow training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: its weights can be read
# vLLM's own switch for CPU test runs: the model runs eagerly, without inductor's compilation at every engine start
# (46 s of the colocated engine's first start; TRL cannot pass enforce_eager, which the standalone CPU engine sets)
os.environ.setdefault("VLLM_CPU_CI_ENV", "1")
pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.e2e]

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from conftest import ROOT, evaluate_in_process, grpo_args  # noqa: E402
from rlvr_sweeps.run.guards import IS_MASKED_SHARE, LOGP_GAP, RolloutGuard, RunCheckFailed  # noqa: E402


@pytest.fixture(scope="module")
def random_adapter(tiny_folder, tmp_path_factory) -> Path:
    """A LoRA adapter with random B, so that it changes what the model writes; rank 24, which vLLM does not serve as
    such: the engine is started at the next rank it accepts (32)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_folder),
        LoraConfig(r=24, lora_alpha=48, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


GUARDS = OmegaConf.load(ROOT / "conf" / "config.yaml").guards  # the defaults a run gets
SMALL_HELDOUT = "eval.benchmarks.reasoning_gym_heldout.size=32"  # the engine start is the cost, not the problems


def evaluate(tmp_path, model_cache, *args) -> dict:
    """An evaluation as `python -m rlvr_sweeps.evaluate` makes it, in this process: each with an engine of its own."""
    summary, folder = evaluate_in_process(tmp_path / "runs", model_cache, "model=tiny", SMALL_HELDOUT, *args)
    return summary | {"folder": str(folder)}


def samples(summary: dict) -> list[dict]:
    path = Path(summary["folder"]) / "eval" / "final" / "reasoning_gym_heldout.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_vllm_evaluation_with_a_lora_adapter_matches_transformers(tmp_path, model_cache, random_adapter):
    greedy = ("eval.sampling.temperature=0", "eval.sampling.n=1", "eval.sampling.k=[1]", f"adapter={random_adapter}")
    by_vllm = evaluate(tmp_path / "v", model_cache, "eval.backend=vllm", *greedy)
    by_hf = evaluate(tmp_path / "h", model_cache, "eval.backend=hf", *greedy)
    base = evaluate(tmp_path / "b", model_cache, "eval.backend=hf", *greedy[:3])  # no third engine start
    key = lambda s: (s["problem_id"], s["extracted"], s["length"], s["truncated"])  # noqa: E731
    assert [key(s) for s in samples(by_vllm)] == [key(s) for s in samples(by_hf)]  # the same greedy answers
    assert [key(s) for s in samples(by_vllm)] != [key(s) for s in samples(base)]  # not the untrained model's


def test_vllm_sampling_is_reproducible_with_the_same_seed(tmp_path, model_cache, random_adapter):
    args = ("eval.backend=vllm", "eval.sampling.n=4", "eval.sampling.k=[1,4]", f"adapter={random_adapter}")
    first, second = evaluate(tmp_path / "1", model_cache, *args), evaluate(tmp_path / "2", model_cache, *args)
    assert samples(first) == samples(second) and first["metrics"] == second["metrics"]


def colocated_trainer(tiny_folder, tmp_path, max_steps: int = 2, guard=None):
    """RLVRTrainer on the tiny model with TRL's colocated vLLM engine (CPU), LoRA rank 8, a high learning rate."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr_sweeps.policy.adapters import lora_config
    from rlvr_sweeps.training.rewards import completion_text
    from rlvr_sweeps.training.trainer import RLVRTrainer

    def length_reward(completions, **kwargs):  # any reward that differs between completions moves the weights
        return [len(completion_text(c)) / 100 for c in completions]

    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"Add {i} and {i}."}], "answer": str(2 * i)} for i in range(32)]
    )
    cfg = OmegaConf.create(
        {
            "trainer": {
                "learning_rate": 0.05,
                "num_generations": 4,
                "per_device_train_batch_size": 8,
                "max_completion_length": 16,
                "logging_steps": 1,
                "save_strategy": "no",
                "seed": 0,
                "lr_scheduler_type": "constant",
            },
            "generation": {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3},
            "budget": {"max_steps": max_steps},
        }
    )
    args = grpo_args(cfg, tmp_path)
    lora = OmegaConf.create(
        {
            "rank": 8,
            "alpha": 16,
            "alpha_ratio": None,
            "dropout": 0.0,
            "target_modules": "all-linear",
            "variant": "lora",
        }
    )
    trainer = RLVRTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_folder),
        reward_funcs=[length_reward],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(lora),
        callbacks=[guard] if guard is not None else None,
    )
    return trainer, tokenizer


def test_grpo_with_colocated_vllm_samples_from_the_trained_weights(tiny_folder, tmp_path):
    guard = RolloutGuard(GUARDS.max_logp_gap, after_steps=GUARDS.logp_gap_after_steps)
    trainer, tokenizer = colocated_trainer(tiny_folder, tmp_path, max_steps=4, guard=guard)
    frozen = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if "lora_" not in name}
    trainer.train()  # the weight-sync guard watches every step: a healthy sync never trips it
    gaps = [row[LOGP_GAP] for row in trainer.state.log_history if LOGP_GAP in row]
    print(f"healthy engine-trainer log-prob gap per step: {[round(g, 5) for g in gaps]}")
    assert len(gaps) == 4 and max(gaps) < guard.threshold() / 2  # far below what trips the guard
    trainer.vllm_generation.sync_weights()  # what evaluation does before sampling
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(frozen[name], after[name]) for name in frozen)  # every sync left the base bit-exact

    text = "<|im_start|>user\nAdd 3 and 3.<|im_end|>\n<|im_start|>assistant\n12 + 3 = 15"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    from vllm import SamplingParams, TokensPrompt

    out = trainer.vllm_generation.llm.generate(
        [TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False
    )[0]
    vllm_logprobs = torch.tensor([next(iter(p.values())).logprob for p in out.prompt_logprobs[1:]])

    def hf_logprobs(model) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].float()
        return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]

    trained = trainer.model.merge_and_unload()
    to_trained = (vllm_logprobs - hf_logprobs(trained)).abs().max().item()
    from transformers import AutoModelForCausalLM

    to_base = (vllm_logprobs - hf_logprobs(AutoModelForCausalLM.from_pretrained(tiny_folder))).abs().max().item()
    assert to_base > 1.0, "training did not move the weights; the check would prove nothing"
    assert to_trained < to_base / 5, (to_trained, to_base)  # vLLM samples from the trained weights


def test_a_weight_sync_that_sends_nothing_stops_the_run_within_a_few_steps(tiny_folder, tmp_path):
    guard = RolloutGuard(GUARDS.max_logp_gap, after_steps=GUARDS.logp_gap_after_steps)
    trainer, _ = colocated_trainer(tiny_folder, tmp_path, max_steps=8, guard=guard)
    trainer.vllm_generation.sync_weights = lambda: None  # the engine keeps the untrained weights
    with pytest.raises(RunCheckFailed, match="weight sync into the engine is broken"):
        trainer.train()
    gaps = [row[LOGP_GAP] for row in trainer.state.log_history if LOGP_GAP in row]
    print(f"stale engine-trainer log-prob gap per step: {[round(g, 5) for g in gaps]}")
    assert trainer.state.global_step <= 4  # stopped in its first steps


def test_launch_with_vllm_rollouts_trains_and_evaluates(launch):
    result = launch(
        "model=tiny",
        "generation=vllm",
        "budget.max_steps=2",
        SMALL_HELDOUT,
        "eval.sampling.n=4",
        "eval.sampling.k=[1,4]",
        timeout=1200,
    )
    assert result.returncode == 0, result.output[-4000:]
    summary = result.summary(result.run_dirs()[0])
    assert summary["status"] == "completed" and summary["global_step"] == 2  # the guards let a healthy run pass
    steps = [json.loads(line) for line in (result.run_dirs()[0] / "metrics.jsonl").read_text().splitlines()]
    assert all(LOGP_GAP in s and 0 <= s[IS_MASKED_SHARE] <= 1 for s in steps)  # what the guards read, recorded
    assert "importance-sampling mask dropped" not in result.stderr
    assert (
        "eval/reasoning_gym_heldout/pass@1" in summary["metrics"]
        and "baseline/reasoning_gym_heldout/pass@1" in summary["metrics"]
    )
