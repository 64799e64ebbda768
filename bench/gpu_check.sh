#!/usr/bin/env bash
# The GPU check, in one call on a bare CUDA machine (cmake, ninja, nvcc, PyTorch; no MPI, HDF5, BLAS or GTest
# package): builds the GPU part, runs every GPU test (and compute-sanitizer's race and memory checks on the
# attention and op tests), runs the whole system on the GPU (bfm synth, pretrain on a corpus over 2 MPI ranks,
# export, embed, eval), runs the GPU benchmarks beside PyTorch on the same GPU, and prints a short table last.
#
#   here:   bench/gpu_deps.sh                       (fills the git-ignored .deps/ with GoogleTest and headers)
#           bench/gpu_bundle.sh                     (.bundle.tar.xz: Open MPI and parallel HDF5, for the system phase)
#   there:  bench/gpu_check.sh [all|test|system|bench|scaling|test,system...]
#           (carry .deps and .bundle.tar.xz; logs and CSVs go to $OUT, else out/gpu_check)
# Without the bundle bfm is built without MPI and HDF5 and the system phase is left out. `scaling` (never part of
# "all": it wants a call of its own, 8 minutes or more: on 2026-12-04 one evaluation alone took over 220 s there, so
# each evaluation now runs on 8 ranks, at 100 % of the data only) runs bench/data_scaling.py on the GPU up to 10,000 pre-training
# subjects (SCALING_SUBJECTS, default 10,100,1000,10000; the smallest and largest first, so that a call cut short
# still compares them; its runs stay in runs/gpu_scaling, so a second call on a warm machine goes on where it
# stopped); its CSVs and plot come back beside the log.
#
# Environment: SKIP_TORCH, SKIP_ATTN_BENCH, SKIP_SANITIZE (non-empty: leave that part out), BENCH_BATCH (16),
# BFM_CUDA_ARCH (90), TESTS (names among gpu_model_tests finetune_tests comm_tests cuda_kernel_tests sanitize cli:
# only those of the test phase; default all), GPU_CHECK_BUDGET (seconds the whole check may take, 570: under the device's 10-minute command
# limit). Every step has a time limit cut to what is left of the budget, a step that would get under 20 s is left out
# ("no time"), and a step that fails is reported in the table while the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
phase=${1:-all}  # all, or phases joined by commas: test,system
has_phase() { [ "$phase" = all ] || [[ ",$phase," == *",$1,"* ]]; }
out=${OUT:-$PWD/out/gpu_check}
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1
t0=$(date +%s)
rows=()
row() { rows+=("$(printf '%-44s %s' "$1" "$2")"); }
elapsed() { echo "$(( $(date +%s) - t0 ))s"; }
budget=${GPU_CHECK_BUDGET:-570}
# limit SECONDS -> the step's time limit within the budget (0: no time left for it)
limit() { local left=$(( budget - ($(date +%s) - t0) )); (( left < 20 )) && { echo 0; return; }; echo $(( $1 < left ? $1 : left )); }

echo "== $(date -u +%FT%TZ) gpu_check $phase"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
nvcc --version | tail -2 | head -1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
[ -d .deps/googletest ] || { echo "gpu_check: no .deps/ (run bench/gpu_deps.sh on the build machine, carry .deps)"; exit 2; }

# ---- build (with MPI and parallel HDF5 from the bundle where one was carried)
build=build-gpu
bundle=0
if [ -f .bundle.tar.xz ] && [ ! -f .bundle/env.sh ]; then
  tar -xf .bundle.tar.xz 2>/dev/null || python3 -c "import tarfile; tarfile.open('.bundle.tar.xz').extractall('.')"
