"""GPU memory of one GRPO + LoRA run, estimated from the model shape and the composed config
(rlvr_sweeps.training.memory, the estimate guards.memory fits the micro-batch with), for both TRL releases of the
constraint sets: TRL 1.16's fused log-prob head and TRL 1.13's full logits.

    python benchmarks/memory_estimate.py                                    # study preset, ranks 8/64/256, 48 GB A40
    python benchmarks/memory_estimate.py generation=hf lora.rank=256        # any Hydra overrides of launch.py
    python benchmarks/memory_estimate.py --free-gb 30                       # a node another job shares

The terms and their assumptions are in rlvr_sweeps/training/memory.py. Measure a step's real peak with
benchmarks/grpo_step.py (step_peak_gb, beside the estimate's training term).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlvr_sweeps.training.memory import GB, Device, fit  # noqa: E402

SHAPE_MODEL = "qwen1_5b_shape"  # the shape of every model in the study (Qwen2.5-1.5B)
HEADS = {"TRL 1.16 (fused log-prob head)": True, "TRL 1.13 (full logits)": False}


def main() -> None:
    import argparse

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu-gb", type=float, default=48.0, help="memory of the GPU (an A40 has 48 GB)")
    parser.add_argument("--free-gb", type=float, default=None, help="free memory (default: all of it)")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides of launch.py; lora.rank=8,64,256 gives one table per rank"
    )
    args = parser.parse_args()
    gpu_gb, prompt_tokens = args.gpu_gb, args.prompt_tokens
    free_gb = args.free_gb or gpu_gb
    ranks = [a for a in args.overrides if a.startswith("lora.rank=")]
    rest = [a for a in args.overrides if not a.startswith("lora.rank=")]
    rank_values = ranks[0].split("=")[1].split(",") if ranks else ["8", "64", "256"]
    shape = OmegaConf.load(ROOT / "conf" / "model" / f"{SHAPE_MODEL}.yaml")
    print(
        f"Estimated GPU memory, Qwen2.5-1.5B shape, {prompt_tokens}-token prompts, one {gpu_gb:.0f} GB GPU "
        f"({free_gb:.0f} GB free)\n"
    )
    for rank in rank_values:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=["experiment=study", f"lora.rank={rank}", *rest])
        for trl, fused in HEADS.items():
            device = Device(f"a {gpu_gb:.0f} GB GPU", gpu_gb * GB, free_gb * GB, True, fused)
            memory = fit(shape, cfg.lora, cfg.trainer, cfg.generation, device, prompt_tokens)
            rollouts = "vLLM" if cfg.generation.use_vllm else "transformers"
            print(f"| lora.rank={rank} ({rollouts} rollouts), {trl} | GB |\n|---|---:|")
            for label, value in memory.terms:
                print(f"| {label} | {value / GB:.1f} |")
            update = memory.requested.per_device_train_batch_size * memory.requested.gradient_accumulation_steps
            if memory.chosen is None:
                verdict = f"DOES NOT FIT: {memory.requested_peak / GB:.1f} GB; {memory.why}"
            elif memory.changed:
                verdict = (
                    f"split to fit: {memory.requested.describe()} needs {memory.requested_peak / GB:.1f} GB; "
                    f"{memory.chosen.describe()} (the same {update} completions per update) fits in "
                    f"{memory.peak / GB:.1f} of {free_gb:.0f} GB"
                )
            else:
                verdict = f"fits: {memory.peak / GB:.1f} of {free_gb:.0f} GB at {memory.chosen.describe()}"
            print(f"\n{verdict}\n")


if __name__ == "__main__":
    main()
