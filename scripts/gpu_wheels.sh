#!/usr/bin/env bash
# Fetch the wheels that an offline GPU check machine needs beyond what it already has.
#
# That machine has torch 2.11 (CUDA), transformers 5.17 and PEFT 0.21 with their own dependencies
# (accelerate, safetensors, tokenizers, huggingface_hub, numpy, pyyaml, jinja2, fsspec, typer/rich/
# pygments, ...) but no network. It lacks what `from trl import GRPOConfig, GRPOTrainer`,
# rlvr_sweeps.{trainer,lora_merge,models,hardware} and pytest import:
#   trl -> datasets, pandas, pyarrow (hard imports in trl/trainer/grpo_trainer.py and trl/data_utils.py)
#   datasets -> dill, multiprocess, xxhash;  pandas -> python-dateutil
#   (python-dateutil 4 declares tzdata but does not import it on Linux: install with --no-deps)
#   rlvr_sweeps.errors -> hydra-core -> omegaconf -> antlr4-python3-runtime 4.9.3
#   pytest -> pluggy, iniconfig
# pyarrow 24.0.0 is the oldest (and smallest) that datasets 5.2.0 accepts, pandas 3.0.6 the smallest
# pandas 3 wheel and it accepts numpy >= 1.26; everything else as in constraints/cpu.txt.
# The folder must stay under 64 MiB (what a device run can carry).
#
# Usage (here, with PyPI):   scripts/gpu_wheels.sh            # fills scripts/gpu_wheels/
# On the offline machine:     python -m pip install --no-index --no-deps scripts/gpu_wheels/*.whl
set -euo pipefail

cd "$(dirname "$0")/.."
DEST=${DEST:-scripts/gpu_wheels}
PIP=${PIP:-python3 -m pip}
LIMIT=$((64 * 1024 * 1024))

WHEELS=(
    trl==1.16.0
    datasets==5.2.0
    pyarrow==24.0.0
    pandas==3.0.6
    python-dateutil==4.0.0
    dill==0.4.1
    multiprocess==0.70.19
    xxhash==4.1.0
    hydra-core==1.3.8
    omegaconf==2.3.1
    pytest==9.2.0
    pluggy==1.7.0
    iniconfig==2.3.1
)

rm -rf "$DEST"
mkdir -p "$DEST"
# CPython 3.11 on Linux x86_64; pip does not widen manylinux_2_x tags, so list those that occur.
$PIP download --quiet --no-deps --only-binary :all: \
    --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${WHEELS[@]}"
# antlr4-python3-runtime 4.9.3 (the version hydra-core 1.3 needs) exists only as an sdist: build its
# pure-Python wheel here, so that the offline machine needs no build step.
$PIP wheel --quiet --no-deps -w "$DEST" antlr4-python3-runtime==4.9.3

ls -l "$DEST"/*.whl | awk '{printf "%10d  %s\n", $5, $NF}'
total=$(cat "$DEST"/*.whl | wc -c)
awk -v t="$total" -v n="$(ls "$DEST"/*.whl | wc -l)" \
    'BEGIN { printf "total: %d bytes (%.2f MiB) in %d wheels, limit 64 MiB\n", t, t / 1048576, n }'
if [ "$total" -gt "$LIMIT" ]; then
    echo "error: $DEST is larger than 64 MiB" >&2
    exit 1
fi
