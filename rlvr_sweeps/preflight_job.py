"""The preflight job (planning.preflight): one arm of the sweep, trained a few steps as its real jobs would be,
measuring as it goes and judging at the end.

train() runs it when the config says preflight=true: Preflight.start() moves the run into
<sweep>/preflight/<arm>/ (a fresh folder once an earlier preflight there has ended) and shortens it (STEPS steps, a
save every SAVE_STEPS, the final evaluation on PROBLEMS problems of each benchmark, no baseline); the trainer gets
the full-length step and the PreflightCallback; every attempt's step and save times are added when it ends; the
stop signal goes through the scheduler at SIGNAL_STEP; the verdict is written when the run finishes or fails.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, open_dict
from transformers import TrainerCallback

from .planning.preflight import (
    FORCED_STEP,
    PROBLEMS,
    RECORD,
    SAVE_STEPS,
    SIGNAL_STEP,
    STEPS,
    preflight_dir,
    read,
    status_line,
)
from .run.guards import LOGP_GAP
from .run.record import RunIdentity, atomic_write, now_iso
from .training.memory import GB, PeakMemory

log = logging.getLogger(__name__)

SIGNAL_WAIT_S = 60  # how long the job waits for the scheduler to deliver the stop signal it asked for
CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints"
CHECKED_PACKAGES = ("torch", "transformers", "trl", "peft", "vllm")


class Preflight:
    """One preflight run: its record (preflight.json), kept current across the attempts of the job."""

    def __init__(self, folder: Path, model: str, arm: list[str]):
        self.folder = Path(folder)
        self.path = self.folder / RECORD
        self.state = read(self.folder) or {"model": model, "arm": arm, "started_at": now_iso()}
        self.attempt_started = time.time()
        self.attempt_steps: list[int] = []

    @classmethod
    def start(cls, cfg: DictConfig, identity: RunIdentity) -> tuple[Preflight, RunIdentity]:
        """The preflight of this arm, in <sweep>/preflight/<arm>/ (a preflight that ended there before is
        replaced: a new submission measures anew), and the run's identity moved there; cfg is shortened."""
        folder = preflight_dir(identity.run_dir)
        earlier = read(folder)
        if earlier and earlier.get("verdict"):
            shutil.rmtree(folder)
        arm = [o for o in identity.overrides if not o.startswith("preflight=")]
        preflight = cls(folder, str(cfg.model.name), arm)
        shorten(cfg)
        preflight.save(phase="running", job=_job_id())
        return preflight, replace(identity, run_dir=str(folder), run_name=f"preflight-{identity.run_name}")

    def check_hub(self, cfg: DictConfig) -> None:
        """Every Hub model and dataset the arm loads, from the cache this node reads, as a real job would find it
        (on a node without network a missing one is refused with its fetch command: hub.prepare)."""
        from .infra.hub import prepare, required_items

        items = required_items(cfg)
        missing = prepare(items, log=log.info)
        self.save(hub={"items": len(items), "fetched_here": [item.repo_id for item in missing]})

    def save(self, **fields) -> None:
        self.state.update(fields, updated_at=now_iso())
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self.state, indent=2, default=str) + "\n")

    def add_to(self, trainer, graceful) -> None:
        """Full-length rollouts at FORCED_STEP, and the callback that measures and sends the stop signal."""
        trainer.full_length_steps = {FORCED_STEP}
        trainer.add_callback(PreflightCallback(self, graceful))

    def attempt_ended(self, run) -> None:
        """Keep this attempt's step and save times (the budget's training clock: evaluation excluded) and the
        size of its checkpoints."""
        budget = run.budget_callback
        steps = dict(self.state.get("steps") or {})
        for step, seconds in zip(self.attempt_steps, budget.step_seconds):
            steps[str(step)] = {**steps.get(str(step), {}), "seconds": round(seconds, 3)}
        saves = list(self.state.get("saves") or []) + [round(s, 3) for s in budget.save_seconds]
        sizes = [_folder_gb(p) for p in run.record.complete_checkpoints()]
        self.save(steps=steps, saves=saves, checkpoint_gb=max(sizes + [self.state.get("checkpoint_gb") or 0]))

    def hand_over(self, graceful) -> None:
        """After the signal's save: the scheduler glue (submitit) requeues the job; a refusal is a verdict."""
        requeue = {**self.state.get("requeue", {}), "requested_at": now_iso(), "requested_epoch": time.time()}
        self.save(phase="requeue requested", requeue=requeue)
        try:
            graceful.hand_over()
        except Exception as err:  # noqa: BLE001 - scontrol's refusal, whatever form it takes
            self.judge(
                {},
                [
                    cause(
                        f"the scheduler refused to requeue the job after its stop signal ({_first_line(err)})",
                        "use a partition that allows requeue (SLURM's --requeue; JobRequeue=1), or ask the admins",
                    )
                ],
            )
            raise

    def finished(self, summary: dict, record_dir: Path) -> dict:
        """The measurements of a finished preflight and its verdict."""
        measured = self.measure(summary, record_dir)
        return self.judge(measured, self.causes(summary, measured), self.notes(summary, measured))

    def failed(self, err: BaseException, summary: dict | None) -> None:
        """A preflight that failed is not ready; the cause is what stopped it."""
        text = str(err)
        if "out of memory" in text.lower():
            memory = (summary or {}).get("memory") or {}
            micro = memory.get("micro_batch") or memory.get("requested_micro_batch") or 2
            step = int(self.state.get("step", 0)) + 1
            where = "every completion at full length" if step == FORCED_STEP else "a training step"
            found = cause(
                f"out of memory at step {step} ({where}, micro-batch {micro}): the estimate ran low here",
                f"lower trainer.per_device_train_batch_size to {max(1, micro // 2)} and raise "
                "trainer.gradient_accumulation_steps to keep the completions per update, or lower "
                "trainer.max_completion_length",
            )
        else:
            found = cause(_first_line(err), "fix the cause above and relaunch the preflight")
        self.judge({}, [found])

    def judge(self, measured: dict, causes: list[dict], notes: list[str] | None = None) -> dict:
        verdict = {"ready": not causes, "causes": causes, "notes": notes or []}
        self.save(
            phase="done", measured=measured or self.state.get("measured") or {}, verdict=verdict, finished_at=now_iso()
        )
        arm = " ".join(self.state.get("arm") or []) or "defaults"
        print(f"Preflight of {self.state.get('model')} ({arm}): {status_line(self.state)}")
        return verdict

    def measure(self, summary: dict, record_dir: Path) -> dict:
        """preflight.json's measured section: what the plan reads (rlvr_sweeps.sweep)."""
        steps = self.state.get("steps") or {}
        times = {int(k): v["seconds"] for k, v in steps.items() if v.get("seconds") is not None}
        typical = [
            s
            for step, s in times.items()
            if step not in (1, FORCED_STEP) and not steps[str(step)].get("first_of_attempt")
        ]
        requeue = self.state.get("requeue") or {}
        evaluation = {}
        for name, metrics in ((summary.get("eval") or {}).get("final") or {}).items():
            evaluation[name] = throughput(metrics)
        selection = {
            str(step): throughput(metrics)
            for step, metrics in ((summary.get("eval") or {}).get("checkpoint_metrics") or {}).items()
        }
        memory = dict(self.state.get("memory") or {})
        estimate = (summary.get("memory") or {}).get("estimate_gb")
        return {
            "step_s": round(sum(typical) / len(typical), 3) if typical else (max(times.values()) if times else None),
            "max_step_s": round(max(times.values()), 3) if times else None,
            "first_step_s": times.get(1),
            "full_length_step_s": times.get(FORCED_STEP),
            "save_s": round(max(self.state.get("saves") or [0]), 3),
            "checkpoint_gb": self.state.get("checkpoint_gb"),
            "memory": {**memory, "estimate_gb": estimate},
            "weight_sync": self.state.get("weight_sync"),
            "signal_to_resumed_step_s": requeue.get("signal_to_resumed_step_s"),
            "requeue_wait_s": requeue.get("requeue_wait_s"),
            "attempts": len(summary.get("attempts") or []),
            "evaluation": evaluation,
            "selection": next(iter(selection.values()), None),
            "versions": (summary.get("versions") or {}),
            "device": (summary.get("budget") or {}).get("device_name"),
        }

    def causes(self, summary: dict, measured: dict) -> list[dict]:
        found = []
        memory = summary.get("memory") or {}
        if memory.get("split_to_fit"):
            micro, accumulation = memory["micro_batch"], memory["accumulation"]
            found.append(
                cause(
                    f"trainer.per_device_train_batch_size={memory['requested_micro_batch']} does not fit: about "
                    f"{memory['requested_estimate_gb']} GB estimated, {memory['device_free_gb']} GB free on "
                    f"{memory['device']}; the runs would train at {micro} x {accumulation} (the same completions per "
                    "update, as this preflight did)",
                    f"accept it: trainer.per_device_train_batch_size={micro} "
                    f"trainer.gradient_accumulation_steps={accumulation}; or lower trainer.max_completion_length",
                )
            )
        requeue = self.state.get("requeue") or {}
        if requeue.get("sent_at") and not requeue.get("received_after_s"):
            found.append(
                cause(
                    f"the stop signal was not delivered within {SIGNAL_WAIT_S} s of `{requeue.get('how')}`",
                    "check that the partition forwards signals to job steps (the time-limit warning needs it)",
                )
            )
        elif requeue.get("sent_at") and not requeue.get("resumed_at"):
            found.append(
                cause("the job was not requeued after its stop signal", "use a partition that allows requeue")
            )
        found += self.environment_causes(summary)
        return found

    def notes(self, summary: dict, measured: dict) -> list[str]:
        notes = []
        memory = measured.get("memory") or {}
        if memory.get("full_length") is False:
            notes.append(f"the full-length step reached only {memory.get('min_completion_tokens')} tokens")
        over = memory.get("estimate_gb") and memory.get("peak_gb") and memory["peak_gb"] > memory["estimate_gb"]
        if over and memory.get("measured", "").startswith("torch.cuda"):  # a CPU process's RSS is not comparable
            notes.append(
                f"the measured peak ({memory['peak_gb']} GB) is above the estimate ({memory['estimate_gb']} GB)"
            )
        if not (self.state.get("requeue") or {}).get("sent_at"):
            notes.append("requeue not tested: no scheduler (launch it with -m and a launcher: slurm_a40 or local)")
        return notes

    def environment_causes(self, summary: dict) -> list[dict]:
        """Installed versions against the constraint set this machine should run."""
        versions = summary.get("versions") or {}
        name, pinned = constraint_set(versions)
        wrong = [
            f"{package} {versions.get(package, 'missing')} ({name}: {version})"
            for package, version in pinned.items()
            if package in CHECKED_PACKAGES and _release(versions.get(package)) != version
        ]
        if not wrong:
            return []
        return [cause(f"unexpected versions: {', '.join(wrong)}", f"install with pip install -c {name} (README)")]


