#!/usr/bin/env bash
# Read throughput of the training data path, all in one job and with the same (warm) page-cache state:
#  (a) raw sequential read of the corpus files: `cat DIR/*.h5 > /dev/null`;
#  (b) the prefetching window loader (bench_read), one rank, global batch G, windows of T time points, in each of
#      its modes (one row each, below);
#  (c) h5py (Debian's /usr/bin/python3) reading the very same windows as the first loader row, listed by bench_read.
# (b) and (c) read PASSES times as many windows as the corpus has bytes (window data = T x parcels x 4 bytes each)
# and report MB/s of window data delivered (the median of three rounds of (a), (b), (c)). The corpus: `bfm synth`
# (default 200 subjects, 400 parcels, 10 minutes, ~170 MB, with stimulus embeddings and labels, which the loader
# and h5py read too). The loop takes batches as fast as they come (no compute), so the loader's data wait is nearly
# all of its time here; in training it is what compute does not hide. The sampler's stride is 1 (a window at every
# start), no jitter.
# Then the training-step proxy: a corpus at brainlm's shape (424 parcels; T, G as above) read with the training
# sampler's settings (stride 10, jitter), in batches per second as fast as they come, and with the loop sleeping
# STEP-MS after each batch, as a GPU step would keep the host waiting (157 ms: a batch of 32 at the 204 samples/s of
# bench_step_gpu's brainlm step on the H200, bench/RESULTS.md): the share of the time spent waiting for data.
# CHUNK_ROWS (environment, default 256): the corpora's HDF5 chunk rows (bfm synth --chunk-rows).
#   bench/read.sh [build-dir] [subjects] [T] [global-batch] [budget-MB] [passes] [step-ms]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
build=${1:-build}
subjects=${2:-200}
T=${3:-200}
G=${4:-32}
budget=${5:-256}
passes=${6:-4}
step_ms=${7:-157}
parcels=400
chunk_rows=${CHUNK_ROWS:-256}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build/launch/bfm" synth --subjects "$subjects" --parcels "$parcels" --minutes 10 --chunk-rows "$chunk_rows" \
  --out "$work/corpus" 2>/dev/null
bytes=$(cat "$work"/corpus/shard-*.h5 | wc -c)
windows=$(py "print(max($G, $passes * $bytes // ($T * $parcels * 4)))")
cat "$work"/corpus/shard-*.h5 > /dev/null  # warm the page cache once, for all of them

# The loader's modes: a label and bench_read's options. A one-batch cache is what a corpus much larger than memory
# gets from random windows (its hit rate tends to 0); 48 MB holds a block-shuffle group's chunks at any corpus size.
labels=("WindowLoader, per-window HDF5 reads (the first version)"
        "window shuffle (default): chunks checked and copied in the file's mapping, 1 thread (the default)"
        "window shuffle: mapping, 2 threads"
        "window shuffle: pread into a chunk cache of one batch, 1 thread"
        "window shuffle: pread into the chunk cache from the budget (CACHE MB), 1 thread"
        "block shuffle (256-point blocks, 32 a group): mapping, 1 thread"
        "block shuffle (256-point blocks, 32 a group): pread, 48 MB cache, 1 thread")
modes=("--per-window"
       ""
       "--threads 2"
       "--pread --cache-mb 0"
       "--pread"
       "--block 256 --shuffle-blocks 32"
       "--pread --block 256 --shuffle-blocks 32 --cache-mb 48")
