#!/usr/bin/env bash
# `bfm synth` throughput: subjects per second for 400 parcels x 10 minutes per subject, 1 rank and 2 MPI ranks,
# against the disk's raw write speed measured in the same job (dd of the same number of bytes, fsync'd).
#   bench/synth.sh [build-dir] [subjects]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
subjects=${2:-1000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
rate() { /usr/bin/python3 -c "print(f'{$1 / $2:.1f}')"; }
t0=$(date +%s.%N); "$build/launch/bfm" synth --subjects "$subjects" --out "$work/one" 2>/dev/null; t1=$(date +%s.%N)
bytes=$(du -sb "$work/one" | cut -f1)
t2=$(date +%s.%N); mpirun --oversubscribe -np 2 "$build/launch/bfm" synth --subjects "$subjects" --out "$work/two" 2>/dev/null
t3=$(date +%s.%N)
rm -rf "$work/one" "$work/two"
t4=$(date +%s.%N); dd if=/dev/zero of="$work/raw" bs=8M count=$((bytes / 8388608 + 1)) conv=fsync status=none; t5=$(date +%s.%N)
one=$(/usr/bin/python3 -c "print($t1 - $t0)"); two=$(/usr/bin/python3 -c "print($t3 - $t2)"); raw=$(/usr/bin/python3 -c "print($t5 - $t4)")
echo "| ranks | subjects | seconds | subjects/s | corpus MB/s | disk write MB/s (dd, fsync) |"
echo "| --- | --- | --- | --- | --- | --- |"
echo "| 1 | $subjects | $(printf %.1f "$one") | $(rate "$subjects" "$one") | $(rate "$bytes/1e6" "$one") | $(rate "$bytes/1e6" "$raw") |"
echo "| 2 | $subjects | $(printf %.1f "$two") | $(rate "$subjects" "$two") | $(rate "$bytes/1e6" "$two") | $(rate "$bytes/1e6" "$raw") |"
