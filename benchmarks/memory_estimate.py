"""GPU memory of one GRPO + LoRA run, estimated from the model shape and the composed config
(rlvr_sweeps.memory, the estimate guards.memory refuses a run with).

    python benchmarks/memory_estimate.py                                    # study preset, ranks 8/64/256, 48 GB A40
    python benchmarks/memory_estimate.py generation=hf lora.rank=256        # any Hydra overrides of launch.py

The terms and their assumptions are in rlvr_sweeps/memory.py. Measure the real peak on a GPU with
benchmarks/grpo_step.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlvr_sweeps.memory import GB, estimate  # noqa: E402

SHAPE_MODEL = "qwen1_5b_shape"  # the shape of every model in the study (Qwen2.5-1.5B)


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
