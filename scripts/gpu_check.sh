#!/usr/bin/env bash
# On a cluster, run the preflight first (README, "First, let the cluster measure itself"): the same sweep command
# with preflight=true measures memory, step, save, requeue and evaluation on your own nodes. This script is the
# project's own check of a GPU machine without SLURM, vLLM or network:
# The GPU checks of the study path, in one command, without network:
#   1. GRPO steps with merged rollouts at LoRA ranks 8 and 256 (and DoRA at 256) on the Qwen2.5-1.5B shape
#      in bf16 (random weights, the GPU baseline's workload: 2 prompts x 8 completions of 512 tokens after
#      128-token prompts): s/step, generation s, peak memory - beside ../shared/reference/gpu_baseline.md;
#   2. the exact vLLM weight sync on CUDA in bf16 (TRL's own sync_weights, 50 syncs, Qwen2.5-1.5B shape) for
#      each lora.variant: the frozen base stays bit-exact and the engine gets the merged weights rounded once;
#   3. the guards (rlvr_sweeps/run/guards.py, memory.py): a short healthy run passes them (memory estimate
#      logged), an impossible batch is refused before loading, the estimate is printed beside the measured
#      peaks of step 1, and where vLLM is installed a healthy and a broken weight sync (log-prob gaps).
#
#   scripts/gpu_check.sh           # on one GPU: under 8 minutes
#   scripts/gpu_check.sh --tiny    # the same on the tiny model, anywhere (CPU too): try it here first
#
# The GPU machines have torch, transformers and PEFT but not TRL, datasets, hydra or pytest: what is
# missing is installed into $PYTHON's environment from scripts/gpu_wheels/ (fill it with
# scripts/gpu_wheels.sh where PyPI is reachable; at most 64 MiB); the lent machine is thrown away afterwards. Output: one table on stdout, the rows
# as JSON in $OUT (default: a new temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=qwen1_5b_shape STEPS=3 PROMPT_TOKENS=128 COMPLETION_TOKENS=512
if [[ "${1:-}" == "--tiny" ]]; then
  MODEL=tiny STEPS=2 PROMPT_TOKENS=16 COMPLETION_TOKENS=16
fi
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
started=$(date +%s)

SITE="${SITE:-/tmp/rlvr_gpu_site}"  # carried wheels go here (never into the image's environment)
if ! "$PYTHON" -c "import trl, datasets, hydra, omegaconf, pytest" 2>/dev/null; then
  if ! ls scripts/gpu_wheels/*.whl >/dev/null 2>&1; then
    echo "TRL, datasets, hydra or pytest is missing and scripts/gpu_wheels/ is empty: run scripts/gpu_wheels.sh" \
      "on a machine that reaches PyPI, then carry scripts/gpu_wheels along." >&2
    exit 2
  fi
  install() { "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$@"; }
  install $(ls scripts/gpu_wheels/*.whl | grep -v pyarrow)
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  "$PYTHON" -c "import datasets" 2>/dev/null || install scripts/gpu_wheels/pyarrow-*.whl  # too old in the image
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RLVR_SWEEPS_CACHE="${RLVR_SWEEPS_CACHE:-/tmp/rlvr_cache}" \
  HF_HUB_OFFLINE=1 WANDB_MODE=disabled
"$PYTHON" -c "import torch, transformers, peft, trl; print('torch', torch.__version__, '| transformers', \
transformers.__version__, '| peft', peft.__version__, '| trl', trl.__version__, '|', \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA: cpu')"

echo "== 1. GRPO steps with merged rollouts ($MODEL, ranks 8 and 256; DoRA at rank 256)"
"$PYTHON" benchmarks/grpo_step.py --model "$MODEL" --prompts 2 --generations 8 --prompt-tokens "$PROMPT_TOKENS" \
  --completion-tokens "$COMPLETION_TOKENS" --ranks 8 256 --rollouts merged --steps "$STEPS" --json "$OUT/grpo_steps.json"
"$PYTHON" benchmarks/grpo_step.py --model "$MODEL" --prompts 2 --generations 8 --prompt-tokens "$PROMPT_TOKENS" \
  --completion-tokens "$COMPLETION_TOKENS" --ranks 256 --rollouts merged --steps "$STEPS" \
  --json "$OUT/grpo_steps_dora.json" lora.variant=dora

echo "== 2. exact vLLM weight sync ($MODEL, bf16, 50 syncs, lora / rslora / dora / pissa)"
sync_status=passed
RLVR_TEST_MODEL=$MODEL timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider -p no:randomly tests/test_weight_sync.py \
  --durations=0 || sync_status=FAILED

echo "== 3. guards ($MODEL): a healthy short run passes them, each fault trips its own"
guards_status=passed
RUNS=$(mktemp -d)  # checkpoints stay out of $OUT
GUARDED=(model="$MODEL" data=sums "eval=[]" logger=none budget.max_steps=2 name=gpu_check
  trainer.max_completion_length="$COMPLETION_TOKENS")
if RLVR_SWEEPS_RUNS="$RUNS" "$PYTHON" launch.py "${GUARDED[@]}" > "$OUT/guards_healthy.log" 2>&1; then
  echo "healthy run: passed the guards ($(grep -o 'Estimated peak GPU memory.*' "$OUT/guards_healthy.log" | head -1 \
    || echo 'no CUDA: memory guard not applicable'))"
else
  guards_status=FAILED; echo "healthy run: FAILED, $(tail -1 "$OUT/guards_healthy.log")"
fi
if "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  refused=$(RLVR_SWEEPS_RUNS="$RUNS" "$PYTHON" launch.py "${GUARDED[@]}" guards.device_memory_gb=1 2>&1 | grep -o 'This run would need about [0-9.]* GB[^(]*' || true)
  [[ -n $refused ]] && echo "memory guard trips: $refused" || { guards_status=FAILED; echo "memory guard: did NOT trip"; }
  if [[ $MODEL == qwen1_5b_shape ]]; then  # the estimate beside the peaks step 1 measured
    "$PYTHON" benchmarks/memory_estimate.py --prompt-tokens "$PROMPT_TOKENS" --gpu-gb "$("$PYTHON" -c \
      "import torch; print(torch.cuda.get_device_properties(0).total_memory / 1e9)")" lora.rank=8,256 generation=hf \
      trainer.max_completion_length="$COMPLETION_TOKENS" trainer.per_device_train_batch_size=16 \
      trainer.gradient_accumulation_steps=1 | grep -E "^\| lora.rank|^\| peak" | paste - - \
      | sed 's/^/estimate: /' || true
    "$PYTHON" -c "import json; [print('measured:', r.get('rank'), r.get('peak_gb'), 'GB') for r in json.load(open('$OUT/grpo_steps.json'))]" \
      2>/dev/null || true
  fi
fi
if "$PYTHON" -c "import vllm" 2>/dev/null; then
  timeout 300 "$PYTHON" -m pytest -q -s -p no:cacheprovider tests/test_vllm.py -k "colocated or sends_nothing" 2>&1 \
    | grep -E "gap per step|passed|failed" || guards_status=FAILED
else
  echo "weight-sync guard: vLLM is not installed here (tested in the vLLM CPU stage; run this where vLLM is)"
fi

echo "exact weight sync: $sync_status; guards: $guards_status; rows in $OUT/grpo_steps*.json; $(($(date +%s) - started)) s in all"
[[ $sync_status == passed && $guards_status == passed ]]
