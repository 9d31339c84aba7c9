"""train(cfg): one GRPO + LoRA run, from a composed config to a finished run folder.

Phases: check the config, read what earlier attempts left (resume), build the run (W&B, model,
data, rewards, trainer, evaluator), evaluate the untrained model (baseline), train within the
budget (evaluating the selection benchmark at each checkpoint), then finish: save the adapter that
is evaluated finally, evaluate it, write the summary and the verdict. A relaunch resumes from the
last complete checkpoint and skips a run that already completed.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import warnings
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .checks import check_config
from .errors import UserError
from .evaluation.evaluator import CheckpointSelection, Evaluator, flat_metrics
from .evaluation.verdict import write_verdict
from .generation.generators import make_generator
from .infra.hardware import detect_hardware, planned_hardware, resolve_dtype, use_allocated_cpus
from .infra.tracking import start_tracking
from .policy.adapters import (
    load_pissa_start,
    lora_config,
    pissa_start,
    resolve_learning_rate,
    save_adapter,
    variant_of,
)
from .policy.models import eos_token_ids, load_model, model_folder
from .preflight_job import Preflight
from .run.budget import (
    EVALUATION_PHASES,
    STOP_AT,
    Budget,
    BudgetCallback,
    BudgetMeter,
    BudgetProgressBar,
    MilestoneCallback,
)
from .run.callbacks import CheckpointMarker, MetricsCallback
from .run.guards import RolloutGuard, check_prompt_ids
from .run.lease import RunLease
from .run.milestones import fractions as milestone_fractions
from .run.milestones import kept_milestones, label, milestone_weights, stop_at
from .run.preemption import GracefulStop, StepAborted
from .run.record import (
    COMPLETE_MARKER,
    Resume,
    RunIdentity,
    RunRecord,
    config_changes,
    flat_summary,
    mixed_versions,
    now_iso,
    provenance,
    run_identity,
    saved_config,
)
from .sweep import format_plan, plan_run
from .tasks.data import build_train_dataset
from .training.memory import (
    GB,
    MemoryFit,
    PeakMemory,
    apply_split,
    check_memory,
    model_shape,
    this_device,
    use_expandable_segments,
)
from .training.rewards import build_reward_functions, make_verifier
from .training.trainer import RLVRTrainer, grpo_config, load_checkpoint_weights

log = logging.getLogger(__name__)
# transformers 5 warns about its own deprecated alias on every step; nothing here uses it
warnings.filterwarnings("ignore", message=".*(is_)?gradient_checkpointing.* is deprecated.*", category=FutureWarning)


def train(cfg: DictConfig) -> dict:
    use_expandable_segments(sleep_mode=bool(cfg.generation.get("vllm_enable_sleep_mode")))  # before CUDA allocates
    identity, preflight = run_identity(), None
    if cfg.get("preflight") and not cfg.dry_run:  # a short, measured run of this arm in <sweep>/preflight/
        preflight, identity = Preflight.start(cfg, identity)
    try:
        if preflight is not None:
            preflight.check_hub(cfg)
        return train_run(cfg, identity, preflight)
    except Exception as err:
        if preflight is not None:
            preflight.failed(err, RunRecord(identity.run_dir).read_summary())
        raise


def train_run(cfg: DictConfig, identity: RunIdentity, preflight: Preflight | None) -> dict:
    record = RunRecord(identity.run_dir)
    hardware = detect_hardware()
    if cfg.dry_run:  # a plan trains nothing: checked against the budget's device, on any machine
        hardware = planned_hardware(str(cfg.budget.device), hardware)
    memory = refuse_bad_config(cfg, hardware, record)  # the checks; lora.effective_learning_rate and the split fitted
    config = saved_config(cfg)  # what config.yaml, W&B and the plan show
    if cfg.dry_run:
        return dry_run(cfg, config, record, identity)
    with RunLease(record.dir):  # one trainer per run folder, from reading what earlier attempts left to the save
        run, summary = run_attempt(cfg, config, record, identity, hardware, memory, preflight)
    if run is not None and summary.get("status") == "interrupted":  # saved and W&B finished: hand over
        if preflight is not None:
            preflight.hand_over(run.graceful)  # a refused requeue is the preflight's verdict
        else:
            run.graceful.hand_over()  # the scheduler's glue (submitit) may requeue the job and exit
    return summary


def run_attempt(
    cfg: DictConfig,
    config: dict,
    record: RunRecord,
    identity: RunIdentity,
    hardware,
    memory: MemoryFit | None,
    preflight: Preflight | None,
) -> tuple[Run | None, dict]:
    """This attempt of the run: resume what earlier attempts left (with the settings they trained with), train
    within the budget, finish or stop at a signal. (None, summary) for a run that had completed."""
    resume = Resume.read(record)
    changes = config_changes(record.read_config() or {}, config) if record.config_path.exists() else []
    if resume.completed:
        changed = f" (with other settings than these: {format_changes(changes)})" if changes else ""
        log.info(
            "Already completed (%s)%s; skipping. Delete %s to run it again.",
            resume.prior.get("stop_reason"),
            changed,
            record.dir,
        )
        return None, resume.prior
    if resume.prior.get("status") == "paused" and stop_at(cfg.budget) is not None:
        log.info(
            "Paused at step %s (%s of its budget, budget.stop_at); relaunch without budget.stop_at to train on.",
            resume.prior.get("global_step"),
            (resume.prior.get("paused") or {}).get("fraction"),
        )
        return None, resume.prior
    if changes and resume.checkpoint:
        raise UserError(
            f"{record.dir} was trained up to step {resume.step} with other settings, so resuming it with these would "
            f"mix two experiments: {format_changes(changes)}. Restore them (the config files, or the same overrides), "
            "or start a new run: another name=, or an override that changes the run's folder."
        )
    use_allocated_cpus()
    meter = BudgetMeter(
        Budget.from_config(cfg.budget),
        hardware,
        resume.training_s,
        resume.generated_tokens,
        {phase: resume.earlier("budget", f"{phase}_evaluation_s", 0.0) for phase in EVALUATION_PHASES},
    )
    start_attempt(cfg, config, record, identity, resume, memory)
    peak = PeakMemory(hardware.has_cuda)
    peak.start()
    with Attempt(record, meter) as attempt:
        run = build_run(cfg, config, record, identity, hardware, meter, resume, attempt, preflight)
        run.peak = peak
        baseline = evaluate_baseline(run, resume)
        if train_within_budget(run, resume):
            if run.budget_callback.stop_reason == STOP_AT:
                return run, pause(run)
            summary = finish(run, baseline)
            if preflight is not None:
                preflight.attempt_ended(run)
                preflight.finished(summary, record.dir)
            return run, summary
        summary = interrupted(run)
        if preflight is not None:
            preflight.attempt_ended(run)
    return run, summary


def format_changes(changes: list[tuple[str, object, object]]) -> str:
    return "; ".join(f"{key}: {old!r} then, {new!r} now" for key, old, new in changes)


@dataclass
class Run:
    """Everything one attempt of a run works with, built by build_run (the eval settings are the evaluator's)."""

    record: RunRecord
    meter: BudgetMeter
    trainer: RLVRTrainer
    evaluator: Evaluator
    generator: object
    budget_callback: BudgetCallback
    graceful: GracefulStop
    selection: CheckpointSelection | None
    metrics_callback: MetricsCallback
    pissa_initial: Path | None = None
    timings: dict = field(default_factory=dict)
    peak: PeakMemory | None = None

    def memory(self) -> dict:
        """summary.json's memory section with this attempt's measured peak beside the estimate."""
        earlier = (self.record.read_summary() or {}).get("memory") or {}
        now = self.peak.record() if self.peak else {}
        if (earlier.get("measured_peak_gb") or 0) > now.get("measured_peak_gb", 0):
            return earlier  # an earlier attempt of the run went higher
        return {**earlier, **now}


class Attempt:
    """One attempt of a run: a failure is written to summary.json (never lost), then what the attempt
    opened is closed, the W&B run last, so that it sees the final summary."""

    def __init__(self, record: RunRecord, meter: BudgetMeter):
        self.record, self.meter, self.stack = record, meter, ExitStack()

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, kind, err, tb) -> bool:
        try:
            if err is not None:
                status = "interrupted" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "failed"
                message = str(err) if isinstance(err, UserError) else "".join(traceback.format_exception(err))[-4000:]
                self.meter.stop_training()
                self.record.update_summary(
                    status=status, stop_reason=status, finished_at=now_iso(), budget=self.meter.usage(), error=message
                )
        finally:
            self.stack.close()
        return False