fi
if [ -f .bundle/env.sh ]; then
  system_ld=${LD_LIBRARY_PATH:-}
  . .bundle/env.sh
  bundle_ld=$LD_LIBRARY_PATH
  # The compilers and Python keep the machine's own libraries (the bundle's libz or libcrypto are Debian 12's); the
  # linker finds the bundle's through -rpath-link, bfm and mpirun through bundle_ld at run time.
  export LD_LIBRARY_PATH=$system_ld
  # Open MPI's compiler wrappers (which cmake's FindMPI and h5pcc ask for flags) load the bundle's libraries: they
  # alone get bundle_ld, through scripts of the same names first on PATH.
  mkdir -p .bundle/wrap
  wrap() {  # wrap NAME PROGRAM: .bundle/wrap/NAME runs PROGRAM with the bundle's libraries
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$bundle_ld" "$2" >.bundle/wrap/$1
    chmod +x .bundle/wrap/$1
  }
  for n in mpicc mpicxx mpirun mpiexec mpicc.openmpi mpicxx.openmpi; do  # h5pcc calls mpicc.openmpi
    wrap $n "$bundle_root/usr/bin/${n%.openmpi}.openmpi"
  done
  export PATH=$PWD/.bundle/wrap:$PATH
  export PMIX_MCA_gds=hash OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none
  bundle=1
fi
# What runs bfm's programs: the bundle's libraries on the loader's path where there is one.
if [ $bundle = 1 ]; then with_bundle=(env "LD_LIBRARY_PATH=$bundle_ld"); else with_bundle=(); fi
# NCCL: under the CUDA toolkit where it is installed, else the copy inside PyTorch's packages.
nccl_dir=$(python3 -c "import nvidia.nccl as m; print(list(m.__path__)[0])" 2>/dev/null || true)
if [ $bundle = 1 ]; then
  links="$BFM_BUNDLE_ROOT/usr/lib/x86_64-linux-gnu:$BFM_BUNDLE_ROOT/lib/x86_64-linux-gnu:$BFM_BUNDLE_ROOT/usr/lib/x86_64-linux-gnu/openmpi/lib:$BFM_BUNDLE_ROOT/usr/lib/x86_64-linux-gnu/hdf5/openmpi/lib"
  io_flags=(-DBFM_WITH_MPI=ON -DBFM_WITH_HDF5=ON "-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,$links"
            "-DCMAKE_LIBRARY_PATH=$BFM_BUNDLE_ROOT/usr/lib/x86_64-linux-gnu;$BFM_BUNDLE_ROOT/lib/x86_64-linux-gnu"
            "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath-link,$links" -DMPIEXEC_EXECUTABLE="$PWD/.bundle/wrap/mpirun")
else
  io_flags=(-DBFM_WITH_MPI=OFF -DBFM_WITH_HDF5=OFF)
fi
if ! cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${BFM_CUDA_ARCH:-90}" \
     "${io_flags[@]}" -DBFM_WITH_BLAS=OFF -DBFM_DEPS_DIR="$PWD/.deps" -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
     ${nccl_dir:+-DBFM_NCCL_DIR="$nccl_dir"} >"$out/configure.log" 2>&1; then
  tail -30 "$out/configure.log"; echo "gpu_check: configure failed"; exit 1
fi
grep -E "Found (MPI_C|HDF5)|NCCL" "$out/configure.log" | head -5
targets="bfm_cuda_kernel_tests bfm_gpu_model_tests bfm_finetune_tests bfm_comm_tests bench_attention bench_attention_bwd bench_step_gpu bfm"
timeout "$(limit 330)" cmake --build $build -j "$(nproc)" --target $targets -- -k 0 >"$out/build.log" 2>&1
build_rc=$?
grep -E "error|FAILED" "$out/build.log" | head -40
row "build, MPI+HDF5 $([ $bundle = 1 ] && echo on || echo off) ($(elapsed))" "$([ $build_rc = 0 ] && echo ok || echo "FAILED rc=$build_rc")"

