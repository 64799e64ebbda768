#!/usr/bin/env bash
# One training step (forward + backward + AdamW) of the issue's small model (P=64, T=64, L=8, D=128, 4 layers,
# 4 heads, batch 16, mae 0.75, decoder 64 wide x 2 layers) in bfm and in PyTorch (python/bfm/model.py's reference
# model, float32, its fused LayerNorm/GELU) on the CPU, same thread count, same job. PyTorch runs twice: as Debian
# ships it, and with the same OpenBLAS settings bfm picks for itself (the kernel core, single-threaded BLAS), which
# is the fair comparison. Prints the JSON lines, then a Markdown table.
#   bench/cpu_step.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
steps=${STEPS:-20}
out=$(mktemp)
core=$("$build/launch/bfm" info | sed -n 's/^blas core: //p')
for threads in 1 2; do
  OMP_NUM_THREADS=$threads "$build/bench/bench_step" --threads "$threads" --steps "$steps" --warmup 3
  OMP_NUM_THREADS=$threads /usr/bin/python3 bench/torch_step.py --threads "$threads" --steps "$steps" --warmup 3 |
    sed 's/"impl": "pytorch"/"impl": "pytorch-debian"/'
  OPENBLAS_CORETYPE=$core OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=$threads \
    /usr/bin/python3 bench/torch_step.py --threads "$threads" --steps "$steps" --warmup 3
done | tee "$out"
/usr/bin/python3 - "$out" "$core" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\n| threads | bfm ms/step | PyTorch ms/step (OpenBLAS {sys.argv[2]}, 1 BLAS thread) | bfm speed-up | PyTorch ms/step (Debian defaults) |")
print("| --- | --- | --- | --- | --- |")
for t in sorted({r["threads"] for r in rows}):
    pick = lambda impl: next(r for r in rows if r["impl"] == impl and r["threads"] == t)
    b, p, d = pick("bfm"), pick("pytorch"), pick("pytorch-debian")
    print(f"| {t} | {b['step_ms']:.0f} | {p['step_ms']:.0f} | {p['step_ms'] / b['step_ms']:.2f}x | {d['step_ms']:.0f} |")
PY
rm -f "$out"
