#!/usr/bin/env python3
"""`bfm convert` and `bfm inspect` on a tiny BIDS dataset made here with nibabel: 2 subjects x 2 runs, TRs from
inherited JSON sidecars, one run with an fMRIPrep derivative on another grid, an MNI-like atlas with one parcel out
of reach. The shards are read back with h5py and compared with numpy's own parcel means, detrend and z-score
(tests/io/parcellate_fixtures.py); conversion under mpirun -np 2 gives the same values; inspect --verify passes, then
fails naming the file and run once a byte inside a chunk is flipped; a 3-D scan is one error line naming it; an
interrupted conversion resumes.

    /usr/bin/python3 tests/launch/cli/test_convert.py --bfm build/launch/bfm --workdir DIR
"""
import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys

import h5py
import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "common"))
from scans import make_scan  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def load_fixtures(workdir):
    """parcellate_fixtures.py writes its files into argv[1] when imported; we reuse its numpy functions."""
    fixdir = os.path.join(workdir, "parcellate_fixtures")
    os.makedirs(fixdir, exist_ok=True)
    sys.path.insert(0, os.path.join(HERE, "..", "..", "io"))
    argv, sys.argv = sys.argv, ["parcellate_fixtures.py", fixdir]
    try:
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()):
            return importlib.import_module("parcellate_fixtures"), fixdir
    finally:
        sys.argv = argv


def run(cmd, ok=True, timeout=300):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    if not ok and proc.returncode == 0:
        raise AssertionError(f"{' '.join(cmd)} succeeded, expected an error\n{proc.stderr}")
    return proc


def make_bids(root, rng):
    """2 subjects x 2 runs; TR 2.0 from the root sidecar (sub-01), 1.5 from a session sidecar (sub-02); headers say
    3.0. sub-01 run-1 also has an fMRIPrep derivative on a 2.5 mm grid, which must be the one converted."""
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    json.dump({"Name": "tiny", "BIDSVersion": "1.8.0"}, open(os.path.join(root, "dataset_description.json"), "w"))
    json.dump({"RepetitionTime": 2.0, "TaskName": "rest"}, open(os.path.join(root, "task-rest_bold.json"), "w"))
    a2 = np.diag([-2.0, 2.0, 2.0, 1.0]); a2[:3, 3] = [20.3, -25.7, -15.1]
    a25 = np.diag([2.5, 2.5, 2.5, 1.0]); a25[:3, 3] = [-22.0, -24.0, -14.0]
    scans = {}
    for run, T in ((1, 24), (2, 31)):
        p = f"{root}/sub-01/func/sub-01_task-rest_run-{run}_bold.nii.gz"
        make_scan(p, (20, 22, 18), a2, T, 3.0, rng); scans[("sub-01", run)] = p
    d = f"{root}/derivatives/fmriprep/sub-01/func/sub-01_task-rest_run-1_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    make_scan(d, (17, 19, 15), a25, 24, 3.0, rng); scans[("sub-01", 1)] = d
    # A derivative in another space that must lose to the MNI one.
    make_scan(d.replace("space-MNI152NLin2009cAsym", "space-T1w"), (5, 5, 5), a25, 24, 3.0, rng)
    os.makedirs(f"{root}/sub-02/ses-1/func")
    json.dump({"RepetitionTime": 1.5}, open(f"{root}/sub-02/ses-1/func/sub-02_ses-1_task-motor_bold.json", "w"))
    for run, T in ((1, 20), (2, 26)):
        p = f"{root}/sub-02/ses-1/func/sub-02_ses-1_task-motor_run-{run}_bold.nii.gz"
        make_scan(p, (20, 22, 18), a2, T, 3.0, rng); scans[("sub-02", run)] = p
    return scans


def expected_series(pf, scan_path, atlas_path):
    labels, counts, m = pf.parcel_means(nib.load(scan_path), nib.load(atlas_path))
    return labels, counts, pf.zscore(pf.detrend(np.nan_to_num(m)))


def read_corpus(out):
    """{source: (subject, session, task, tr, series)} over every shard, read with h5py only."""
    runs = {}
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    for s in manifest["shards"]:
        with h5py.File(os.path.join(out, s["file"]), "r") as f:
            assert f.attrs["format"] in ("bfm-shard", b"bfm-shard") and f.attrs["format_version"] == 1
            dec = lambda v: v.decode() if isinstance(v, bytes) else v
            subj_ids = [dec(x) for x in f["subjects/id"][:]]
            for r in range(len(f["runs/offset"])):
                o, n = f["runs/offset"][r], f["runs/length"][r]
                runs[dec(f["runs/source"][r])] = (subj_ids[f["runs/subject"][r]], dec(f["runs/session"][r]),
                                                   dec(f["runs/task"][r]), dec(f["runs/study"][r]),
                                                   float(f["runs/tr"][r]), f["runs/timeseries"][o:o + n])
    return manifest, runs


