#!/usr/bin/env bash
# The study's design end to end without GPU or Hub: two offline initializations (SmolLM2-135M-Instruct,
# and the same after math SFT: an init that already sits near the task, like the study's math-aligned
# models) x LoRA ranks 8, 64, 256 x 3 seeds, each run with the default task and a short CPU budget;
# then the tables with per-problem intervals and the plots. About 52 minutes on 2 cores (measured).
#
#   scripts/offline_study.sh [extra overrides...]
#   MODELS=... RANKS=... SEEDS=... MINUTES=... NAME=...   choose a smaller design (e.g. the test's miniature)
#   RLVR_SWEEPS_RUNS   where the runs go (default ./runs); the analysis goes to <runs>/<NAME>/analysis
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
RUNS="${RLVR_SWEEPS_RUNS:-$PWD/runs}"
NAME="${NAME:-offline_study}"

start=$(date +%s)
"$PYTHON" launch.py -m "name=$NAME" "model=${MODELS:-smollm2,smollm2_math}" "lora.rank=${RANKS:-8,64,256}" \
  "trainer.seed=${SEEDS:-0,1,2}" "budget.minutes=${MINUTES:-1.75}" "$@"
sweep_done=$(date +%s)
"$PYTHON" -m analysis "$RUNS/$NAME" --out "$RUNS/$NAME/analysis"
end=$(date +%s)
echo "offline study: sweep $((sweep_done - start)) s, analysis $((end - sweep_done)) s"
