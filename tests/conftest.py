"""Shared test helpers: compose configs as launch.py does, run launch.py for real in a subprocess with
its own runs folder, and the tiny model built once per session."""

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


def compose_config(*overrides: str):
    """The resolved config launch.py would run with these overrides (Hydra's own composition)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    import rlvr_sweeps.resolvers  # noqa: F401

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.resolve(task)
    return task


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One cache of built models per test session (the tiny model is built once)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def launch(tmp_path, model_cache):
    """Run `python launch.py *args` in a subprocess; runs land in tmp_path/runs."""

    def run(*args: str, env: dict | None = None, timeout: float = 600) -> Launch:
        runs = tmp_path / "runs"
        full_env = {
            **os.environ,
            "RLVR_SWEEPS_RUNS": str(runs),
            "RLVR_SWEEPS_CACHE": str(model_cache),
            "WANDB_SILENT": "true",
            "HYDRA_FULL_ERROR": "0",
            **(env or {}),
        }
        full_env.pop("WANDB_API_KEY", None) if env is None or "WANDB_API_KEY" not in env else None
        for leaked in DISTRIBUTED_ENV:  # set in this process by an in-process colocated vLLM test (TRL, accelerate)
            full_env.pop(leaked, None)
        done = subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), *args],
            cwd=tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Launch(done.returncode, done.stdout, done.stderr, runs)

    return run


@pytest.fixture(scope="session")
def tiny_folder(model_cache) -> Path:
    """The tiny random model (conf/model/tiny.yaml), built once per session."""
    from omegaconf import OmegaConf

    from rlvr_sweeps.models import model_folder

    return Path(model_folder(OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml"), model_cache))
