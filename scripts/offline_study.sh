#!/usr/bin/env bash
# One of the study's questions answered without GPU or Hub: does LoRA rank 256 beat rank 8 on
# SmolLM2-135M-Instruct (alpha = 2 x rank, one learning rate, as in the study) in the same training
# minutes? Seeds decide such a comparison (a training run is the unit), so the design spends the hour
# on seeds rather than arms: 2 ranks x 10 seeds, each run with the default task and 1.75 CPU minutes
# of training; then the tables (seed-level intervals, the runs each comparison would need) and plots.
#
#   scripts/offline_study.sh [extra overrides...]
#   MODELS=... RANKS=... SEEDS=... MINUTES=... NAME=...   another design, e.g. the study's grid:
#   MODELS=smollm2,smollm2_math RANKS=8,64,256 SEEDS=0,1,2   (or the test's miniature)
#   RLVR_SWEEPS_RUNS   where the runs go (default ./runs); the analysis goes to <runs>/<NAME>/analysis
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
RUNS="${RLVR_SWEEPS_RUNS:-$PWD/runs}"
NAME="${NAME:-offline_study}"

start=$(date +%s)
"$PYTHON" launch.py -m "name=$NAME" "model=${MODELS:-smollm2}" "lora.rank=${RANKS:-8,256}" \
  "trainer.seed=${SEEDS:-0,1,2,3,4,5,6,7,8,9}" "budget.minutes=${MINUTES:-1.75}" "$@"
sweep_done=$(date +%s)
"$PYTHON" -m analysis "$RUNS/$NAME" --out "$RUNS/$NAME/analysis"
end=$(date +%s)
echo "offline study: sweep $((sweep_done - start)) s, analysis $((end - sweep_done)) s"
