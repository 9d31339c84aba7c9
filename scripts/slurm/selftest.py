#!/usr/bin/env python
"""End-to-end check of the local SLURM cluster with submitit.

Usage (cluster started with scripts/slurm/cluster.sh start):

    . "${RLVR_SLURM_DIR:-/tmp/rlvr-slurm}/env.sh"      # exports SLURM_CONF
    .venv/bin/python scripts/slurm/selftest.py [--folder DIR] [--steps 40] [--requeue-at 10]

Checks:
  (a) two jobs with --gres=gpu:a40:1 (submitit slurm_gres) run at the same time, each sees
      CUDA_VISIBLE_DEVICES, and one job with slurm_gpus_per_node="a40:1" does too;
  (b1) a Checkpointable job is requeued from outside with `scontrol requeue <jobid>` mid-run;
      it starts again (SLURM_RESTART_COUNT=1), resumes from its progress file and finishes;
  (b2) a Checkpointable job receives USR2 (what SLURM sends before a timeout / what
      preemption looks like); submitit calls checkpoint(), requeues it itself, and the job
      resumes from the state saved in checkpoint();
  (c) a job that raises comes back as FAILED with the original exception;
  (d) a cancelled job shows state CANCELLED and result() raises instead of hanging.
Prints a table of timings; exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import submitit
from submitit.core.utils import FailedJobError

PARTITION = "debug"


# ----------------------------------------------------------------------------- job functions
def gpu_job(tag: str, sleep_s: float) -> dict:
    start = time.time()
    time.sleep(sleep_s)
    return {
        "tag": tag,
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "SLURM_JOB_GPUS": os.environ.get("SLURM_JOB_GPUS"),
        "SLURM_JOB_ID": os.environ.get("SLURM_JOB_ID"),
        "start": start,
        "end": time.time(),
    }


def failing_job(x: int) -> int:
    raise ValueError(f"intentional failure from selftest (x={x})")


class ProgressJob(submitit.helpers.Checkpointable):
    """Counts `total` one-second steps, appending progress lines to a file.

    Resumes from self.step when submitit restores it from checkpoint() (USR2 path), or from
    the last line of the progress file when the job was killed and requeued from outside.
    """

    def __init__(self) -> None:
        self.step = 0
        self.checkpoint_calls = 0

    def __call__(self, progress_file: str, total: int) -> dict:
        path = Path(progress_file)
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        from_ckpt = self.step
        from_file = 0
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith("step "):
                    from_file = int(line.split()[1])
        start_step = max(from_ckpt, from_file)
        with path.open("a") as f:
            f.write(
                f"start restart={restart} step={start_step} from_ckpt={from_ckpt} "
                f"from_file={from_file} ckpt_calls={self.checkpoint_calls} t={time.time():.3f}\n"
            )
        self.step = start_step
        while self.step < total:
            time.sleep(1.0)
            self.step += 1
            with path.open("a") as f:
                f.write(f"step {self.step} restart={restart} t={time.time():.3f}\n")
        return {
            "restart_count": restart,
            "resumed_from_step": start_step,
            "resumed_from_checkpoint": from_ckpt,
            "checkpoint_calls": self.checkpoint_calls,
            "final_step": self.step,
        }

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        self.checkpoint_calls += 1
        return super().checkpoint(*args, **kwargs)


# ----------------------------------------------------------------------------- helpers
class Failure(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Failure(msg)
    print(f"  ok: {msg}")


def wait_done(job: submitit.Job, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while not job.done():
        if time.time() > deadline:
            raise Failure(f"job {job.job_id} not done after {timeout_s:.0f}s (state {job.state})")
        time.sleep(0.2)


def final_state(job: submitit.Job, timeout_s: float = 30) -> str:
    """State from sacct once it is terminal (the result file is written a bit before)."""
    deadline = time.time() + timeout_s
    state = "UNKNOWN"
    while time.time() < deadline:
        state = job.get_info(mode="force").get("State", "UNKNOWN")
        if state.split()[0] not in {"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "UNKNOWN", "READY"}:
            return state
        time.sleep(0.5)
    return state


def last_step(path: Path) -> int:
    if not path.exists():
        return 0
    n = 0
    for line in path.read_text().splitlines():
        if line.startswith("step "):
            n = int(line.split()[1])
    return n


def start_times(path: Path) -> list[tuple[int, float]]:
    """(restart_count, time) of each 'start' line."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("start "):
            fields = dict(kv.split("=", 1) for kv in line.split()[1:])
            out.append((int(fields["restart"]), float(fields["t"])))
    return out


