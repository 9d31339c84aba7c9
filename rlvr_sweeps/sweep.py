"""Sweeps: what a sweep will run (the plan), what it did (the report), and its status on disk.

    python -m rlvr_sweeps.sweep runs/study      # one line per run folder: status, step, stop reason, error

The plan and the report are printed by the sweep launchers (conf/hydra/launcher) and, for Hydra's
basic launcher, by the SweepReport callback that conf/config.yaml registers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .generation.sampling import benchmarks_from_config, selection_benchmark
from .planning.search import TwoStage, cost_lines, costs, promotion_lines
from .planning.search import read_record as read_search_record
from .run.milestones import fractions as milestone_fractions
from .run.record import RunRecord

LIVE_SLURM_STATES = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "CONFIGURING",
    "COMPLETING",
    "SUSPENDED",
    "RESIZING",
    "REQUEUE_HOLD",
}


@dataclass
class PlannedRun:
    """One run of a sweep as the plan sees it: what relaunching does, and what it will cost."""

    overrides: str
    """The run's overrides (its folder name)."""
    run_dir: str
    """The run folder."""
    status: str
    """"new", or the status in the run's summary.json."""
    action: str
    """"run" or "skip"."""
    note: str
    """Why it is skipped, resumed or retried."""
    device: str
    """What the hours are counted on (budget.device)."""
    training_hours: float
    """The training budget (budget.minutes): rollouts, updates, checkpoint saves."""
    evaluation_hours: float
    """Estimated baseline, selection and final evaluation time (budget.estimate), not counted in the budget."""
    job_minutes: int
    """Time limit per job: start-up + training + evaluation estimate, at most the launcher's max_time_min."""
    jobs: int
    """Jobs the run needs at that limit; each requeue resumes where the last one saved."""
    device_hours: float
    """Training plus estimated evaluation, one device per run."""
    cost_usd: float
    """device_hours at the budget's price."""
    measured: bool = False
    """Whether the evaluation estimate uses throughput that earlier runs of the sweep measured."""
    stop_window_s: float = 0.0
    """How long before a job's limit its stop signal must come: the slowest step, a save and the hand-over."""
    stop_window_measured: bool = False
    """Whether stop_window_s comes from measured step and save times (else budget.estimate)."""
    updates: int | None = None
    """Optimizer updates the run gets in its training budget, at the measured (else estimated) step time."""
    measured_by: str = ""
    """Where the measured step times come from: "earlier runs of the sweep", "the sweep's preflight" or ""."""
    milestones: tuple[float, ...] = ()
    """budget.milestones: the shorter budgets this run keeps and evaluates."""
    milestone_evaluation_hours: float = 0.0
    """The milestones' evaluations (included in evaluation_hours)."""
    separate_hours: float = 0.0
    """What the milestones' budgets would cost as separate runs (their training and evaluation)."""
    search: dict | None = None
    """search=two_stage: its design, the run's rank and learning rate, and what a stage-1 run to the milestone
    costs (stage1_hours): what format_plan prices both stages from (rlvr_sweeps.planning.search)."""


def slurm_job_alive(job_id: str | None) -> bool:
    if not job_id:
        return False
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return any(state.strip() in LIVE_SLURM_STATES for state in out.stdout.splitlines())


@dataclass(frozen=True)
class Throughput:
    """What evaluating one benchmark cost in earlier runs of a sweep: mean tokens per completion and
    generated tokens per second (summary.json, eval/<phase>/<benchmark>)."""

    completion_tokens: float
    tokens_per_s: float
    evaluations: int


