#!/usr/bin/env python3
"""bfm.preprocess, run from the installed package, against `bfm convert` on the small fMRIPrep-like study of
tests/launch/cli/test_confounds.py (its helpers write the NIfTI scans, the atlas and the confounds files):

every run's series in the shards (read with h5py) equals bfm.preprocess of the run's parcel means computed here with
nibabel + numpy (mean of each atlas label's voxels), for
- the defaults (linear detrend, zscore), from a checkpoint config.json without data_provenance (which must warn);
- --no-detrend --scaling robust --target-tr 1.5, from a data_provenance dict;
- --confounds motion6 --scrub 0.5, from a checkpoint folder whose config.json has data_provenance, the regressors
  and framewise displacement read by the package from the run's confounds TSV (and given as arrays once);
each case's series also differs from the defaults' (so a preprocess that ignored the parameter would fail). And a
series with another parcel count than the provenance's atlas is an error naming both.

    BUILD/tests/python/venv/bin/python tests/python/test_preprocess.py --bfm BUILD/launch/bfm --workdir DIR
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np

import bfm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "launch", "cli"))
import test_confounds as study  # noqa: E402  (make_study, make_atlas, parcel_means, read_corpus, T, TR, ...)

TOLERANCE = 1e-5  # the shards hold float32 series of z-scores (rounding 1e-7)


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    return proc


def convert(base, out, options):
    shutil.rmtree(out, ignore_errors=True)
    run(base + ["--out", out] + options)
    series, _ = study.read_corpus(out)
    return {path: s for path, (s, _, _) in series.items()}


def write_checkpoint_config(folder, provenance=None):
    """A released checkpoint's config.json (the keys preprocess reads; the model's are not needed here)."""
    os.makedirs(folder, exist_ok=True)
    config = {"format": "bfm-checkpoint", "format_version": 1, "n_parcels": 6, "atlas": "atlas.nii.gz"}
    if provenance is not None:
        config["data_provenance"] = provenance
    json.dump(config, open(os.path.join(folder, "config.json"), "w"), indent=2)
    return folder


def compare(name, converted, runs, lab, preprocess_run, defaults=None):
    worst, moved = 0.0, np.inf
    for sub, (scan, conf) in runs.items():
        key = os.path.realpath(scan)
        if key not in converted:
            continue
        got = preprocess_run(study.parcel_means(scan, lab), conf)
        want = converted[key]
        assert got.shape == want.shape, (name, sub, got.shape, want.shape)
        worst = max(worst, float(np.abs(got - want).max()))
        if defaults is not None and defaults[key].shape == want.shape:
            moved = min(moved, float(np.abs(want - defaults[key]).max()))
    assert worst < TOLERANCE, f"{name}: bfm.preprocess differs from bfm convert by {worst:.1e}"
    assert defaults is None or moved > 0.1, f"{name}: the series hardly differ from the defaults' ({moved:.1e})"
    print(f"{name}: every run within {worst:.1e} of bfm convert's shard")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    where = os.path.realpath(bfm.__file__)
    assert where.startswith(os.path.realpath(sys.prefix) + os.sep), f"bfm imported from {where}, not {sys.prefix}"
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    runs = study.make_study(os.path.join(work, "study"), np.random.default_rng(16))
    atlas = os.path.join(work, "atlas.nii.gz")
    lab = study.make_atlas(atlas)
    base = [args.bfm, "convert", "--bids", os.path.join(work, "study"), "--atlas", atlas]

    # Defaults, from a checkpoint released before data_provenance: a warning, then detrend + zscore.
    defaults = convert(base, os.path.join(work, "out_default"), [])
    old = write_checkpoint_config(os.path.join(work, "ckpt_old"))

    def default_run(x, _):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = bfm.preprocess(x, old)
        assert any("data_provenance" in str(w.message) for w in caught), [str(w.message) for w in caught]
        return y
    compare("defaults (config.json without data_provenance: warned)", defaults, runs, lab, default_run)

    # Robust scaling, no detrend, resampled from TR 2 s to 1.5 s: the provenance given as a dict.
    provenance = {"detrend": False, "scaling": "robust", "target_tr": 1.5, "confounds": "none", "scrub_fd": 0.0,
                  "tr": None, "parcel_labels": [1, 2, 3, 4, 5, 6], "atlas": "atlas.nii.gz", "atlas_sha256": ""}
    converted = convert(base, os.path.join(work, "out_robust"),
                        ["--no-detrend", "--scaling", "robust", "--target-tr", "1.5"])
    compare("--no-detrend --scaling robust --target-tr 1.5", converted, runs, lab,
            lambda x, _: bfm.preprocess(x, provenance, tr=study.TR))
    one = next(iter(converted.values()))
    assert len(one) == int((study.T - 1) * study.TR / 1.5) + 1, len(one)

    # Confounds and scrubbing, from a checkpoint folder with data_provenance; the package reads the TSV.
    scrubbed = dict(provenance, detrend=True, scaling="zscore", target_tr=0.0, confounds="motion6",
                    scrub_fd=study.FD, tr=study.TR)
    ckpt = write_checkpoint_config(os.path.join(work, "ckpt"), scrubbed)
    converted = convert(base, os.path.join(work, "out_scrub"), ["--confounds", "motion6", "--scrub", str(study.FD)])
    assert len(converted) == 2, sorted(converted)  # sub-03 is left too short by the scrubbing and skipped
    compare("--confounds motion6 --scrub 0.5 (confounds TSV read by the package)", converted, runs, lab,
            lambda x, conf: bfm.preprocess(x, ckpt, tr=study.TR, confounds=conf), defaults)

    def from_arrays(x, conf):
        table = study.read_confounds(conf)
        return bfm.preprocess(x, ckpt, tr=study.TR, confounds=np.column_stack([table[a] for a in study.AXES]),
                              framewise_displacement=table["framewise_displacement"])
    compare("--confounds motion6 --scrub 0.5 (regressors given as arrays)", converted, runs, lab, from_arrays)

    try:
        bfm.preprocess(np.zeros((study.T, 5)), provenance)
    except ValueError as e:
        assert "5 parcels" in str(e) and "6" in str(e), str(e)
    else:
        raise AssertionError("preprocess accepted 5 parcels for an atlas of 6")
    print("preprocess: all checks passed")


if __name__ == "__main__":
    main()