n=${#modes[@]}
raws=(); h5pys=()
declare -A rates lines
for rep in 1 2 3; do  # three rounds of (a), (b) in every mode, (c); the median of each is reported
  t0=$(date +%s.%N); cat "$work"/corpus/shard-*.h5 > /dev/null; t1=$(date +%s.%N)
  raws+=("$(py "print($bytes / 1e6 / ($t1 - $t0))")")
  for ((m = 0; m < n; ++m)); do
    # shellcheck disable=SC2086
    line=$("$build/bench/bench_read" "$work/corpus" "$T" "$G" "$windows" "$budget" "$work/windows-$m.txt" ${modes[$m]})
    rates[$m]="${rates[$m]:-} $(py "print($(field "$line" bytes) / 1e6 / $(field "$line" seconds))")"
    lines[$m]=$line
  done
  h5py_line=$(/usr/bin/python3 bench/read_h5py.py "$work/windows-0.txt" "$T")
  h5pys+=("$(py "print($(field "$h5py_line" bytes) / 1e6 / $(field "$h5py_line" seconds))")")
done
raw=$(median "${raws[@]}"); h5py=$(median "${h5pys[@]}")
amp=$(py "print($(field "$h5py_line" chunk_bytes) / $(field "$h5py_line" bytes))")
shards=$(ls "$work"/corpus/shard-*.h5 | wc -l)
checksum=$("$build/bench/bench_read" --checksum-speed)
echo "corpus: $subjects subjects, $parcels parcels, 10 min, $(fmt "$bytes/1e6" .0f) MB in $shards shard(s);" \
     "windows: T=$T, global batch $G, $windows windows ($passes x the corpus' bytes of window data), stride 1"
echo "random windows touch $(fmt "$amp" .2f)x their bytes in whole $chunk_rows-row chunks (each read, decoded and checksummed)"
echo "Fletcher32 over a 400 KB chunk: ours $(field "$checksum" ours_gbs) GB/s, HDF5's loop $(field "$checksum" hdf5_gbs) GB/s"
echo "loader: depth $(field "${lines[0]}" depth) batches (budget $budget MB); chunk cache from the budget:" \
     "$(field "${lines[4]}" cache_mb) MB (the pread rows; mapped shards need none)"
echo
echo "| reader (median of 3) | MB/s | vs raw | open s | chunk bytes per window byte | chunk hits | read / copy s | peak RSS MB |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
echo "| raw sequential (cat, warm cache) | $(fmt "$raw" .0f) | 1.00 | | | | | |"
for ((m = 0; m < n; ++m)); do
  # shellcheck disable=SC2086
  rate=$(median ${rates[$m]})
  l=${lines[$m]}
  per=""; hits=""; split=""
  if [ "$(field "$l" chunks)" != 0 ]; then
    per=$(fmt "$(field "$l" chunk_bytes) / ($(field "$l" batches_read) * $G * $T * $parcels * 4)" .3f)
    hits=$(fmt "$(field "$l" hits) / ($(field "$l" hits) + $(field "$l" chunks))" .2f)
    split="$(field "$l" read_s) / $(field "$l" copy_s)"
  fi
  label=${labels[$m]/CACHE/$(field "$l" cache_mb)}
  echo "| $label | $(fmt "$rate" .0f) | $(fmt "$rate / $raw" .2f) | $(field "$l" open_s) | $per | $hits | $split | $(field "$l" rss_mb) |"
done
echo "| h5py (same windows as the first loader row) | $(fmt "$h5py" .0f) | $(fmt "$h5py / $raw" .2f) | | | | | |"
echo "(chunk columns, read / copy seconds (summed over threads) and RSS: the last round; RSS of the whole bench_read)"

[ "$step_ms" -gt 0 ] || exit 0
"$build/launch/bfm" synth --subjects "$subjects" --parcels 424 --minutes 10 --chunk-rows "$chunk_rows" \
  --out "$work/brainlm" 2>/dev/null
cat "$work"/brainlm/shard-*.h5 > /dev/null
batch_mb=$(fmt "$G * $T * 424 * 4 / 1e6" .1f)
echo
echo "training-step proxy: 424 parcels, T=$T, global batch $G ($batch_mb MB a batch), stride 10 with jitter, one rank;" \
     "a step of $step_ms ms needs $(fmt "1000 / $step_ms" .1f) batches/s"
echo
echo "| loader | batches/s (no compute, median of 3) | data wait with a $step_ms ms step |"
echo "| --- | --- | --- |"
step_labels=("window shuffle (default): mapping, 1 thread"
             "window shuffle: pread, cache = one batch, 1 thread"
             "window shuffle: mapping, 2 threads"
             "block shuffle (64 blocks a group): mapping, 1 thread")
step_modes=("" "--pread --cache-mb 0" "--threads 2" "--block 256 --shuffle-blocks 64")
for ((m = 0; m < ${#step_modes[@]}; ++m)); do
  runs=()
  for rep in 1 2 3; do
    # shellcheck disable=SC2086
    line=$("$build/bench/bench_read" "$work/brainlm" "$T" "$G" $((100 * G)) "$budget" "$work/steps.txt" \
           --stride 10 --jitter ${step_modes[$m]})
    runs+=("$(py "print(100 / $(field "$line" seconds))")")
  done
  # shellcheck disable=SC2086
  line=$("$build/bench/bench_read" "$work/brainlm" "$T" "$G" $((40 * G)) "$budget" "$work/steps.txt" \
         --stride 10 --jitter --compute-ms "$step_ms" ${step_modes[$m]})
  wait_share=$(fmt "100 * $(field "$line" wait_s) / $(field "$line" seconds)" .1f)
  echo "| ${step_labels[$m]} | $(fmt "$(median "${runs[@]}")" .0f) | $wait_share % of $(fmt "$(field "$line" seconds)" .1f) s |"
done
