"""What this machine computes on, and the settings that need a GPU it may not have."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError


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


# The newest CUDA each NVIDIA driver branch runs (CUDA 12.x wheels run on any R525+ driver through minor
# version compatibility; CUDA 13 needs R580): which constraint set fits the node.
CUDA13_DRIVER = 580
CUDA12_DRIVER = 525
CONSTRAINT_SETS = {
    13: "constraints/gpu.txt (CUDA 13: torch 2.13, vLLM 0.31)",
    12: "constraints/gpu-cuda12.txt (CUDA 12.8: torch 2.10, vLLM 0.19.1, TRL 1.13)",
}


def nvidia_driver_version() -> str | None:
    """The NVIDIA kernel driver's version ("535.104.05"), or None when no driver is visible."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        text = ""
    found = re.search(r"Kernel Module(?: for [\w]+)?\s+([0-9]+\.[0-9]+(?:\.[0-9]+)?)", text)
    if found:
        return found.group(1)
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines[0] if out.returncode == 0 and lines else None


def cuda_diagnosis(torch_cuda: str | None = None, driver: str | None = None) -> str:
    """Why CUDA is not usable here, in one sentence: what torch was built for, whether a driver is
    visible (its version) and the constraint set that fits it. Arguments default to this machine's."""
    torch_cuda = torch.version.cuda if torch_cuda is None else torch_cuda
    driver = nvidia_driver_version() if driver is None else driver
    built = (
        f"torch {torch.__version__.split('+')[0]} is built for CUDA {torch_cuda}"
        if torch_cuda
        else (f"torch {torch.__version__} is a CPU build")
    )
    if not driver:
        return f"{built}, and no NVIDIA driver is visible here (no /proc/driver/nvidia/version, no nvidia-smi)"
    branch = int(driver.split(".")[0])
    fits = 13 if branch >= CUDA13_DRIVER else 12 if branch >= CUDA12_DRIVER else None
    if fits is None:
        return f"{built}; the NVIDIA driver {driver} is older than R{CUDA12_DRIVER}, which CUDA 12 needs: update it"
    if torch_cuda and int(torch_cuda.split(".")[0]) > fits:
        return (
            f"{built}, but the NVIDIA driver {driver} runs CUDA {fits} at most (CUDA 13 needs R{CUDA13_DRIVER}+): "
            f"install with {CONSTRAINT_SETS[fits]}"
        )
    return f"{built}; the NVIDIA driver {driver} is visible and fits {CONSTRAINT_SETS[fits]}"


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
