"""train(cfg): one GRPO + LoRA run, from a composed config to a finished run folder.

Phases: check the config, load model and data, evaluate the untrained model (baseline), train
under the budget (evaluating the selection benchmark at each checkpoint), save, evaluate the final
(or best) model, write the summary. A relaunch resumes from the last complete checkpoint and
skips a run that already completed.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from dataclasses import asdict
from pathlib import Path
import warnings

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .budget import WALL_CLOCK, Budget, BudgetCallback, BudgetMeter, BudgetProgressBar
from .data import build_train_dataset
from .errors import UserError
from .evaluation import CheckpointSelection, Evaluator, benchmarks_from_config, flat_metrics
from .generators import make_generator
from .hardware import check_gpu_settings, detect_hardware, use_allocated_cpus
from .models import load_model
from .preemption import GracefulStop
from .rewards import build_reward_functions
from .sweep import format_plan, plan_run
from .run_record import CheckpointMarker, MetricsCallback, RunRecord, flat_summary, now_iso, provenance, scrub_secrets
from .tracking import Tracking, start_tracking
from .trainer import RLVRTrainer, grpo_config, load_checkpoint_weights, lora_config
from .verifier import MathVerifier

log = logging.getLogger(__name__)
# transformers 5 warns about its own deprecated alias on every step; nothing here uses it
warnings.filterwarnings("ignore", message=".*(is_)?gradient_checkpointing.* is deprecated.*", category=FutureWarning)


def run_identity() -> dict:
    """Where a run lives and what it is called, from Hydra's view of this job."""
    hydra = HydraConfig.get()
    return {
        "run_dir": hydra.runtime.output_dir,
        "overrides": list(hydra.overrides.task),
        "run_name": hydra.job.override_dirname or "default",
        "choices": {k: v for k, v in hydra.runtime.choices.items() if not k.startswith("hydra")},
    }


def tags_for(cfg: DictConfig) -> list[str]:
    rank = f"r{cfg.lora.rank}" if cfg.lora.rank is not None else "full-ft"
    return [str(cfg.model.name), rank, str(cfg.budget.name), str(cfg.data.name)]


