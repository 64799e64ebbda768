#!/usr/bin/env bash
# The main job on the default settings: installs and builds what is missing, makes a synthetic fMRI corpus (96
# subjects in two studies, 20 minutes each, with stimulus categories and embeddings), pre-trains the brain model on
# it with TWO MPI ranks on the CPU (progress on the terminal: steps, losses, throughput, data wait, communication,
# ETA), exports a released checkpoint with its model card and loss plot to runs/quickstart/export, then evaluates it
# on the corpus' 16 held-out subjects (bfm eval, 2 ranks: fine-tuning and training from scratch included) and prints
# the table: pre-trained model against per-subject ridge (report in runs/quickstart/eval). A few minutes on 2 cores.
# Extra arguments go to `bfm pretrain` (e.g. --set train.steps=100). Run it again to continue an interrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
bfm=build/launch/bfm
out=runs/quickstart
if [ ! -f "$out/corpus/manifest.json" ]; then
  $bfm synth --subjects 96 --parcels 64 --minutes 20 --studies 2 --stim-dim 16 --categories 4 --clips 200 --seed 7 \
    --out "$out/corpus" --overwrite
fi
mpirun -np 2 --oversubscribe $bfm pretrain --config configs/quickstart.toml --set data.corpus=\"$out/corpus\" "$@"
$bfm plot "$out"
$bfm export "$out"
mpirun -np 2 --oversubscribe $bfm eval --checkpoint "$out/export" --corpus "$out/corpus" --out "$out/eval" \
  --finetune-steps 150
