"""What this machine computes on, and the settings that need a GPU it may not have."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import UserError


@dataclass(frozen=True)
class Hardware:
    """What this process computes on, as the budget counts it."""

    device: str
    """"cuda" or "cpu"."""
    name: str
    """The device's name, e.g. "NVIDIA A40", or "cpu"."""
    count: int
    """GPUs, or the CPU cores this process may use: device-hours are hours x count."""

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


def planned_hardware(budget_device: str, detected: Hardware) -> Hardware:
    """The hardware a plan (dry_run) is checked against: the budget's GPU when this machine has none (a
    laptop or login node planning a GPU sweep), else what is here."""
    if budget_device == "cpu" or detected.has_cuda:
        return detected
    return Hardware("cuda", f"{budget_device} (planned)", 1)


def use_allocated_cpus() -> None:
    """Keep torch's threads within the job's CPUs: oversubscribed cores slow CPU training many-fold
    (OpenMP threads spin while they wait). An explicit OMP_NUM_THREADS (e.g. several runs side by
    side on one machine) wins over the allocation."""
    explicit = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(max(1, int(explicit) if explicit.isdigit() else allocated_cpus()))


def resolve_dtype(name: str, hardware: Hardware) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if hardware.has_cuda else torch.float32
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise UserError(f"model.dtype={name!r} is not a torch dtype; use auto, float32, bfloat16 or float16.")
    return dtype
