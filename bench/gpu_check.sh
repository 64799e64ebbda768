#!/usr/bin/env bash
# The GPU check, in one call on a bare CUDA machine (cmake, ninja, nvcc, PyTorch; no MPI, HDF5, BLAS or GTest
# package): builds the GPU part, runs every GPU test (and compute-sanitizer's race and memory checks on the
# attention and op tests), runs the GPU benchmarks beside PyTorch on the same GPU, and prints a short table last.
#
#   here:   bench/gpu_deps.sh                       (fills the git-ignored .deps/ with GoogleTest and headers)
#   there:  bench/gpu_check.sh [all|test|bench]     (carry .deps; logs and CSVs go to $OUT, else out/gpu_check)
#
# Environment: SKIP_TORCH, SKIP_ATTN_BENCH, SKIP_SANITIZE (non-empty: leave that part out), BENCH_BATCH (16),
# BFM_CUDA_ARCH (90). Every step has a time limit so that the whole check ends inside the device's 10-minute command limit; a step
# that fails is reported in the table and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
phase=${1:-all}
out=${OUT:-$PWD/out/gpu_check}
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1
t0=$(date +%s)
rows=()
row() { rows+=("$(printf '%-44s %s' "$1" "$2")"); }
elapsed() { echo "$(( $(date +%s) - t0 ))s"; }

echo "== $(date -u +%FT%TZ) gpu_check $phase"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
nvcc --version | tail -2 | head -1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
[ -d .deps/googletest ] || { echo "gpu_check: no .deps/ (run bench/gpu_deps.sh on the build machine, carry .deps)"; exit 2; }

# ---- build
build=build-gpu
# NCCL: under the CUDA toolkit where it is installed, else the copy inside PyTorch's packages.
nccl_dir=$(python3 -c "import nvidia.nccl as m; print(list(m.__path__)[0])" 2>/dev/null || true)
if ! cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${BFM_CUDA_ARCH:-90}" \
     -DBFM_WITH_MPI=OFF -DBFM_WITH_HDF5=OFF -DBFM_WITH_BLAS=OFF -DBFM_DEPS_DIR="$PWD/.deps" -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
     ${nccl_dir:+-DBFM_NCCL_DIR="$nccl_dir"} >"$out/configure.log" 2>&1; then
  tail -30 "$out/configure.log"; echo "gpu_check: configure failed"; exit 1
fi
targets="bfm_cuda_kernel_tests bfm_gpu_model_tests bfm_finetune_tests bfm_comm_tests bench_attention bench_attention_bwd bench_step_gpu bfm"
timeout 300 cmake --build $build -j "$(nproc)" --target $targets -- -k 0 >"$out/build.log" 2>&1
build_rc=$?
grep -E "error|FAILED" "$out/build.log" | head -40
row "build ($(elapsed))" "$([ $build_rc = 0 ] && echo ok || echo "FAILED rc=$build_rc")"

run_gtest() {  # name binary [filter] [limit]
  local name=$1 bin=$2 filter=${3:-*} limit=${4:-240}
  if [ ! -x "$bin" ]; then row "$name" "not built"; return; fi
  timeout "$limit" "$bin" --gtest_filter="$filter" --gtest_brief=1 --gtest_output="xml:$out/$name.xml" \
    >"$out/$name.log" 2>&1
  local rc=$?
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|error|Expected|Which is|actual|rel|gradient of|parameter |cpu " "$out/$name.log" | head -60
  local pass fail
  pass=$(grep -o 'tests="[0-9]*"' "$out/$name.xml" 2>/dev/null | head -1 | tr -dc 0-9)
  fail=$(grep -o 'failures="[0-9]*"' "$out/$name.xml" 2>/dev/null | head -1 | tr -dc 0-9)
  row "$name" "rc=$rc tests=${pass:-?} failures=${fail:-?} ($(elapsed))"
}

