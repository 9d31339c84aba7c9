"""vLLM: evaluation sampling, and the weight sync of TRL's colocated engine.

During training, evaluation reuses the engine TRL colocates for rollouts (after pushing the
current weights into it), so no second engine competes for memory. Standalone evaluation starts
its own engine and applies a trained adapter as a LoRARequest. Prompts go in as token ids.

The weight sync: TRL merges the adapter into the live base weights (PEFT `weight.data += delta`),
copies them into vLLM and un-merges (`-= delta`); in bf16 every cycle rounds, so over a run the
frozen base drifts away from the checkpoint. `exact_weight_sync` runs TRL's sync inside
`merged_lora` instead: the adapter is merged into fresh copies, TRL's merge finds nothing left to
merge, its un-merge touches only those copies, and the original base tensors come back untouched.

vLLM's CPU backend repacks linear weights after loading, so TRL's per-parameter `load_weights`
fails there; on that backend only, the sync goes through the model runner's `reload_weights`
(TRL's own path is kept on GPUs).
"""

from __future__ import annotations

import os
import types
import warnings
from pathlib import Path

from ..errors import UserError
from ..policy.adapters import vllm_max_lora_rank
from ..policy.lora_merge import merged_lora
from .sampling import Benchmark, Completion, sampling_seed

# vLLM's CPU backend reserves this many GiB for its KV cache (its default is larger than small
# machines like); it is read when the first engine starts
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def vllm_on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _sync_weights_on_cpu(self) -> None:
    """VLLMGeneration.sync_weights for colocate mode on vLLM's CPU backend."""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
    # reload_weights holds a layer's tensors until the layer is complete, while TRL un-merges the
    # adapter from the live tensors once iterated: hand over copies
    runner.reload_weights(weights_iterator=((name, t.detach().clone()) for name, t in self._iter_named_params()))
    # a tied lm_head gets no tensor of its own, so its packed CPU copy must be rebuilt from the embedding
    for module in runner.get_model().modules():
        if isinstance(module, ParallelLMHead) and hasattr(module, "cpu_linear"):
            module.quant_method.process_weights_after_loading(module)
    self.llm.reset_prefix_cache()


def exact_weight_sync(vllm_generation) -> None:
    """Make every weight sync of a colocated (or server) engine read the adapter merged into copies of
    the base weights, leaving the frozen base bit-exact (see the module docstring)."""
    iterate = vllm_generation._iter_named_params

    def iter_exact_params(self):
        with merged_lora(self.model), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(already merged|Already unmerged).*")
            yield from iterate()

    vllm_generation._iter_named_params = types.MethodType(iter_exact_params, vllm_generation)


def bridge_cpu_weight_sync(vllm_generation) -> bool:
    """Route a colocated engine's weight sync through reload_weights when vLLM runs on CPU."""
    if vllm_generation is None or vllm_generation.mode != "colocate" or not vllm_on_cpu():
        return False
    vllm_generation.sync_weights = types.MethodType(_sync_weights_on_cpu, vllm_generation)
    return True


def sampling_params(benchmark: Benchmark, seed: int | None):
    from vllm import SamplingParams

    return SamplingParams(
        n=benchmark.n,
        temperature=benchmark.temperature,
        top_p=benchmark.top_p if benchmark.temperature else 1.0,
        max_tokens=benchmark.max_new_tokens,
        seed=seed,
    )


def _completions(request_outputs) -> list[list[Completion]]:
    return [
        [Completion(o.text, len(o.token_ids), o.finish_reason == "length") for o in request.outputs]
        for request in request_outputs
    ]


def _generate(
    llm, prompt_ids: list[list[int]], benchmark: Benchmark, seed: int, lora_request=None, seeded: bool = True
) -> list[list[Completion]]:
    """Per-prompt seeds make samples independent of batching; vLLM's CPU backend cannot use them
    together with chunked prefill (its CPU generators have no offset), so unseeded requests there
    follow the engine's own seed instead."""
    from vllm import TokensPrompt

    prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids]
    params = [sampling_params(benchmark, sampling_seed(seed, i) if seeded else None) for i in range(len(prompts))]
    return _completions(llm.generate(prompts, params, lora_request=lora_request, use_tqdm=False))


class TrainerVLLMGenerator:
    """Samples from TRL's colocated engine, after pushing the trainer's current weights into it."""

    def __init__(self, trainer):
        generation = getattr(trainer, "vllm_generation", None)
        if generation is None or generation.mode != "colocate":
            raise UserError(
                "eval.backend=vllm during training needs generation=vllm (colocate mode); "
                "use eval.backend=hf, or evaluate afterwards with python -m rlvr_sweeps.evaluate."
            )
        if generation.enable_sleep_mode:
            raise UserError(
                "eval.backend=vllm does not support generation.vllm_enable_sleep_mode=true; "
                "turn sleep mode off or use eval.backend=hf."
            )
        self.trainer = trainer
        self.generation = generation

    def generate(self, prompt_ids: list[list[int]], benchmark: Benchmark, seed: int) -> list[list[Completion]]:
        self.generation.sync_weights()
        self.trainer._last_loaded_step = self.trainer.state.global_step  # TRL need not push them again
        return _generate(self.generation.llm, prompt_ids, benchmark, seed, seeded=not vllm_on_cpu())


class StandaloneVLLMGenerator:
    """A fresh engine for `python -m rlvr_sweeps.evaluate`; a trained adapter becomes a LoRARequest."""

    def __init__(self, eval_cfg, model_folder: str, adapter: Path | None, trust_remote_code: bool = False):
        import json

        from vllm import LLM
        from vllm.lora.request import LoRARequest

        rank = json.loads((adapter / "adapter_config.json").read_text())["r"] if adapter else None
        cpu = vllm_on_cpu()
        self.llm = LLM(
            model=model_folder,
            dtype="float32" if cpu else "auto",  # CPU: the same numbers as training and transformers
            enforce_eager=cpu,
            enable_chunked_prefill=not cpu,  # on CPU, so that per-prompt seeds work
            enable_lora=adapter is not None,
            max_lora_rank=vllm_max_lora_rank(rank or 8),  # one of the ranks vLLM accepts
            max_model_len=int(eval_cfg.vllm_max_model_len) if eval_cfg.get("vllm_max_model_len") else None,
            gpu_memory_utilization=float(eval_cfg.get("vllm_gpu_memory_utilization", 0.85)),
            seed=int(eval_cfg.seed),
            trust_remote_code=trust_remote_code,
        )
        self.lora_request = LoRARequest("adapter", 1, str(adapter)) if adapter else None

    def generate(self, prompt_ids: list[list[int]], benchmark: Benchmark, seed: int) -> list[list[Completion]]:
        return _generate(self.llm, prompt_ids, benchmark, seed, self.lora_request)