def train(cfg: DictConfig) -> dict:
    identity = run_identity()
    record = RunRecord(identity["run_dir"])
    config = scrub_secrets(OmegaConf.to_container(cfg, resolve=True))
    benchmarks_from_config(cfg.eval)  # refuse a bad evaluation setup before any work
    if cfg.dry_run:  # a multirun prints the plan of all its runs at the end (rlvr_sweeps.sweep)
        plan = plan_run(cfg, record.dir, [o for o in identity["overrides"] if not o.startswith("dry_run=")])
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            print(OmegaConf.to_yaml(config))
            print(format_plan([plan]))
        return {"status": "dry_run", "run_dir": str(record.dir), "plan": asdict(plan)}

    prior = record.read_summary() or {}
    if prior.get("status") == "completed":
        log.info("Already completed (%s); skipping. Delete %s to run it again.", prior.get("stop_reason"), record.dir)
        return prior
    checkpoints = record.complete_checkpoints()
    resume_from = checkpoints[-1] if checkpoints else None
    resumed_step = int(resume_from.name.split("-")[-1]) if resume_from else 0

    use_allocated_cpus()
    hardware = detect_hardware()
    spent = (prior.get("budget") or {}).get("used_s", 0.0) if resume_from else 0.0
    meter = BudgetMeter(Budget.from_config(cfg.budget), hardware, spent_s=spent,
                        generated_tokens=(prior.get("budget") or {}).get("generated_tokens", 0) if resume_from else 0)
    check_gpu_settings(cfg, hardware)
    record.write_config(config)
    dropped = record.drop_metrics_after(resumed_step)
    attempts = prior.get("attempts", []) + [{"started_at": now_iso(), "resumed_from_step": resumed_step,
                                             "metrics_dropped": dropped, **provenance()}]
    record.update_summary(
        status="running", stop_reason=None, error=None, name=cfg.name, run_dir=str(record.dir),
        overrides=identity["overrides"], choices=identity["choices"], started_at=prior.get("started_at", now_iso()),
        model={"name": cfg.model.name, "id": cfg.model.id}, lora={"rank": cfg.lora.rank}, attempts=attempts, **provenance(),
    )
    if resume_from:
        log.info("Resuming from %s (step %d; %.0f s of the budget already spent)", resume_from.name, resumed_step, spent)

    tracking, verifier, summary, timings = Tracking(), None, {}, {}
    results = {"baseline": (prior.get("eval") or {}).get("baseline") if resume_from else None}
    try:
        tracking = start_tracking(cfg.logger, str(record.dir), run_id=_wandb_id(prior), name=identity["run_name"],
                                  group=str(cfg.name), tags=tags_for(cfg), config={**config, "overrides": identity["overrides"]})
        record.update_summary(wandb=tracking.describe())

        loaded = load_model(cfg.model, cfg.paths.cache, hardware)
        dataset = build_train_dataset(cfg.data, cfg.prompt, loaded.tokenizer)
        verifier = MathVerifier(timeout_s=cfg.reward.timeout_s, max_chars=cfg.reward.max_chars)
        reward_functions, reward_weights = build_reward_functions(cfg.reward, verifier)
        args = grpo_config(cfg, output_dir=str(record.checkpoints_dir), hardware=hardware,
                           run_name=identity["run_name"], reward_weights=reward_weights)
        budget_cb = BudgetCallback(meter, lookahead_steps=args.steps_per_generation * args.num_iterations)
        metrics_cb = MetricsCallback(record, meter)
        trainer = RLVRTrainer(
            model=loaded.model, reward_funcs=reward_functions, args=args, train_dataset=dataset,
            processing_class=loaded.tokenizer, peft_config=lora_config(cfg.lora),
            callbacks=[CheckpointMarker(record), metrics_cb, BudgetProgressBar(meter), *tracking.callbacks()],
            on_generated_tokens=meter.add_generated_tokens, merge_lora_for_rollouts=bool(cfg.lora.merge_for_rollouts),
        )
        _use_budget_progress_bar(trainer)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        record.update_summary(model={"name": cfg.model.name, "id": cfg.model.id, "folder": loaded.folder,
                                     "parameters": loaded.parameters, "trainable_parameters": trainable},
                              lora={"rank": cfg.lora.rank, "alpha": _lora_alpha(trainer)})

        evaluator = Evaluator(cfg.eval, cfg.prompt, loaded.tokenizer, verifier, record.dir / "eval",
                              exclude_questions=set(dataset["question"]),
                              baseline_cache=Path(cfg.paths.cache) / "baselines" if cfg.eval.cache_baseline else None,
                              model_key=f"{loaded.folder}@{cfg.model.revision}:{cfg.model.dtype}")
        generator = make_generator(cfg, trainer, loaded)
        if evaluator.benchmarks and cfg.eval.baseline and not results["baseline"]:
            started = time.monotonic()
            results["baseline"] = evaluator.run(generator, "baseline")  # LoRA starts as the identity
            timings["baseline_eval_s"] = round(time.monotonic() - started, 3)
            record.update_summary(eval={"baseline": results["baseline"]})
        selection = None
        if cfg.eval.select_on:
            earlier = (prior.get("eval") or {}).get("checkpoints") if resume_from else None
            selection = CheckpointSelection(evaluator, generator, cfg.eval.select_on, earlier_scores=earlier,
                                            on_result=lambda step, r: record.update_summary(eval={**results, "checkpoints": selection.scores}))
            trainer.add_callback(selection)
        graceful = GracefulStop()
        trainer.add_callback(graceful)
        trainer.add_callback(budget_cb)  # last: it times saves together with any evaluation at them
        timings["setup_s"] = round(meter.elapsed_s, 3)
        log.info("Training %s (%.2f M trainable parameters) on %s for at most %.1f min",
                 identity["run_name"], trainable / 1e6, hardware.name, meter.budget.training_seconds / 60)

        if meter.training_left_s <= 0:  # e.g. requeued while it was saving or evaluating at the end
            budget_cb.stop_reason = WALL_CLOCK
            log.warning("No training time left in the budget (%.0f s used); finishing.", meter.elapsed_s)
            if resume_from:
                load_checkpoint_weights(trainer.model, resume_from)
                trainer.state.global_step = resumed_step
        else:
            started = time.monotonic()
            with graceful.armed():
                trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            timings["train_s"] = round(time.monotonic() - started, 3)
        if graceful.signal is not None:  # saved at the end of the step; a requeued job resumes from it
            summary = record.update_summary(status="interrupted", stop_reason=graceful.stop_reason, finished_at=now_iso(),
                                            global_step=trainer.state.global_step, budget=meter.usage(), timings=timings)
            log.warning("Stopped at step %d by %s; relaunching resumes from here.", trainer.state.global_step, graceful.stop_reason)
            graceful.hand_over()
            return summary

        started = time.monotonic()
        trainer.save_model(str(record.final_dir))
        timings["final_save_s"] = round(time.monotonic() - started, 3)
        selected_step = trainer.state.global_step
        if selection and selection.best_step is not None and selection.best_step != selected_step:
            selected_step = selection.best_step
            load_checkpoint_weights(trainer.model, record.checkpoints_dir / f"checkpoint-{selected_step}")
            log.info("Evaluating the best checkpoint by %s: step %d", cfg.eval.select_on, selected_step)
        if evaluator.benchmarks and cfg.eval.final:
            started = time.monotonic()
            results["final"] = evaluator.run(generator, "final")
            timings["final_eval_s"] = round(time.monotonic() - started, 3)
        timings["total_s"] = round(meter.elapsed_s, 3)
        summary = record.update_summary(
            status="completed", stop_reason=budget_cb.stop_reason, finished_at=now_iso(),
            global_step=trainer.state.global_step, train=_train_summary(record), budget=meter.usage(),
            eval={**{k: v for k, v in results.items() if v}, "checkpoints": selection.scores if selection else {},
                  "selected_step": selected_step},
            metrics=flat_metrics(results), timings={**timings, **budget_cb.timings()}, trainer_totals=metrics_cb.train_summary,
        )
        _report(summary, meter, hardware)
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
        tracking.finish(flat_summary(summary), exit_code=1 if summary.get("status") == "failed" else 0)


