#!/usr/bin/env bash
# Makes .bundle/ (git-ignored): Open MPI and parallel HDF5 for the lent GPU machine, which has CUDA, cmake, ninja and
# PyTorch (NCCL inside its pip packages) but no MPI, no HDF5, no Debian packages and no network (issue 15).
#
# What goes in: the Debian packages that hold every shared library a bfm built here with MPI + HDF5 needs (and that
# mpirun, orted and Open MPI's and PMIx's plugins need), found with ldd and dpkg -S, except glibc, libstdc++ and
# libgcc (the GPU machine's are newer and serve) and OpenBLAS (the GPU build has BLAS off); plus openmpi-bin and
# openmpi-common (mpirun, orted, help files), libopenmpi-dev and libhdf5-openmpi-dev (headers and link names, to build
# bfm there). Each is fetched with `apt-get download` and unpacked with `dpkg-deb -x` (no root needed) into
# .bundle/root; .bundle/env.sh points Open MPI at it (OPAL_PREFIX, so its plugins and help files are found where they
# lie now) and the loader at its libraries. .bundle.tar.xz is what travels with a device call (carry it; the
# 64 MiB of a call hold it: the script prints its size). xz rather than zstd: the GPU machine is not known to have
# zstd, and Python's tarfile unpacks xz where tar cannot).
#
#   bench/gpu_bundle.sh                       make it (needs build/launch/bfm: scripts/build.sh)
#   bench/gpu_bundle.sh --check               also check that ldd resolves bfm and mpirun to the bundle alone, with the
#                                             system's Open MPI and HDF5 hidden (a private mount namespace; root), and
#                                             that its mpirun runs bfm synth and pretrain on 2 ranks
#   bench/gpu_bundle.sh --check-build         and, hidden the same way, that cmake finds MPI and parallel HDF5 in the
#                                             bundle and a bfm built against them alone links and runs (minutes)
# On the GPU machine: tar -xf .bundle.tar.xz (bench/gpu_check.sh does it), then `. .bundle/env.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
bfm=build/launch/bfm
[ -x $bfm ] || { echo "gpu_bundle: no $bfm (run scripts/build.sh first)"; exit 2; }
arch=x86_64-linux-gnu
mpi_lib=/usr/lib/$arch/openmpi/lib
plugins=("$mpi_lib"/openmpi3/*.so /usr/lib/$arch/pmix2/lib/pmix/*.so)

# The package that owns a library file, whichever of /usr/lib and /lib dpkg recorded it under (usrmerge).
owner() {
  local p
  p=$( (dpkg -S "$1" 2>/dev/null || true) | head -1 | cut -d: -f1)
  [ -n "$p" ] || p=$( (dpkg -S "${1/#\/usr\/lib\//\/lib\/}" 2>/dev/null || true) | head -1 | cut -d: -f1)
  echo "$p"
}

libs=$( { ldd $bfm; ldd "$(readlink -f /usr/bin/mpirun)"; ldd /usr/bin/orted; for p in "${plugins[@]}"; do ldd "$p"; done; } \
        2>/dev/null | awk '/=>/ && $3 ~ /^\// {print $3}' | sort -u)
packages=(openmpi-bin openmpi-common libopenmpi-dev libhdf5-openmpi-dev)
missing=()
for l in $libs; do
  case $l in /usr/local/cuda*) continue ;; esac  # the GPU machine has its own CUDA
  real=$(readlink -f "$l")
  p=$(owner "$real")
  [ -n "$p" ] || p=$(owner "$l")
  if [ -z "$p" ]; then missing+=("$l"); continue; fi
  case $p in libc6|libstdc++6|libgcc-s1|libopenblas0-pthread|libopenblas0|libopenblas-pthread-dev) ;; *) packages+=("$p") ;; esac
done
((${#missing[@]} == 0)) || echo "gpu_bundle: no package owns ${missing[*]} (left out)" >&2
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
echo "gpu_bundle: ${#packages[@]} packages: ${packages[*]}"

rm -rf .bundle .bundle.tar.xz .bundle.tar.zst
mkdir -p .bundle/debs .bundle/root
(cd .bundle/debs && apt-get download "${packages[@]}" >/dev/null)
for d in .bundle/debs/*.deb; do dpkg-deb -x "$d" .bundle/root; done
rm -rf .bundle/debs .bundle/root/usr/share/doc .bundle/root/usr/share/man .bundle/root/usr/share/lintian
# The names Debian's alternatives would give (mpirun, mpicc, h5pcc), relative, so that they move with the folder;
# h5pcc with its prefix taken from where it lies.
for n in mpirun mpiexec mpicc mpicxx; do ln -sf "$n.openmpi" ".bundle/root/usr/bin/$n"; done
sed 's|^prefix="/usr"|prefix="$(cd "$(dirname "$0")/.." \&\& pwd)"|' .bundle/root/usr/bin/h5pcc.openmpi > .bundle/root/usr/bin/h5pcc
chmod +x .bundle/root/usr/bin/h5pcc
# Link names (libX.so) for the libraries without one, so that a build there links against the bundle's copies
# (h5pcc names -lcurl -lcrypto -lsz -lz).
for d in .bundle/root/usr/lib/x86_64-linux-gnu .bundle/root/lib/x86_64-linux-gnu; do
  [ -d "$d" ] || continue
  for f in "$d"/*.so.*; do
    name=${f##*/}; link="$d/${name%%.so.*}.so"
    [ -e "$link" ] || ln -s "$name" "$link"
  done
done

