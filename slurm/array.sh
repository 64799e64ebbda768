#!/usr/bin/env bash
# Submits `bfm synth`, `bfm convert` or `bfm eval` as a Slurm job array of N parts and, after it, the merge job that
# writes the corpus's manifest or joins the evaluation's parts (slurm/synth.sbatch, slurm/convert.sbatch,
# slurm/eval.sbatch; their headers say what each step does):
#
#   slurm/array.sh synth|convert|eval N[%M] [sbatch options ...] -- [bfm synth|convert|eval options ...]
#
#   slurm/array.sh synth 8 --time=2:00:00 --cpus-per-task=1 -- --subjects 100000 --parcels 400 --out /scratch/big
#   slurm/array.sh convert 16%4 --time=1:00:00 -- --bids /data/ds --atlas atlas.nii.gz --out /scratch/c \
#       --subjects-per-shard 8
#   slurm/array.sh eval 4 --time=1:00:00 -- --checkpoint ckpt --corpus /scratch/c --out /scratch/report
#
# N parts (array tasks 0..N-1), at most M running at once with N%M. The sbatch options go to both jobs (the merge
# job's log is bfm-<what>-merge-<jobid>.log unless they name one). The merge job waits for every task to succeed
# (--dependency=afterok) and is cancelled when one fails (--kill-on-invalid-dep=yes). Prints the two job ids, and
# on its last line "ARRAY_JOB MERGE_JOB" for scripts. BFM=/path/to/bfm picks the binary (the jobs inherit the
# environment).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

usage() {
  echo "usage: $0 synth|convert|eval N[%M] [sbatch options ...] -- [bfm synth|convert|eval options ...]" >&2
  exit 2
}
(($# >= 2)) || usage
what=$1
count=$2
shift 2
case $what in
  synth | convert | eval) ;;
  *) echo "array.sh: '$what': expected synth, convert or eval" >&2; usage ;;
esac
parts=${count%%\%*}
throttle=""
[[ $count == *%* ]] && throttle="%${count#*%}"
if ! [[ $parts =~ ^[1-9][0-9]*$ ]] || ! [[ -z $throttle || $throttle =~ ^%[1-9][0-9]*$ ]]; then
  echo "array.sh: '$count': expected the number of parts N, or N%M (at most M at once)" >&2
  usage
fi
sbatch_opts=()
while (($#)) && [[ $1 != -- ]]; do
  sbatch_opts+=("$1")
  shift
done
(($#)) || { echo "array.sh: no '--' before the bfm $what options" >&2; usage; }
shift
(($#)) || { echo "array.sh: no bfm $what options after '--'" >&2; usage; }

script=$here/$what.sbatch
array=$(sbatch --parsable --array="0-$((parts - 1))$throttle" "${sbatch_opts[@]}" "$script" "$@")
array=${array%%;*}
echo "array.sh: array job $array: bfm $what --part I/$parts for I = 0..$((parts - 1))"
merge=$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes --job-name="bfm-$what-merge" \
          --output="bfm-$what-merge-%j.log" "${sbatch_opts[@]}" "$script" --merge "$@")
merge=${merge%%;*}
if [[ $what == eval ]]; then
  echo "array.sh: merge job $merge: bfm eval --merge of the parts, after every task of $array has succeeded"
else
  echo "array.sh: merge job $merge: bfm $what --manifest-only, after every task of $array has succeeded"
fi
echo "$array $merge"
