#!/usr/bin/env bash
# Read throughput of the training data path, all in one job and with the same (warm) page-cache state:
#  (a) raw sequential read of the corpus files: `cat DIR/*.h5 > /dev/null`;
#  (b) the prefetching window loader (bench_read) reading random windows, T time points, one rank, global batch G;
#  (c) h5py (Debian's /usr/bin/python3) reading the very same windows, listed by bench_read.
# (b) and (c) read as many windows as the corpus has bytes (window data = T x parcels x 4 bytes each) and report MB/s
# of window data delivered (the median of three rounds of (a), (b), (c)). The corpus: `bfm synth` (default 200
# subjects, 400 parcels, 10 minutes, ~170 MB). The loop takes batches as fast as they come (no compute), so the
# loader's data wait is nearly all of its time here; in training it is what compute does not hide.
#   bench/read.sh [build-dir] [subjects] [T] [global-batch] [budget-MB]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
subjects=${2:-200}
T=${3:-200}
G=${4:-32}
budget=${5:-256}
parcels=400
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py() { /usr/bin/python3 -c "$1"; }
"$build/launch/bfm" synth --subjects "$subjects" --parcels "$parcels" --minutes 10 --out "$work/corpus" 2>/dev/null
bytes=$(cat "$work"/corpus/shard-*.h5 | wc -c)
windows=$(py "print(max($G, $bytes // ($T * $parcels * 4)))")
cat "$work"/corpus/shard-*.h5 > /dev/null  # warm the page cache once, for all three
median() { /usr/bin/python3 -c "import statistics as s, sys; print(s.median(float(v) for v in sys.argv[1:]))" "$@"; }
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
raws=(); loaders=(); h5pys=()
for rep in 1 2 3; do  # three rounds of (a), (b), (c); the median of each is reported
  t0=$(date +%s.%N); cat "$work"/corpus/shard-*.h5 > /dev/null; t1=$(date +%s.%N)
  raws+=("$(py "print($bytes / 1e6 / ($t1 - $t0))")")
  loader_line=$("$build/bench/bench_read" "$work/corpus" "$T" "$G" "$windows" "$budget" "$work/windows.txt")
  loaders+=("$(py "print($(field "$loader_line" bytes) / 1e6 / $(field "$loader_line" seconds))")")
  h5py_line=$(/usr/bin/python3 bench/read_h5py.py "$work/windows.txt" "$T")
  h5pys+=("$(py "print($(field "$h5py_line" bytes) / 1e6 / $(field "$h5py_line" seconds))")")
done
raw=$(median "${raws[@]}"); loader=$(median "${loaders[@]}"); h5py=$(median "${h5pys[@]}")
amp=$(py "print($(field "$h5py_line" chunk_bytes) / $(field "$h5py_line" bytes))")
fmt() { py "print(f'{$1:$2}')"; }  # fmt VALUE FORMAT
shards=$(ls "$work"/corpus/shard-*.h5 | wc -l)
echo "corpus: $subjects subjects, $parcels parcels, 10 min, $(fmt "$bytes/1e6" .0f) MB in $shards shard(s);" \
     "windows: T=$T, global batch $G, $(field "$loader_line" windows) windows"
echo "read amplification: the windows touch $(fmt "$amp" .2f)x their bytes in whole 256-row chunks" \
     "(each read, decoded and checksummed)"
echo "loader: depth $(field "$loader_line" depth) batches (budget $budget MB)," \
     "data wait $(field "$loader_line" wait_s) s of $(field "$loader_line" seconds) s"
echo
echo "| reader (median of 3) | MB/s | vs raw |"
echo "| --- | --- | --- |"
echo "| raw sequential (cat, warm cache) | $(fmt "$raw" .0f) | 1.00 |"
echo "| WindowLoader (random windows, 1 HDF5 thread) | $(fmt "$loader" .0f) | $(fmt "$loader / $raw" .2f) |"
echo "| h5py (same windows) | $(fmt "$h5py" .0f) | $(fmt "$h5py / $raw" .2f) |"
