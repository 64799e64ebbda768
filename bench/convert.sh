#!/usr/bin/env bash
# `bfm convert` throughput: a BIDS dataset of S subjects, one run each of 2 mm MNI-grid scans (91 x 109 x 91 voxels,
# int16 with a scale factor, as fMRIPrep writes them) of V volumes, with the real AAL atlas (1 mm, 116 labels,
# mricron-data) on its own grid, 1 rank and 2 MPI ranks, against reading the same compressed NIfTI files with
# nibabel (decompression included, the floor any converter pays) in the same job.
#   bench/convert.sh [build-dir] [subjects] [volumes]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
subjects=${2:-8}
volumes=${3:-200}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
atlas=/usr/share/mricron/templates/aal.nii.gz
/usr/bin/python3 - "$work/bids" "$subjects" "$volumes" <<'PY'
import json, os, sys
import nibabel as nib, numpy as np
root, subjects, volumes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(root)
json.dump({"RepetitionTime": 2.0}, open(os.path.join(root, "task-rest_bold.json"), "w"))
affine = np.array([[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]], float)
rng = np.random.default_rng(0)
for s in range(subjects):
    d = os.path.join(root, f"sub-{s:02d}", "func")
    os.makedirs(d)
    data = rng.integers(-3000, 3000, size=(91, 109, 91, volumes), dtype=np.int16)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    nib.save(img, os.path.join(d, f"sub-{s:02d}_task-rest_bold.nii.gz"))
PY
bytes=$(du -cb "$work"/bids/sub-*/func/*.nii.gz | tail -1 | cut -f1)
t0=$(date +%s.%N); "$build/launch/bfm" convert --bids "$work/bids" --atlas "$atlas" --out "$work/one" 2>/dev/null
t1=$(date +%s.%N)
mpirun --oversubscribe -np 2 "$build/launch/bfm" convert --bids "$work/bids" --atlas "$atlas" --out "$work/two" \
  --subjects-per-shard 1 2>/dev/null
t2=$(date +%s.%N)
/usr/bin/python3 -c "
import glob, nibabel as nib
for p in sorted(glob.glob('$work/bids/sub-*/func/*.nii.gz')): nib.load(p).get_fdata(dtype='float32')"
t3=$(date +%s.%N)
/usr/bin/python3 - "$subjects" "$bytes" "$t0" "$t1" "$t2" "$t3" <<'PY'
import sys
s, b, t0, t1, t2, t3 = int(sys.argv[1]), int(sys.argv[2]), *map(float, sys.argv[3:])
print("| reader | seconds | subjects/s | compressed NIfTI MB/s |")
print("| --- | --- | --- | --- |")
for name, dt in [("bfm convert, 1 rank", t1 - t0), ("bfm convert, 2 ranks", t2 - t1), ("nibabel load only, 1 process", t3 - t2)]:
    print(f"| {name} | {dt:.1f} | {s / dt:.2f} | {b / 1e6 / dt:.1f} |")
PY
