"""Weights & Biases: one W&B run per run folder, online when possible, offline when not.

The API key comes from the environment (WANDB_API_KEY) or `wandb login`; it is never read from or
written to a config. When W&B cannot be reached, the run goes on offline in its run folder and
says which `wandb sync` command uploads it later; metrics are always kept locally as well.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from omegaconf import DictConfig
from transformers.integrations import WandbCallback
from transformers.integrations.integration_utils import rewrite_logs

from .wandb_server import has_credentials, wandb_base_url, wandb_server_answers

log = logging.getLogger(__name__)


@dataclass
class Tracking:
    """The W&B run of a run folder (or none), as summary.json describes it."""

    backend: str = "none"
    """"wandb" or "none"."""
    mode: str | None = None
    """"online" or "offline" (also after a fallback)."""
    run_id: str | None = None
    """The W&B run id, kept in summary.json so that every attempt logs to the same run."""
    sync_dir: str | None = None
    """The offline run's folder, for `wandb sync`."""
    note: str | None = None
    """Why the run is offline when online was asked for."""
    _run: object = field(default=None, repr=False)

    def callbacks(self) -> list:
        """Trainer callbacks that log every step to this W&B run (none without one)."""
        return [TolerantWandbCallback()] if self._run is not None else []

    def describe(self) -> dict:
        info = {
            "backend": self.backend,
            "mode": self.mode,
            "run_id": self.run_id,
            "dir": self.sync_dir,
            "note": self.note,
        }
        if self.mode == "offline" and self.sync_dir:
            info["sync_command"] = f"wandb sync {self.sync_dir}"
        return info

    def finish(self, summary: dict | None = None, exit_code: int = 0) -> None:
        if self._run is None:
            return
        try:
            if summary:
                self._run.summary.update(summary)
            self._run.finish(exit_code=exit_code)
        except Exception as err:  # noqa: BLE001 - never lose a finished run to a tracking failure
            log.warning("W&B could not finish cleanly (%s); the local run record is complete.", err)
        self._run = None


def start_tracking(
    logger_cfg: DictConfig, run_dir: str, *, run_id: str, name: str, group: str, tags: list[str], config: dict
) -> Tracking:
    if logger_cfg.backend == "none":
        return Tracking()
    import wandb

    os.environ.setdefault("WANDB_LOG_MODEL", "false")  # checkpoints stay in the run folder
    common = dict(
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        id=run_id,
        name=name,
        group=group,
        tags=tags,
        config=config,
        dir=run_dir,
        resume="allow",
    )
    note = None
    if logger_cfg.mode == "online":
        if not has_credentials():
            note = "no W&B credentials (set WANDB_API_KEY or run `wandb login`)"
        elif not wandb_server_answers(float(logger_cfg.init_timeout_s)):
            note = f"W&B unreachable (no answer from {wandb_base_url()})"
        else:
            try:
                settings = wandb.Settings(init_timeout=float(logger_cfg.init_timeout_s), silent=True)
                run = wandb.init(mode="online", settings=settings, **common)
                return Tracking("wandb", "online", run.id, run.dir, None, run)
            except Exception as err:  # noqa: BLE001 - wandb raises CommError, UsageError, timeouts...
                note = f"W&B unreachable ({type(err).__name__}: {str(err).splitlines()[0][:160]})"
                wandb.teardown()  # the failed attempt still holds the run id in wandb's service
    elif logger_cfg.mode != "offline":
        from ..errors import UserError

        raise UserError(f"logger.mode={logger_cfg.mode!r}: use online or offline.")
    run = _init_offline(wandb, common)
    sync_dir = os.path.dirname(run.dir) if run.dir.endswith("files") else run.dir
    if note:
        log.warning("%s: logging offline to %s; upload later with `wandb sync %s`", note, sync_dir, sync_dir)
    return Tracking("wandb", "offline", run.id, sync_dir, note, run)


def _init_offline(wandb, common: dict, attempts: int = 5):
    """wandb.init offline; after a failed online attempt wandb's service can hold the run id for a
    moment ("run ID ... is in use"), so tear down and try again rather than lose the run."""
    for attempt in range(attempts):
        try:
            return wandb.init(mode="offline", settings=wandb.Settings(silent=True), **common)
        except Exception as err:  # noqa: BLE001 - wandb's ServerResponseError has no stable import path
            if "in use" not in str(err) or attempt == attempts - 1:
                raise
            wandb.teardown()
            time.sleep(2.0 * (attempt + 1))


class TolerantWandbCallback(WandbCallback):
    """transformers' WandbCallback, but the first W&B failure (a W&B service killed with the job's
    processes at preemption, a lost network) turns W&B logging off instead of failing the run;
    metrics.jsonl keeps every step. The trainer itself gets report_to="none", so that TRL's own
    direct W&B calls (profiling timers) cannot fail the run either."""

    broken = False

    def _guarded(self, event: str, *args, **kwargs):
        if self.broken:
            return None
        try:
            own = getattr(type(self), event, None) if event.startswith("_") else None
            return own(self, *args, **kwargs) if own else getattr(super(), event)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any W&B failure
            self.broken = True
            log.warning(
                "W&B logging stopped (%s: %s); the run goes on and metrics.jsonl keeps every step.",
                type(err).__name__,
                (str(err).splitlines() or [""])[0][:160],
            )
            return None

    def on_train_begin(self, *args, **kwargs):
        return self._guarded("on_train_begin", *args, **kwargs)

    def on_train_end(self, *args, **kwargs):
        return self._guarded("on_train_end", *args, **kwargs)

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        return self._guarded("_log_at_training_step", args, state, control, model=model, logs=logs)

    def _log_at_training_step(self, args, state, control, model=None, logs=None, **kwargs):
        """WandbCallback.on_log, with W&B's step set to the training step: every attempt of a requeued run
        continues one axis, and a step redone after a kill is not plotted twice (W&B keeps the first version of a
        step, metrics.jsonl the redone one; `python -m rlvr_sweeps.upload` writes a W&B run from the folder)."""
        if self._wandb is None or not state.is_world_process_zero:
            return
        if not self._initialized:
            self.setup(args, state, model)
        totals = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")
        for key in totals:
            if key in (logs or {}):
                self._wandb.run.summary[key] = logs[key]
        step_logs = rewrite_logs({k: v for k, v in (logs or {}).items() if k not in totals})
        self._wandb.log({**step_logs, "train/global_step": state.global_step}, step=state.global_step)

    def on_save(self, *args, **kwargs):
        return self._guarded("on_save", *args, **kwargs)

    def on_evaluate(self, *args, **kwargs):
        return self._guarded("on_evaluate", *args, **kwargs)