def refuse_bad_config(cfg: DictConfig, hardware, record: RunRecord) -> MemoryFit | None:
    """check_config, then the learning rate lora.lr_rule gives (written into cfg.lora once) and the micro-batch
    that fits the device (written into cfg.trainer: guards.memory); a refused run of a sweep is recorded as failed
    (with the fix) where its folder is."""
    try:
        check_config(cfg, hardware, plan_only=bool(cfg.dry_run))
        memory = None if cfg.dry_run else fit_memory(cfg)
        resolve_learning_rate(cfg.lora, cfg.trainer.learning_rate)
        return memory
    except UserError as err:
        if not cfg.dry_run:
            record.write_config(saved_config(cfg))
            record.update_summary(
                status="failed",
                stop_reason="failed",
                error=str(err),
                name=cfg.name,
                run_dir=str(record.dir),
                finished_at=now_iso(),
                model={"name": cfg.model.name},
                lora={"rank": cfg.lora.rank},
            )
        raise


def fit_memory(cfg: DictConfig) -> MemoryFit | None:
    """guards.memory, before loading (a run that cannot fit stops now, not hours in): on a GPU, or on a device of
    guards.device_memory_gb, the estimate for the installed TRL against the free memory. When the configured
    micro-batch does not fit, the largest that does at the same completions per update replaces it in cfg.trainer."""
    device = this_device(cfg.guards.get("device_memory_gb"), machine_ram=bool(cfg.get("preflight")))
    if not cfg.guards.memory or device is None:
        return None
    shape = model_shape(cfg.model, cfg.paths.cache)
    memory = check_memory(shape, cfg.lora, cfg.trainer, cfg.generation, device)
    if memory.changed:
        apply_split(cfg.trainer, memory.chosen)
        log.warning(
            "Memory: %s completions per micro-batch would need about %.2f GB, more than the %.2f GB free on %s; "
            "training at %s (trainer.per_device_train_batch_size x gradient_accumulation_steps), the same %d "
            "completions per update.",
            memory.requested.per_device_train_batch_size,
            memory.requested_peak / GB,
            device.free_bytes / GB,
            device.name,
            memory.chosen.describe(),
            memory.chosen.per_device_train_batch_size * memory.chosen.gradient_accumulation_steps,
        )
    return memory


