#!/usr/bin/env bash
# The study's comparison end to end without GPU or Hub, on a tiny budget: sweep two offline
# initializations (SmolLM2-135M-Instruct, and the same after math SFT) x three LoRA ranks, then
# build the tables and plots.   Usage: scripts/offline_study.sh [extra overrides...]
#   RLVR_SWEEPS_RUNS  where the runs go (default ./runs); the analysis goes to <runs>/offline_study/analysis
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
RUNS="${RLVR_SWEEPS_RUNS:-$PWD/runs}"

start=$(date +%s)
"$PYTHON" launch.py -m name=offline_study lora.rank=8,64,256 model=smollm2,smollm2_math \
  budget.max_steps=2 trainer.max_completion_length=64 "$@"
sweep_done=$(date +%s)
"$PYTHON" -m analysis "$RUNS/offline_study" --out "$RUNS/offline_study/analysis"
end=$(date +%s)
echo "offline study: sweep $((sweep_done - start)) s, analysis $((end - sweep_done)) s"
