#!/usr/bin/env bash
# search=two_stage in miniature, offline, on the local SLURM cluster (scripts/slurm/cluster.sh start):
# SmolLM2-135M-Instruct on the default task, LoRA ranks 8 and 256 x three learning rates, 12 steps per
# full run. Stage 1 trains the 6 arms to half the budget, the promotion job (queued afterany on stage 1)
# keeps each rank's best rate on the selection benchmark and queues stage 2 (the winners train on, and
# 3 new seeds per rank train the full 12 steps); then the analysis. One CPU per job.
#
#   scripts/two_stage_miniature.sh [extra overrides...]
#   RLVR_SWEEPS_RUNS   where the runs go (default ./runs); the analysis goes to <runs>/<NAME>/analysis
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
RUNS="${RLVR_SWEEPS_RUNS:-$PWD/runs}"
NAME="${NAME:-two_stage_miniature}"
eval "$(scripts/slurm/cluster.sh env | sed 's/^/export /')"

start=$(date +%s)
"$PYTHON" launch.py -m "name=$NAME" model=smollm2 lora.rank=8,256 trainer.learning_rate=1.5e-5,5e-5,1.5e-4 \
  budget.max_steps=12 budget.minutes=60 trainer.save_steps=6 \
  eval.select_on=reasoning_gym_heldout eval.selection.max_problems=40 eval.selection.n=2 \
  search=two_stage search.milestone=0.5 search.stage2_seeds=3 logger=none \
  hydra/launcher=slurm_a40 hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=6 hydra.launcher.timeout_min=90 "$@"
case " $* " in *" dry_run=true "*) exit 0 ;; esac
# the command returns once stage 1 and the promotion job are queued; stage 2 is queued by that job
while squeue -h -o %j | grep -q "rlvr-$NAME"; do sleep 20; done
sweep_done=$(date +%s)
"$PYTHON" -m rlvr_sweeps.sweep "$RUNS/$NAME" || true
"$PYTHON" -m analysis "$RUNS/$NAME" --out "$RUNS/$NAME/analysis"
end=$(date +%s)
echo "two-stage miniature: sweep $((sweep_done - start)) s, analysis $((end - sweep_done)) s"
