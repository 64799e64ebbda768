#!/usr/bin/env bash
# Read throughput from cold storage: the page cache is dropped (as root: /proc/sys/vm/drop_caches) before each
# reader, so every byte comes from the disk. Readers, each from cold, median of ROUNDS:
#  (a) raw sequential read of the corpus files: `cat DIR/*.h5 > /dev/null` (the issue's baseline), and `dd bs=16M`
#      of each file (bigger requests);
#  (b) the prefetching window loader (bench_read, one rank, windows of T, global batch G, random window order unless
#      said) reading as many windows as the corpus has bytes (one pass of window data; random windows leave some
#      chunks untouched and touch others twice), in the modes below.
# MB/s: file bytes per second for cat, window data delivered per second for the loader (as bench/read.sh).
# MEMORY_MB (environment): run every reader in a memory cgroup of that size (cgroup v1 memory controller, as root),
# so that the page cache cannot hold the corpus (a corpus larger than memory); the loader then reads PASSES (default
# 2) passes of window data, so that chunks are evicted and read again.
#   bench/read_cold.sh [build-dir] [subjects] [T] [global-batch] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
build=${1:-build}
subjects=${2:-1000}
T=${3:-200}
G=${4:-32}
rounds=${5:-3}
parcels=400
[ -w /proc/sys/vm/drop_caches ] || { echo "read_cold.sh: needs root (writes /proc/sys/vm/drop_caches)" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/var/tmp}/bfm-cold.XXXXXX")  # on the disk, not a tmpfs
trap 'rm -rf "$work"' EXIT
"$build/launch/bfm" synth --subjects "$subjects" --parcels "$parcels" --minutes 10 --out "$work/corpus" 2>/dev/null
bytes=$(cat "$work"/corpus/shard-*.h5 | wc -c)
passes=${PASSES:-$([ -n "${MEMORY_MB:-}" ] && echo 2 || echo 1)}
windows=$(( passes * bytes / (T * parcels * 4) ))
run_in() { "$@"; }
if [ -n "${MEMORY_MB:-}" ]; then
  cg=/sys/fs/cgroup/memory/bfm-read-cold.$$
  mkdir "$cg" || { echo "read_cold.sh: cannot make a memory cgroup at $cg" >&2; exit 2; }
  trap 'rmdir "$cg" 2>/dev/null; rm -rf "$work"' EXIT
  echo $((MEMORY_MB << 20)) > "$cg/memory.limit_in_bytes"
  run_in() { sh -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$cg" "$@"; }
fi
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
labels=("window shuffle (default): mapping, 1 thread"
        "window shuffle: mapping, 2 threads (the default on a GPU rank)"
        "window shuffle: pread, cache = one batch, 1 thread"
        "window shuffle: pread, cache = one batch, 2 threads"
        "block shuffle (256-point blocks, 32 a group): mapping, 1 thread"
        "block shuffle: pread, 48 MB cache, 1 thread")
modes=("" "--threads 2" "--pread --cache-mb 0" "--pread --cache-mb 0 --threads 2" "--block 256 --shuffle-blocks 32"
       "--pread --block 256 --shuffle-blocks 32 --cache-mb 48")
cats=(); dds=(); declare -A rates
for ((r = 0; r < rounds; ++r)); do
  drop; t0=$(date +%s.%N); run_in cat "$work"/corpus/shard-*.h5 > /dev/null; t1=$(date +%s.%N)
  cats+=("$(py "print($bytes / 1e6 / ($t1 - $t0))")")
  drop; t0=$(date +%s.%N)
  for f in "$work"/corpus/shard-*.h5; do run_in dd if="$f" of=/dev/null bs=16M status=none; done
  t1=$(date +%s.%N)
  dds+=("$(py "print($bytes / 1e6 / ($t1 - $t0))")")
  for ((m = 0; m < ${#modes[@]}; ++m)); do
    drop
    # shellcheck disable=SC2086
    line=$(run_in "$build/bench/bench_read" "$work/corpus" "$T" "$G" "$windows" 256 "$work/w.txt" ${modes[$m]})
    rates[$m]="${rates[$m]:-} $(py "print($(field "$line" bytes) / 1e6 / $(field "$line" seconds))")"
  done
done
raw=$(median "${cats[@]}"); dd_rate=$(median "${dds[@]}")
echo "corpus: $subjects subjects, $parcels parcels, 10 min, $(py "print(f'{$bytes/1e6:.0f}')") MB on $(df --output=source "$work" | tail -1);" \
     "$windows random windows of T=$T ($passes pass(es) of window data), global batch $G; page cache dropped before each reader;" \
     "device read-ahead $(cat /sys/block/"$(basename "$(df --output=source "$work" | tail -1)")"/queue/read_ahead_kb 2>/dev/null || echo '?') KB"
[ -n "${MEMORY_MB:-}" ] && echo "every reader in a memory cgroup of $MEMORY_MB MB (the corpus does not fit)"
echo
echo "| reader, cold (median of $rounds) | MB/s | vs cat |"
echo "| --- | --- | --- |"
echo "| raw sequential (cat, cold) | $(py "print(f'{$raw:.0f}')") | 1.00 |"
echo "| raw sequential (dd bs=16M per file, cold) | $(py "print(f'{$dd_rate:.0f}')") | $(py "print(f'{$dd_rate / $raw:.2f}')") |"
for ((m = 0; m < ${#modes[@]}; ++m)); do
  # shellcheck disable=SC2086
  v=$(median ${rates[$m]})
  echo "| ${labels[$m]} | $(py "print(f'{$v:.0f}')") | $(py "print(f'{$v / $raw:.2f}')") |"
done
