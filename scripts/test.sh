#!/usr/bin/env bash
# The whole test suite: installs and builds what is missing, then runs every test (ctest, in parallel).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd build
# Without the long soak test (labelled "long": ctest -L long runs it by hand).
ctest --output-on-failure -j"$(nproc)" --timeout 900 -LE long "$@"
