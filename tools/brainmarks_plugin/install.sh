#!/usr/bin/env bash
# tools/brainmarks_plugin/install.sh VENV_DIR
#
# The smallest install of brainmarks (https://pypi.org/project/brainmarks/) that lets its model registry and its
# model test (brainmarks.models.registry, brainmarks.models.test_models) import, for the bfm plugin beside this
# script: a venv on Debian's Python 3.11 that sees the system's packages (python3-torch, numpy, scipy, nibabel, h5py,
# from scripts/setup.sh; python3-venv for the venv itself), brainmarks==0.1.1 with --no-deps, and requirements.txt
# (the packages those modules import, each with its own dependencies). numpy is pinned to the system's version so
# that Debian's torch keeps the numpy it was built against. Needs PyPI the first time (about 360 MB, 1-2 minutes:
# pycortex comes as a source package and compiles two small C extensions).
#
# Idempotent: quiet and quick when VENV_DIR already holds this install (a stamp file records what was installed).
# pip's output goes to VENV_DIR/install.log and is shown only when a step fails.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 VENV_DIR" >&2
  exit 2
fi
venv=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
requirements=$here/requirements.txt
brainmarks_version=0.1.1
system_python=/usr/bin/python3

numpy_version=$("$system_python" -c 'import numpy; print(numpy.__version__)')
want="brainmarks==$brainmarks_version numpy==$numpy_version $(grep -v '^\s*#' "$requirements" | tr -s '\n' ' ')"
stamp=$venv/.bfm-brainmarks-install
if [[ -x $venv/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

echo "brainmarks: installing brainmarks==$brainmarks_version into $venv (log: $venv/install.log)" >&2
rm -f "$stamp"
if [[ ! -x $venv/bin/python ]]; then
  if ! "$system_python" -m venv --system-site-packages "$venv"; then
    echo "brainmarks: $system_python -m venv failed (on Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
fi
log=$venv/install.log
: >"$log"
constraints=$venv/constraints.txt
echo "numpy==$numpy_version" >"$constraints"

pip_install() {
  # PIP_CONSTRAINT reaches the isolated build environment of pycortex too, so it compiles against this numpy.
  if ! PIP_CONSTRAINT=$constraints "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
       --progress-bar off "$@" >>"$log" 2>&1; then
    echo "brainmarks: pip install $* failed:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}
pip_install -r "$requirements"
# Last, so that pip's complaint about brainmarks' unused requirements (wandb, ...) comes once, into the log.
pip_install --no-deps "brainmarks==$brainmarks_version"

# The install must import, and torch must still be Debian's (nothing above may have pulled a torch from PyPI).
# (templateflow fills its home on import, from a copy inside the package without the network, and pycortex and
# matplotlib write their user config: all kept inside the venv here.)
check=$venv/import-check
if ! TEMPLATEFLOW_HOME=$check/templateflow XDG_CONFIG_HOME=$check/config XDG_DATA_HOME=$check/data \
     MPLCONFIGDIR=$check/matplotlib "$venv/bin/python" - >>"$log" 2>&1 <<'PY'
import torch, numpy
assert torch.__file__.startswith("/usr/lib/python3/"), f"torch from {torch.__file__}, expected Debian's"
import brainmarks.models.registry, brainmarks.models.test_models
print("brainmarks import check: ok, torch", torch.__version__, "numpy", numpy.__version__)
PY
then
  echo "brainmarks: the install in $venv does not import:" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
printf '%s' "$want" >"$stamp"