want() { [ -z "${TESTS:-}" ] || [[ " $TESTS " == *" $1 "* ]]; }
run_gtest() {  # name binary [filter] [limit]
  local name=$1 bin=$2 filter=${3:-*} lim
  want "$name" || return 0
  lim=$(limit "${4:-240}")
  if [ ! -x "$bin" ]; then row "$name" "not built"; return; fi
  if [ "$lim" = 0 ]; then row "$name" "no time"; return; fi
  timeout "$lim" "${with_bundle[@]}" "$bin" --gtest_filter="$filter" --gtest_brief=1 --gtest_output="xml:$out/$name.xml" \
    >"$out/$name.log" 2>&1
  local rc=$?
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|error|Expected|Which is|actual|rel|gradient of|parameter |cpu |nccl abort" "$out/$name.log" | head -60
  local pass fail
  pass=$(grep -o 'tests="[0-9]*"' "$out/$name.xml" 2>/dev/null | head -1 | tr -dc 0-9)
  fail=$(grep -o 'failures="[0-9]*"' "$out/$name.xml" 2>/dev/null | head -1 | tr -dc 0-9)
  row "$name" "rc=$rc tests=${pass:-?} failures=${fail:-?} ($(elapsed))"
}

# step NAME LIMIT COMMAND...: runs a command under what is left of the budget, its output in $out/NAME.log; returns
# its exit status (124: past its limit; 125: no time left to start it).
step() {
  local name=$1 lim
  lim=$(limit "$2"); shift 2
  if [ "$lim" = 0 ]; then row "$name" "no time"; return 125; fi
  timeout "$lim" "${with_bundle[@]}" "$@" >"$out/$name.log" 2>&1
}
bfm=$build/launch/bfm
mpirun_=(mpirun -np 2 --oversubscribe --bind-to none)

if has_phase test; then
  # The code that has not yet run on a GPU first (the model, fine-tuning and communicator tests are quick).
  run_gtest gpu_model_tests $build/tests/model/bfm_gpu_model_tests '*' 240
  run_gtest finetune_tests $build/tests/launch/bfm_finetune_tests '*' 120
  run_gtest comm_tests $build/tests/runtime/bfm_comm_tests '*' 60
  grep -iE "nccl" "$out/comm_tests.log" 2>/dev/null | head -5
  grep "held-out losses" "$out/gpu_model_tests.log" 2>/dev/null
  run_gtest cuda_kernel_tests $build/tests/kernels/bfm_cuda_kernel_tests '*' 240
fi