def dry_run(cfg: DictConfig, config: dict, record: RunRecord, identity: RunIdentity) -> dict:
    """The plan of this run; a multirun prints the plans of all its runs at the end (rlvr_sweeps.sweep)."""
    plan = plan_run(cfg, record.dir, [o for o in identity.overrides if not o.startswith("dry_run=")])
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        print(OmegaConf.to_yaml(config))
        print(format_plan([plan]))
    return {"status": "dry_run", "run_dir": str(record.dir), "plan": asdict(plan)}


def start_attempt(
    cfg: DictConfig, config: dict, record: RunRecord, identity: RunIdentity, resume: Resume, memory: MemoryFit | None
) -> None:
    record.write_config(config)
    dropped = record.drop_metrics_after(resume.step)  # steps after the checkpoint are trained again
    split = {"micro_batch": int(cfg.trainer.per_device_train_batch_size)}  # a fit on another node may differ
    attempts = resume.prior.get("attempts", []) + [
        {
            "started_at": now_iso(),
            "resumed_from_step": resume.step,
            "metrics_dropped": dropped,
            **split,
            **provenance(),
        }
    ]
    record.update_summary(
        status="running",
        stop_reason=None,
        error=None,
        name=cfg.name,
        run_dir=str(record.dir),
        overrides=identity.overrides,
        choices=identity.choices,
        started_at=resume.prior.get("started_at", now_iso()),
        attempts=attempts,
        model={"name": cfg.model.name, "id": cfg.model.id},
        lora=lora_summary(cfg),
        memory=memory.record() if memory else None,
        mixed_versions=mixed_versions(attempts) or None,  # a run trained under two TRL releases is two experiments
        **provenance(),
    )
    if resume.checkpoint:
        mixed = mixed_versions(attempts)
        log.info(
            "Resuming from %s (step %d; %.0f s of the training budget already spent)%s",
            resume.checkpoint.name,
            resume.step,
            resume.training_s,
            "; its attempts ran under different versions: "
            + "; ".join(f"{name} {' then '.join(versions)}" for name, versions in mixed.items())
            if mixed
            else "",
        )