def executor(folder: Path, **params) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    # timeout_min > 10: submitit counts a USR2 as "timed-out" (and uses up one of
    # slurm_max_num_timeout) when the run time is >= min(0.8*timeout, timeout - 10 min),
    # i.e. always for timeout_min <= 10; with 30 an early USR2 is a "preemption".
    base = dict(timeout_min=30, slurm_partition=PARTITION, cpus_per_task=1, mem_gb=1)
    base.update(params)
    ex.update_parameters(**base)
    return ex


# ----------------------------------------------------------------------------- checks
def check_gpu_jobs(folder: Path, timings: dict) -> None:
    print("(a) GPU jobs with slurm_gres='gpu:a40:1'")
    ex = executor(folder, slurm_gres="gpu:a40:1", name="selftest-gpu")
    t0 = time.time()
    with ex.batch():
        jobs = [ex.submit(gpu_job, f"gres{i}", 3.0) for i in range(2)]
    results = []
    for job in jobs:
        wait_done(job, 120)
        results.append(job.result())
    timings["(a) 2 gres jobs, submit -> both results"] = time.time() - t0
    for r in results:
        check(
            bool(r["CUDA_VISIBLE_DEVICES"]),
            f"job {r['SLURM_JOB_ID']} CUDA_VISIBLE_DEVICES={r['CUDA_VISIBLE_DEVICES']}",
        )
    check(
        results[0]["CUDA_VISIBLE_DEVICES"] != results[1]["CUDA_VISIBLE_DEVICES"],
        "the two jobs got different GPUs",
    )
    overlap = min(r["end"] for r in results) - max(r["start"] for r in results)
    check(overlap > 0, f"the two jobs ran at the same time (overlap {overlap:.1f}s)")
    for job in jobs:
        st = final_state(job)
        check(st == "COMPLETED", f"job {job.job_id} state {st}")
    gres = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", jobs[0].job_id, "-o", "AllocTRES"], capture_output=True, text=True
    ).stdout.strip()
    check("gres/gpu" in gres, f"sacct AllocTRES records the gpu: {gres}")

    ex2 = executor(folder, slurm_gpus_per_node="a40:1", name="selftest-gpn")
    t0 = time.time()
    job = ex2.submit(gpu_job, "gpus_per_node", 0.0)
    wait_done(job, 120)
    r = job.result()
    timings["(a) 1 job slurm_gpus_per_node='a40:1'"] = time.time() - t0
    check(
        bool(r["CUDA_VISIBLE_DEVICES"]), f"gpus_per_node='a40:1' job CUDA_VISIBLE_DEVICES={r['CUDA_VISIBLE_DEVICES']}"
    )


def check_failure(folder: Path, timings: dict) -> None:
    print("(c) a job that raises")
    ex = executor(folder, name="selftest-fail")
    t0 = time.time()
    job = ex.submit(failing_job, 7)
    wait_done(job, 120)
    try:
        job.result()
    except FailedJobError as e:
        msg = str(e)
        check("intentional failure from selftest (x=7)" in msg, "result() raises FailedJobError with the traceback")
        check("ValueError" in msg, "the original exception type is in the message")
    else:
        raise Failure("result() of a failing job did not raise")
    exc = job.exception()
    check(isinstance(exc, FailedJobError), f"job.exception() is {type(exc).__name__}")
    timings["(c) failing job, submit -> exception"] = time.time() - t0
    st = final_state(job)
    check(st == "FAILED", f"sacct/submitit state of the failing job: {st} (job.state={job.state})")


def check_cancel(folder: Path, timings: dict) -> None:
    print("(d) a cancelled job")
    ex = executor(folder, name="selftest-cancel")
    job = ex.submit(time.sleep, 300)
    deadline = time.time() + 60
    while job.get_info(mode="force").get("State") != "RUNNING":
        if time.time() > deadline:
            raise Failure(f"job {job.job_id} did not start (state {job.state})")
        time.sleep(0.2)
    t0 = time.time()
    job.cancel()
    st = final_state(job)
    check(st.startswith("CANCELLED"), f"state after job.cancel(): {st!r}")
    try:
        job.result()
    except submitit.core.utils.UncompletedJobError as e:
        check(True, f"result() raises UncompletedJobError: {str(e).splitlines()[0][:90]}...")
    else:
        raise Failure("result() of a cancelled job returned")
    timings["(d) cancel -> result() raises"] = time.time() - t0