# ---- the whole system on the GPU: the main job's corpus written by 2 ranks, pre-training on it over 2 MPI ranks
# that share the GPU (gradients through the host: NCCL takes one rank per GPU), export, embed on the GPU against
# embed on the CPU (h5py; every 4th window, the CPU being slow), and the evaluation with fine-tuning on the GPU. MAE
# only there; the main job's contrastive objective over 2 GPU ranks (CLIP's negatives gathered through the host) runs
# on its own below: under "auto" it stays on the CPU until it has been checked on a GPU (run_placement).
if has_phase system && [ $bundle = 0 ]; then row "system" "left out: no .bundle.tar.xz carried (bench/gpu_bundle.sh)"; fi
if has_phase system && [ $bundle = 1 ] && [ -x $bfm ]; then
  sys=$out/system
  mkdir -p $sys
  step synth 90 "${mpirun_[@]}" $bfm synth --subjects 96 --parcels 64 --minutes 20 --studies 2 --stim-dim 16 \
    --categories 4 --clips 200 --seed 7 --out $sys/corpus --overwrite
  rc=$?; tail -3 $out/synth.log
  row "system: mpirun -np 2 bfm synth (96 subjects)" "rc=$rc ($(elapsed))"
  step pretrain_corpus 150 "${mpirun_[@]}" $bfm pretrain --config configs/quickstart.toml --set data.corpus=\"$sys/corpus\" \
    --set model.n_heads=2 --set model.decoder.n_heads=2 --set 'model.objectives=["mae"]' --set train.device=\"cuda\" \
    --set train.out=\"$sys/run\"
  rc=$?; grep -E "share|summed|step +1500|held-out" $out/pretrain_corpus.log | tail -5
  row "system: mpirun -np 2 pretrain, corpus, cuda" "rc=$rc $(grep -o 'held-out loss after.*' $out/pretrain_corpus.log | tail -1 | cut -c1-50) ($(elapsed))"
  # The main job's own config (mae + contrastive) on 2 ranks: on the GPU when asked ("cuda"; the held-out losses
  # printed), on the CPU with the reason logged under "auto".
  step pretrain_cuda_contrastive 90 "${mpirun_[@]}" $bfm pretrain --config configs/quickstart.toml \
    --set data.corpus=\"$sys/corpus\" --set model.n_heads=2 --set model.decoder.n_heads=2 --set train.steps=200 \
    --set train.device=\"cuda\" --set train.out=\"$sys/run_contrastive\"
  rc=$?; grep -E "held-out loss" $out/pretrain_cuda_contrastive.log | tail -2
  row "system: 2 GPU ranks, mae + contrastive" "rc=$rc $(grep -o 'held-out loss after.*' $out/pretrain_cuda_contrastive.log | tail -1 | cut -c1-60)"
  step pretrain_auto_contrastive 60 "${mpirun_[@]}" $bfm pretrain --config configs/quickstart.toml \
    --set data.corpus=\"$sys/corpus\" --set train.steps=20 --set train.out=\"$sys/run_auto\"
  row "system: 2 ranks, contrastive, auto" "rc=$? $(grep -o 'on the CPU although.*' $out/pretrain_auto_contrastive.log | head -1 | cut -c1-70)"
  step export 30 $bfm export $sys/run
  row "system: bfm export" "rc=$? ($(elapsed))"
  step embed_cuda 60 "${mpirun_[@]}" $bfm embed --checkpoint $sys/run/export --corpus $sys/corpus --out $sys/embed_cuda --device cuda --stride 64
  rc_cuda=$?
  step embed_cpu 60 "${mpirun_[@]}" $bfm embed --checkpoint $sys/run/export --corpus $sys/corpus --out $sys/embed_cpu --device cpu --stride 64
  rc_cpu=$?
  cmp_line=$(python3 - "$sys" <<'PY' 2>&1 | tail -1
import sys, glob, os, h5py, numpy as np
d = sys.argv[1]
def tables(run):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, run, "*.h5"))):
        with h5py.File(f, "r") as h:
            h.visititems(lambda n, o: out.__setitem__(os.path.basename(f) + ":" + n, np.asarray(o[()], dtype=np.float64))
                         if isinstance(o, h5py.Dataset) and o.dtype.kind == "f" else None)
    return out
a, b = tables("embed_cuda"), tables("embed_cpu")
assert a and a.keys() == b.keys(), f"datasets differ: {sorted(a)} vs {sorted(b)}"
worst = max(np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(b[k]), 1e-30) for k in a)
n = sum(v.size for v in a.values())
print(f"{'ok' if worst < 1e-3 else 'DIFFERENT'}: {len(a)} datasets, {n} values, worst norm-relative difference {worst:.2e}")
PY
)
  echo "embed cuda vs cpu: $cmp_line"
  row "system: embed --device cuda vs cpu" "rc=$rc_cuda/$rc_cpu $cmp_line"
  step eval_cuda 300 "${mpirun_[@]}" $bfm eval --checkpoint $sys/run/export --corpus $sys/corpus --out $sys/eval \
    --tasks category --fractions 0.1,1 --labelled-subjects 2,all --finetune-steps 150 --device cuda
  rc=$?; tail -4 $out/eval_cuda.log
  row "system: mpirun -np 2 eval (finetune on cuda)" "rc=$rc ($(elapsed))"
  [ -f $sys/eval/summary.md ] && cp $sys/eval/summary.md $out/eval_summary.md
  [ -f $sys/run/metrics.jsonl ] && cp $sys/run/metrics.jsonl $out/system_metrics.jsonl
  rm -rf $sys