def model_summaries(sweep_dir: str | Path, model_name: str) -> list[dict]:
    """The summaries of a sweep's runs of this model that can be read (what earlier runs measured)."""
    found = []
    for path in sorted(Path(sweep_dir).glob("*/summary.json")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (summary.get("model") or {}).get("name") == model_name:
            found.append(summary)
    return found


def measured_throughput(sweep_dir: str | Path, model_name: str) -> dict[str, Throughput]:
    """Per benchmark, the throughput the sweep's earlier runs of this model measured (their baseline and
    final evaluations, pooled: total tokens over total seconds); where no run evaluated a benchmark yet, what the
    sweep's preflight of the model measured (rlvr_sweeps.planning.preflight); empty before either."""
    tokens, seconds, completions, counts = {}, {}, {}, {}
    for summary in model_summaries(sweep_dir, model_name):
        for phase in ("baseline", "final"):
            for name, metrics in ((summary.get("eval") or {}).get(phase) or {}).items():
                if not isinstance(metrics, dict) or not metrics.get("tokens_per_s") or metrics.get("cached"):
                    continue
                tokens[name] = tokens.get(name, 0) + metrics["generated_tokens"]
                seconds[name] = seconds.get(name, 0) + metrics["seconds"]
                completions[name] = completions.get(name, 0) + metrics["problems"] * metrics["n"]
                counts[name] = counts.get(name, 0) + 1
    found = {
        name: Throughput(tokens[name] / completions[name], tokens[name] / seconds[name], counts[name])
        for name in tokens
        if seconds[name] > 0 and completions[name] > 0
    }
    preflight = preflight_measurements(sweep_dir, model_name) or {}
    for name, bench in (preflight.get("evaluation") or {}).items():
        if name not in found and bench.get("tokens_per_s"):
            found[name] = Throughput(float(bench["completion_tokens"]), float(bench["tokens_per_s"]), 1)
    return found


HAND_OVER_S = 60  # after the last save: W&B finishes, submitit requeues, the job exits


@dataclass(frozen=True)
class StepTimes:
    """A model's training step and checkpoint save, as a sweep's earlier runs or its preflight measured them."""

    step_s: float
    """A typical step (the mean after the first)."""
    max_step_s: float
    """The slowest step (the preflight's is one with every completion at full length)."""
    save_s: float
    """A checkpoint save."""
    source: str
    """"earlier runs of the sweep" or "the sweep's preflight"."""


def measured_step_times(sweep_dir: str | Path, model_name: str) -> StepTimes | None:
    """The step and save times of this model that earlier runs of the sweep measured (summary.json timings: the
    slowest step, the slowest mean save), else its preflight's, else None."""
    steps, means, saves = [], [], []
    for summary in model_summaries(sweep_dir, model_name):
        timings = summary.get("timings") or {}
        if timings.get("max_step_s"):
            steps.append(float(timings["max_step_s"]))
            means.append(float(timings.get("mean_step_s") or timings["max_step_s"]))
            saves.append(float(timings.get("mean_checkpoint_save_s") or 0))
    if steps:
        return StepTimes(sum(means) / len(means), max(steps), max(saves), "earlier runs of the sweep")
    preflight = preflight_measurements(sweep_dir, model_name) or {}
    if preflight.get("max_step_s"):
        step = float(preflight.get("step_s") or preflight["max_step_s"])
        return StepTimes(
            step, float(preflight["max_step_s"]), float(preflight.get("save_s") or 0), "the sweep's preflight"
        )
    return None


def stop_window_s(cfg: DictConfig, sweep_dir: str | Path) -> tuple[float, bool]:
    """Seconds a run needs between a stop signal (USR2 at a time limit) and the end of its job: finish the
    step in flight, save it, hand over. From the steps and saves earlier runs of the sweep (or its preflight)
    measured, else from budget.estimate (step_s, save_s); True when measured."""
    measured = measured_step_times(sweep_dir, str(cfg.model.name))
    if measured:
        return measured.max_step_s + measured.save_s + HAND_OVER_S, True
    estimate = cfg.budget.get("estimate") or {}
    return float(estimate.get("step_s") or 0) + float(estimate.get("save_s") or 0) + HAND_OVER_S, False


def estimate_evaluation_s(
    cfg: DictConfig,
    measured: dict[str, Throughput] | None = None,
    step_s: float | None = None,
    max_problems: int | None = None,
    phases: int | None = None,
    checkpoints: float | None = None,
) -> float:
    """Seconds of baseline + final evaluation of every benchmark, and of the selection evaluations
    (one per checkpoint): completions x tokens per completion / throughput. Tokens per completion and
    throughput come from `measured` (earlier runs of the sweep or its preflight, same model) where they exist;
    else the model's documented answer length (model.answer_tokens) and budget.estimate's throughput; either
    way a completion is at most the benchmark's own max_new_tokens (each model's limit, and the selection's own).
    Checkpoints come from the training time over `step_s` (measured, else budget.estimate.step_s) x save_steps;
    `max_problems`, `phases` and `checkpoints` replace the run's own (a preflight's few problems, one phase)."""
    estimate = cfg.budget.get("estimate") or {}
    assumed_tokens_per_s = float(estimate.get("eval_tokens_per_s") or 0)
    measured = measured or {}
    if assumed_tokens_per_s <= 0 and not measured:
        return 0.0
    benchmarks = benchmarks_from_config(cfg.eval)
    assumed_tokens = cfg.model.get("answer_tokens") or estimate.get("completion_tokens")

    def seconds(benchmark) -> float:
        problems = int(
            benchmark.cfg.get("problems") or benchmark.cfg.get("size") or benchmark.cfg.get("max_samples") or 0
        )
        problems = min(problems, benchmark.max_problems or problems, max_problems or problems)
        known = measured.get(benchmark.name)
        per_completion = known.completion_tokens if known else assumed_tokens
        tokens = min(benchmark.max_new_tokens, int(per_completion or benchmark.max_new_tokens))
        tokens_per_s = known.tokens_per_s if known else assumed_tokens_per_s
        samples = 1 if benchmark.temperature == 0 else benchmark.n
        return problems * samples * tokens / tokens_per_s if tokens_per_s > 0 else 0.0

    if phases is None:
        phases = int(bool(cfg.eval.baseline)) + int(bool(cfg.eval.final))
    total = phases * sum(seconds(b) for b in benchmarks)
    selection = selection_benchmark(cfg.eval, benchmarks)
    save_steps = cfg.trainer.get("save_steps")
    step_s = step_s or float(estimate.get("step_s") or 0)
    if checkpoints is None and save_steps and step_s > 0:
        checkpoints = float(cfg.budget.minutes) * 60 / (int(save_steps) * step_s)
    if selection is not None and checkpoints:
        total += checkpoints * seconds(selection)
    return total


def planned_updates(cfg: DictConfig, step_s: float | None) -> int | None:
    """Optimizer updates a run gets in its training budget at `step_s` per step (budget.max_steps caps them)."""
    step_s = step_s or float((cfg.budget.get("estimate") or {}).get("step_s") or 0)
    if step_s <= 0:
        return None
    updates = int(float(cfg.budget.minutes) * 60 // step_s)
    return min(updates, int(cfg.budget.max_steps)) if cfg.budget.get("max_steps") else updates


def preflight_measurements(sweep_dir: str | Path, model_name: str) -> dict | None:
    from .planning.preflight import measurements

    return measurements(sweep_dir, model_name)


def preflight_job_minutes(cfg: DictConfig) -> int:
    """The time limit a preflight job asks for (planning.preflight): two start-ups (the requeued job's too),
    its steps (one at full length) and saves, the requeue, and its evaluations of a few problems per benchmark
    and of the selection benchmark at their full lengths, from budget.estimate and model.answer_tokens."""
    from .planning.preflight import PROBLEMS, REQUEUE_WAIT_MIN, STEPS

    estimate = cfg.budget.get("estimate") or {}
    step_s, save_s = float(estimate.get("step_s") or 0), float(estimate.get("save_s") or 0)
    startup = float(estimate.get("startup_minutes") or 0)
    evaluation = estimate_evaluation_s(cfg, max_problems=PROBLEMS, phases=1, checkpoints=1)
    return math.ceil(2 * startup + REQUEUE_WAIT_MIN + ((STEPS + 1) * step_s + 2 * save_s + evaluation) / 60)


def plan_run(
    cfg: DictConfig, run_dir: str | Path, overrides: list[str] | str, max_time_min: int | None = None
) -> PlannedRun:
    """What relaunching this run does (completed runs and runs alive in SLURM are skipped), and its cost. A plan
    is about the whole run, so it takes the root config; it reads budget.minutes, .device, .price_per_hour and
    .estimate, model.name, trainer.save_steps and eval.* (benchmarks, baseline, final, the selection)."""
    record = RunRecord(run_dir)
    summary, submitted = record.read_summary() or {}, record.unstarted_job()
    status = summary.get("status", "new")
    action, note = "run", ""
    paused = summary.get("paused") or {}
    if status == "completed":
        action, note = "skip", f"completed ({summary.get('stop_reason')})"
    elif status == "paused" and cfg.budget.get("stop_at") is not None:
        action, note = "skip", f"paused at {paused.get('fraction')} of the budget (step {paused.get('step')})"
    elif status in {"running", "interrupted"} and slurm_job_alive(summary.get("slurm_job_id")):
        action, note = "skip", f"alive as SLURM job {summary['slurm_job_id']}"
    elif submitted and slurm_job_alive(submitted):  # submitted by an earlier launch, pending or starting
        action, note = "skip", f"queued as SLURM job {submitted}"
    elif status == "failed":
        note = "retry after failure: " + _first_line(summary.get("error"))
    elif status in {"running", "interrupted"}:
        note = f"resume from step {summary.get('global_step', 0)}"
    elif status == "paused":
        note = f"train on from the pause at step {paused.get('step')} ({paused.get('fraction')} of the budget)"
    training_h = float(cfg.budget.minutes) / 60.0
    measured = measured_throughput(Path(run_dir).parent, str(cfg.model.name))
    known = {b.name for b in benchmarks_from_config(cfg.eval)} & set(measured)
    steps = measured_step_times(Path(run_dir).parent, str(cfg.model.name))
    step_s = steps.step_s if steps else None
    evaluation_h = estimate_evaluation_s(cfg, measured, step_s) / 3600.0
    kept = tuple(milestone_fractions(cfg.budget))
    milestone_h = len(kept) * estimate_evaluation_s(cfg, measured, step_s, phases=1, checkpoints=0) / 3600.0
    full_selection_h = evaluation_h - estimate_evaluation_s(cfg, measured, step_s, checkpoints=0) / 3600.0
    # a separate run of f x the budget: f x the training, its own baseline and final evaluation, f x the selections
    separate_h = sum(f * training_h + (evaluation_h - full_selection_h) + f * full_selection_h for f in kept)
    evaluation_h += milestone_h
    startup_min = float((cfg.budget.get("estimate") or {}).get("startup_minutes") or 0)
    window_s, window_measured = stop_window_s(cfg, Path(run_dir).parent)
    # the stop window too: a run that needs all its time would otherwise be signalled in its final evaluation
    needed_min = math.ceil(startup_min + 60 * (training_h + evaluation_h) + window_s / 60)
    job_minutes = min(needed_min, int(max_time_min)) if max_time_min else needed_min
    jobs = math.ceil(needed_min / job_minutes) if job_minutes else 1
    hours = training_h + evaluation_h  # one device per run
    return PlannedRun(
        " ".join(overrides) if isinstance(overrides, list) else overrides,
        str(run_dir),
        status,
        action,
        note,
        str(cfg.budget.device),
        training_h,
        evaluation_h,
        job_minutes,
        jobs,
        hours,
        hours * float(cfg.budget.price_per_hour),
        bool(known),
        window_s,
        window_measured,
        planned_updates(cfg, step_s),
        steps.source if steps else "",
        kept,
        milestone_h,
        separate_h,
        search_entry(cfg, training_h, full_selection_h, evaluation_h - full_selection_h - milestone_h),
    )


def search_entry(cfg: DictConfig, training_h: float, selection_h: float, baseline_final_h: float) -> dict | None:
    """What the plan needs of a run in a two-stage search: the design, the arm (rank, learning rate) and the cost of
    one stage-1 run (the milestone's share of the training and of the selection evaluations, and the baseline)."""
    search = cfg.get("search") or {}
    if search.get("name") != "two_stage":
        return None
    design = TwoStage.from_config(search)
    phases = int(bool(cfg.eval.baseline)) + int(bool(cfg.eval.final))
    baseline_h = baseline_final_h / phases if cfg.eval.baseline and phases else 0.0
    return {
        **asdict(design),
        "rank": cfg.lora.get("rank"),
        "learning_rate": float(cfg.trainer.learning_rate),  # the grid's axis (lora.lr_rule may scale it per rank)
        "stage1_hours": design.milestone * (training_h + selection_h) + baseline_h,
    }


def search_lines(runs: list[PlannedRun]) -> list[str]:
    """Both stages of a two-stage search and the grids beside them, priced from the planned runs (the grid's arms)."""
    staged = [r for r in runs if r.search]
    if not staged:
        return []
    design = TwoStage(*(staged[0].search[k] for k in ("milestone", "stage1_seeds", "promote", "stage2_seeds")))
    ranks = {str(r.search["rank"]) for r in staged}
    rates = {float(r.search["learning_rate"]) for r in staged}
    run_hours = sum(r.device_hours for r in staged) / len(staged)
    stage1_hours = sum(r.search["stage1_hours"] for r in staged) / len(staged)
    found = costs(design, len(ranks), len(rates), run_hours, stage1_hours)
    devices = "/".join(sorted({r.device for r in staged}))
    price = sum(r.cost_usd for r in staged) / max(sum(r.device_hours for r in staged), 1e-12)
    return [
        *cost_lines(found, design, devices, price),
        f"(the runs above are the grid's arms: {len(ranks)} ranks x {len(rates)} learning rates; a full run "
        f"{run_hours:.2f} {devices}-hours, a stage-1 run to {design.milestone:g} of the budget {stage1_hours:.2f}: "
        f"the share of the training and selection evaluations, and the baseline)",
    ]


def plan_preflight(cfg: DictConfig, run_dir: str | Path, overrides: list[str]) -> PlannedRun:
    """The preflight job of the arm whose run folder is `run_dir` (planning.preflight): skipped when it found the
    arm ready or is still queued or running; its time limit and cost (one device for the whole job)."""
    from .planning.preflight import preflight_dir, read, status_line

    folder = preflight_dir(run_dir)
    record = read(folder)
    alive = slurm_job_alive((record or {}).get("job") or RunRecord(folder).read_submission().get("job_id"))
    action, status = "run", "new" if record is None else ("done" if record.get("verdict") else "running")
    note = status_line(record, alive) if record else ""
    if record and (record.get("verdict") or {}).get("ready"):
        action = "skip"
    elif not (record or {}).get("verdict") and alive:
        action, note = "skip", note or "queued"
    minutes = preflight_job_minutes(cfg)
    hours = minutes / 60
    overrides = [o for o in overrides if not o.startswith("preflight=")]
    window_s, window_measured = stop_window_s(cfg, Path(run_dir).parent)
    return PlannedRun(
        " ".join(overrides),
        str(folder),
        status,
        action,
        note,
        str(cfg.budget.device),
        hours,
        0.0,
        minutes,
        1,
        hours,
        hours * float(cfg.budget.price_per_hour),
        stop_window_s=window_s,
        stop_window_measured=window_measured,
    )


def format_preflight_plan(runs: list[PlannedRun], all_runs: int) -> str:
    todo = [r for r in runs if r.action == "run"]
    lines = [f"Preflight: one job per model at its most memory-hungry arm of the sweep's {all_runs} runs"]
    for run in runs:
        job = f"{run.job_minutes // 60}:{run.job_minutes % 60:02d}"
        note = f"  [{run.note}]" if run.note else ""
        lines.append(f"{run.action:6} {run.status:8} {job:>6}  {run.overrides or '(defaults)':44} {run.run_dir}{note}")
    hours = sum(r.device_hours for r in todo)
    lines.append(
        f"{len(todo)} preflight jobs to go: about {hours:.2f} {'/'.join(sorted({r.device for r in todo})) or '-'} "
        f"device-hours, ${sum(r.cost_usd for r in todo):.2f} (job time = two start-ups, a few steps with one at full "
        "length, two saves, a requeue and a few problems of each benchmark, from budget.estimate). Then plan the "
        "sweep with dry_run=true: it estimates from what the preflight measured."
    )
    return "\n".join(lines)


def preflight_lines(sweep_dir: str | Path) -> list[str]:
    """One line per preflight of the sweep (its verdict or where it stands), and what it measured."""
    from .planning.preflight import FOLDER, format_measured, read, status_line

    lines = []
    for folder in sorted(Path(sweep_dir, FOLDER).glob("*/")):
        record = read(folder)
        if record is None:
            continue
        alive = slurm_job_alive(record.get("job"))
        lines.append(
            f"preflight {record.get('model')} ({' '.join(record.get('arm') or [])}): {status_line(record, alive)}"
        )
        lines += [f"    {line}" for line in format_measured(record)] if record.get("verdict") else []
    return lines


def format_plan(runs: list[PlannedRun], search: bool = True) -> str:
    head = f"{'action':6} {'status':11} {'train h':>7} {'eval h':>6} {'updates':>7} {'job time':>8} {'jobs':>4}"
    lines = [f"{head}  {'overrides':44} folder / note"]
    for run in runs:
        job = f"{run.job_minutes // 60}:{run.job_minutes % 60:02d}"
        eval_h = f"{run.evaluation_hours:.2f}" + ("m" if run.measured else "")
        updates = "-" if run.updates is None else f"{run.updates}" + ("m" if run.measured_by else "")
        cost = f"{run.training_hours:7.2f} {eval_h:>6} {updates:>7} {job:>8} {run.jobs:>4}"
        note = f"  [{run.note}]" if run.note else ""
        lines.append(f"{run.action:6} {run.status:11} {cost}  {run.overrides or '(defaults)':44} {run.run_dir}{note}")
    todo = [r for r in runs if r.action == "run"]
    hours = sum(r.device_hours for r in todo)
    devices = "/".join(sorted({r.device for r in todo})) or "-"
    lines.append(
        f"{len(todo)} of {len(runs)} runs to go: at most {hours:.2f} {devices} device-hours in total "
        f"(one device per run), ${sum(r.cost_usd for r in todo):.2f} at the budgets' prices"
    )
    lines.append(
        "train h = the budget (training only); eval h = baseline, selection and final evaluation, estimated "
        "from budget.estimate and model.answer_tokens (m: from what earlier runs of this sweep, or its preflight, "
        "measured) and not counted in the budget; updates = optimizer steps in the budget at the step time (m: "
        "measured); job time = start-up + both + the stop window, per SLURM job (h:mm)"
    )
    with_milestones = [r for r in todo if r.milestones]
    if with_milestones:
        extra = sum(r.milestone_evaluation_hours for r in with_milestones)
        separate = sum(r.separate_hours for r in with_milestones)
        shown = ", ".join(f"{f:g}" for f in sorted({f for r in with_milestones for f in r.milestones}))
        lines.append(
            f"budget.milestones ({shown} of the budget): their evaluations add {extra:.2f} device-hours to the sweep "
            f"(in eval h above); the same budgets as separate runs would cost {separate:.2f} device-hours more"
        )
    lines += search_lines(runs) if search else []  # a stage of a launched search prices itself, not the design
    if todo:
        window = max(todo, key=lambda r: r.stop_window_s)
        source = f"measured by {window.measured_by}" if window.stop_window_measured else "budget.estimate"
        lines.append(
            f"stop window: {window.stop_window_s:.0f} s = the slowest step + a save + {HAND_OVER_S} s to hand over "
            f"({source}); the SLURM launcher signals (USR2) that long before a job's limit unless "
            f"hydra.launcher.signal_delay_s is set"
        )
    return "\n".join(lines)


def _first_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "unknown error"


class SweepReport(Callback):
    """After a multirun with in-process jobs: one line per job, and the plan totals for dry runs."""

    def __init__(self):
        self.results: list[dict] = []

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        value = job_return._return_value
        if isinstance(value, BaseException):
            self.results.append(
                {
                    "status": "failed",
                    "error": f"{type(value).__name__}: {value}",
                    "overrides": " ".join(job_return.overrides or []),
                }
            )
        elif isinstance(value, dict):
            self.results.append(value | {"overrides": " ".join(job_return.overrides or [])})

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        plans = [PlannedRun(**r["plan"]) for r in self.results if r.get("status") == "dry_run" and "plan" in r]
        if plans:
            print(format_plan(plans))
        elif self.results:
            print(format_status(self.results))


def format_status(summaries: list[dict]) -> str:
    lines = [f"{'status':11} {'step':>5} {'stop':22} run"]
    for s in summaries:
        extra = f"  [{_first_line(s.get('error'))}]" if s.get("status") == "failed" else ""
        lines.append(
            f"{s.get('status', '?'):11} {s.get('global_step', 0) or 0:>5} {str(s.get('stop_reason') or ''):22} "
            f"{s.get('run_dir') or s.get('overrides')}{extra}"
        )
    counts = {}
    for s in summaries:
        counts[s.get("status", "?")] = counts.get(s.get("status", "?"), 0) + 1
    lines.append(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    return "\n".join(lines)


def sweep_status(folder: str | Path) -> list[dict]:
    """Every run of a sweep: its summary, or for a run whose job has not started, its submission (queued while
    SLURM holds the job, else lost)."""
    found = []
    for run_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir()) if Path(folder).is_dir() else []:
        record = RunRecord(run_dir)
        summary = record.read_summary()
        if summary is not None:
            found.append(summary)
        elif record.read_submission():
            job = record.read_submission()["job_id"]
            status = "queued" if slurm_job_alive(job) else "lost"
            found.append({"status": status, "run_dir": str(run_dir), "slurm_job_id": job})
    return found


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m rlvr_sweeps.sweep <sweep folder, e.g. runs/default>", file=sys.stderr)
        return 2
    summaries, preflights = sweep_status(args[0]), preflight_lines(args[0])
    if not summaries and not preflights:
        print(f"No runs in {args[0]}", file=sys.stderr)
        return 1
    if summaries:
        print(format_status(summaries))
    if preflights:
        print("\n".join(preflights))
    search = read_search_record(args[0])
    if search is not None:  # search=two_stage: where it stands
        print("\n".join(promotion_lines(search)))
    return 1 if any(s.get("status") == "failed" for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
