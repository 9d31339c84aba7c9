"""Memory of one GRPO + LoRA run, estimated from the model shape, the config nodes and the TRL that trains; the
micro-batch that fits; the guard that refuses a run that cannot fit (guards.memory); and the peak a stretch of
work really reached.

An analytic upper estimate, term by term, for a Qwen2/Llama-style decoder: the weights (bf16 on CUDA, float32
on CPU), the adapter in float32 with its gradients and AdamW moments, the rollout KV cache (transformers) or the
share vLLM reserves (colocate) plus the merged-weight copies every exact weight sync holds, and the training
micro-batch: saved activations (checkpointed, or every layer's) and the LM head's log-probabilities, which
depend on the TRL release (read from its source):

- TRL 1.16 wraps the LM head with a chunked, fused log-prob head (`add_fused_lm_head`,
  `trl/kernels/chunked_logprob.py`): (tokens x vocabulary) logits never exist, only tiles of 4096 tokens x
  32768 vocabulary entries. On CUDA (Triton) only the completion tokens are projected; elsewhere every position.
- TRL 1.13 has no such head: `_get_per_token_logps_and_entropies` takes the model's logits of the micro-batch's
  completion positions (float32: accelerate converts a bf16 autocast output), divides them by the temperature
  (a second copy, both alive), and its `selective_log_softmax` backward makes per-row gradients, their stack and
  the gather's dense gradient beside the saved copy: LOGITS_COPIES float32 copies at the peak (checked against
  a CPU measurement: BENCHMARKS.md, tests/test_memory.py).

`benchmarks/memory_estimate.py` prints the terms for the study; `benchmarks/grpo_step.py` measures a step's peak.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from importlib import metadata

from ..errors import UserError

log = logging.getLogger(__name__)

GB = 1e9
GUARD_PROMPT_TOKENS = 512  # before the data is loaded: the study's prompts are shorter
ALLOC_CONF = "expandable_segments:True"
FUSED_TOKEN_TILE, FUSED_VOCAB_TILE = 4096, 32768  # trl/kernels/chunked_logprob.py: TOKEN_CHUNK_SIZE, chunk_size
# float32 tiles alive at once. CUDA: the bf16 tile buffer, in-place Triton folds, fp32 products (about 1.5; 4 kept as
# margin). The torch fallback (CPU): the buffer, then z, log p, p, the gradient, the target mask and its products of
# _backward_tile (8.6 measured, BENCHMARKS.md; 10 kept as margin).
FUSED_TILES = {True: 4, False: 10}
LOGITS_COPIES = 4  # float32 (micro-batch x completion x vocabulary) copies at TRL 1.13's peak (module docstring)
# Losses whose gradient does not depend on how a generation batch is cut into micro-batches (TRL normalizes them
# over the generation batch or per sequence; tests/test_memory.py checks it): only these may be split to fit.
SPLITTABLE_LOSSES = ("dapo", "grpo", "dr_grpo")


def trl_fuses_lm_head() -> bool:
    """Whether the installed TRL computes GRPO's log-probabilities with its chunked, fused LM head (TRL 1.16: yes;
    TRL 1.13, the CUDA 12 set's: no), read from the distribution's file list without importing it."""
    try:
        files = metadata.files("trl") or []
    except metadata.PackageNotFoundError:
        return False
    return any(str(f).replace("\\", "/").endswith("trl/kernels/chunked_logprob.py") for f in files)


@dataclass(frozen=True)
class Device:
    """The memory a run is estimated against, and how the installed stack uses it."""

    name: str
    total_bytes: float
    """The device's memory: vLLM's colocated engine takes `vllm_gpu_memory_utilization` of this."""
    free_bytes: float
    """What is free before the run loads (another job on a shared node holds the rest): the estimate must fit it."""
    cuda: bool = True
    """CUDA: bf16 weights and autocast, TRL's fused head on completion tokens only (Triton); else float32, every
    position through the torch fallback."""
    fused_lm_head: bool = True
    """Whether the installed TRL has the fused log-prob head (trl_fuses_lm_head())."""


@dataclass(frozen=True)
class Split:
    """Completions per micro-batch and micro-batches per update (their product is the update's completions)."""

    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    steps_per_generation: int | None = None  # scaled with the accumulation when the trainer node sets it

    def describe(self) -> str:
        return f"{self.per_device_train_batch_size} x {self.gradient_accumulation_steps}"


def split_of(trainer) -> Split:
    spg = trainer.get("steps_per_generation")
    return Split(
        int(trainer.per_device_train_batch_size),
        int(trainer.gradient_accumulation_steps),
        int(spg) if spg else None,
    )


def estimate(
    shape, lora, trainer, generation, device: Device, prompt_tokens: int, split: Split | None = None
) -> list[tuple[str, float]]:
    """(label, bytes) per term, the last one the peak, for a model of this `shape` (a transformers config's size
    fields) trained with these `lora`, `trainer` and `generation` nodes on `device`; `split` replaces the
    trainer's micro-batch and accumulation."""
    split = split or split_of(trainer)
    hidden, inter, layers = shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers
    heads, vocab = shape.num_attention_heads, shape.vocab_size
    kv_heads = getattr(shape, "num_key_value_heads", None) or heads
    head_dim, kv_dim = hidden // heads, hidden // heads * kv_heads
    linear = [(hidden, hidden), (hidden, kv_dim), (hidden, kv_dim), (hidden, hidden)]
    linear += [(hidden, inter), (hidden, inter), (inter, hidden)]
    linear_params = layers * sum(i * o for i, o in linear)
    params = linear_params + vocab * hidden  # tied embeddings; norms are negligible
    rank = lora.rank
    adapter = layers * sum(rank * (i + o) for i, o in linear) if rank else params
    width = 2 if device.cuda else 4  # bytes of a weight or an activation: bf16 on CUDA, float32 elsewhere
    completion = int(trainer.max_completion_length)
    tokens, micro = prompt_tokens + completion, split.per_device_train_batch_size
    rollouts = micro * (split.steps_per_generation or split.gradient_accumulation_steps)  # one generation batch
    terms = [(f"weights ({'bf16' if device.cuda else 'float32'})", params * width)]
    if rank:
        terms.append(
            (f"LoRA r={rank}: {adapter / 1e6:.0f} M float32 parameters + gradients + AdamW moments", adapter * 16)
        )
    else:
        terms.append(("full fine-tuning: float32 gradients + AdamW moments + master weights", params * 16))
    if generation.use_vllm:
        share = float(generation.vllm_gpu_memory_utilization)
        terms.append(  # vLLM takes its share of the whole device, whatever else holds memory
            (
                f"vLLM colocate: vllm_gpu_memory_utilization={share} of {device.total_bytes / GB:.0f} GB",
                share * device.total_bytes,
            )
        )
        terms.append(  # the exact sync merges the adapter into fresh copies of the adapted weights (lora_merge)
            ("merged-weight copies held during each weight sync into vLLM", linear_params * width if rank else 0)
        )
    else:
        kv = rollouts * tokens * layers * 2 * kv_heads * head_dim * width
        merged = linear_params * width if rank and lora.merge_for_rollouts else 0
        terms.append(
            (
                f"rollouts (transformers): KV cache of {rollouts} x {tokens} tokens + merged-weight copy; "
                "freed before training",
                kv + merged,
            )
        )
    # values a layer saves for its backward, per token: norms' inputs and outputs, q/k/v before and after RoPE,
    # attention output, the MLP's gate, up, activation and product, LoRA's rank-sized intermediates; dropout copies
    layer = 8 * hidden + 4 * kv_dim + 4 * inter + (7 * rank if rank else 0)
    layer += 6 * hidden + inter if rank and float(lora.get("dropout") or 0) > 0 else 0
    per_layer = micro * tokens * layer * width
    if trainer.get("gradient_checkpointing"):
        activations = micro * tokens * hidden * width * layers + 2 * per_layer  # checkpoints + one recomputed layer
        saved = "checkpointed activations + one live layer"
    else:
        activations = layers * per_layer + per_layer  # every layer's, and one layer's gradients
        saved = f"activations of {layers} layers"
    logits, head = lm_head_bytes(micro, prompt_tokens, completion, vocab, device)
    terms.append((f"training micro-batch of {micro} x {tokens} tokens: {saved} + {head}", activations + logits))
    if not generation.use_vllm:  # rollouts and training do not hold their memory at the same time
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


def lm_head_bytes(micro: int, prompt_tokens: int, completion: int, vocab: int, device: Device) -> tuple[float, str]:
    """The LM head's log-probability memory in one micro-batch's forward and backward, and its description."""
    if device.fused_lm_head:
        scored = micro * (completion if device.cuda else prompt_tokens + completion)
        rows, tiles = min(scored, FUSED_TOKEN_TILE), FUSED_TILES[device.cuda]
        return tiles * rows * min(
            vocab, FUSED_VOCAB_TILE
        ) * 4, f"fused LM-head tiles ({tiles} x {rows} x {FUSED_VOCAB_TILE})"
    positions = micro * (completion + 1) * vocab
    autocast_copy = positions * 2 if device.cuda else 0  # the bf16 output accelerate converts to float32
    return (
        LOGITS_COPIES * positions * 4 + autocast_copy,
        f"full logits ({LOGITS_COPIES} float32 copies of {micro} x {completion + 1} x {vocab}: a TRL without the "
        "fused head)",
    )


@dataclass(frozen=True)
class MemoryFit:
    """What the estimate says for a run: the split it trains with, and the terms at that split."""

    requested: Split
    chosen: Split | None
    """The largest micro-batch that fits at the same completions per update; None when not even 1 fits."""
    terms: list
    device: Device
    requested_peak: float = 0.0
    """The estimated peak at the requested split."""
    why: str = ""
    """Why nothing fits (when chosen is None)."""

    @property
    def peak(self) -> float:
        return self.terms[-1][1]

    @property
    def changed(self) -> bool:
        return self.chosen is not None and self.chosen != self.requested

    def record(self) -> dict:
        """summary.json's and W&B's `memory` section."""
        return {
            "device": self.device.name,
            "device_total_gb": round(self.device.total_bytes / GB, 2),
            "device_free_gb": round(self.device.free_bytes / GB, 2),
            "fused_lm_head": self.device.fused_lm_head,
            "estimate_gb": round(self.peak / GB, 2),
            "requested_estimate_gb": round(self.requested_peak / GB, 2),
            "terms_gb": {label: round(value / GB, 3) for label, value in self.terms[:-1]},
            "requested_micro_batch": self.requested.per_device_train_batch_size,
            "requested_accumulation": self.requested.gradient_accumulation_steps,
            "micro_batch": self.chosen.per_device_train_batch_size if self.chosen else None,
            "accumulation": self.chosen.gradient_accumulation_steps if self.chosen else None,
            "split_to_fit": self.changed,
        }


def fit(shape, lora, trainer, generation, device: Device, prompt_tokens: int = GUARD_PROMPT_TOKENS) -> MemoryFit:
    """The configured split when its estimate fits the device's free memory; else the largest smaller micro-batch
    that does at the same completions per update (per_device_train_batch_size down, gradient_accumulation_steps
    up: TRL's generation batch, and so what each update trains on, is unchanged); chosen None when none fits or
    the loss would change with the split (terms at the configured split then)."""
    requested = split_of(trainer)
    first = estimate(shape, lora, trainer, generation, device, prompt_tokens, requested)
    peak = first[-1][1]
    if peak <= device.free_bytes:
        return MemoryFit(requested, requested, first, device, peak)
    loss = str(trainer.get("loss_type"))
    if loss not in SPLITTABLE_LOSSES:
        why = f"loss_type={loss} changes with the micro-batch, so it is not split to fit"
        return MemoryFit(requested, None, first, device, peak, why)
    terms = first
    if requested.per_device_train_batch_size > 1:
        update = requested.per_device_train_batch_size * requested.gradient_accumulation_steps
        for micro in range(requested.per_device_train_batch_size - 1, 0, -1):
            if update % micro:
                continue
            factor = requested.per_device_train_batch_size / micro
            spg = requested.steps_per_generation
            if spg and (spg * factor) % 1:
                continue
            split = Split(micro, update // micro, int(spg * factor) if spg else None)
            terms = estimate(shape, lora, trainer, generation, device, prompt_tokens, split)
            if terms[-1][1] <= device.free_bytes:
                return MemoryFit(requested, split, terms, device, peak)
    why = f"not even a micro-batch of 1 fits at the same completions per update ({terms[-1][1] / GB:.1f} GB)"
    return MemoryFit(requested, None, terms, device, peak, why)


def refusal(memory: MemoryFit) -> str:
    """Why a run cannot fit, with its terms and the settings that lower them."""
    listed = "; ".join(f"{label}: {value / GB:.1f} GB" for label, value in memory.terms[:-1])
    device = memory.device
    free = f"the {device.free_bytes / GB:.1f} GB free on {device.name}"
    if device.free_bytes < device.total_bytes * 0.98:
        free += f" (of {device.total_bytes / GB:.1f} GB: another process holds the rest)"
    return (
        f"This run would need about {memory.requested_peak / GB:.1f} GB of GPU memory at "
        f"{memory.requested.describe()} completions (micro-batch x accumulation), more than {free}, and {memory.why}: "
        f"{listed}. Lower trainer.max_completion_length, lora.rank or "
        "generation.vllm_gpu_memory_utilization (or trainer.per_device_train_batch_size, for a loss_type other than "
        f"{', '.join(SPLITTABLE_LOSSES)}); or set guards.memory=false to try anyway."
    )


def check_memory(
    shape, lora, trainer, generation, device: Device, prompt_tokens: int = GUARD_PROMPT_TOKENS
) -> MemoryFit:
    """guards.memory: the fit, or a refusal naming the terms when nothing fits."""
    memory = fit(shape, lora, trainer, generation, device, prompt_tokens)
    if memory.chosen is None:
        raise UserError(refusal(memory))
    log.info("Estimated peak memory %.1f GB of %.1f GB free", memory.peak / GB, device.free_bytes / GB)
    return memory


def this_device(memory_gb: float | None = None, machine_ram: bool = False) -> Device | None:
    """This machine's first GPU (free memory from torch.cuda.mem_get_info), or, with `memory_gb`
    (guards.device_memory_gb), a device of that size in this machine's precision; on a CPU, its RAM when
    `machine_ram` (a preflight), else None."""
    import torch

    fused = trl_fuses_lm_head()
    cuda = torch.cuda.is_available()
    if memory_gb:
        name = f"{'cuda' if cuda else 'cpu'} limited to {float(memory_gb):g} GB (guards.device_memory_gb)"
        return Device(name, float(memory_gb) * GB, float(memory_gb) * GB, cuda, fused)
    if not cuda:
        total, available = _meminfo("MemTotal"), _meminfo("MemAvailable")
        return Device("this machine's RAM", total, available, False, fused) if machine_ram and total else None
    free, total = torch.cuda.mem_get_info(0)
    return Device(torch.cuda.get_device_name(0), float(total), float(free), True, fused)


def model_shape(model_cfg, cache_dir):
    """The size fields of the model `model_cfg` names (its config only, nothing loaded)."""
    from pathlib import Path

    from transformers import AutoConfig

    from ..policy.models import model_folder

    shape = AutoConfig.from_pretrained(
        model_folder(model_cfg, Path(cache_dir)), trust_remote_code=bool(model_cfg.trust_remote_code)
    )
    return getattr(shape, "text_config", None) or shape


def apply_split(trainer, split: Split) -> None:
    """Write a chosen split into the trainer node (what GRPOConfig, config.yaml and W&B then show)."""
    trainer.per_device_train_batch_size = split.per_device_train_batch_size
    trainer.gradient_accumulation_steps = split.gradient_accumulation_steps
    if split.steps_per_generation:
        trainer.steps_per_generation = split.steps_per_generation


class PeakMemory:
    """The peak memory of a stretch of work in this process: CUDA's allocator peak on a GPU (vLLM's colocated
    engine allocates through it too), the resident-set peak (VmHWM, reset through /proc/self/clear_refs) on CPU."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.baseline = 0.0

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.baseline = float(torch.cuda.memory_allocated())
        else:
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")
            except OSError:
                pass
            self.baseline = _proc_status("VmRSS")

    def peak(self) -> float:
        """Bytes at the peak since start()."""
        if self.cuda:
            import torch

            return float(torch.cuda.max_memory_allocated())
        return _proc_status("VmHWM")

    def growth(self) -> float:
        """Bytes the peak rose above what was held at start()."""
        return max(0.0, self.peak() - self.baseline)

    def record(self) -> dict:
        """The measured peak for summary.json: the allocator's peak (and what it reserved) on CUDA, the process's
        resident peak on CPU."""
        if not self.cuda:
            return {"measured_peak_gb": round(self.peak() / GB, 3), "measured": "process resident-set peak (CPU)"}
        import torch

        return {
            "measured_peak_gb": round(self.peak() / GB, 3),
            "measured_reserved_gb": round(torch.cuda.max_memory_reserved() / GB, 3),
            "measured": "torch.cuda.max_memory_allocated (vLLM's colocated engine included)",
        }


def _meminfo(key: str) -> float:
    return _proc_kib("/proc/meminfo", key, 0.0)


def _proc_status(key: str) -> float:
    return _proc_kib("/proc/self/status", key, math.nan)


def _proc_kib(path: str, key: str, missing: float) -> float:
    """Bytes of a `key: N kB` line of a /proc file."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return missing


def use_expandable_segments(environ=os.environ, sleep_mode: bool = False) -> str | None:
    """PyTorch's expandable segments (less fragmentation over long runs of varying lengths) unless the user set
    PYTORCH_CUDA_ALLOC_CONF, or vLLM's sleep mode is on (vLLM 0.19.1's sleep-mode allocator asserts against
    them); read when CUDA first allocates, so set before the model loads."""
    if sleep_mode:
        return environ.get("PYTORCH_CUDA_ALLOC_CONF")
    return environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", ALLOC_CONF)