def shorten(cfg: DictConfig) -> None:
    """The arm's settings, cut to a preflight: STEPS steps, a save every SAVE_STEPS, the final evaluation (and the
    selection) on PROBLEMS problems, no baseline; the W&B run in its own group."""
    with open_dict(cfg):
        cfg.budget.max_steps = STEPS
        cfg.trainer.save_strategy, cfg.trainer.save_steps = "steps", SAVE_STEPS
        cfg.eval.baseline, cfg.eval.final = False, True
        cfg.eval.max_problems = PROBLEMS
        cfg.name = f"{cfg.name}-preflight"


class PreflightCallback(TrainerCallback):
    """At FORCED_STEP, the peak memory of a step whose completions are all full length; at SIGNAL_STEP, the
    scheduler's stop signal (the time-limit path); after a requeue, the time until the resumed job's first step."""

    def __init__(self, preflight: Preflight, graceful):
        self.preflight = preflight
        self.graceful = graceful
        self.peak = None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == FORCED_STEP:
            import torch

            self.peak = PeakMemory(torch.cuda.is_available())
            self.peak.start()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "completions/mean_length" not in logs:
            return
        preflight, step = self.preflight, state.global_step
        steps = dict(preflight.state.get("steps") or {})
        steps[str(step)] = {
            **steps.get(str(step), {}),
            "completion_tokens": {k: logs.get(f"completions/{k}_length") for k in ("min", "mean", "max")},
            "full_length": step == FORCED_STEP,
            "first_of_attempt": not preflight.attempt_steps,
            **({"logp_gap": logs[LOGP_GAP]} if LOGP_GAP in logs else {}),
        }
        preflight.attempt_steps.append(step)
        fields = {"steps": steps, "step": step}
        if step == FORCED_STEP and self.peak is not None:
            shortest = logs.get("completions/min_length")
            micro = int(args.per_device_train_batch_size)
            fields["memory"] = {
                "peak_gb": round(self.peak.peak() / GB, 3),
                "step_rise_gb": round(self.peak.growth() / GB, 3),
                "measured": "torch.cuda.max_memory_allocated" if self.peak.cuda else "process resident-set peak (CPU)",
                "completion_tokens": int(args.max_completion_length),
                "min_completion_tokens": shortest,
                "full_length": shortest is not None and shortest >= int(args.max_completion_length),
                "micro_batch": micro,
            }
        gaps = [v["logp_gap"] for v in steps.values() if "logp_gap" in v]
        if gaps:
            fields["weight_sync"] = {"floor": steps.get("1", {}).get("logp_gap"), "max": max(gaps)}
        requeue = preflight.state.get("requeue") or {}
        if (
            requeue.get("sent_epoch")
            and not requeue.get("resumed_at")
            and len(preflight.attempt_steps) == 1
            and step > SIGNAL_STEP
        ):
            now = time.time()
            fields["requeue"] = {
                **requeue,
                "resumed_at": now_iso(),
                "signal_to_resumed_step_s": round(now - float(requeue["sent_epoch"]), 1),
                "requeue_wait_s": round(preflight.attempt_started - float(requeue.get("requested_epoch") or now), 1),
            }
        preflight.save(**fields)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step != SIGNAL_STEP or (self.preflight.state.get("requeue") or {}).get("sent_at"):
            return
        how = send_stop_signal()
        if how is None:
            return
        preflight = self.preflight
        sent = time.time()
        preflight.save(requeue={"how": how, "sent_at": now_iso(), "sent_epoch": sent})
        while self.graceful.signal is None and time.time() - sent < SIGNAL_WAIT_S:
            time.sleep(0.1)
        if self.graceful.signal is None:
            log.warning(
                "The stop signal did not arrive within %d s; finishing the preflight without it.", SIGNAL_WAIT_S
            )
            return
        requeue = {**preflight.state["requeue"], "received_after_s": round(max(time.time() - sent, 0.001), 3)}
        preflight.save(requeue=requeue)


