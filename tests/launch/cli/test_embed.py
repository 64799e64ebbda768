#!/usr/bin/env python3
"""Provenance carried and checked, and `bfm embed`, on a small BIDS study written here (nibabel scans, an atlas):

- `bfm convert --no-detrend` records the atlas file's SHA-256 (checked against hashlib), its parcel labels and the
  preprocessing options in every shard; `bfm pretrain` on the corpus copies them into the released config.json
  (data_provenance);
- `bfm embed --checkpoint REL SCAN.nii.gz --atlas A`: the scan converted with the checkpoint's preprocessing (here NO
  detrend: the default would detrend, so following the provenance is visible), its windows embedded; the result
  equals `bfm forward` of the same windows built here independently (numpy parcel means from nibabel, z-scored
  ddof 0, cut every `window` points), and the subject's embedding is their mean;
- `mpirun -np 2 bfm embed --corpus` gives the same numbers as one rank, with --csv the same table;
- data of another atlas (same parcel count, other file) is refused by embed, finetune and eval with one line naming both
  atlases, exit 2; data with another scaling is embedded with a warning that names the step.

    /usr/bin/python3 tests/launch/cli/test_embed.py --bfm build/launch/bfm --mpirun mpirun --workdir DIR
"""
import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys

import h5py
import nibabel as nib
import numpy as np

TR = 2.0
T = 70
SHAPE = (6, 6, 4)
WINDOW = 16
MODEL = ["--set", "model.n_parcels=6", "--set", f"model.window={WINDOW}", "--set", "model.patch_len=8",
         "--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.n_layers=1",
         "--set", "model.decoder.d_model=8", "--set", "model.decoder.n_heads=2", "--set", "model.decoder.n_layers=1"]


