"""train(cfg): one GRPO + LoRA run, from a composed config to a finished run folder."""

from __future__ import annotations

import logging
import time
import traceback
import uuid
import warnings

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .budget import Budget, BudgetCallback, BudgetMeter, BudgetProgressBar
from .data import build_train_dataset
from .errors import UserError
from .hardware import check_gpu_settings, detect_hardware
from .models import load_model
from .rewards import build_reward_functions
from .run_record import MetricsCallback, RunRecord, now_iso, provenance, scrub_secrets
from .tracking import Tracking, start_tracking
from .trainer import BudgetedGRPOTrainer, grpo_config, lora_config
from .verifier import MathVerifier

log = logging.getLogger(__name__)
# transformers 5 warns about its own deprecated alias on every step; nothing here uses it
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def run_identity(cfg: DictConfig) -> dict:
    """Where a run lives and what it is called, from Hydra's view of this job."""
    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    return {
        "run_dir": hydra.runtime.output_dir,
        "overrides": overrides,
        "run_name": hydra.job.override_dirname or "default",
        "choices": {k: v for k, v in hydra.runtime.choices.items() if not k.startswith("hydra")},
    }


def tags_for(cfg: DictConfig) -> list[str]:
    rank = f"r{cfg.lora.rank}" if cfg.lora.rank is not None else "full-ft"
    return [str(cfg.model.name), rank, str(cfg.budget.name), str(cfg.data.name)]


def train(cfg: DictConfig) -> dict:
    identity = run_identity(cfg)
    record = RunRecord(identity["run_dir"])
    config = scrub_secrets(OmegaConf.to_container(cfg, resolve=True))
    if cfg.dry_run:
        print(OmegaConf.to_yaml(config))
        print(f"run folder: {record.dir}")
        return {"status": "dry_run", "run_dir": str(record.dir)}

    hardware = detect_hardware()
    meter = BudgetMeter(Budget.from_config(cfg.budget), hardware)
    check_gpu_settings(cfg, hardware)
    record.write_config(config)
    record.drop_metrics_after(0)
    record.update_summary(
        status="running", stop_reason=None, error=None, name=cfg.name, run_dir=str(record.dir),
        overrides=identity["overrides"], choices=identity["choices"], started_at=now_iso(),
        model={"name": cfg.model.name, "id": cfg.model.id}, lora={"rank": cfg.lora.rank}, **provenance(),
    )
    tracking, verifier, summary = Tracking(), None, {}
    timings = {}
    try:
        tracking = start_tracking(cfg.logger, str(record.dir), run_id=_wandb_id(record), name=identity["run_name"],
                                  group=str(cfg.name), tags=tags_for(cfg), config={**config, "overrides": identity["overrides"]})
        record.update_summary(wandb=tracking.describe())

        loaded = load_model(cfg.model, cfg.paths.cache, hardware)
        dataset = build_train_dataset(cfg.data, cfg.prompt, loaded.tokenizer)
        verifier = MathVerifier(timeout_s=cfg.reward.timeout_s, max_chars=cfg.reward.max_chars)
        reward_functions, reward_weights = build_reward_functions(cfg.reward, verifier)
        args = grpo_config(cfg, output_dir=str(record.checkpoints_dir), hardware=hardware, report_to=tracking.report_to,
                           run_name=identity["run_name"], reward_weights=reward_weights)
        budget_cb = BudgetCallback(meter, lookahead_steps=args.steps_per_generation * args.num_iterations)
        metrics_cb = MetricsCallback(record, meter)
        trainer = BudgetedGRPOTrainer(
            model=loaded.model, reward_funcs=reward_functions, args=args, train_dataset=dataset,
            processing_class=loaded.tokenizer, peft_config=lora_config(cfg.lora),
            callbacks=[budget_cb, metrics_cb, BudgetProgressBar(meter)],
            on_generated_tokens=meter.add_generated_tokens,
        )
        _use_budget_progress_bar(trainer)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        record.update_summary(model={"name": cfg.model.name, "id": cfg.model.id, "folder": loaded.folder,
                                     "parameters": loaded.parameters, "trainable_parameters": trainable},
                              lora={"rank": cfg.lora.rank, "alpha": trainer.model.peft_config["default"].lora_alpha
                                    if cfg.lora.rank is not None else None})
        timings["setup_s"] = round(meter.elapsed_s, 3)
        log.info("Training %s (%.2f M trainable parameters) on %s for at most %.1f min",
                 identity["run_name"], trainable / 1e6, hardware.name, meter.budget.training_seconds / 60)

        if meter.training_left_s <= 0:
            budget_cb.stop_reason = "wall_clock"
            log.warning("The budget was spent before training could start (setup took %.0f s).", timings["setup_s"])
        else:
            started = time.monotonic()
            trainer.train()
            timings["train_s"] = round(time.monotonic() - started, 3)

        started = time.monotonic()
        trainer.save_model(str(record.final_dir))
        timings["final_save_s"] = round(time.monotonic() - started, 3)
        timings["total_s"] = round(meter.elapsed_s, 3)
        summary = record.update_summary(
            status="completed", stop_reason=budget_cb.stop_reason, finished_at=now_iso(),
            global_step=trainer.state.global_step, train=_train_summary(record), budget=meter.usage(),
            timings={**timings, **budget_cb.timings()}, trainer_totals=metrics_cb.train_summary,
        )
        log.info("Finished: %s after %d steps (%s). Reward %s -> %s. Used %.0f of %.0f s; %.4f %s-hours, $%.4f.",
                 summary["status"], summary["global_step"], summary["stop_reason"],
                 _fmt(summary["train"]["first"].get("reward")), _fmt(summary["train"]["last"].get("reward")),
                 meter.elapsed_s, meter.budget.seconds, summary["budget"]["device_hours"], hardware.device,
                 summary["budget"]["cost_usd"])
        print(f"Run folder: {record.dir}")
        return summary
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        summary = record.update_summary(
            status=status, stop_reason=status, finished_at=now_iso(), budget=meter.usage(), timings=timings,
            error=str(err) if isinstance(err, UserError) else "".join(traceback.format_exception(err))[-4000:],
        )
        raise
    finally:
        if verifier is not None:
            verifier.close()
        tracking.finish(_flat_summary(summary), exit_code=0 if summary.get("status") == "completed" else 1)


def _use_budget_progress_bar(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)


def _wandb_id(record: RunRecord) -> str:
    """Kept in summary.json, so that every attempt of a run logs to the same W&B run."""
    previous = (record.read_summary() or {}).get("wandb") or {}
    if previous.get("run_id"):
        return previous["run_id"]
    return uuid.uuid4().hex[:12]


def _train_summary(record: RunRecord) -> dict:
    steps = [m for m in record.read_metrics() if "reward" in m]
    numeric = lambda m: {k: v for k, v in m.items() if isinstance(v, (int, float))}  # noqa: E731
    return {"logged_steps": len(steps), "first": numeric(steps[0]) if steps else {}, "last": numeric(steps[-1]) if steps else {}}


def _flat_summary(summary: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in (summary or {}).items():
        if isinstance(value, dict):
            flat.update(_flat_summary(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[f"{prefix}{key}"] = value
    return flat


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"