def lora_summary(cfg: DictConfig) -> dict:
    return {
        "rank": cfg.lora.rank,
        "variant": variant_of(cfg.lora),
        "lr_rule": cfg.lora.get("lr_rule"),
        "learning_rate": cfg.lora.get("effective_learning_rate"),
    }


def tags_for(cfg: DictConfig) -> list[str]:
    rank = f"r{cfg.lora.rank}" if cfg.lora.rank is not None else "full-ft"
    variant = [variant_of(cfg.lora)] if variant_of(cfg.lora) not in (None, "lora") else []
    return [str(cfg.model.name), rank, *variant, str(cfg.budget.name), str(cfg.data.name)]


def build_run(
    cfg: DictConfig,
    config: dict,
    record: RunRecord,
    identity: RunIdentity,
    hardware,
    meter: BudgetMeter,
    resume: Resume,
    attempt: Attempt,
    preflight: Preflight | None = None,
) -> Run:
    tracking = start_tracking(
        cfg.logger,
        str(record.dir),
        run_id=resume.wandb_id,
        name=identity.run_name,
        group=str(cfg.name),
        tags=tags_for(cfg),
        config={**config, "overrides": identity.overrides, "memory": (record.read_summary() or {}).get("memory")},
    )
    attempt.stack.callback(
        lambda: tracking.finish(
            flat_summary(record.read_summary() or {}),
            exit_code=int((record.read_summary() or {}).get("status") == "failed"),
        )
    )
    record.update_summary(wandb=tracking.describe())
    started = time.monotonic()
    start = None  # a PiSSA run's residual base, with the initial adapter beside it
    if variant_of(cfg.lora) == "pissa":
        cache = Path(cfg.paths.cache)
        start = pissa_start(
            cfg.lora, cfg.model, model_folder(cfg.model, cache), resolve_dtype(cfg.model.dtype, hardware), cache
        )
    loaded = load_model(cfg.model, cfg.paths.cache, hardware, folder=str(start) if start else None)
    context = min(
        int(cfg.model.context_length or 10**9), int(getattr(loaded.model.config, "max_position_embeddings", 10**9))
    )
    dataset, data_report = build_train_dataset(
        cfg.data, cfg.prompt, loaded.tokenizer, max_prompt_tokens=context - int(cfg.trainer.max_completion_length)
    )
    verifier = make_verifier(cfg.reward)
    attempt.stack.callback(verifier.close)
    reward_functions, reward_weights = build_reward_functions(
        cfg.reward, verifier, int(cfg.trainer.max_completion_length), eos_token_ids(loaded.model, loaded.tokenizer)
    )
    args = grpo_config(
        cfg.trainer,
        cfg.generation,
        learning_rate=float(cfg.lora.effective_learning_rate),  # resolved once, at the start of train()
        max_steps=cfg.budget.max_steps,
        output_dir=str(record.checkpoints_dir),
        hardware=hardware,
        run_name=identity.run_name,
        reward_weights=reward_weights,
    )
    metrics_callback = MetricsCallback(record, meter)
    trainer = RLVRTrainer(
        model=loaded.model,
        reward_funcs=reward_functions,
        args=args,
        train_dataset=dataset,
        processing_class=loaded.tokenizer,
        peft_config=lora_config(cfg.lora),
        callbacks=[CheckpointMarker(record, meter), metrics_callback, BudgetProgressBar(meter), *tracking.callbacks()],
        on_generated_tokens=meter.add_generated_tokens,
        merge_lora_for_rollouts=bool(cfg.lora.merge_for_rollouts),
    )
    _use_budget_progress_bar(trainer)
    pissa_initial = load_pissa_start(trainer.model, start, record.dir) if start else None
    evaluator = Evaluator(
        cfg.eval,
        cfg.prompt,
        loaded.tokenizer,
        verifier,
        record.dir / "eval",
        exclude_questions=set(dataset["question"]),
        baseline_cache=Path(cfg.paths.cache) / "baselines" if cfg.eval.cache_baseline else None,
        model_key=f"{loaded.folder}@{cfg.model.revision}:{cfg.model.dtype}",
        chat_template_kwargs=args.chat_template_kwargs,
    )
    generator = make_generator(str(cfg.eval.backend), trainer, loaded.tokenizer, int(cfg.eval.batch_size))
    add_guards(cfg.guards, trainer, evaluator, dataset[0])
    graceful = GracefulStop()
    selection = None
    if evaluator.selection is not None:
        selection = CheckpointSelection(
            evaluator,
            generator,
            meter,
            record.checkpoint,
            earlier_scores={  # the scores of the checkpoints this attempt continues from; later ones are retrained
                step: score
                for step, score in (resume.earlier("eval", "checkpoints") or {}).items()
                if int(step) <= resume.step
            },
            on_result=lambda step, result: record_selection(record, selection, step, result),
            stopping=lambda: graceful.stopping,
            abandonable=graceful.abandonable,
        )
        trainer.add_callback(selection)
    if preflight is not None:  # before the stop handler: it sends the signal that handler then acts on
        preflight.add_to(trainer, graceful)
    trainer.add_callback(graceful)
    budget_callback = BudgetCallback(
        meter,
        lookahead_steps=args.steps_per_generation * args.num_iterations,
        earlier_save_s=resume.earlier("timings", "max_checkpoint_save_s"),
        earlier_step_s=resume.earlier("timings", "max_step_s"),
        stop_at=stop_at(cfg.budget),
    )
    trainer.add_callback(budget_callback)  # it times saves after any selection evaluation at them
    if milestone_fractions(cfg.budget):  # after the selection: a milestone keeps the best checkpoint up to it
        trainer.add_callback(MilestoneCallback(cfg.budget, record, meter, budget_callback, selection))
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    record.update_summary(
        model={
            "name": cfg.model.name,
            "id": cfg.model.id,
            "folder": loaded.folder,
            "context_length": context,
            "parameters": loaded.parameters,
            "trainable_parameters": trainable,
        },
        lora={**lora_summary(cfg), "alpha": _lora_alpha(trainer)},
        data=data_report,
    )
    log.info(
        "Training %s (%.2f M trainable parameters) on %s for %.1f min of training",
        identity.run_name,
        trainable / 1e6,
        hardware.name,
        meter.budget.seconds / 60,
    )
    return Run(
        record,
        meter,
        trainer,
        evaluator,
        generator,
        budget_callback,
        graceful,
        selection,
        metrics_callback,
        pissa_initial,
        {"setup_s": round(time.monotonic() - started, 3)},
    )


