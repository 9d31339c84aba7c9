"""The memory estimate follows the TRL that trains (training.memory): the study fits an A40 as configured under
TRL 1.16's fused head, needs a smaller micro-batch under TRL 1.13's full logits, and a split micro-batch trains the
same adapter; the estimate bounds a real step's measured peak under the installed TRL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, compose_config, grpo_args, train_in_process
from rlvr_sweeps.errors import UserError
from rlvr_sweeps.policy.adapters import lora_config
from rlvr_sweeps.training.memory import GB, SPLITTABLE_LOSSES, Device, check_memory, fit, trl_fuses_lm_head
from rlvr_sweeps.training.trainer import RLVRTrainer

A40 = 48e9
SHAPE = OmegaConf.load(ROOT / "conf" / "model" / "qwen1_5b_shape.yaml")


def a40(fused: bool, free: float = A40) -> Device:
    return Device("an A40", A40, free, True, fused)


def study(*overrides: str):
    cfg = compose_config("experiment=study", *overrides)
    return cfg.lora, cfg.trainer, cfg.generation


def test_the_installed_trl_is_read_right():
    import trl.trainer.utils

    assert trl_fuses_lm_head() == hasattr(trl.trainer.utils, "add_fused_lm_head")


def test_the_study_fits_an_a40_as_configured_with_the_fused_head():
    memory = fit(SHAPE, *study("lora.rank=256"), a40(fused=True))
    assert memory.chosen == memory.requested and memory.peak < A40
    assert any("weight sync" in label for label, _ in memory.terms)


def test_without_the_fused_head_the_study_trains_smaller_micro_batches_at_the_same_completions_per_update():
    memory = fit(SHAPE, *study("lora.rank=256"), a40(fused=False))
    # 8 x 3,585 x 151,936 float32 logits: 17.4 GB a copy
    assert memory.requested_peak > A40 and "full logits (4 float32 copies of 8 x 3585 x 151936" in json.dumps(
        fit(SHAPE, *study("lora.rank=256"), a40(fused=False, free=1e15)).terms
    )
    chosen = memory.chosen
    assert chosen.per_device_train_batch_size < 8 and memory.peak <= A40
    assert chosen.per_device_train_batch_size * chosen.gradient_accumulation_steps == 32
    record = memory.record()
    assert record["split_to_fit"] and record["requested_micro_batch"] == 8 and record["micro_batch"] == 2


def test_a_shared_node_is_fitted_to_its_free_memory_and_refused_when_nothing_fits():
    with pytest.raises(UserError) as refused:
        check_memory(SHAPE, *study("lora.rank=256"), a40(fused=True, free=20e9))
    message = str(refused.value)
    assert "20.0 GB free on an A40 (of 48.0 GB: another process holds the rest)" in message
    assert "not even a micro-batch of 1 fits" in message and "training micro-batch of 1" in message
    assert "trainer.max_completion_length" in message and "guards.memory=false" in message


def test_a_loss_that_changes_with_the_split_is_refused_rather_than_split():
    assert "bnpo" not in SPLITTABLE_LOSSES  # normalized per micro-batch: a split would change the objective
    with pytest.raises(UserError, match="loss_type=bnpo changes with the micro-batch"):
        check_memory(SHAPE, *study("lora.rank=256", "trainer.loss_type=bnpo"), a40(fused=False))


def adapter_after_one_update(tiny_folder, tmp_path, micro: int, accumulation: int, loss_type: str) -> dict:
    """The LoRA tensors after one SGD update of the study's objective on the tiny model: 4 prompts x 8 rollouts."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = compose_config(
        "experiment=study",
        "model=tiny",
        "generation=hf",
        "eval=[]",
        "budget.max_steps=1",
        "trainer.max_completion_length=16",
        f"trainer.per_device_train_batch_size={micro}",
        f"trainer.gradient_accumulation_steps={accumulation}",
        f"trainer.loss_type={loss_type}",
        "trainer.learning_rate=0.5",
        "+trainer.optim=sgd",  # an update proportional to the gradient (Adam's first step is about its sign)
        "trainer.save_strategy=no",
    )
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Add {i} and {i}."}]} for i in range(8)])
    torch.manual_seed(0)
    trainer = RLVRTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_folder),
        args=grpo_args(cfg, tmp_path / f"{micro}x{accumulation}"),
        train_dataset=dataset,
        reward_funcs=[lambda completions, **kw: [len(set(c[-1]["content"])) / 10 for c in completions]],
        processing_class=AutoTokenizer.from_pretrained(tiny_folder),
        peft_config=lora_config(cfg.lora),
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained adapter: at B = 0 only B would get a gradient
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()
    return {n: p.detach() - before[n] for n, p in trainer.model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("loss_type", SPLITTABLE_LOSSES)
def test_a_split_micro_batch_trains_the_same_adapter(tiny_folder, tmp_path, loss_type):
    whole = adapter_after_one_update(tiny_folder, tmp_path, 8, 4, loss_type)
    split = adapter_after_one_update(tiny_folder, tmp_path, 2, 16, loss_type)
    scale = max(float(d.abs().max()) for d in whole.values())
    assert scale > 1e-4  # the update moved the adapter
    worst = max(float((whole[n] - split[n]).abs().max()) for n in whole)
    assert worst <= 1e-5 * scale, f"{loss_type}: the split changed the update by {worst / scale:.2e} of its size"


def test_a_run_on_a_device_too_small_for_its_micro_batch_trains_a_split_and_records_it(tmp_path, model_cache):
    """guards.device_memory_gb stands for a GPU's free memory: 8 completions per micro-batch do not fit, a smaller
    micro-batch at the same 16 completions per update does; summary.json and the W&B config say which."""
    summary = train_in_process(
        tmp_path / "runs",
        model_cache,
        "model=tiny",
        "eval=[]",
        "budget.max_steps=1",
        "trainer.gradient_accumulation_steps=2",
        "trainer.max_completion_length=16",
        "guards.device_memory_gb=0.09",
    )
    memory = summary["memory"]
    assert summary["status"] == "completed" and memory["split_to_fit"]
    assert memory["requested_micro_batch"] == 8 and memory["micro_batch"] < 8
    assert memory["micro_batch"] * memory["accumulation"] == 16 and memory["estimate_gb"] <= 0.09
    assert memory["measured_peak_gb"] > 0
    config = (tmp_path / "runs").glob("default/*/config.yaml")
    assert f"per_device_train_batch_size: {memory['micro_batch']}" in next(config).read_text()
    with pytest.raises(UserError, match="not even a micro-batch of 1 fits"):
        train_in_process(tmp_path / "small", model_cache, "model=tiny", "eval=[]", "guards.device_memory_gb=0.01")


@pytest.mark.step_memory
def test_the_estimate_bounds_the_measured_peak_of_a_real_step(model_cache, tmp_path):
    """One GRPO step of a 2-layer model with Qwen2.5's 151,936-token vocabulary, 4 completions of 256 tokens in one
    micro-batch, on CPU: the estimate's training term stays above the step's measured peak, within 1.5x of it, under
    the installed TRL (the fused head of TRL 1.16; TRL 1.13's full logits in `make test-trl-cuda12`). Longer
    completions (up to 2,048 tokens) are in BENCHMARKS.md: sampling over 151,936 entries costs 40 ms a token here."""
    out = tmp_path / "rows.json"
    args = ["--model", "tiny", "--ranks", "8", "--rollouts", "merged", "--steps", "1", "--prompts", "1"]
    args += ["--generations", "4", "--prompt-tokens", "16", "--completion-tokens", "256", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "benchmarks/grpo_step.py", *args, "model.vocab_size=151936"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "RLVR_SWEEPS_CACHE": str(model_cache)},
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["fused_lm_head"] == trl_fuses_lm_head()
    measured, estimated = row["step_peak_gb"], row["estimate_training_gb"]
    logits_copy = 4 * 257 * 151936 * 4 / GB  # one float32 copy of the micro-batch's logits: 0.62 GB
    assert measured > (0.5 if row["fused_lm_head"] else 2) * logits_copy  # the step really holds the head's memory
    assert measured <= estimated <= 1.5 * measured, row