if [ "$phase" = all ] || [ "$phase" = test ]; then
  run_gtest cuda_kernel_tests $build/tests/kernels/bfm_cuda_kernel_tests '*' 240
  run_gtest gpu_model_tests $build/tests/model/bfm_gpu_model_tests '*' 240
  run_gtest finetune_tests $build/tests/launch/bfm_finetune_tests '*' 120
  grep -m1 "NCCL" "$out/configure.log"
  run_gtest comm_tests $build/tests/runtime/bfm_comm_tests '*' 60
  grep -iE "nccl" "$out/comm_tests.log" | head -5
  grep "held-out losses" "$out/gpu_model_tests.log"
  if [ -z "${SKIP_SANITIZE:-}" ] && command -v compute-sanitizer >/dev/null; then
    for tool in racecheck memcheck; do
      timeout 90 compute-sanitizer --tool $tool --error-exitcode 9 \
        $build/tests/kernels/bfm_cuda_kernel_tests --gtest_filter="${SANITIZE_FILTER:-CudaAttentionDeterminismTest.*:CudaOps*Determin*}" --gtest_brief=1 \
        >"$out/sanitize_$tool.log" 2>&1
      rc=$?
      tail -5 "$out/sanitize_$tool.log"
      row "compute-sanitizer $tool" "rc=$rc $(grep -m1 -E 'ERROR SUMMARY' "$out/sanitize_$tool.log")"
    done
  fi
  # bfm itself: pretrain on the GPU from the CLI (quick-start model with head dim 32)
  if [ -x $build/launch/bfm ]; then
    timeout 120 $build/launch/bfm pretrain --config configs/quickstart.toml --set data.source=\"synthetic\" --set model.n_heads=2 \
      --set model.decoder.n_heads=2 --set train.steps=100 --set train.device=cuda --set train.out=$out/run \
      >"$out/bfm_pretrain.log" 2>&1
    rc=$?
    tail -4 "$out/bfm_pretrain.log"
    row "bfm pretrain (cuda, bf16, 100 steps)" "rc=$rc $(grep -m1 -o 'held-out loss after.*' "$out/bfm_pretrain.log" | cut -c1-60)"
    # The GPU gradient path through a device communicator (NCCL, one rank: the all-reduce is a copy) must leave the
    # training exactly where the plain single-GPU path does.
    # ... and so must the buckets' all-reduces started during backward on the communicator's stream (train.gpu_overlap).
    for c in self nccl overlap; do
      comm=$c; [ $c = overlap ] && comm=nccl
      timeout 90 $build/launch/bfm pretrain --config configs/quickstart.toml --set data.source=\"synthetic\" \
        --set model.n_heads=2 --set model.decoder.n_heads=2 --set train.steps=30 --set train.device=cuda \
        --set train.comm=\"$comm\" --set train.bucket_mb=0.25 --set train.gpu_overlap=$([ $c = overlap ] && echo true || echo false) \
        --set train.out=$out/run_$c >"$out/bfm_pretrain_$c.log" 2>&1
    done
    grep -hE "gradients summed|all-reduce:" "$out/bfm_pretrain_overlap.log"
    for c in nccl overlap; do
      if cmp -s $out/run_self/release/model.safetensors $out/run_$c/release/model.safetensors; then
        row "pretrain comm=$c vs self (30 steps)" "bit-identical"
      else
        tail -3 "$out/bfm_pretrain_$c.log"; row "pretrain comm=$c vs self (30 steps)" "DIFFERENT"
      fi
    done
  fi
fi

if [ "$phase" = all ] || [ "$phase" = bench ]; then
  : >"$out/bench.csv"
  if [ -z "${SKIP_ATTN_BENCH:-}" ] && [ -x $build/bench/bench_attention ]; then
    timeout 120 $build/bench/bench_attention 20 >>"$out/bench.csv" 2>"$out/bench_attention.err"
    row "bench_attention" "rc=$? ($(elapsed))"
    timeout 90 $build/bench/bench_attention_bwd 20 >>"$out/bench.csv" 2>"$out/bench_attention_bwd.err"
    row "bench_attention_bwd" "rc=$? ($(elapsed))"
    grep -i "warning" "$out/bench_attention.err" "$out/bench_attention_bwd.err" | head
  fi
  [ -n "${SKIP_TORCH:-}${SKIP_ATTN_BENCH:-}" ] || timeout 150 python3 bench/attention_torch.py --reps 20 >>"$out/bench.csv" 2>"$out/attention_torch.err"
  row "attention_torch.py" "rc=$? ($(elapsed))"
  for model in brainlm causal; do
    b=${BENCH_BATCH:-16}
    timeout 120 $build/bench/bench_step_gpu --model $model --batch $b --profile >>"$out/bench.csv" 2>>"$out/bench_step.err"
    row "bench_step_gpu $model" "rc=$? ($(elapsed))"
    [ -n "${SKIP_TORCH:-}" ] || timeout 120 python3 bench/torch_step_gpu.py --model $model --batch $b >>"$out/bench.csv" 2>>"$out/bench_step.err"
    row "torch_step_gpu.py $model" "rc=$? ($(elapsed))"
  done
  grep -v "^  " "$out/bench_step.err" | tail -6
  grep -A14 "^profile of" "$out/bench_step.err" | head -60
  echo "---- bench.csv"
  cat "$out/bench.csv"
fi

# The device returns at most 8 files: the logs travel as one archive beside gpu_check.log and bench.csv.
(cd "$out" && tar czf /tmp/bfm_logs.tar.gz --exclude=gpu_check.log --exclude=bench.csv . 2>/dev/null;
  find . -mindepth 1 ! -name gpu_check.log ! -name bench.csv -delete; mv /tmp/bfm_logs.tar.gz logs.tar.gz)
echo
echo "== gpu_check on ${gpu:-?}, $(date -u +%F), $(elapsed) in all"
printf '%s\n' "${rows[@]}"
