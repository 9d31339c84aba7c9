"""TRL's vLLM weight sync, driven for real (TRL's VLLMGeneration.sync_weights) with a stub engine that
checks what it receives: in bf16 the frozen base stays bit-exact over many syncs, and the engine
gets the merged weight rounded once (W + scale * B @ A; DoRA's magnitude times its direction), for every
lora.variant. Runs on CUDA when there is one, and on the Qwen2.5-1.5B shape with
RLVR_TEST_MODEL=qwen1_5b_shape (scripts/gpu_check.sh does both)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, adapter
from rlvr_sweeps.generation.vllm_backend import exact_weight_sync
from rlvr_sweeps.policy.lora_merge import lora_layers
from rlvr_sweeps.policy.models import model_folder

DEVICE = os.environ.get("RLVR_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
MODEL = os.environ.get("RLVR_TEST_MODEL", "tiny")
SYNCS = int(os.environ.get("RLVR_TEST_SYNCS", "50"))


class StubEngine:
    """What TRL's colocated sync talks to (llm.llm_engine.model_executor.driver_worker.model_runner.model):
    compares each tensor it receives with `expected` (when set) as it arrives."""

    def __init__(self):
        self.expected: dict[str, torch.Tensor] | None = None
        self.received: set[str] = set()
        self.mismatched_syncs = 0
        self._mismatch = False
        runner = SimpleNamespace(model=SimpleNamespace(load_weights=self._load_weights))
        executor = SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner))
        self.llm_engine = SimpleNamespace(model_executor=executor)

    def _load_weights(self, weights):
        for name, tensor in weights:
            self.received.add(name)
            if self.expected is not None:
                self._mismatch |= not torch.equal(tensor, self.expected[name])

    def reset_prefix_cache(self):  # the sync's last call
        self.mismatched_syncs += self._mismatch
        if self.expected is not None:
            assert self.received == self.expected.keys()
        self._mismatch, self.received = False, set()


def colocated_sync(model, engine: StubEngine):
    """TRL's own VLLMGeneration, with the engine replaced by the stub (nothing else is faked)."""
    from trl.distributed import DistributedBackend
    from trl.generation.vllm_generation import VLLMGeneration

    generation = object.__new__(VLLMGeneration)
    accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None, fsdp_plugin=None), is_main_process=True)
    generation.__dict__.update(
        model=model,
        mode="colocate",
        enable_sleep_mode=False,
        llm=engine,
        accelerator=accelerator,
        _dist=DistributedBackend(accelerator),
    )
    return generation


@pytest.fixture(scope="module")
def model_dir(model_cache):
    return model_folder(OmegaConf.load(ROOT / "conf" / "model" / f"{MODEL}.yaml"), model_cache)


def bf16_lora_model(folder, rank: int = 16, variant: str = "lora"):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to(DEVICE)
    return get_peft_model(base, adapter(rank, variant))


def perturb_adapter(model, seed: int) -> None:
    """What an optimizer step does to the adapter between two syncs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_((torch.randn(param.shape, generator=generator) * 0.05).to(param))
            if "lora_magnitude_vector" in name:
                param.mul_((1 + 0.05 * torch.randn(param.shape, generator=generator)).to(param))


def vllm_name(peft_name: str) -> str:
    return peft_name.removeprefix("base_model.model.").replace(".base_layer", "")


def merged_weight(layer) -> torch.Tensor:
    """What an exact merge gives, computed here: W + scale * B @ A, or for DoRA
    m / ||W + scale * B @ A||_row * (W + scale * B @ A) in the adapter's precision, rounded once to W's dtype."""
    weight = layer.get_base_layer().weight.data
    delta = layer.get_delta_weight("default")
    if "default" not in layer.lora_magnitude_vector:
        return weight + delta.to(weight.dtype)
    combined = weight.to(delta.dtype) + delta
    norm = torch.linalg.norm(combined, dim=1)
    return ((layer.lora_magnitude_vector["default"].weight / norm).view(-1, 1) * combined).to(weight.dtype)


def expected_weights(model) -> dict[str, torch.Tensor]:
    """The merged weight of every adapted layer, the frozen weights of the others (what an exact sync hands over)."""
    expected = {}
    for layer in lora_layers(model):
        expected[id(layer.get_base_layer().weight)] = merged_weight(layer)
    return {
        vllm_name(name): expected.get(id(p), p.data) for name, p in model.named_parameters() if "lora_" not in name
    }


def base_tensors(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" not in name}


def drive_syncs(model, exact: bool):
    """SYNCS optimizer-like changes of the adapter, each followed by TRL's sync; the frozen weights
    before and after, and how many syncs handed the engine anything but the exact merged weights."""
    engine = StubEngine()
    generation = colocated_sync(model, engine)
    if exact:
        exact_weight_sync(generation)
    original = base_tensors(model)
    for i in range(SYNCS):
        perturb_adapter(model, seed=i)
        engine.expected = expected_weights(model) if exact else None
        generation.sync_weights()
    return original, base_tensors(model), engine.mismatched_syncs


@pytest.mark.parametrize("variant", ["lora", "rslora", "dora", "pissa"])
def test_exact_sync_keeps_the_frozen_base_bit_exact_and_hands_over_the_merged_weights(model_dir, variant):
    model = bf16_lora_model(model_dir, variant=variant)
    original, after, mismatched_syncs = drive_syncs(model, exact=True)
    assert mismatched_syncs == 0  # every sync handed the engine the merged weights, rounded once
    assert all(torch.equal(original[name], after[name]) for name in original)
    assert not any(layer.merged for layer in lora_layers(model))


def test_trls_own_sync_drifts_in_bf16(model_dir):
    """Why the exact sync exists: TRL's merge_adapter / unmerge_adapter round the live base weights."""
    model = bf16_lora_model(model_dir)
    original, after, _ = drive_syncs(model, exact=False)
    drifted = [name for name in original if not torch.equal(original[name], after[name])]
    assert drifted and all("base_layer" in name for name in drifted)
