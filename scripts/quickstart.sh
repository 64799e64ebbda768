#!/usr/bin/env bash
# The main job on the default settings: installs and builds what is missing, pre-trains the brain model on
# synthetic fMRI windows on the CPU (a few hundred steps, the loss printed as it falls), and writes a released
# checkpoint to runs/quickstart/checkpoint. Extra arguments go to `bfm pretrain` (e.g. --set train.steps=100).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} OPENBLAS_NUM_THREADS=1
build/launch/bfm pretrain --config configs/quickstart.toml "$@"
