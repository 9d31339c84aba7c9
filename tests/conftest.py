"""Shared test helpers: run launch.py for real in a subprocess, with its own runs folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Launch:
    returncode: int
    stdout: str
    stderr: str
    runs: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def run_dirs(self, name: str = "default") -> list[Path]:
        return sorted(p for p in (self.runs / name).iterdir() if (p / "summary.json").exists())

    def summary(self, run_dir: Path) -> dict:
        return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One cache of built models per test session (the tiny model is built once)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def launch(tmp_path, model_cache):
    """Run `python launch.py *args` in a subprocess; runs land in tmp_path/runs."""

    def run(*args: str, env: dict | None = None, timeout: float = 600) -> Launch:
        runs = tmp_path / "runs"
        full_env = {**os.environ, "RLVR_SWEEPS_RUNS": str(runs), "RLVR_SWEEPS_CACHE": str(model_cache),
                    "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0", **(env or {})}
        full_env.pop("WANDB_API_KEY", None) if env is None or "WANDB_API_KEY" not in env else None
        for leaked in DISTRIBUTED_ENV:  # set in this process by an in-process colocated vLLM test (TRL, accelerate)
            full_env.pop(leaked, None)
        done = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=tmp_path, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
        return Launch(done.returncode, done.stdout, done.stderr, runs)

    return run
