"""OmegaConf resolvers the configs use; registered when launch.py imports this module."""

from __future__ import annotations

import hashlib
import os

from omegaconf import OmegaConf

MAX_NAME = 200  # file systems allow 255 bytes per name


def run_id(override_dirname: str) -> str:
    """A folder name for a set of overrides: readable, one path level, stable, bounded in length."""
    name = (override_dirname or "default").replace("/", "_").replace("\\", "_").replace("'", "").replace('"', "")
    if name in {".", ".."}:
        name = f"_{name}"
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_NAME - 11]}-{digest}"
    return name


def register() -> None:
    OmegaConf.register_new_resolver("run_id", run_id, replace=True)
    OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)
    OmegaConf.register_new_resolver("add", lambda *values: sum(float(v) for v in values), replace=True)
    OmegaConf.register_new_resolver("int", lambda value: int(float(value)), replace=True)


register()
