"""One self-describing folder per run: config.yaml, metrics.jsonl, summary.json, checkpoints/.

The folder's path is a function of the run's overrides (see conf/config.yaml), so a relaunch of
the same sweep finds it again. Files are written so that a crash never leaves them half-written.
This module is also the one place that names checkpoint folders and reads what an earlier attempt
of a run left behind (`Resume`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import yaml

# key names that hold secrets: api_key, WANDB_API_KEY, hub_token, token, client_secret, password...
SECRET_KEY = re.compile(r"(^|_)(api_?key|token|secret|password|passwd)$", re.IGNORECASE)
SECRET_ENV = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "math-verify",
    "hydra-core",
    "submitit",
    "wandb",
    "vllm",
    "reasoning-gym",
    "rlvr-sweeps",
)

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def saved_config(cfg) -> dict:
    """The run's config as it is saved and logged (config.yaml, W&B, the plan): resolved, secrets redacted. It is
    the record of the whole run, so it takes the root config."""
    from omegaconf import OmegaConf

    return scrub_secrets(OmegaConf.to_container(cfg, resolve=True))


def scrub_secrets(value, _secrets: tuple[str, ...] | None = None):
    """A copy of a config tree without secrets: values of secret-named keys, and any string
    that contains the value of a secret environment variable, are replaced."""
    secrets = (
        _secrets
        if _secrets is not None
        else tuple(os.environ[v] for v in SECRET_ENV if len(os.environ.get(v, "")) >= 8)
    )
    if isinstance(value, dict):
        return {k: "<redacted>" if SECRET_KEY.search(str(k)) else scrub_secrets(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_secrets(v, secrets) for v in value]
    if isinstance(value, str) and any(secret in value for secret in secrets):
        return "<redacted>"
    return value


def read_jsonl(path: Path) -> tuple[list[dict], list[int]]:
    """The records of a JSON-lines file, and the numbers (from 1) of the lines that are not a JSON object."""
    records, bad = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad.append(number)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    return records, bad


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class RunRecord:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.config_path = self.dir / "config.yaml"
        self.metrics_path = self.dir / "metrics.jsonl"
        self.summary_path = self.dir / "summary.json"
        self.checkpoints_dir = self.dir / "checkpoints"
        self.final_dir = self.dir / "final"
        self.submission_path = self.dir / "submission.json"

    def write_config(self, config: dict) -> None:
        atomic_write(self.config_path, yaml.safe_dump(scrub_secrets(config), sort_keys=False))

    def record_submission(self, job_id: str) -> None:
        """The scheduler's job for this run, written by the launcher when it submits (before the job starts and
        writes anything): a relaunch recognizes a run whose job is still pending."""
        atomic_write(self.submission_path, json.dumps({"job_id": str(job_id), "submitted_at": now_iso()}) + "\n")

    def read_submission(self) -> dict:
        try:
            return json.loads(self.submission_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def unstarted_job(self) -> str | None:
        """The job of the last submission when no summary has been written since it (the job has not started, as
        far as this folder shows); None once a job wrote its summary: from then on the summary tells the run's
        state (a failed job may still be COMPLETING in SLURM when the launcher reports it)."""
        submission = self.read_submission()
        summary = self.read_summary() or {}
        if not submission or summary.get("updated_at", "") >= submission.get("submitted_at", ""):
            return None
        return submission.get("job_id")

    def read_config(self) -> dict | None:
        try:
            loaded = yaml.safe_load(self.config_path.read_text())
        except (OSError, yaml.YAMLError):
            return None
        return loaded if isinstance(loaded, dict) else None

    def read_summary(self) -> dict | None:
        try:
            return json.loads(self.summary_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def update_summary(self, **fields) -> dict:
        summary = self.read_summary() or {}
        summary.update(fields)
        summary["updated_at"] = now_iso()
        atomic_write(self.summary_path, json.dumps(summary, indent=2, default=str) + "\n")
        return summary

    def append_metrics(self, record: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record, default=float) + "\n")
            handle.flush()

    def read_metrics(self) -> list[dict]:
        """Every logged step; a line a killed job left half-written is skipped (and dropped at the next resume)."""
        if not self.metrics_path.exists():
            return []
        records, bad = read_jsonl(self.metrics_path)
        if bad:
            log.warning(
                "%s: skipped %d line(s) that are not JSON (line %s): a job killed while writing",
                self.metrics_path,
                len(bad),
                ", ".join(map(str, bad[:5])),
            )
        return records

    def drop_metrics_after(self, step: int) -> int:
        """Forget records of steps after `step` (they are redone after a resume); returns how many."""
        records = self.read_metrics()
        kept = [r for r in records if r.get("step", 0) <= step]
        atomic_write(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
        return len(records) - len(kept)

    def checkpoint(self, step: int) -> Path:
        """The folder the trainer saves step `step` into (transformers' own naming)."""
        return self.checkpoints_dir / f"{CHECKPOINT_PREFIX}-{int(step)}"

    def complete_checkpoints(self) -> list[Path]:
        """Checkpoints whose save finished (they carry the COMPLETE marker), oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [p for p in self.checkpoints_dir.glob(f"{CHECKPOINT_PREFIX}-*") if (p / COMPLETE_MARKER).exists()]
        return sorted(found, key=checkpoint_step)


COMPLETE_MARKER = "COMPLETE"
CHECKPOINT_PREFIX = "checkpoint"  # transformers' PREFIX_CHECKPOINT_DIR (test_run_record checks they agree)


def checkpoint_step(folder: Path | str) -> int:
    """The step of a checkpoint folder named by `RunRecord.checkpoint`."""
    return int(Path(folder).name.rsplit("-", 1)[-1])


def checkpoint_state(folder: Path) -> dict:
    """What the COMPLETE marker recorded at the save: step, training seconds, generated tokens."""
    try:
        return json.loads((Path(folder) / COMPLETE_MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@dataclass(frozen=True)
class RunIdentity:
    """Where a run lives and what it is called, from Hydra's view of the job."""

    run_dir: str
    """The run folder: a function of the overrides, so that a relaunch finds it again."""
    overrides: list[str]
    """The command-line overrides of this run."""
    run_name: str
    """The run folder's name (its overrides, shortened with a hash when long; `default` for none): the W&B run name."""
    choices: dict
    """The config group choices (model, lora, budget, ...)."""


def run_identity() -> RunIdentity:
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    return RunIdentity(
        run_dir=hydra.runtime.output_dir,
        overrides=list(hydra.overrides.task),
        run_name=Path(hydra.runtime.output_dir).name,  # the folder's name: the same key locally and in W&B
        choices={k: v for k, v in hydra.runtime.choices.items() if not k.startswith("hydra")},
    )


@dataclass(frozen=True)
class Resume:
    """What earlier attempts of a run left behind, and where this attempt starts."""

    prior: dict = field(default_factory=dict)
    """The run's summary.json so far ({} for a new run)."""
    checkpoint: Path | None = None
    """The last complete checkpoint to resume from (None: start from the untrained model)."""
    step: int = 0
    """The optimizer step of that checkpoint."""
    training_s: float = 0.0
    """Training seconds spent up to that checkpoint: the budget already used."""
    generated_tokens: int = 0
    """Rollout tokens generated up to that checkpoint."""

    @classmethod
    def read(cls, record: RunRecord) -> Resume:
        prior = record.read_summary() or {}
        checkpoints = record.complete_checkpoints()
        if not checkpoints:
            return cls(prior)
        state = checkpoint_state(checkpoints[-1])
        return cls(
            prior,
            checkpoints[-1],
            checkpoint_step(checkpoints[-1]),
            float(state.get("training_s", 0.0)),
            int(state.get("generated_tokens", 0)),
        )

    @property
    def completed(self) -> bool:
        return self.prior.get("status") == "completed"

    @property
    def wandb_id(self) -> str:
        """Kept in summary.json, so that every attempt of a run logs to the same W&B run."""
        return (self.prior.get("wandb") or {}).get("run_id") or uuid.uuid4().hex[:12]

    def earlier(self, section: str, key: str, default=None):
        """A value recorded by an earlier attempt that this attempt continues (only when resuming)."""
        return (self.prior.get(section) or {}).get(key, default) if self.checkpoint else default


# Settings that do not change what a run trains or measures (where it is written, how it is logged and watched, how
# fast it evaluates): they may differ between the attempts of one run, and between the runs of one table. Every
# other key must be the same when a run resumes. The micro-batch and accumulation are compared as the completions
# per update and per generation they make (guards.memory may fit another split on another node).
NOT_RESULT_KEYS = (
    "name",
    "dry_run",
    "preflight",
    "search",
    "logger",
    "paths",
    "guards",
    "budget.estimate",
    "budget.price_per_hour",
    "budget.stop_at",  # a pause (search=two_stage's stage 1): the run trains on from it, the same run
    "eval.batch_size",
    "eval.save_text",
    "eval.vllm_gpu_memory_utilization",
    "eval.vllm_max_model_len",
    "trainer.logging_steps",
    "trainer.save_total_limit",
    "trainer.log_completions",
    "generation.vllm_gpu_memory_utilization",
    "generation.vllm_enable_sleep_mode",
)
SPLIT_KEYS = (
    "trainer.per_device_train_batch_size",
    "trainer.gradient_accumulation_steps",
    "trainer.steps_per_generation",
)


def result_settings(config: dict) -> dict:
    """A saved config as dotted keys, without the keys that do not change the result; the split as the completions
    per update and per generation it makes."""
    flat = flatten_config(config)
    micro = flat.get("trainer.per_device_train_batch_size")
    accumulation = flat.get("trainer.gradient_accumulation_steps")
    if isinstance(micro, int) and isinstance(accumulation, int):
        flat["trainer.completions_per_update"] = micro * accumulation
        flat["trainer.completions_per_generation"] = micro * (flat.get("trainer.steps_per_generation") or accumulation)
    return {
        key: value
        for key, value in flat.items()
        if key not in SPLIT_KEYS and not any(key == k or key.startswith(k + ".") for k in NOT_RESULT_KEYS)
    }


def flatten_config(tree, prefix: str = "") -> dict:
    flat = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(saved: dict, now: dict) -> list[tuple[str, object, object]]:
    """The result-changing settings whose values differ between two saved configs (a key one of them lacks counts
    as null: a setting added to the project since)."""
    before, after = result_settings(saved), result_settings(now)
    return [
        (key, before.get(key), after.get(key))
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def mixed_versions(attempts: list[dict]) -> dict[str, list[str]]:
    """The packages (and the project's git commit) whose versions differ between the attempts of one run."""
    seen: dict[str, list[str]] = {}
    for attempt in attempts:
        values = {**(attempt.get("versions") or {}), "git_commit": attempt.get("git_commit")}
        for name, version in values.items():
            if version and str(version) not in seen.setdefault(name, []):
                seen[name].append(str(version))
    return {name: versions for name, versions in seen.items() if len(versions) > 1}


FLAT_SECTIONS = ("model", "lora", "budget", "timings", "train", "versions", "paused")
FLAT_FIELDS = ("status", "stop_reason", "global_step", "name", "error", "git_commit")
MILESTONE_SPEND = ("fraction", "step", "training_s", "generated_tokens", "selected_step")


def flat_summary(summary: dict) -> dict:
    """A run's summary as flat keys, as W&B stores it and analysis reads it from either source:
    eval metrics under their own names (eval/<bench>/pass@1, baseline/..., delta/...), sections
    as section/key (budget/training_s, train/last/reward, lora/rank, ...)."""
    flat = dict(summary.get("metrics") or {})
    for name in FLAT_FIELDS:
        if name in summary:
            flat[name] = summary[name]
    for section in FLAT_SECTIONS:
        flat.update(_flatten(summary.get(section) or {}, f"{section}/"))
    evaluated = summary.get("eval") or {}  # with eval.select_on: the selected checkpoint's selection score
    selected = (evaluated.get("checkpoints") or {}).get(str(evaluated.get("selected_step")))
    if selected is not None:
        flat["selection/selected_score"] = selected
    for name, entry in (
        summary.get("milestones") or {}
    ).items():  # what each shorter budget spent (its results: metrics)
        flat.update({f"milestone/{name}/{key}": entry[key] for key in MILESTONE_SPEND if key in entry})
    if summary.get("mixed_versions"):  # the attempts ran under different versions: one line, "trl 1.13.0 then 1.16.0"
        flat["mixed_versions"] = "; ".join(
            f"{name} {' then '.join(versions)}" for name, versions in summary["mixed_versions"].items()
        )
    return flat


def _flatten(tree: dict, prefix: str) -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[f"{prefix}{key}"] = value
    return flat


def provenance() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "versions": versions,
        "git_commit": _git_commit(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
