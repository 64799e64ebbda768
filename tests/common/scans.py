# Synthetic 4-D NIfTI scans for the converter's tests (tests/launch/cli/test_convert.py, tests/slurm/test_slurm.py).
import os

import nibabel as nib
import numpy as np


def make_scan(path, shape, affine, T, tr_header, rng):
    """A float32 scan of `shape` voxels x T volumes on `affine` (sform code 4, MNI): a per-voxel baseline around 500,
    a linear drift and noise, drawn from rng in that order; the header's zooms are the voxel sizes and tr_header."""
    base = rng.normal(500, 50, size=shape + (1,))
    drift = np.linspace(0, 1, T)[None, None, None, :] * rng.normal(0, 30, size=shape + (1,))
    data = (base + drift + rng.normal(0, 20, size=shape + (T,))).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=4)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms(tuple(np.abs(np.diag(affine)[:3])) + (tr_header,))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(img, path)
