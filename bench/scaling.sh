#!/usr/bin/env bash
# Weak scaling of data-parallel pre-training on this machine: 1 rank on a global batch of B against 2 ranks on 2B
# (the same work per rank), the quick-start model on a synthetic corpus read through the prefetching loader, the
# same number of steps. Prints samples/s of each, the efficiency (2-rank rate / (2 x 1-rank rate)), the share of
# time blocked in communication and the share of all-reduce time hidden behind backward (from bfm's own lines).
#   bench/scaling.sh [BUILD_DIR] [STEPS] [PER_RANK_BATCH]
# (On a Slurm cluster, slurm/scaling.py runs weak and strong series over many ranks as jobs, with a CSV, plots and a
# projection to hundreds of GPUs.)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
steps=${2:-150}
b=${3:-8}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$build/launch/bfm synth --subjects 48 --parcels 64 --minutes 6 --studies 2 --stim-dim 16 --seed 7 \
  --out "$work/corpus" >/dev/null 2>&1
# MAE only, as when bench/RESULTS.md recorded this study (the quick-start config has added the contrastive objective).
common=(--config configs/quickstart.toml --set "data.corpus=\"$work/corpus\"" --set 'model.objectives=["mae"]'
        --set train.steps=$steps
        --set train.log_every=$steps --set train.checkpoint_every=0 --set train.validate_every=100000
        --set train.bucket_mb=${BUCKET_MB:-25})
rate() { grep -o "[0-9.]*k\? samples/s" "$1" | tail -1 | sed 's/ samples\/s//'; }
mpirun -np 1 $build/launch/bfm pretrain "${common[@]}" --set train.batch_size=$b --out "$work/r1" 2>"$work/r1.log"
mpirun -np 2 --oversubscribe $build/launch/bfm pretrain "${common[@]}" --set train.batch_size=$((2 * b)) \
  --out "$work/r2" 2>"$work/r2.log"
r1=$(rate "$work/r1.log"); r2=$(rate "$work/r2.log")
echo "ranks,global_batch,samples_per_s,comm_share,hidden"
echo "1,$b,$r1,$(grep -o 'comm [0-9]*%' "$work/r1.log" | tail -1 | cut -d' ' -f2),"
echo "2,$((2 * b)),$r2,$(grep -o 'comm [0-9]*%' "$work/r2.log" | tail -1 | cut -d' ' -f2),$(grep -o '[0-9]*% of their time hidden' "$work/r2.log" | cut -d' ' -f1)"
python3 -c "print(f'weak-scaling efficiency 1 -> 2 ranks: {float(\"$r2\") / (2 * float(\"$r1\")):.2f}')"
