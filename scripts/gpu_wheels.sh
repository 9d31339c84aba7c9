#!/usr/bin/env bash
# Fetch the wheels that an offline GPU check machine needs beyond what it already has.
#
# That machine (python3 = CPython 3.12) has torch 2.11 (CUDA), transformers 5.17 and PEFT 0.21 with
# their own dependencies, and pandas, xxhash, python-dateutil, pytest, but no network. It lacks what
# `from trl import GRPOConfig, GRPOTrainer` and rlvr_sweeps.errors import:
#   trl -> datasets -> dill, multiprocess, and pyarrow >= 24 (the image's may be older: gpu_check.sh
#   installs the carried one only when datasets does not import with the image's)
#   rlvr_sweeps.errors -> hydra-core -> omegaconf -> antlr4-python3-runtime 4.9.3
# The folder must stay under 64 MiB (what a device run can carry, with the working tree).
#
# Usage (here, with PyPI):   scripts/gpu_wheels.sh            # fills scripts/gpu_wheels/
# There: scripts/gpu_check.sh installs them into a folder on PYTHONPATH (pip --no-index --no-deps --target).
set -euo pipefail

cd "$(dirname "$0")/.."
DEST=${DEST:-scripts/gpu_wheels}
PIP=${PIP:-python3 -m pip}
LIMIT=$((64 * 1024 * 1024))

WHEELS=(
    trl==1.16.0
    datasets==5.2.0
    pyarrow==24.0.0
    dill==0.4.1
    multiprocess==0.70.19
    hydra-core==1.3.8
    omegaconf==2.3.1
)

rm -rf "$DEST"
mkdir -p "$DEST"
# CPython 3.12 (the GPU image's python3) on Linux x86_64; pip does not widen manylinux_2_x tags, so
# list those that occur.
$PIP download --quiet --no-deps --only-binary :all: \
    --python-version 3.12 --implementation cp --abi cp312 \
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
