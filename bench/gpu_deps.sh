#!/usr/bin/env bash
# Fills .deps/ (git-ignored) with what bench/gpu_check.sh needs on the lent GPU machine, which has cmake, ninja,
# CUDA and PyTorch but no packages and no internet: GoogleTest's sources and the header-only CLI11, toml++ and
# nlohmann/json, copied from this machine's Debian packages (scripts/setup.sh installs them).
#   bench/gpu_deps.sh         then carry ".deps" with the device call
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .deps
mkdir -p .deps/include
cp -r /usr/src/googletest .deps/googletest
cp -r /usr/include/CLI /usr/include/toml++ /usr/include/nlohmann .deps/include/
du -sh .deps
