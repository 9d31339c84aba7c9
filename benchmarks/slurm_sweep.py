"""Sweep submission and requeue on the local SLURM cluster: how fast, and what a requeue costs.

    scripts/slurm/cluster.sh start && . /tmp/rlvr-slurm/env.sh
    .venv/bin/python benchmarks/slurm_sweep.py

Prints: seconds from the sweep command to 6 jobs queued; for a run requeued mid-training, the
seconds from `scontrol requeue` to its next logged step, and the steps it had to redo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "model=tiny",
    "eval=[]",
    "hydra/launcher=slurm_a40",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=3",
]


def launch(runs: Path, *args: str) -> tuple[float, str]:
    env = {**os.environ, "RLVR_SWEEPS_RUNS": str(runs), "WANDB_SILENT": "true"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "-m", *SMALL, *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(done.stdout + done.stderr)
    return time.monotonic() - started, done.stdout


def squeue_ids() -> list[str]:
    return subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout.split()


def summary(folder: Path) -> dict:
    found = list(folder.glob("*/summary.json"))
    return json.loads(found[0].read_text()) if found else {}


def main() -> None:
    if "SLURM_CONF" not in os.environ:
        sys.exit("Start the cluster first: scripts/slurm/cluster.sh start && . /tmp/rlvr-slurm/env.sh")
    runs = Path(tempfile.mkdtemp(prefix="rlvr-bench-"))
    before = set(squeue_ids())
    seconds, _ = launch(runs, "lora.rank=8,64,256", "model=tiny,smollm2", "name=queue", "budget.max_steps=1")
    queued = [j for j in squeue_ids() if j not in before]
    subprocess.run(["scancel", *{j.split("_")[0] for j in queued}], check=False)

    launch(runs, "name=requeue", "budget.max_steps=60", "trainer.save_steps=5")
    folder = runs / "requeue"
    while summary(folder).get("global_step", 0) < 12:
        time.sleep(0.2)
    first = summary(folder)
    subprocess.run(["scontrol", "requeue", str(first["slurm_job_id"])], check=True)
    requeued_at = time.time()
    metrics = lambda: [json.loads(x) for x in (Path(first["run_dir"]) / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    while len(summary(folder).get("attempts", [])) < 2:
        time.sleep(0.2)
    resumed = summary(folder)["attempts"][1]["resumed_from_step"]
    while not [m for m in metrics() if m["step"] > resumed]:
        time.sleep(0.2)
    resume_s = time.time() - requeued_at  # until the first step after the checkpoint is logged again
    while summary(folder).get("status") != "completed":
        time.sleep(0.5)
    final = summary(folder)
    steps = [m["step"] for m in metrics()]

    print(f"{'measurement':56} value")
    print(f"{'seconds from the sweep command to ' + str(len(queued)) + ' jobs queued':56} {seconds:.1f}")
    print(f"{'step at requeue / step resumed from':56} {first['global_step']} / {resumed}")
    print(f"{'steps redone after the requeue':56} {max(0, first['global_step'] - resumed)}")
    print(f"{'seconds from scontrol requeue to the next logged step':56} {resume_s:.1f}")
    complete = steps == list(range(1, final["global_step"] + 1))
    print(f"{'final step / metric steps unique and complete':56} {final['global_step']} / {complete}")
    print(f"{'training seconds counted (both attempts)':56} {final['budget']['training_s']:.1f}")


if __name__ == "__main__":
    main()