def run_requeue_jobs(folder: Path, timings: dict, total: int, at_step: int) -> None:
    print(f"(b) Checkpointable jobs of {total} steps, requeued at step {at_step}")
    ex = executor(folder, name="selftest-requeue")
    files = {k: folder / f"progress-{k}.txt" for k in ("b1", "b2")}
    for f in files.values():
        f.unlink(missing_ok=True)
    jobs = {k: ex.submit(ProgressJob(), str(files[k]), total) for k in files}
    t_submit = time.time()
    print(f"  submitted b1={jobs['b1'].job_id} (scontrol requeue), b2={jobs['b2'].job_id} (USR2 -> checkpoint)")

    t_req: dict[str, float] = {}
    states: dict[str, list[str]] = {k: [] for k in files}
    deadline = time.time() + 300
    while not all(j.done() for j in jobs.values()):
        if time.time() > deadline:
            raise Failure(f"requeue jobs not done after 300s: { {k: j.state for k, j in jobs.items()} }")
        for k, job in jobs.items():
            st = job.get_info(mode="force").get("State", "?")
            if not states[k] or states[k][-1] != st:
                states[k].append(st)
            if k not in t_req and last_step(files[k]) >= at_step:
                if k == "b1":
                    cmd = ["scontrol", "requeue", job.job_id]
                else:
                    # default scancel signals the job steps (the srun step running python)
                    cmd = ["scancel", "--signal=USR2", job.job_id]
                t_req[k] = time.time()
                subprocess.run(cmd, check=True)
                print(f"  {k}: ran {' '.join(cmd)} at step {last_step(files[k])}")
        time.sleep(0.25)
    t_end = time.time()

    for k, job in jobs.items():
        r = job.result()
        st = final_state(job)
        states[k].append(st) if states[k][-1] != st else None
        print(f"  {k} result: {r}")
        print(f"  {k} states seen via submitit/sacct: {' -> '.join(states[k])}")
        starts = start_times(files[k])
        check(k in t_req, f"{k} was requeued")
        check([s[0] for s in starts] == [0, 1], f"{k} started twice with SLURM_RESTART_COUNT 0 then 1: {starts}")
        check(r["restart_count"] == 1 and r["final_step"] == total, f"{k} finished all {total} steps after 1 restart")
        check(r["resumed_from_step"] >= at_step, f"{k} resumed from step {r['resumed_from_step']} (not from 0)")
        check(st == "COMPLETED", f"{k} final state {st}")
        restart_delay = starts[1][1] - t_req[k]
        timings[f"(b) {k} requeue -> restart"] = restart_delay
        timings[f"(b) {k} submit -> result"] = t_end - t_submit
    r1, r2 = jobs["b1"].result(), jobs["b2"].result()
    check(
        r1["checkpoint_calls"] == 0, "b1 (scontrol requeue): checkpoint() not called (SIGTERM is ignored by submitit)"
    )
    check(
        r2["checkpoint_calls"] == 1 and r2["resumed_from_checkpoint"] >= at_step,
        f"b2 (USR2): checkpoint() called once and state restored from it (step {r2['resumed_from_checkpoint']})",
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default=None, help="submitit log folder (default: a new temp folder)")
    ap.add_argument("--steps", type=int, default=40, help="seconds the requeue test jobs run")
    ap.add_argument("--requeue-at", type=int, default=10, help="step at which to requeue")
    args = ap.parse_args()

    if not os.environ.get("SLURM_CONF"):
        print("SLURM_CONF is not set: run  . ${RLVR_SLURM_DIR:-/tmp/rlvr-slurm}/env.sh  first", file=sys.stderr)
        return 2
    base = Path(os.environ.get("RLVR_SLURM_DIR", "/tmp/rlvr-slurm"))
    folder = (
        Path(args.folder)
        if args.folder
        else Path(tempfile.mkdtemp(prefix="selftest-", dir=base if base.is_dir() else None))
    )
    folder.mkdir(parents=True, exist_ok=True)
    print(f"submitit folder: {folder}")

    timings: dict[str, float] = {}
    t0 = time.time()
    failed = None
    try:
        check_gpu_jobs(folder, timings)
        check_failure(folder, timings)
        check_cancel(folder, timings)
        run_requeue_jobs(folder, timings, args.steps, args.requeue_at)
    except Failure as e:
        failed = str(e)
    timings["total"] = time.time() - t0

    print("\n| check | seconds |\n|---|---:|")
    for k, v in timings.items():
        print(f"| {k} | {v:.1f} |")
    if failed:
        print(f"\nSELFTEST FAILED: {failed}")
        print(subprocess.run(["squeue"], capture_output=True, text=True).stdout)
        return 1
    print("\nSELFTEST PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