def record_selection(record: RunRecord, selection: CheckpointSelection, step: int, result: dict) -> None:
    """A checkpoint's selection score, and its evaluation's metrics (what it cost: the plan and the preflight)."""
    earlier = (record.read_summary() or {}).get("eval", {})
    metrics = {**earlier.get("checkpoint_metrics", {}), str(step): result}
    record.update_summary(eval={**earlier, "checkpoints": selection.scores, "checkpoint_metrics": metrics})


def evaluate_baseline(run: Run, resume: Resume) -> dict | None:
    """The untrained model's scores (LoRA starts as the identity): the deltas are against them."""
    if not run.evaluator.benchmarks or not run.evaluator.cfg.baseline:
        return None
    earlier = resume.earlier("eval", "baseline")
    if earlier:
        return earlier
    with run.meter.evaluating("baseline"):
        baseline = run.evaluator.run(run.generator, "baseline")
    run.record.update_summary(eval={"baseline": baseline}, budget=run.meter.usage())
    return baseline


def train_within_budget(run: Run, resume: Resume) -> bool:
    """Train until the budget (or a step / token / epoch limit) ends it; False when a stop signal
    (preemption, time limit) ended it first, after saving the last step."""
    ended = run.budget_callback.ended(resume.step)  # a job requeued at the budget's end (in its final evaluation)
    if ended:
        run.budget_callback.stop_reason = ended
        log.warning(
            "The budget has ended (%s: step %d, %.0f s, %d rollout tokens spent); finishing.",
            ended,
            resume.step,
            run.meter.training_s,
            run.meter.generated_tokens,
        )
        if resume.checkpoint:
            load_checkpoint_weights(run.trainer.model, resume.checkpoint)
            run.trainer.state.global_step = resume.step
        return True
    started = time.monotonic()
    try:
        with run.graceful.armed():
            run.trainer.train(resume_from_checkpoint=str(resume.checkpoint) if resume.checkpoint else None)
    except StepAborted:  # SIGTERM during a step, or any stop signal during a selection evaluation
        save_last_finished_step(run)
    run.timings["train_wall_s"] = round(time.monotonic() - started, 3)
    return run.graceful.signal is None


