"""Rollouts from the merged adapter: the same distribution as the un-merged model, base weights
restored bit-exactly (also in bf16, over many cycles), and used by the GRPO trainer's rollouts; for
every lora.variant (LoRA, rsLoRA, DoRA, PiSSA)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, adapter, grpo_args
from rlvr_sweeps.policy.lora_merge import lora_layers, merged_lora

VARIANTS = ["lora", "rslora", "dora", "pissa"]


def lora_model(folder: Path, rank: int, dtype=torch.float32, dropout: float = 0.0, variant: str = "lora"):
    """The tiny model with an adapter of lora.variant whose B (and DoRA's magnitudes) moved away from
    their start, so that the adapter changes the output as a trained one does."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder, dtype=dtype), adapter(rank, variant, dropout))
    generator = torch.Generator().manual_seed(rank)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data += (torch.randn(param.shape, generator=generator) * 0.02).to(param.dtype)
        if "lora_magnitude_vector" in name:
            param.data *= (1 + 0.2 * torch.randn(param.shape, generator=generator)).to(param.dtype)
    return model


def logprobs(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(ids).logits.float(), -1)


def base_weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "base_layer" in name}


@pytest.mark.parametrize(("rank", "variant"), [(8, "lora"), (256, "lora"), (8, "rslora"), (8, "dora"), (8, "pissa")])
def test_merged_rollouts_sample_from_the_unmerged_distribution(tiny_folder, rank, variant):
    model = lora_model(tiny_folder, rank, variant=variant).eval()
    ids = torch.randint(0, 500, (4, 24), generator=torch.Generator().manual_seed(1))
    with model.disable_adapter():
        without_adapter = logprobs(model, ids)
    unmerged = logprobs(model, ids)
    with merged_lora(model):
        assert all(layer.merged for layer in lora_layers(model))
        merged = logprobs(model, ids)
    assert (unmerged - without_adapter).abs().max() > 0.05  # the adapter matters, so the check means something
    assert (merged - unmerged).abs().max() < 1e-4
    torch.manual_seed(3)
    unmerged_sample = model.generate(ids[:, :8], do_sample=True, max_new_tokens=12, min_new_tokens=12, top_k=0)
    with merged_lora(model):
        torch.manual_seed(3)
        merged_sample = model.generate(ids[:, :8], do_sample=True, max_new_tokens=12, min_new_tokens=12, top_k=0)
    assert torch.equal(merged_sample, unmerged_sample)  # same seed, same distribution: same tokens


@pytest.mark.parametrize("variant", VARIANTS)
def test_base_weights_come_back_bit_exactly_in_bf16_after_many_cycles(tiny_folder, variant):
    model = lora_model(tiny_folder, 64, dtype=torch.bfloat16, variant=variant).eval()
    reference = lora_model(tiny_folder, 64, variant=variant).eval()  # the same weights in float32
    reference.load_state_dict({name: value.float() for name, value in model.state_dict().items()})
    before = base_weights(model)
    ids = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(2))
    unmerged = logprobs(model, ids)
    for _ in range(20):
        with merged_lora(model):
            merged = logprobs(model, ids)
    after = base_weights(model)
    assert before.keys() == after.keys() and len(before) > 0
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not any(layer.merged or layer._caches for layer in lora_layers(model))  # nothing left behind
    assert torch.equal(logprobs(model, ids), unmerged)  # the un-merged model is exactly what it was
    exact = logprobs(reference, ids)  # bf16 merged weights round once; no worse than bf16 un-merged
    assert (merged - exact).abs().mean() < 1.5 * (unmerged - exact).abs().mean()


def test_adapter_stays_trainable_and_an_error_inside_still_restores(tiny_folder):
    model = lora_model(tiny_folder, 8)
    before = base_weights(model)
    with pytest.raises(RuntimeError, match="rollout failed"), merged_lora(model):
        raise RuntimeError("rollout failed")
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)
    loss = model(torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_grpo_rollouts_run_on_the_merged_adapter(tiny_folder, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr_sweeps.policy.adapters import lora_config
    from rlvr_sweeps.training.trainer import RLVRTrainer

    cfg = OmegaConf.create(
        {
            "trainer": {
                "learning_rate": 1e-6,
                "num_generations": 4,
                "per_device_train_batch_size": 4,
                "max_completion_length": 8,
                "logging_steps": 1,
                "save_strategy": "no",
                "seed": 0,
            },
            "generation": {"use_vllm": False},
            "budget": {"max_steps": 1},
        }
    )
    args = grpo_args(cfg, tmp_path)
    lora = OmegaConf.load(ROOT / "conf" / "lora" / "default.yaml")
    seen = {}
    for merge in (True, False):
        trainer = RLVRTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_folder),
            reward_funcs=[lambda completions, **kw: [float(len(str(c))) for c in completions]],
            args=args,
            train_dataset=Dataset.from_list([{"prompt": f"Add {i} and {i}."} for i in range(8)]),
            processing_class=AutoTokenizer.from_pretrained(tiny_folder),
            peft_config=lora_config(lora),
            merge_lora_for_rollouts=merge,
        )
        layer = lora_layers(trainer.model)[0]
        states = []
        layer.register_forward_pre_hook(lambda module, inputs: states.append((torch.is_grad_enabled(), module.merged)))
        trainer.train()
        seen[merge] = {merged for grad, merged in states if not grad}  # forwards without gradients: rollouts
        assert {merged for grad, merged in states if grad} == {False}  # training always sees the live adapter
    assert seen == {True: {True}, False: {False}}