cat > .bundle/env.sh <<'EOF'
# Source it (. .bundle/env.sh): Open MPI and HDF5 from this folder, wherever it lies.
bundle_root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/root
export OPAL_PREFIX=$bundle_root/usr
export PMIX_PREFIX=$bundle_root/usr/lib/x86_64-linux-gnu/pmix2
export PATH=$bundle_root/usr/bin:$PATH
export LD_LIBRARY_PATH=$bundle_root/usr/lib/x86_64-linux-gnu/openmpi/lib:$bundle_root/usr/lib/x86_64-linux-gnu/hdf5/openmpi/lib:$bundle_root/usr/lib/x86_64-linux-gnu:$bundle_root/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# For cmake on that machine: the headers and link names of MPI and parallel HDF5.
export BFM_BUNDLE_ROOT=$bundle_root
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
EOF
tar -C . -cf - .bundle | xz -9 -T0 > .bundle.tar.xz
echo "gpu_bundle: .bundle $(du -sh .bundle | cut -f1), .bundle.tar.xz $(du -h .bundle.tar.xz | cut -f1)"

[ "${1:-}" = "--check" ] || [ "${1:-}" = "--check-build" ] || exit 0
# ---- the closure: in a private mount namespace the system's Open MPI, PMIx and HDF5 libraries are hidden (empty
# folders and files bound over them), so ldd can resolve them only from the bundle; then 2 ranks run from it.
hide=()
for f in /usr/lib/$arch/openmpi /usr/lib/$arch/pmix2 /usr/lib/$arch/hdf5 /usr/share/openmpi /usr/bin/orterun \
         /usr/bin/orted /usr/bin/opal_wrapper /usr/include/$arch/openmpi /usr/include/hdf5 /usr/bin/h5pcc.openmpi; do
  [ -e "$f" ] && [ ! -L "$f" ] && hide+=("$f")  # links into a hidden folder lead to nothing already
done
for f in /usr/lib/$arch/libmpi.so* /usr/lib/$arch/libopen-*.so* /usr/lib/$arch/libhdf5_openmpi*.so* \
         /usr/lib/$arch/libpmix.so* /usr/lib/$arch/libhwloc.so* /usr/lib/$arch/libevent*.so*; do
  [ -e "$f" ] && [ ! -L "$f" ] && hide+=("$f")  # the files themselves; their links then lead to nothing
done
unshare -m bash -s -- "$bfm" "${1:-}" "${hide[@]}" <<'EOF'
set -euo pipefail
bfm=$1 mode=$2; shift 2
mount --make-rprivate /
empty_dir=$(mktemp -d); empty_file=$(mktemp)
for f in "$@"; do
  if [ -d "$f" ]; then mount --bind "$empty_dir" "$f"; else mount --bind "$empty_file" "$f"; fi
done
. .bundle/env.sh
[ "$(command -v mpirun)" = "$bundle_root/usr/bin/mpirun" ] || { echo "gpu_bundle --check: mpirun is $(command -v mpirun)"; exit 1; }
bad=$(ldd "$bfm" "$(readlink -f "$(command -v mpirun)")" | awk '/=>/ {print $1, $3}' | grep -E "not found|openmpi|hdf5|pmix|hwloc|libevent|libmpi|libopen-" | grep -v "$bundle_root" || true)
if [ -n "$bad" ]; then echo "gpu_bundle --check: not from the bundle:"; echo "$bad"; exit 1; fi
echo "gpu_bundle --check: ldd resolves bfm's and mpirun's MPI, PMIx, hwloc, libevent and HDF5 libraries to the bundle"
out=$(mktemp -d)
mpirun -np 2 --oversubscribe "$bfm" synth --subjects 20 --parcels 16 --minutes 4 --out "$out/c" </dev/null >/dev/null 2>"$out/err" \
  || { cat "$out/err"; exit 1; }
OMP_NUM_THREADS=1 mpirun -np 2 --oversubscribe "$bfm" pretrain --set data.source=\"corpus\" --set data.corpus=\"$out/c\" \
  --set model.n_parcels=16 --set train.steps=3 --set train.batch_size=4 --set train.validate_every=3 \
  --set train.device=\"cpu\" --out "$out/run" </dev/null >/dev/null 2>"$out/err" || { cat "$out/err"; exit 1; }
echo "gpu_bundle --check: mpirun from the bundle ran bfm synth and bfm pretrain on 2 ranks (system Open MPI hidden)"
rm -rf "$out"
[ "$mode" = "--check-build" ] || exit 0
build=$(mktemp -d)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBFM_WITH_CUDA=OFF -DBFM_WITH_BLAS=OFF \
  -DBFM_BUILD_TESTS=OFF -DBFM_BUILD_BENCH=OFF >"$build/cmake.log" 2>&1 || { tail -20 "$build/cmake.log"; exit 1; }
grep -E "Found (MPI_C|HDF5):" "$build/cmake.log" | grep -v "$bundle_root" && { echo "gpu_bundle --check-build: found outside the bundle"; exit 1; }
cmake --build "$build" --target bfm >"$build/build.log" 2>&1 || { grep -E "error" "$build/build.log" | head; exit 1; }
bad=$(ldd "$build/launch/bfm" | awk '/=>/ {print $1, $3}' | grep -E "not found|hdf5|libmpi|libopen-" | grep -v "$bundle_root" || true)
[ -z "$bad" ] || { echo "gpu_bundle --check-build: not from the bundle:"; echo "$bad"; exit 1; }
"$build/launch/bfm" info >/dev/null
echo "gpu_bundle --check-build: cmake found MPI and parallel HDF5 in the bundle; the bfm built against them resolves to it"
rm -rf "$build"
EOF