def save_last_finished_step(run: Run) -> None:
    """After an abandoned step: the checkpoint of the last finished one, unless it is saved already (the
    abandoned work's time and tokens are not spent; the next job redoes that step)."""
    trainer, step = run.trainer, run.trainer.state.global_step
    run.budget_callback.abandon_step()
    if step == 0 or run.record.checkpoint(step) in run.record.complete_checkpoints():
        log.warning("Step %d was saved already; stopping.", step)
    else:
        trainer._save_checkpoint(trainer.model, trial=None)
        trainer.control = trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)
        log.warning("Saved step %d, the last finished one.", step)
    run.meter.stop_training()


def interrupted(run: Run) -> dict:
    step = run.trainer.state.global_step
    summary = run.record.update_summary(
        status="interrupted",
        stop_reason=run.graceful.stop_reason,
        finished_at=now_iso(),
        global_step=step,
        budget=run.meter.usage(),
        timings=attempt_timings(run),
        memory=run.memory(),
    )
    log.warning("Stopped at step %d by %s; relaunching resumes from here.", step, run.graceful.stop_reason)
    return summary


def pause(run: Run) -> dict:
    """budget.stop_at reached (a two-stage search's stage 1): the step a budget of that fraction would have stopped
    at is saved (the closing save) and scored on the selection benchmark; no final evaluation. The summary says
    "paused" with the best selection score up to here; a relaunch without budget.stop_at trains on from here."""
    step = run.trainer.state.global_step
    fraction = float(run.budget_callback.stop_at)
    best = run.selection.best_step if run.selection else None
    scores = run.selection.scores if run.selection else {}
    paused = {
        "fraction": fraction,
        "step": step,
        "training_s": round(run.meter.training_s, 3),
        "generated_tokens": run.meter.generated_tokens,
        "selected_step": best,
        "selection_score": scores.get(best) if best is not None else None,
        "selection_benchmark": run.evaluator.cfg.select_on,
    }
    summary = run.record.update_summary(
        status="paused",
        stop_reason=STOP_AT,
        finished_at=now_iso(),
        global_step=step,
        paused=paused,
        budget=run.meter.usage(),
        timings=attempt_timings(run),
        memory=run.memory(),
    )
    log.warning(
        "Paused at step %d, %s of the budget (budget.stop_at): selection score %s. Relaunch without budget.stop_at "
        "to train on from here.",
        step,
        label(fraction),
        paused["selection_score"],
    )
    return summary


def finish(run: Run, baseline: dict | None) -> dict:
    """Save the adapter that is evaluated finally (the selected checkpoint's when eval.select_on is set)
    as final/, evaluate it, and write the summary and the verdict."""
    selected_step = run.trainer.state.global_step
    if run.selection and run.selection.best_step is not None and run.selection.best_step != selected_step:
        selected_step = run.selection.best_step
        load_checkpoint_weights(run.trainer.model, run.record.checkpoint(selected_step))
        log.info("Evaluating the best checkpoint by %s: step %d", run.evaluator.cfg.select_on, selected_step)
    save_adapter(run.trainer, run.record.final_dir, run.pissa_initial)
    final = None
    if run.evaluator.benchmarks and run.evaluator.cfg.final:
        with run.meter.evaluating("final"):  # a job requeued meanwhile reuses the benchmarks already done
            final = run.evaluator.run(run.generator, "final", weights=weights_label(run.record, selected_step))
    results = {"baseline": baseline, "final": final}
    milestones, milestone_metrics = evaluate_milestones(run, baseline)
    summary = run.record.update_summary(
        status="completed",
        stop_reason=run.budget_callback.stop_reason,
        finished_at=now_iso(),
        global_step=run.trainer.state.global_step,
        train=_train_summary(run.record),
        budget=run.meter.usage(),
        eval={
            **{k: v for k, v in results.items() if v},
            "checkpoints": run.selection.scores if run.selection else {},
            "checkpoint_metrics": ((run.record.read_summary() or {}).get("eval") or {}).get("checkpoint_metrics", {}),
            "selected_step": selected_step,
        },
        metrics={**flat_metrics(results), **milestone_metrics},
        milestones=milestones or None,
        timings=attempt_timings(run),
        memory=run.memory(),
        trainer_totals=run.metrics_callback.train_summary,
    )
    summary = write_verdict(run.record, summary)
    print(f"Run folder: {run.record.dir}")
    return summary