def run(cmd, ok=True, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    if ok and p.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\nexit {p.returncode}\n{p.stderr[-3000:]}")
    return p


def dec(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def affine():
    a = np.diag([3.0, 3.0, 3.0, 1.0])
    a[:3, 3] = [-9, -9, -6]
    return a


def save(data, path, tr=None):
    img = nib.Nifti1Image(data, affine())
    img.set_sform(affine(), code=4)
    if tr is not None:
        img.header.set_xyzt_units("mm", "sec")
        img.header.set_zooms((3.0, 3.0, 3.0, tr))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(img, path)


def scan_data(rng):
    """Six regions with their own slow signals, a per-voxel baseline, a strong linear drift, and noise."""
    t = np.arange(T)
    sources = np.stack([np.sin(2 * np.pi * t / (9 + 3 * k) + k) for k in range(6)], 1)  # [T, 6]
    region = make_labels() - 1
    data = rng.normal(500, 40, size=SHAPE + (1,)) + 30 * np.linspace(0, 1, T) * rng.normal(1, 0.2, size=SHAPE + (1,))
    data = data + 20 * sources[:, region].transpose(1, 2, 3, 0) + rng.normal(0, 5, size=SHAPE + (T,))
    return data.astype(np.float32)


def make_labels(order=(1, 2, 3, 4, 5, 6)):
    lab = np.zeros(SHAPE, np.int16)
    for i in range(6):
        for j in range(6):
            lab[i, j, :] = order[i // 2 + 3 * (j // 3)]
    return lab


def make_study(root, rng, subjects):
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    json.dump({"Name": "embed", "BIDSVersion": "1.8.0"}, open(os.path.join(root, "dataset_description.json"), "w"))
    json.dump({"RepetitionTime": TR, "TaskName": "rest"}, open(os.path.join(root, "task-rest_bold.json"), "w"))
    for k in range(subjects):
        save(scan_data(rng), f"{root}/sub-{k:02d}/func/sub-{k:02d}_task-rest_bold.nii.gz", TR)


def expected_windows(scan, lab):
    """numpy: parcel means (labels in ascending order), z-scored per parcel (ddof 0), no detrend; windows from 0."""
    data = np.asarray(nib.load(scan).dataobj, dtype=np.float64)
    x = np.stack([data[lab == p].mean(0) for p in sorted(set(np.unique(lab)) - {0})], 1)
    x = (x - x.mean(0)) / x.std(0)
    starts = list(range(0, T - WINDOW + 1, WINDOW))
    return np.stack([x[s:s + WINDOW] for s in starts]).astype(np.float32), starts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    bfm, w = os.path.abspath(a.bfm), os.path.abspath(a.workdir)
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    os.environ["OMP_NUM_THREADS"] = "1"
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(w)
    rng = np.random.default_rng(7)
    atlas, other_atlas = f"{w}/atlas.nii.gz", f"{w}/other_atlas.nii.gz"
    save(make_labels(), atlas)
    save(make_labels((2, 1, 3, 4, 6, 5)), other_atlas)  # the same six labels on other regions
    make_study(f"{w}/study", rng, 8)

    # ---- provenance in the shards and in the released config.json
    corpus = f"{w}/corpus"
    run([bfm, "convert", "--bids", f"{w}/study", "--atlas", atlas, "--out", corpus, "--no-detrend"])
    sha = hashlib.sha256(open(atlas, "rb").read()).hexdigest()
    shards = json.load(open(f"{corpus}/manifest.json"))["shards"]
    with h5py.File(f"{corpus}/{shards[0]['file']}", "r") as f:
        assert dec(f.attrs["atlas_sha256"]) == sha, dec(f.attrs["atlas_sha256"])
        labels = [dec(v) for v in f["parcels/labels"][:]]
        options = json.loads(dec(f.attrs["preprocessing_options"]))
    assert options["detrend"] is False and options["scaling"] == "zscore" and options["target_tr"] == 0, options
    run([bfm, "pretrain", *MODEL, "--set", "data.source=corpus", "--set", f"data.corpus={corpus}",
         "--set", "data.stride=4", "--set", "train.steps=20", "--set", "train.batch_size=4", "--out", f"{w}/run"])
    release = f"{w}/run/release"
    prov = json.load(open(f"{release}/config.json"))["data_provenance"]
    assert prov["atlas_sha256"] == sha and prov["parcel_labels"] == labels and prov["atlas"] == "atlas", prov
    assert prov["detrend"] is False and prov["scaling"] == "zscore" and prov["tr"] == TR, prov

    # ---- bfm embed on one scan equals bfm forward on the same windows built here
    scan = f"{w}/new/sub-99_task-rest_bold.nii.gz"
    save(scan_data(rng), scan, TR)
    run([bfm, "embed", "--checkpoint", release, scan, "--atlas", atlas, "--out", f"{w}/emb_scan"])
    x, starts = expected_windows(scan, make_labels())
    with h5py.File(f"{w}/fwd_in.h5", "w") as f:
        f["x"] = x
    run([bfm, "forward", "--checkpoint", release, "--input", f"{w}/fwd_in.h5", "--output", f"{w}/fwd_out.h5",
         "--device", "cpu"])
    with h5py.File(f"{w}/fwd_out.h5", "r") as f:
        pooled = f["pooled"][:]
    with h5py.File(f"{w}/emb_scan/embeddings.h5", "r") as f:
        got = f["windows/embedding"][:]
        assert list(f["windows/start"][:]) == starts, f["windows/start"][:]
        assert np.allclose(f["windows/start_s"][:], np.array(starts) * TR)
        assert [dec(s) for s in f["runs/source"][:]] == [scan]
        subject = f["subjects/embedding"][:]
        assert f["subjects/windows"][0] == len(starts)
    assert got.shape == pooled.shape, (got.shape, pooled.shape)
    err = np.abs(got - pooled).max() / np.abs(pooled).max()
    assert err < 1e-4, f"embed vs forward: relative difference {err}"
    assert np.allclose(subject[0], got.astype(np.float64).mean(0), atol=1e-5)
    # The Python package reads the same provenance from the released folder (bfm.preprocess: no detrend here).
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "python"))
    import bfm as bfm_py
    data = np.asarray(nib.load(scan).dataobj, dtype=np.float64)
    means = np.stack([data[make_labels() == p].mean(0) for p in range(1, 7)], 1)
    assert np.allclose(bfm_py.preprocess(means, release, tr=TR)[:len(starts) * WINDOW], x.reshape(-1, 6), atol=1e-5)
    # Followed the checkpoint's provenance: with the default detrend the numbers would differ.
    y = x.reshape(-1, 6)
    assert np.abs(y[:, 0] - np.linspace(y[0, 0], y[-1, 0], len(y))).max() > 0.1

    # ---- over two ranks, and the CSV
    run([bfm, "embed", "--checkpoint", release, "--corpus", corpus, "--out", f"{w}/emb1", "--csv", "--stride", "7"])
    run([a.mpirun, "--oversubscribe", "-np", "2", bfm, "embed", "--checkpoint", release, "--corpus", corpus,
         "--out", f"{w}/emb2", "--stride", "7"])
    with h5py.File(f"{w}/emb1/embeddings.h5", "r") as f1, h5py.File(f"{w}/emb2/embeddings.h5", "r") as f2:
        e1 = f1["windows/embedding"][:]
        assert np.array_equal(e1, f2["windows/embedding"][:])
        assert np.array_equal(f1["subjects/embedding"][:], f2["subjects/embedding"][:])
        assert e1.shape[0] == 8 * len(range(0, T - WINDOW + 1, 7)), e1.shape
        subjects = [dec(s) for s in f1["subjects/id"][:]]
    rows = list(csv.reader(open(f"{w}/emb1/windows.csv")))
    assert rows[0][:5] == ["subject", "run", "source", "start", "start_s"] and len(rows) == e1.shape[0] + 1
    assert np.allclose(np.array(rows[1][5:], float), e1[0], rtol=1e-6, atol=1e-7)
    srows = list(csv.reader(open(f"{w}/emb1/subjects.csv")))
    assert [r[0] for r in srows[1:]] == subjects

    # ---- another atlas: refused, naming both; another scaling: a warning naming the step
    run([bfm, "convert", "--bids", f"{w}/study", "--atlas", other_atlas, "--out", f"{w}/corpus_other", "--no-detrend"])
    for cmd in ([bfm, "embed", "--checkpoint", release, "--corpus", f"{w}/corpus_other", "--out", f"{w}/emb_bad"],
                [bfm, "finetune", "--checkpoint", release, "--corpus", f"{w}/corpus_other", "--task", "category",
                 "--out", f"{w}/ft_bad"],
                [bfm, "eval", "--checkpoint", release, "--corpus", f"{w}/corpus_other", "--out", f"{w}/eval_bad"]):
        p = run(cmd, ok=False)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, (cmd[1], p.returncode, p.stderr[-2000:])
        assert "other_atlas" in lines[0] and "is not the checkpoint's atlas atlas" in lines[0], lines[0]
    assert not any(os.path.exists(f"{w}/{d}") for d in ("emb_bad/embeddings.h5", "ft_bad", "eval_bad"))
    run([bfm, "convert", "--bids", f"{w}/study", "--atlas", atlas, "--out", f"{w}/corpus_robust", "--no-detrend",
         "--scaling", "robust"])
    p = run([bfm, "embed", "--checkpoint", release, "--corpus", f"{w}/corpus_robust", "--out", f"{w}/emb_robust"])
    assert 'warning: ' in p.stderr and 'scaling is "robust", the checkpoint\'s corpus had "zscore"' in p.stderr, \
        p.stderr[-2000:]
    # ---- bad input: a NaN in the corpus is named by shard, run, time point and parcel; nothing is written
    shutil.copytree(corpus, f"{w}/corpus_nan")
    with h5py.File(f"{w}/corpus_nan/{shards[0]['file']}", "r+") as f:
        f["runs/timeseries"][5, 2] = np.nan  # run 0 starts at row 0
    p = run([bfm, "embed", "--checkpoint", release, "--corpus", f"{w}/corpus_nan", "--out", f"{w}/emb_nan"], ok=False)
    line = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 2 and shards[0]["file"] in line and "time point 5, parcel 2" in line, (p.returncode, line)
    assert not os.path.exists(f"{w}/emb_nan/embeddings.h5")
    print("embed and provenance: all checks passed")


if __name__ == "__main__":
    main()