def send_stop_signal() -> str | None:
    """The time-limit warning (USR2) the way the scheduler sends it: through SLURM to the job's steps, or, for a
    local submitit job, to this process; None outside a scheduler (nothing would requeue the job)."""
    executor = os.environ.get("SUBMITIT_EXECUTOR", "")
    if executor == "slurm" and os.environ.get("SLURM_JOB_ID"):
        command = ["scancel", "--signal=USR2", os.environ["SLURM_JOB_ID"]]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log.warning("scancel refused the stop signal: %s", done.stderr.strip())
        return " ".join(command)
    if executor == "local":
        os.kill(os.getpid(), signal.SIGUSR2)
        return "USR2 to the local submitit job"
    return None


def throughput(metrics: dict) -> dict:
    completions = int(metrics.get("problems", 0)) * int(metrics.get("n", 0))
    return {
        "completion_tokens": round(metrics["generated_tokens"] / completions, 1) if completions else None,
        "tokens_per_s": metrics.get("tokens_per_s"),
        "completions": completions,
        "seconds": metrics.get("seconds"),
        "truncated": metrics.get("truncated"),
    }


def constraint_set(versions: dict) -> tuple[str, dict[str, str]]:
    """The constraint file this machine's packages should match: by torch's CUDA build (13: gpu.txt, 12:
    gpu-cuda12.txt), or the CPU sets; its pinned versions."""
    import torch

    cuda = torch.version.cuda
    if cuda:
        name = "gpu.txt" if int(cuda.split(".")[0]) >= 13 else "gpu-cuda12.txt"
    else:
        name = "vllm-cpu.txt" if versions.get("vllm") else "cpu.txt"
    path = CONSTRAINTS / name
    pinned = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "==" in line and not line.lstrip().startswith("#"):
                package, version = line.split("#")[0].strip().split("==", 1)
                pinned["vllm" if package == "vllm-cpu" else package] = version.strip()
    return f"constraints/{name}", pinned


def cause(what: str, fix: str) -> dict:
    return {"cause": what, "fix": fix}


def _release(version: str | None) -> str | None:
    return version.split("+")[0] if version else None


def _folder_gb(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / GB, 3)


def _first_line(err) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


def _job_id() -> str | None:
    """The SLURM job (the plan asks squeue whether it is still queued or running)."""
    return os.environ.get("SLURM_JOB_ID")
