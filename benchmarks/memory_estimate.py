"""GPU memory of one GRPO + LoRA run, estimated from the model shape and the composed config.

    python benchmarks/memory_estimate.py                                    # study preset, ranks 8/64/256, 48 GB A40
    python benchmarks/memory_estimate.py generation=hf lora.rank=256        # any Hydra overrides of launch.py

An analytic upper estimate, term by term (printed), for a Qwen2-style decoder: bf16 weights, the
adapter in float32 with its gradients and AdamW moments, the rollout KV cache (transformers) or the
share vLLM reserves (colocate), the merged-weight copy during transformers rollouts, and the training
micro-batch: checkpointed activations, one recomputed layer (with LoRA dropout copies of its inputs),
and TRL's fused LM head, which never materializes the (tokens x vocabulary) logits but works in
4096 x 32768 tiles. Measure the real peak on a GPU with
benchmarks/grpo_step.py.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
SHAPE_MODEL = "qwen1_5b_shape"  # the shape of every model in the study (Qwen2.5-1.5B)


def estimate(cfg, shape, gpu_gb: float, prompt_tokens: int) -> list[tuple[str, float]]:
    hidden, inter, layers = shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers
    heads, kv_heads, vocab = shape.num_attention_heads, shape.num_key_value_heads, shape.vocab_size
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
        rollout = terms[2][1]
        terms.append(
            (
                "peak = weights + optimizer + max(rollouts, training)",
                terms[0][1] + terms[1][1] + max(rollout, terms[3][1]),
            )
        )
    else:
        terms.append(("peak = sum of the above", sum(value for _, value in terms)))
    return terms


def main() -> None:
    import argparse

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu-gb", type=float, default=48.0, help="memory of the GPU (an A40 has 48 GB)")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides of launch.py; lora.rank=8,64,256 gives one table per rank"
    )
    args = parser.parse_args()
    gpu_gb, prompt_tokens = args.gpu_gb, args.prompt_tokens
    ranks = [a for a in args.overrides if a.startswith("lora.rank=")]
    rest = [a for a in args.overrides if not a.startswith("lora.rank=")]
    rank_values = ranks[0].split("=")[1].split(",") if ranks else ["8", "64", "256"]
    shape = OmegaConf.load(ROOT / "conf" / "model" / f"{SHAPE_MODEL}.yaml")
    print(f"Estimated GPU memory, Qwen2.5-1.5B shape, {prompt_tokens}-token prompts, one {gpu_gb:.0f} GB GPU\n")
    for rank in rank_values:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=["experiment=study", f"lora.rank={rank}", *rest])
        terms = estimate(cfg, shape, gpu_gb, prompt_tokens)
        peak = terms[-1][1] / GB
        print(
            f"| lora.rank={rank} ({'vLLM' if cfg.generation.use_vllm else 'transformers'} rollouts) | GB |\n|---|---:|"
        )
        for label, value in terms:
            print(f"| {label} | {value / GB:.1f} |")
        print(f"\n{'fits' if peak <= gpu_gb else 'DOES NOT FIT'}: {peak:.1f} of {gpu_gb:.0f} GB\n")


if __name__ == "__main__":
    main()