fi

if has_phase test; then
  if [ -z "${SKIP_SANITIZE:-}" ] && want sanitize && command -v compute-sanitizer >/dev/null; then
    for tool in racecheck memcheck; do
      step sanitize_$tool 90 compute-sanitizer --tool $tool --error-exitcode 9 \
        $build/tests/kernels/bfm_cuda_kernel_tests --gtest_filter="${SANITIZE_FILTER:-CudaAttentionDeterminismTest.*:CudaOps*Determin*}" --gtest_brief=1
      rc=$?
      [ $rc = 125 ] && continue
      tail -5 "$out/sanitize_$tool.log"
      row "compute-sanitizer $tool" "rc=$rc $(grep -m1 -E 'ERROR SUMMARY' "$out/sanitize_$tool.log")"
    done
  fi
  # bfm itself: pretrain on the GPU from the CLI (quick-start model with head dim 32)
  if [ -x $bfm ] && want cli; then
    step bfm_pretrain 120 $bfm pretrain --config configs/quickstart.toml --set data.source=\"synthetic\" --set model.n_heads=2 \
      --set model.decoder.n_heads=2 --set train.steps=100 --set train.device=cuda --set train.out=$out/run
    rc=$?
    tail -4 "$out/bfm_pretrain.log"
    [ $rc = 125 ] || row "bfm pretrain (cuda, bf16, 100 steps)" "rc=$rc $(grep -m1 -o 'held-out loss after.*' "$out/bfm_pretrain.log" | cut -c1-60)"
    # The GPU gradient path through a device communicator (NCCL, one rank: the all-reduce is a copy) must leave the
    # training exactly where the plain single-GPU path does.
    # ... and so must the buckets' all-reduces started during backward on the communicator's stream (train.gpu_overlap).
    for c in self nccl overlap; do
      comm=$c; [ $c = overlap ] && comm=nccl
      step bfm_pretrain_$c 90 $bfm pretrain --config configs/quickstart.toml --set data.source=\"synthetic\" \
        --set model.n_heads=2 --set model.decoder.n_heads=2 --set train.steps=30 --set train.device=cuda \
        --set train.comm=\"$comm\" --set train.bucket_mb=0.25 --set train.gpu_overlap=$([ $c = overlap ] && echo true || echo false) \
        --set train.out=$out/run_$c
    done
    grep -hE "gradients summed|all-reduce:" "$out/bfm_pretrain_overlap.log" 2>/dev/null
    for c in nccl overlap; do
      if [ ! -f $out/run_$c/release/model.safetensors ]; then
        tail -3 "$out/bfm_pretrain_$c.log" 2>/dev/null; row "pretrain comm=$c vs self (30 steps)" "not run or failed"
      elif cmp -s $out/run_self/release/model.safetensors $out/run_$c/release/model.safetensors; then
        row "pretrain comm=$c vs self (30 steps)" "bit-identical"
      else
        tail -3 "$out/bfm_pretrain_$c.log"; row "pretrain comm=$c vs self (30 steps)" "DIFFERENT"
      fi
    done
    rm -rf $out/run $out/run_self $out/run_nccl $out/run_overlap
  fi
fi