def check_corpus(pf, out, scans, atlas):
    manifest, runs = read_corpus(out)
    assert manifest["n_runs"] == 4 and manifest["n_subjects"] == 2, manifest
    split = manifest["split"]
    assert sorted(split["train"] + split["validation"] + split["test"]) == ["tiny/sub-01", "tiny/sub-02"], split
    assert sorted(runs) == sorted(os.path.realpath(p) for p in scans.values()), (sorted(runs), scans)
    for (sub, run), path in scans.items():
        subject, session, task, study, tr, x = runs[os.path.realpath(path)]
        assert subject == f"tiny/{sub}" and study == "tiny", (subject, study)
        assert (session, task, tr) == (("", "rest", 2.0) if sub == "sub-01" else ("1", "motor", 1.5)), (session, task, tr)
        labels, counts, want = expected_series(pf, path, atlas)
        assert x.shape == want.shape, (x.shape, want.shape)
        err = np.abs(x - want).max()
        assert err < 2e-4, f"{path}: max |bfm - numpy| = {err}"
        assert np.all(x[:, counts == 0] == 0)
    return runs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--mpirun", default=shutil.which("mpirun"))
    args = ap.parse_args()
    bfm, work = os.path.abspath(args.bfm), os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)
    pf, fixdir = load_fixtures(work)
    rng = np.random.default_rng(11)
    bids = os.path.join(work, "tiny")
    scans = make_bids(bids, rng)
    atlas = os.path.join(fixdir, "atlas_3mm.nii.gz")  # labels 3..18 plus 40, which no scan voxel reaches

    # 1. one process
    out1 = os.path.join(work, "corpus1")
    p = run([bfm, "convert", "--bids", bids, "--atlas", atlas, "--out", out1, "--overwrite"])
    assert "no voxels" in p.stderr and "labels 40" in p.stderr, p.stderr
    runs1 = check_corpus(pf, out1, scans, atlas)
    assert not [f for f in os.listdir(out1) if f.endswith(".tmp")]
    print("convert (1 rank): values, metadata, manifest ok")

    # 1b. parcel names from a label list beside the atlas ("index name" lines, as mricron's aal.nii.txt)
    named = os.path.join(work, "named_atlas.nii.gz")
    shutil.copy(atlas, named)
    with open(os.path.join(work, "named_atlas.nii.txt"), "w") as f:
        f.write("3 Precentral_L 2001\n4 Unused_label 2002\n\n9 Cuneus_L 5001\n40 Far_Away 9000\n")
    out1b = os.path.join(work, "corpus1b")
    run([bfm, "convert", "--bids", bids, "--atlas", named, "--out", out1b, "--overwrite"])
    with h5py.File(os.path.join(out1b, "shard-00000.h5"), "r") as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["parcels/labels"][...]]
    listed = {3: "Precentral_L", 4: "Unused_label", 9: "Cuneus_L", 40: "Far_Away"}
    present = sorted(int(v) for v in np.unique(np.asarray(nib.load(atlas).dataobj)) if v != 0)
    want = [listed.get(v, f"label-{v}") for v in present]
    assert names == want, names
    print("convert: parcel names from the atlas's label list")

    # 2. inspect
    p = run([bfm, "inspect", out1])
    for needle in ("2 subjects", "4 runs", "101 TRs", "7 parcels", "tiny", "rest", "motor"):
        assert needle in p.stdout, (needle, p.stdout)
    j = json.loads(run([bfm, "inspect", out1, "--json"]).stdout)
    assert (j["subjects"], j["runs"], j["timepoints"], j["parcels"]) == (2, 4, 101, 7), j
    assert abs(j["hours"] - (55 * 2.0 + 46 * 1.5) / 3600) < 1e-9, j
    assert j["per_study"]["tiny"]["trs"] == [1.5, 2.0], j
    print("inspect: counts ok")

    # 3. two ranks, one subject per shard: the same values
    out2 = os.path.join(work, "corpus2")
    mpi = [args.mpirun, "-np", "2", "--oversubscribe"]
    run(mpi + [bfm, "convert", "--bids", bids, "--atlas", atlas, "--out", out2, "--overwrite",
               "--subjects-per-shard", "1"])
    assert sorted(f for f in os.listdir(out2)) == ["manifest.json", "shard-00000.h5", "shard-00001.h5"]
    runs2 = check_corpus(pf, out2, scans, atlas)
    for k in runs1:
        assert np.array_equal(runs1[k][5], runs2[k][5]), k
    print("convert (2 ranks): same values")

    # 4. verify: clean, then a flipped byte inside a chunk of shard-00001.h5 (sub-02's runs)
    run([bfm, "inspect", out2, "--verify"])
    run(mpi + [bfm, "inspect", out2, "--verify"])
    bad = os.path.join(out2, "shard-00001.h5")
    with h5py.File(bad, "r") as f:
        info = f["runs/timeseries"].id.get_chunk_info(0)
        first_run_len = int(f["runs/length"][0])
    assert first_run_len < 256  # both runs share chunk 0
    with open(bad, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        b = fh.read(1)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    for cmd in ([bfm, "inspect", out2, "--verify"], mpi + [bfm, "inspect", out2, "--verify"]):
        p = run(cmd, ok=False)
        assert "shard-00001.h5" in p.stderr and "run 0" in p.stderr and "run 1" in p.stderr, p.stderr
        assert "shard-00000.h5" not in p.stderr, p.stderr
    print("verify: a flipped byte is reported by file and run")

    # 5. a 3-D scan: one error line naming it
    flat = os.path.join(work, "flat_3d.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), flat)
    p = run([bfm, "convert", flat, "--atlas", atlas, "--out", os.path.join(work, "corpus3"), "--overwrite"], ok=False)
    errors = [l for l in p.stderr.splitlines() if "error" in l]
    assert len(errors) == 1 and flat in errors[0] and "4-D" in errors[0], p.stderr
    assert not os.path.exists(os.path.join(work, "corpus3", "shard-00000.h5"))
    print("3-D scan: one error line naming it")

    # 6. resume: a shard lost and a half-written .tmp left behind; then a conversion killed mid-way
    m0 = os.stat(os.path.join(out2, "shard-00000.h5")).st_mtime_ns
    os.remove(bad)
    os.remove(os.path.join(out2, "manifest.json"))
    open(bad + ".tmp", "wb").write(b"half a shard")
    p = run([bfm, "convert", "--bids", bids, "--atlas", atlas, "--out", out2, "--subjects-per-shard", "1"])
    assert "resumed" in p.stderr, p.stderr
    assert os.stat(os.path.join(out2, "shard-00000.h5")).st_mtime_ns == m0  # not rewritten
    assert sorted(os.listdir(out2)) == ["manifest.json", "shard-00000.h5", "shard-00001.h5"]
    check_corpus(pf, out2, scans, atlas)
    run([bfm, "inspect", out2, "--verify"])
    out4 = os.path.join(work, "corpus4")
    shutil.rmtree(out4, ignore_errors=True)
    proc = subprocess.Popen([bfm, "convert", "--bids", bids, "--atlas", atlas, "--out", out4, "--subjects-per-shard", "1"],
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # kill it as soon as it has written its first run
        if "runs," in line:
            proc.kill()
            break
    if proc.wait() != 0:  # killed before it finished (it nearly always is): no manifest yet
        assert not os.path.exists(os.path.join(out4, "manifest.json"))
    for f in os.listdir(out4):  # what a killed conversion leaves named shard-*.h5 is whole
        if f.endswith(".h5"):
            h5py.File(os.path.join(out4, f), "r").close()
    run([bfm, "convert", "--bids", bids, "--atlas", atlas, "--out", out4, "--subjects-per-shard", "1"])
    check_corpus(pf, out4, scans, atlas)
    run([bfm, "inspect", out4, "--verify"])
    print("resume: interrupted conversions finish into a valid corpus")

    # 7. real scans (nitime, scanner space) given as files, with a label image on their own grid: TR from the header
    # (1.35 s) for one, from a same-name sidecar for the other; resampled to 2 s and robust-scaled
    nitime = "/usr/lib/python3/dist-packages/nitime/data"
    real = os.path.join(work, "real")
    shutil.rmtree(real, ignore_errors=True)
    os.makedirs(real)
    shutil.copy(os.path.join(nitime, "fmri2.nii.gz"), real)
    json.dump({"RepetitionTime": 2.7}, open(os.path.join(real, "fmri2.json"), "w"))
    own = os.path.join(fixdir, "atlas_real_grid.nii.gz")
    out5 = os.path.join(work, "corpus5")
    inputs = [os.path.join(nitime, "fmri1.nii.gz"), os.path.join(real, "fmri2.nii.gz")]
    run([bfm, "convert", *inputs, "--atlas", own, "--out", out5, "--overwrite", "--study", "nitime",
         "--target-tr", "2.0", "--scaling", "robust"])
    manifest, runs = read_corpus(out5)
    assert manifest["n_subjects"] == 2 and manifest["n_runs"] == 2, manifest
    for path, tr in zip(inputs, (1.35, 2.7)):
        subject, session, task, study, got_tr, x = runs[path]
        assert (subject, study, got_tr) == ("nitime/" + os.path.basename(path)[:-7], "nitime", 2.0), runs[path][:5]
        labels, counts, m = pf.parcel_means(nib.load(path), nib.load(own))
        want = pf.robust(pf.resample(pf.detrend(np.nan_to_num(m)), tr, 2.0))
        assert x.shape == want.shape, (x.shape, want.shape)
        err = np.abs(x - want).max()
        assert err < 5e-4, f"{path}: max |bfm - numpy| = {err}"
    # ... and a real atlas (AAL, MNI space) that does not overlap them: one error line naming both files
    aal = "/usr/share/mricron/templates/aal.nii.gz"
    if os.path.exists(aal):
        p = run([bfm, "convert", inputs[0], "--atlas", aal, "--out", os.path.join(work, "corpus6"), "--overwrite"],
                ok=False)
        errors = [l for l in p.stderr.splitlines() if "error" in l]
        assert len(errors) == 1 and "fmri1.nii.gz" in errors[0], p.stderr
    print("real scans: values (resampled, robust) and the non-overlapping atlas error ok")
    print("ok")


if __name__ == "__main__":
    main()