def evaluate_milestones(run: Run, baseline: dict | None) -> tuple[dict, dict]:
    """Each kept milestone (the shorter budgets: rlvr_sweeps.run.milestones) evaluated on the reported benchmarks as
    the final one is, on the evaluation clock (never the training budget), each benchmark reusable after a requeue;
    the milestones with their results, and their metrics under milestone/<fraction>/..."""
    kept = kept_milestones(run.record)
    if not kept or not run.evaluator.benchmarks or not run.evaluator.cfg.final:
        return kept, {}
    metrics = {}
    for name, entry in kept.items():
        folder, weights = milestone_weights(run.record, entry)
        load_checkpoint_weights(run.trainer.model, folder)
        with run.meter.evaluating("milestones"):
            results = run.evaluator.run(run.generator, f"milestone-{name}", weights=weights)
        kept[name] = {**entry, "eval": results, "weights": weights}
        flat = flat_metrics({"baseline": baseline, "final": results})
        metrics.update({f"milestone/{name}/{k}": v for k, v in flat.items() if not k.startswith("baseline/")})
    return kept, metrics


def add_guards(guards: DictConfig, trainer: RLVRTrainer, evaluator: Evaluator, first_problem: dict) -> None:
    """The checks of rlvr_sweeps.run.guards: the prompt ids now, the rollouts' log-probabilities at every step."""
    if guards.prompt_ids:
        prompt = first_problem["prompt"]
        train_ids = trainer._tokenize_prompts([prompt])[0][0]  # TRL's own tokenization of rollout prompts
        check_prompt_ids(trainer.processing_class, prompt, train_ids, evaluator.prompt_ids([first_problem])[0])
    if trainer.use_vllm:
        trainer.add_callback(
            RolloutGuard(
                float(guards.max_logp_gap) if guards.weight_sync else None,
                after_steps=int(guards.logp_gap_after_steps),
                is_mask_warn_share=guards.is_mask_warn_share,
            )
        )


def attempt_timings(run: Run) -> dict:
    """This attempt's timings; the step and save times of an earlier attempt are kept when this one trained
    no step (a job that only finishes the evaluation after a requeue)."""
    timings = {**run.timings, **run.budget_callback.timings()}
    if not timings.get("steps_timed"):
        earlier = (run.record.read_summary() or {}).get("timings") or {}
        timings.update({key: value for key, value in earlier.items() if key not in run.timings})
    return timings


def weights_label(record: RunRecord, step: int) -> str:
    """What final/ holds: the step, and when its checkpoint was saved (a retrained step is another save)."""
    marker = record.checkpoint(step) / COMPLETE_MARKER
    return f"step-{step}@{json.loads(marker.read_text())['at'] if marker.exists() else 'unsaved'}"


def _use_budget_progress_bar(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)


def _lora_alpha(trainer):
    peft_config = getattr(trainer.model, "peft_config", None)
    return peft_config["default"].lora_alpha if peft_config else None


def _train_summary(record: RunRecord) -> dict:
    steps = [m for m in record.read_metrics() if "reward" in m]
    numeric = lambda m: {k: v for k, v in m.items() if isinstance(v, (int, float))}  # noqa: E731
    return {
        "logged_steps": len(steps),
        "first": numeric(steps[0]) if steps else {},
        "last": numeric(steps[-1]) if steps else {},
    }