# ---- the data-scaling study on the GPU (issue 17: "on the GPU up to 10,000"): one synthetic corpus, the same model
# (the main job's config: mae + contrastive, one GPU rank) pre-trained for the same steps on the first N training
# subjects, each evaluated alike (bench/data_scaling.py), zero-shot clip retrieval included.
if [[ ",$phase," == *",scaling,"* ]] && [ $bundle = 1 ] && [ -x $bfm ]; then
  wrap bfm "$PWD/$bfm"
  sizes=${SCALING_SUBJECTS:-10,100,1000,10000}
  ends="${sizes%%,*},${sizes##*,}"
  for list in "$ends" "$sizes"; do
    lim=$(limit 540)
    [ "$lim" = 0 ] && { row "data scaling N=$list" "no time"; break; }
    PYTHONUNBUFFERED=1 timeout "$lim" python3 bench/data_scaling.py --out runs/gpu_scaling --bfm .bundle/wrap/bfm \
      --ranks 1 --eval-ranks 8 --subjects "$list" --steps "${SCALING_STEPS:-1500}" --tasks category,embedding,retrieval --fractions 1 \
      --set 'train.device="cuda"' --set model.n_heads=2 --set model.decoder.n_heads=2 --eval-args "--device cuda" \
      >>"$out/scaling.log" 2>&1
    rc=$?
    row "data scaling N=$list" "rc=$rc ($(elapsed))"
  done
  # bfm's own lines (runs/gpu_scaling/log stays on that machine): the corpus, each run's held-out loss, each
  # evaluation's time, in the order the runs went.
  grep -E "held-out loss after|synth: [0-9]+ subjects in|eval: done in" runs/gpu_scaling/log 2>/dev/null | cut -c1-160 \
    | tee -a "$out/scaling.log" | tail -12
  python3 bench/data_scaling.py --out runs/gpu_scaling --subjects "$sizes" --tasks category,embedding,retrieval \
    --fractions 1 --plot-only 2>&1 | tail -12
  cp runs/gpu_scaling/data_scaling.csv runs/gpu_scaling/data_scaling_paired.csv runs/gpu_scaling/data_scaling.png \
    "$out"/ 2>/dev/null
fi

if has_phase bench; then
  : >"$out/bench.csv"
  bench() {  # name limit command... (its CSV lines appended to bench.csv)
    local name=$1 lim
    lim=$(limit "$2"); shift 2
    if [ "$lim" = 0 ]; then row "$name" "no time"; return; fi
    timeout "$lim" "${with_bundle[@]}" "$@" >>"$out/bench.csv" 2>>"$out/$name.err"
    row "$name" "rc=$? ($(elapsed))"
  }
  if [ -z "${SKIP_ATTN_BENCH:-}" ]; then
    bench bench_attention 120 $build/bench/bench_attention 20
    bench bench_attention_bwd 90 $build/bench/bench_attention_bwd 20
    grep -i "warning" "$out/bench_attention.err" "$out/bench_attention_bwd.err" 2>/dev/null | head
    [ -n "${SKIP_TORCH:-}" ] || bench attention_torch.py 150 python3 bench/attention_torch.py --reps 20
  fi
  for model in brainlm causal; do
    b=${BENCH_BATCH:-16}
    bench "bench_step_gpu_$model" 120 $build/bench/bench_step_gpu --model $model --batch $b --profile
    [ -n "${SKIP_TORCH:-}" ] || bench "torch_step_gpu_$model" 120 python3 bench/torch_step_gpu.py --model $model --batch $b
  done
  cat "$out"/bench_step_gpu*.err 2>/dev/null | grep -v "^  " | tail -6
  cat "$out"/bench_step_gpu*.err 2>/dev/null | grep -A14 "^profile of" | head -60
  echo "---- bench.csv"
  cat "$out/bench.csv"
fi

# The device returns at most 8 files: the logs travel as one archive beside gpu_check.log, bench.csv, the system
# phase's summary and the scaling phase's CSVs and plot.
keep=(gpu_check.log bench.csv eval_summary.md data_scaling.csv data_scaling_paired.csv data_scaling.png)
(cd "$out" && tar czf /tmp/bfm_logs.tar.gz "${keep[@]/#/--exclude=}" . 2>/dev/null;
  find . -mindepth 1 -type f $(printf '! -name %s ' "${keep[@]}") -delete; find . -mindepth 1 -type d -empty -delete
  mv /tmp/bfm_logs.tar.gz logs.tar.gz)
echo
echo "== gpu_check on ${gpu:-?}, $(date -u +%F), $(elapsed) in all"
printf '%s\n' "${rows[@]}"