def _report(summary: dict, meter: BudgetMeter, hardware) -> None:
    first, last = summary["train"]["first"], summary["train"]["last"]
    log.info("Finished after %d steps (%s). Reward %s -> %s. Used %.0f of %.0f s: %.4f %s-hours, $%.4f.",
             summary["global_step"], summary["stop_reason"], _fmt(first.get("reward")), _fmt(last.get("reward")),
             meter.elapsed_s, meter.budget.seconds, summary["budget"]["device_hours"], hardware.device,
             summary["budget"]["cost_usd"])
    for key, value in summary["metrics"].items():
        if key.endswith("pass@1"):
            log.info("  %s = %.3f", key, value)


def _use_budget_progress_bar(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)


def _lora_alpha(trainer):
    peft_config = getattr(trainer.model, "peft_config", None)
    return peft_config["default"].lora_alpha if peft_config else None


def _wandb_id(prior: dict) -> str:
    """Kept in summary.json, so that every attempt of a run logs to the same W&B run."""
    return (prior.get("wandb") or {}).get("run_id") or uuid.uuid4().hex[:12]


def _train_summary(record: RunRecord) -> dict:
    steps = [m for m in record.read_metrics() if "reward" in m]
    numeric = lambda m: {k: v for k, v in m.items() if isinstance(v, (int, float))}  # noqa: E731
    return {"logged_steps": len(steps), "first": numeric(steps[0]) if steps else {}, "last": numeric(steps[-1]) if steps else {}}


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"
