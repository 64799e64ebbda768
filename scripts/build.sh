#!/usr/bin/env bash
# Configures and builds bfm (Release) into build/ with every core; quiet when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
if [[ ! -x /usr/local/cuda/bin/nvcc ]] && ! command -v nvcc >/dev/null; then extra+=(-DBFM_WITH_CUDA=OFF); fi
if [[ ! -f build/build.ninja ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${extra[@]}" "$@" >/dev/null
fi
cmake --build build -j"$(nproc)" | grep -vE '^\[[0-9]+/[0-9]+\] ' || true
test -x build/launch/bfm
