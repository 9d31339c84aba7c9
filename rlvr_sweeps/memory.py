"""GPU memory of one GRPO + LoRA run, estimated from the model shape and the composed config, and the
guard that refuses a run that would not fit (guards.memory).

An analytic upper estimate, term by term, for a Qwen2/Llama-style decoder: bf16 weights, the adapter in
float32 with its gradients and AdamW moments, the rollout KV cache (transformers) or the share vLLM
reserves (colocate) plus the merged-weight copies every exact weight sync holds, the merged-weight copy
during transformers rollouts, and the training micro-batch: checkpointed activations, one recomputed
layer (with LoRA dropout copies of its inputs), and TRL's fused LM head, which never materializes the
(tokens x vocabulary) logits but works in 4096 x 32768 tiles. Against the measured GPU baseline it runs
about 25% high (BENCHMARKS.md). `benchmarks/memory_estimate.py` prints it for the study.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)

GB = 1e9
GUARD_PROMPT_TOKENS = 512  # before the data is loaded: the study's prompts are shorter
ALLOC_CONF = "expandable_segments:True"


def estimate(cfg, shape, gpu_gb: float, prompt_tokens: int) -> list[tuple[str, float]]:
    """(label, bytes) per term, the last one the peak, for the composed config `cfg` on a model of this
    `shape` (anything with a transformers config's size fields) and a GPU of `gpu_gb` GB."""
    hidden, inter, layers = shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers
    heads, vocab = shape.num_attention_heads, shape.vocab_size
    kv_heads = getattr(shape, "num_key_value_heads", None) or heads
    head_dim, kv_dim = hidden // heads, hidden // heads * kv_heads
    linear = [
        (hidden, hidden),
        (hidden, kv_dim),
        (hidden, kv_dim),
        (hidden, hidden),
        (hidden, inter),
        (hidden, inter),
        (inter, hidden),
    ]
    linear_params = layers * sum(i * o for i, o in linear)
    params = linear_params + vocab * hidden  # tied embeddings; norms are negligible
    rank = cfg.lora.rank
    adapter = layers * sum(rank * (i + o) for i, o in linear) if rank else params
    trainer, tokens = cfg.trainer, prompt_tokens + cfg.trainer.max_completion_length
    micro = trainer.per_device_train_batch_size
    rollouts = micro * trainer.gradient_accumulation_steps  # TRL generates a whole generation batch at once
    terms = [("weights (bf16)", params * 2)]
    if rank:
        terms.append(
            (f"LoRA r={rank}: {adapter / 1e6:.0f} M float32 parameters + gradients + AdamW moments", adapter * 16)
        )
    else:
        terms.append(("full fine-tuning: float32 gradients + AdamW moments + master weights", params * 16))
    if cfg.generation.use_vllm:
        terms.append(
            (
                f"vLLM colocate: vllm_gpu_memory_utilization={cfg.generation.vllm_gpu_memory_utilization} "
                f"of {gpu_gb:.0f} GB",
                cfg.generation.vllm_gpu_memory_utilization * gpu_gb * GB,
            )
        )
        terms.append(  # the exact sync merges the adapter into fresh copies of the adapted weights (lora_merge)
            ("merged-weight copies held during each weight sync into vLLM", linear_params * 2 if rank else 0)
        )
    else:
        kv = rollouts * tokens * layers * 2 * kv_heads * head_dim * 2
        merged = linear_params * 2 if rank and cfg.lora.merge_for_rollouts else 0
        terms.append(
            (
                f"rollouts (transformers): KV cache of {rollouts} x {tokens} tokens + merged-weight copy; "
                "freed before training",
                kv + merged,
            )
        )
    checkpoints = micro * tokens * hidden * 2 * layers  # one bf16 hidden state per layer
    live_layer = 2 * micro * tokens * (3 * inter + 6 * hidden) * 2  # a recomputed layer, its gradients, dropout copies
    head_tiles = 4 * 4096 * 32768 * 4  # fused log-prob head: a few float32 tiles
    terms.append(
        (
            f"training micro-batch of {micro} x {tokens} tokens: checkpointed activations + one live layer + "
            "fused LM-head tiles",
            checkpoints + live_layer + head_tiles,
        )
    )
    if not cfg.generation.use_vllm:  # rollouts and training do not hold their memory at the same time
        rollout, training = terms[2][1], terms[3][1]
        terms.append(
            (
                "peak = weights + optimizer + max(rollouts, training)",
                terms[0][1] + terms[1][1] + max(rollout, training),
            )
        )
    else:  # a weight sync happens between steps: its merged copies and a micro-batch never coexist
        weights, optimizer, vllm, merged, training = (value for _, value in terms)
        terms.append(
            (
                "peak = weights + optimizer + vLLM share + max(sync copies, training)",
                weights + optimizer + vllm + max(merged, training),
            )
        )
    return terms


def check_memory(cfg, shape, device_bytes: float, device_name: str = "the GPU") -> list[tuple[str, float]]:
    """Refuse, before loading, a run whose estimated peak exceeds the device; the terms name the fix."""
    terms = estimate(cfg, shape, device_bytes / GB, GUARD_PROMPT_TOKENS)
    peak = terms[-1][1]
    if peak > device_bytes:
        listed = "; ".join(f"{label}: {value / GB:.1f} GB" for label, value in terms[:-1])
        raise UserError(
            f"This run would need about {peak / GB:.1f} GB of GPU memory, more than {device_name}'s "
            f"{device_bytes / GB:.1f} GB ({listed}). Lower trainer.per_device_train_batch_size, "
            "trainer.max_completion_length, lora.rank or generation.vllm_gpu_memory_utilization; or set "
            "guards.memory=false to try anyway."
        )
    log.info("Estimated peak GPU memory %.1f GB of %.1f GB", peak / GB, device_bytes / GB)
    return terms


def check_gpu_memory(cfg) -> None:
    """guards.memory on this machine's first GPU, for the model `cfg.model` names (its config only)."""
    import torch
    from transformers import AutoConfig

    from .models import model_folder

    shape = AutoConfig.from_pretrained(
        model_folder(cfg.model, Path(cfg.paths.cache)), trust_remote_code=bool(cfg.model.trust_remote_code)
    )
    shape = getattr(shape, "text_config", None) or shape
    device = torch.cuda.get_device_properties(0)
    check_memory(cfg, shape, float(device.total_memory), device.name)


def use_expandable_segments(environ=os.environ) -> str:
    """PyTorch's expandable segments (less fragmentation over long runs of varying lengths) unless the user
    set PYTORCH_CUDA_ALLOC_CONF; read when CUDA first allocates, so set before the model loads."""
    return environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", ALLOC_CONF)
