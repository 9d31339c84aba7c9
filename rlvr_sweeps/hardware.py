"""What this machine computes on, and the settings that need a GPU it may not have."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import torch

from .errors import UserError


@dataclass(frozen=True)
class Hardware:
    device: str  # "cuda" or "cpu"
    name: str  # e.g. "NVIDIA A40" or "cpu"
    count: int  # GPUs, or CPU cores available to this process

    @property
    def has_cuda(self) -> bool:
        return self.device == "cuda"


def allocated_cpus() -> int:
    """CPU cores this job may use: SLURM's allocation when there is one, else the affinity mask."""
    return int(os.environ.get("SLURM_CPUS_PER_TASK") or len(os.sched_getaffinity(0)))


def detect_hardware() -> Hardware:
    if torch.cuda.is_available():
        return Hardware("cuda", torch.cuda.get_device_name(0), torch.cuda.device_count())
    return Hardware("cpu", "cpu", allocated_cpus())


def use_allocated_cpus() -> None:
    """Keep torch's threads within the job's CPUs: oversubscribed cores slow CPU training many-fold."""
    torch.set_num_threads(max(1, allocated_cpus()))


def resolve_dtype(name: str, hardware: Hardware) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if hardware.has_cuda else torch.float32
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise UserError(f"model.dtype={name!r} is not a torch dtype; use auto, float32, bfloat16 or float16.")
    return dtype


def check_gpu_settings(cfg, hardware: Hardware) -> None:
    """Refuse, with the fix, settings that only run on a CUDA GPU when there is none."""
    if not hardware.has_cuda:
        _refuse_gpu_only_settings(cfg)
    uses_vllm = cfg.generation.get("use_vllm") or cfg.eval.get("backend") == "vllm"
    if uses_vllm and importlib.util.find_spec("vllm") is None:
        raise UserError("vLLM is not installed: pip install -e '.[vllm]' on a GPU machine (make setup-vllm on CPU), "
                        "or use generation=hf eval.backend=hf.")


def _refuse_gpu_only_settings(cfg) -> None:
    needs_gpu = []
    if cfg.budget.device != "cpu":
        needs_gpu.append(f"budget={cfg.budget.name} counts {cfg.budget.device} GPU-hours (use budget=smoke)")
    if cfg.trainer.get("bf16"):
        needs_gpu.append("trainer.bf16=true (use trainer.bf16=null)")
    if cfg.trainer.get("fp16"):
        needs_gpu.append("trainer.fp16=true (use trainer.fp16=false)")
    if cfg.model.get("attn_implementation") == "flash_attention_2":
        needs_gpu.append("model.attn_implementation=flash_attention_2 (use sdpa)")
    if cfg.generation.get("use_vllm") and not _vllm_cpu_build():
        needs_gpu.append("generation=vllm without a CPU build of vLLM (use generation=hf)")
    if needs_gpu:
        raise UserError(
            "This machine has no CUDA GPU, but the config asks for one:\n  - "
            + "\n  - ".join(needs_gpu)
            + "\nRun on a GPU node (e.g. hydra/launcher=slurm_a40) or change the settings named above."
        )


def _vllm_cpu_build() -> bool:
    try:
        from importlib.metadata import distribution

        distribution("vllm-cpu")
        return True
    except Exception:  # noqa: BLE001
        return False
