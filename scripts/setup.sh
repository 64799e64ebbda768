#!/usr/bin/env bash
# Installs every Debian 12 package that bfm's build, tests and tools need. Idempotent, and silent when all is there.
# Needs root (or sudo). The CUDA toolkit is expected under /usr/local/cuda (not a Debian package).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenmpi-dev openmpi-bin                       # MPI ranks
  slurm-wlm munge                                  # slurm/pretrain.sbatch's test runs a one-node Slurm
  iproute2 util-linux iputils-ping                 # tests/multinode: two nodes in network namespaces
  libhdf5-openmpi-dev hdf5-tools                   # parallel HDF5
  libgtest-dev libgmock-dev libbenchmark-dev       # tests, benchmarks
  nlohmann-json3-dev libcli11-dev libtomlplusplus-dev libopenblas-dev
  libnifti2-dev zlib1g-dev                         # NIfTI converter
  mricron-data python3-nitime                      # real atlases (AAL, AICHA) and real 4-D scans for its tests
  python3 python3-numpy python3-h5py python3-torch python3-nibabel python3-matplotlib  # references, plots
  python3-venv                                     # tests/tools: brainmarks in a venv (tools/brainmarks_plugin)
  python3-setuptools python3-wheel                 # tests/python: pip install ./python in a venv, offline
  python3-sklearn                                  # bfm eval's metrics checked against scikit-learn
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x /usr/local/cuda/bin/nvcc ]] && ! command -v nvcc >/dev/null; then
  echo "setup: no CUDA toolkit found (nvcc); configure with -DBFM_WITH_CUDA=OFF to build without it" >&2
fi
