"""Seconds per GRPO step, split into generation and training, per model shape x LoRA rank x rollout path.

One table: seconds per step (generation / training), generated tokens per second, milliseconds per
decode step against the memory floor (weight bytes / measured copy bandwidth), peak memory. Every
row runs a few real GRPO steps (the project's RLVRTrainer, TRL + PEFT) in its own process, on
fixed-length prompts with completions forced to their full length, so that rows are comparable.

    # CPU (2 cores): smollm2, rank 8 vs 256, merged vs TRL's un-merged rollouts (about 10 minutes)
    python benchmarks/grpo_step.py
    # GPU: the gpu_baseline workload (Qwen2.5-1.5B shape, random weights, 2 prompts x 8 x 512 tokens)
    python benchmarks/grpo_step.py --model qwen1_5b_shape --prompts 2 --generations 8 \\
        --prompt-tokens 128 --completion-tokens 512 --ranks 8 256 --rollouts merged unmerged
    # vLLM rollouts (TRL colocate), in the vLLM environment
    .venv-vllm/bin/python benchmarks/grpo_step.py --model tiny --rollouts vllm

Rows: merged = transformers generate with the adapter merged (this project's default);
unmerged = transformers generate through the un-merged adapter (plain TRL); vllm = TRL's colocated
vLLM engine. The first step (warm-up, compilation, allocator growth) is shown apart and left out of
the means.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROLLOUTS = ("merged", "unmerged", "vllm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="a conf/model choice (tiny, smollm2, qwen1_5b_shape, ...)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 256])
    parser.add_argument("--rollouts", nargs="+", choices=ROLLOUTS, default=["merged", "unmerged"])
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps per row (the first is the warm-up)")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--completion-tokens", type=int, default=128)
    parser.add_argument(
        "--micro-batch", type=int, default=None, help="completions per forward/backward (default: all)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one row, print JSON
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. model.attn_implementation=eager")
    args = parser.parse_args()
    if args.one:
        rank, rollouts = args.one.split(":")
        print("ROW " + json.dumps(measure(args, int(rank), rollouts)), flush=True)
        return
    rows = []
    for rank in args.ranks:
        for rollouts in args.rollouts:
            command = [sys.executable, __file__, *sys.argv[1:], "--one", f"{rank}:{rollouts}"]
            done = subprocess.run(command, capture_output=True, text=True)
            found = [line[4:] for line in done.stdout.splitlines() if line.startswith("ROW ")]
            if done.returncode or not found:
                sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
                raise SystemExit(f"rank {rank}, {rollouts}: the measurement failed (output above)")
            rows.append(json.loads(found[0]))
            print(f"  measured rank {rank}, {rollouts}: {rows[-1]['step_s']:.2f} s/step", file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def table(rows: list[dict]) -> str:
    first = rows[0]
    head = (
        f"{first['model']} ({first['parameters'] / 1e6:.1f} M parameters, {first['dtype']}) on {first['device']}; "
        f"{first['completions']} completions of {first['completion_tokens']} tokens per step after "
        f"{first['prompt_tokens']}-token prompts; {first['weight_gb']:.2f} GB of weights; memory floor = weights / "
        f"copy bandwidth, measured in each row's process"
    )
    lines = [
        head,
        "",
        "| rank | rollouts | trainable | s/step | generation s | training s | first step s | tokens/s "
        "| ms/decode step | floor ms (GB/s) | x floor | peak memory GB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rank']} | {r['rollouts']} | {r['trainable'] / 1e6:.1f} M | {r['step_s']:.2f} "
            f"| {r['generation_s']:.2f} | {r['training_s']:.2f} | {r['first_step_s']:.2f} | {r['tokens_per_s']:.0f} "
            f"| {r['decode_ms']:.1f} | {r['floor_ms']:.1f} ({r['bandwidth_gbs']:.0f}) "
            f"| {r['decode_ms'] / r['floor_ms']:.1f} | {r['peak_gb']:.2f} |"
        )
    by_rank = {(r["rank"], r["rollouts"]): r["step_s"] for r in rows}
    generation = {(r["rank"], r["rollouts"]): r["generation_s"] for r in rows}
    notes = []
    for rollouts in dict.fromkeys(r["rollouts"] for r in rows):
        ranks = sorted(rank for rank, path in by_rank if path == rollouts)
        if len(ranks) > 1:
            low, high = (ranks[0], rollouts), (ranks[-1], rollouts)
            notes.append(
                f"{rollouts}: rank {ranks[-1]} / rank {ranks[0]}: step time {by_rank[high] / by_rank[low]:.2f}x, "
                f"generation {generation[high] / generation[low]:.2f}x"
            )
    for rank in dict.fromkeys(r["rank"] for r in rows):
        if (rank, "merged") in by_rank and (rank, "unmerged") in by_rank:
            ratio = by_rank[(rank, "unmerged")] / by_rank[(rank, "merged")]
            notes.append(f"rank {rank}: un-merged / merged step time = {ratio:.2f}x")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


def measure(args, rank: int, rollouts: str) -> dict:
    import torch
    from datasets import Dataset
    from hydra import compose, initialize_config_dir
    from transformers import TrainerCallback

    from rlvr_sweeps.infra.hardware import detect_hardware, use_allocated_cpus
    from rlvr_sweeps.policy.adapters import lora_config, resolve_learning_rate
    from rlvr_sweeps.policy.models import load_model
    from rlvr_sweeps.training.memory import Device, PeakMemory, estimate, trl_fuses_lm_head
    from rlvr_sweeps.training.trainer import RLVRTrainer, grpo_config

    use_allocated_cpus()
    hardware = detect_hardware()
    cuda = hardware.has_cuda
    completions = args.prompts * args.generations
    micro = args.micro_batch or completions
    vllm = rollouts == "vllm"
    if vllm:  # TRL's colocated engine in this process (needed for the weight sync on vLLM's CPU backend)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    overrides = [
        f"model={args.model}",
        f"lora.rank={rank}",
        f"lora.merge_for_rollouts={rollouts == 'merged'}",
        f"trainer={'grpo' if cuda else 'grpo_cpu'}",
        f"generation={'vllm' if vllm else 'hf'}",
        "logger=none",
        f"trainer.num_generations={args.generations}",
        f"trainer.per_device_train_batch_size={micro}",
        f"trainer.gradient_accumulation_steps={completions // micro}",
        f"trainer.max_completion_length={args.completion_tokens}",
        "trainer.save_strategy=no",
        "trainer.logging_steps=1",
        f"budget.max_steps={args.steps}",
        # random weights rarely stop, trained ones do: force full-length completions everywhere
        f"+trainer.generation_kwargs={{{'min_tokens' if vllm else 'min_new_tokens'}:{args.completion_tokens}}}",
        *args.overrides,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    loaded = load_model(cfg.model, cfg.paths.cache, hardware)
    config = grpo_config(
        cfg.trainer,
        cfg.generation,
        learning_rate=resolve_learning_rate(cfg.lora, cfg.trainer.learning_rate),
        max_steps=cfg.budget.max_steps,
        output_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "rlvr-bench"),
        hardware=hardware,
        run_name="benchmark",
        reward_weights=[1.0],
    )

    class TimedTrainer(RLVRTrainer):
        generation = []  # (seconds, decode steps, tokens) per generate call

        def _generate_single_turn(self, *a, **kw):
            sync(cuda)
            started = time.perf_counter()
            completion_ids, logprobs = super()._generate_single_turn(*a, **kw)
            sync(cuda)
            lengths = [len(ids) for ids in completion_ids]
            self.generation.append((time.perf_counter() - started, max(lengths), sum(lengths)))
            return completion_ids, logprobs

    class StepTimer(TrainerCallback):
        steps = []
        step_peaks = []  # bytes each step's peak rose above what the step started with
        memory = PeakMemory(cuda)

        def on_step_begin(self, *a, **kw):
            sync(cuda)
            self.memory.start()
            self.started, self.generated_before = time.perf_counter(), len(TimedTrainer.generation)

        def on_step_end(self, *a, **kw):
            sync(cuda)
            self.steps.append((time.perf_counter() - self.started, TimedTrainer.generation[self.generated_before :]))
            self.step_peaks.append(self.memory.growth())

    def length_reward(completions, **kwargs):  # costs nothing and differs between completions
        return [float(len(str(c))) / 100 for c in completions]

    prompt = fixed_length_prompt(loaded.tokenizer, args.prompt_tokens)
    dataset = Dataset.from_list([{"prompt": prompt}] * (args.prompts * (args.steps + 1)))
    trainer = TimedTrainer(
        model=loaded.model,
        reward_funcs=[length_reward],
        args=config,
        train_dataset=dataset,
        processing_class=loaded.tokenizer,
        peft_config=lora_config(cfg.lora),
        callbacks=[StepTimer()],
        merge_lora_for_rollouts=bool(cfg.lora.merge_for_rollouts),
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steps = StepTimer.steps
    later = steps[1:] or steps
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    generation_s = [sum(g[0] for g in gens) for _, gens in later]
    decode_steps = sum(g[1] for _, gens in later for g in gens)
    tokens = sum(g[2] for _, gens in later for g in gens)
    bandwidth = copy_bandwidth(cuda)
    weight_bytes = sum(p.numel() * p.element_size() for n, p in trainer.model.named_parameters() if "lora_" not in n)
    floor_ms = weight_bytes / bandwidth * 1e3
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    prompt_tokens = len(loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    device = Device(hardware.name, peak, peak, cuda, trl_fuses_lm_head())
    terms = dict(estimate(loaded.model.config, cfg.lora, cfg.trainer, cfg.generation, device, prompt_tokens))
    training_term = next(value for label, value in terms.items() if label.startswith("training micro-batch"))
    return {
        "model": args.model,
        "device": hardware.name,
        "dtype": str(next(loaded.model.parameters()).dtype).replace("torch.", ""),
        "parameters": loaded.parameters,
        "rank": rank,
        "rollouts": rollouts,
        "trainable": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "completions": completions,
        "completion_tokens": args.completion_tokens,
        "prompt_tokens": prompt_tokens,
        "steps": len(steps),
        "first_step_s": steps[0][0],
        "step_s": mean([s for s, _ in later]),
        "generation_s": mean(generation_s),
        "training_s": mean([s for s, _ in later]) - mean(generation_s),
        "tokens_per_s": tokens / sum(generation_s),
        "decode_ms": sum(generation_s) / decode_steps * 1e3,
        "bandwidth_gbs": bandwidth / 1e9,
        "weight_gb": weight_bytes / 1e9,
        "floor_ms": floor_ms,
        "peak_gb": peak / 1e9,
        "micro_batch": micro,
        "trl": trl_version(),
        "fused_lm_head": device.fused_lm_head,
        "step_peak_gb": max(StepTimer.step_peaks) / 1e9,  # the largest rise of any step, the first included
        "estimate_training_gb": training_term / 1e9,
    }


def trl_version() -> str:
    from importlib.metadata import version

    return version("trl")


def fixed_length_prompt(tokenizer, tokens: int) -> str:
    """Plain text (no chat template) of about `tokens` tokens for this tokenizer."""
    words = "Please reason step by step and put the final answer in a box : 12 + 7 = 19 so".split()
    text = ""
    i = 0
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
        text += ("" if not text else " ") + words[i % len(words)]
        i += 1
    return text


def copy_bandwidth(cuda: bool) -> float:
    """Bytes per second moved by a large tensor copy (read + write), the decode memory floor's bandwidth."""
    import torch

    size = (1 << 30) if cuda else (1 << 28)
    source = torch.empty(size, dtype=torch.uint8, device="cuda" if cuda else "cpu").fill_(1)
    target = torch.empty_like(source)
    target.copy_(source)
    sync(cuda)
    repeats = 20 if cuda else 5
    started = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    sync(cuda)
    return 2 * size * repeats / (time.perf_counter() - started)


def sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
