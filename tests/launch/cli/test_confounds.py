#!/usr/bin/env python3
"""`bfm convert --bids --confounds ... --scrub FD` on a small fMRIPrep-like derivative study, checked against an
independent computation here (no bfm code computes what is expected):

- every cleaned parcel series, for --confounds motion6, motion24 and a FILE.json: numpy's parcel means by the atlas
  (the scan and the atlas share a grid), then ONE numpy.linalg.lstsq on [confounds, 1, t] and the residual z-scored
  per parcel (ddof 0, as bfm's --scaling zscore); and nilearn.signal.clean(detrend=True, confounds=...) too:
  nilearn is not a Debian package, so with --nilearn-venv DIR (as CTest runs it) the test installs nilearn from PyPI
  into a venv there that sees the system's packages (once; numpy pinned to the system's) and runs itself in it,
  where nilearn is then required; without the option, nilearn is used where `import nilearn` works;
- the older fMRIPrep name *_desc-confounds_regressors.tsv is found as well as *_desc-confounds_timeseries.tsv;
- --scrub: the volumes whose framewise_displacement exceeds FD are absent (one with FD equal to it is kept), the
  fit uses the kept volumes only (the line over their acquisition indices), every kept row keeps its own label (each
  volume is its own event, label value = volume index), and a run left under --scrub-min-length is skipped;
- --scrub with --target-tr is refused; a confounds file with fewer rows, a missing column or a non-numeric cell:
  exit status 2, one error line naming FILE:LINE, and no output folder;
- the shards' preprocessing text names the confounds and the scrubbing.

    /usr/bin/python3 tests/launch/cli/test_confounds.py --bfm build/launch/bfm --workdir DIR [--nilearn-venv DIR]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import h5py
import nibabel as nib
import numpy as np

TR = 2.0
T = 80
SHAPE = (6, 6, 4)
AXES = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
MOTION24 = AXES + [a + s for s in ("_derivative1", "_power2", "_derivative1_power2") for a in AXES]
ACOMPCOR = [f"a_comp_cor_{i:02d}" for i in range(8)]
JSON_COLUMNS = ["trans_x", "a_comp_cor_00", "a_comp_cor_01", "csf", "white_matter"]
FD = 0.5
HIGH_FD = {"sub-01": [7, 30, 31, 32, 60], "sub-02": [], "sub-03": list(range(5, 30))}  # sub-03: 55 left < 64
AT_THRESHOLD = {"sub-02": [40]}  # FD exactly FD: kept ("exceeds")
SPACE = "space-MNI152NLin2009cAsym"


def run(cmd, ok=True):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    if not ok and proc.returncode == 0:
        raise AssertionError(f"{' '.join(cmd)} succeeded, expected an error\n{proc.stderr}")
    return proc


def dec(v):
    return v.decode() if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------------------------------------------- the study
def confounds_table(rng, sub):
    """fMRIPrep-like columns as strings: motion as random walks, their derivatives (n/a in row 0), powers, aCompCor,
    csf, white_matter and framewise_displacement (n/a in row 0)."""
    cols = {}
    for a in AXES:
        cols[a] = np.cumsum(rng.normal(0, 0.05, T))
    for a in AXES:
        d = np.diff(cols[a], prepend=np.nan)
        cols[a + "_derivative1"] = d
        cols[a + "_power2"] = cols[a] ** 2
        cols[a + "_derivative1_power2"] = d ** 2
    for c in ACOMPCOR:
        cols[c] = rng.normal(0, 1, T)
    cols["csf"] = rng.normal(0, 1, T)
    cols["white_matter"] = rng.normal(0, 1, T)
    fd = rng.uniform(0.05, 0.3, T)
    fd[HIGH_FD[sub]] = rng.uniform(0.6, 1.5, len(HIGH_FD[sub]))
    fd[AT_THRESHOLD.get(sub, [])] = FD
    fd[0] = np.nan
    cols["framewise_displacement"] = fd
    return cols


def write_confounds(path, cols):
    names = list(cols)
    with open(path, "w") as f:
        f.write("\t".join(names) + "\n")
        for t in range(T):
            f.write("\t".join("n/a" if np.isnan(cols[n][t]) else repr(float(cols[n][t])) for n in names) + "\n")


def make_study(root, rng):
    """Three subjects, one task-movie run each, as fMRIPrep derivatives; each voxel is a baseline, a drift, a mix of
    the subject's confounds and noise, so that regressing them out matters. Returns {sub: (scan, confounds path)}."""
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    json.dump({"Name": "conf", "BIDSVersion": "1.8.0"}, open(os.path.join(root, "dataset_description.json"), "w"))
    json.dump({"RepetitionTime": TR, "TaskName": "movie"}, open(os.path.join(root, "task-movie_bold.json"), "w"))
    # Each volume is its own event, named v000...: label value = volume index, so labels prove alignment.
    with open(os.path.join(root, "task-movie_events.tsv"), "w") as f:
        f.write("onset\tduration\ttrial_type\n")
        for t in range(T):
            f.write(f"{t * TR}\t{TR}\tv{t:03d}\n")
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-9, -9, -6]
    runs = {}
    for sub in ("sub-01", "sub-02", "sub-03"):
        func = f"{root}/derivatives/fmriprep/{sub}/func"
        os.makedirs(func)
        cols = confounds_table(rng, sub)
        mix = np.stack([np.nan_to_num(cols[c]) for c in MOTION24 + ACOMPCOR[:5] + ["csf", "white_matter"]], 1)
        weights = rng.normal(0, 20, size=SHAPE + (mix.shape[1],))
        data = (rng.normal(500, 50, size=SHAPE + (1,))
                + np.linspace(0, 1, T) * rng.normal(0, 30, size=SHAPE + (1,))
                + weights @ mix.T + rng.normal(0, 5, size=SHAPE + (T,))).astype(np.float32)
        img = nib.Nifti1Image(data, affine)
        img.set_sform(affine, code=4)
        img.header.set_xyzt_units("mm", "sec")
        img.header.set_zooms((3.0, 3.0, 3.0, TR))
        scan = f"{func}/{sub}_task-movie_{SPACE}_desc-preproc_bold.nii.gz"
        nib.save(img, scan)
        # sub-02 has the older fMRIPrep name; a file of another task beside it must not be taken.
        suffix = "regressors" if sub == "sub-02" else "timeseries"
        conf = f"{func}/{sub}_task-movie_desc-confounds_{suffix}.tsv"
        write_confounds(conf, cols)
        if sub == "sub-02":
            write_confounds(f"{func}/{sub}_task-rest_desc-confounds_timeseries.tsv", confounds_table(rng, sub))
        runs[sub] = (scan, conf)
    return runs


def make_atlas(path):
    lab = np.zeros(SHAPE, np.int16)
    for i in range(6):
        for j in range(6):
            lab[i, j, :] = 1 + i // 2 + 3 * (j // 3)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-9, -9, -6]
    img = nib.Nifti1Image(lab, affine)
    img.set_sform(affine, code=4)
    nib.save(img, path)
    return lab


# ------------------------------------------------------------------------------------------- expected, in numpy
def read_confounds(path):
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return {n: np.array([0.0 if r[i] == "n/a" else float(r[i]) for r in rows]) for i, n in enumerate(header)}


def parcel_means(scan, lab):
    data = np.asarray(nib.load(scan).dataobj, dtype=np.float64)
    labels = sorted(set(np.unique(lab)) - {0})
    return np.stack([data[lab == p].mean(0) for p in labels], 1)  # [T, P]


def expected_series(x, conf, keep):
    """One least squares on [confounds, 1, t] over the kept volumes (t their acquisition index), z-scored, ddof 0."""
    t = np.nonzero(keep)[0].astype(np.float64)
    design = np.column_stack([conf[keep], np.ones(len(t)), t])
    y = x[keep]
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    r = y - design @ beta
    return (r - r.mean(0)) / r.std(0)


def nilearn_series(x, conf):
    from nilearn import signal
    r = signal.clean(x, detrend=True, standardize=False, confounds=conf, standardize_confounds=True, filter=False)
    return (r - r.mean(0)) / r.std(0)


def read_corpus(out):
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    runs, texts = {}, set()
    for s in manifest["shards"]:
        with h5py.File(os.path.join(out, s["file"]), "r") as f:
            texts.add(dec(f.attrs["preprocessing"]))
            names = [dec(v) for v in f["runs/label_names"][:]]
            for r in range(len(f["runs/offset"])):
                o, n = f["runs/offset"][r], f["runs/length"][r]
                runs[dec(f["runs/source"][r])] = (f["runs/timeseries"][o:o + n].astype(np.float64),
                                                  f["runs/label"][o:o + n], names)
    assert len(texts) == 1, texts
    return runs, texts.pop()


# ---------------------------------------------------------------------------------------------------- the checks
def check_cleaned(bfm, base, work, runs, lab, spec, columns, use_nilearn):
    out = os.path.join(work, "out_" + os.path.basename(spec).replace(".json", ""))
    shutil.rmtree(out, ignore_errors=True)
    run(base + ["--out", out, "--confounds", spec])
    got, text = read_corpus(out)
    assert f"confounds {spec}" in text and columns[-1] in text and "one least squares" in text, text
    worst = 0.0
    for sub, (scan, conf_path) in runs.items():
        series, label, names = got[os.path.realpath(scan)]
        x = parcel_means(scan, lab)
        conf = read_confounds(conf_path)
        c = np.column_stack([conf[n] for n in columns])
        want = expected_series(x, c, np.ones(T, bool))
        assert series.shape == want.shape, (sub, series.shape, want.shape)
        worst = max(worst, float(np.abs(series - want).max()))
        # Regressing the confounds out matters: the series differs from the detrended-only one.
        assert np.abs(series - expected_series(x, c[:, :0], np.ones(T, bool))).max() > 0.1, sub
        if use_nilearn:
            assert np.allclose(series, nilearn_series(x, c), atol=2e-4), (sub, spec, "nilearn")
        assert [names[v] for v in label] == [f"v{t:03d}" for t in range(T)], sub
    assert worst < 2e-4, (spec, worst)
    print(f"--confounds {os.path.basename(spec)}: {len(columns)} columns, every parcel series within {worst:.1e} "
          f"of numpy lstsq{' and of nilearn.signal.clean' if use_nilearn else ''}")


def check_scrub(bfm, base, work, runs, lab):
    out = os.path.join(work, "out_scrub")
    shutil.rmtree(out, ignore_errors=True)
    p = run(base + ["--out", out, "--confounds", "motion6", "--scrub", str(FD)])
    got, text = read_corpus(out)
    assert "framewise_displacement > 0.5 dropped (not interpolated" in text, text
    assert "sub-03" in p.stderr and "skipped" in p.stderr and "55 volumes" in p.stderr, p.stderr
    assert os.path.realpath(runs["sub-03"][0]) not in got, sorted(got)
    for sub in ("sub-01", "sub-02"):
        scan, conf_path = runs[sub]
        series, label, names = got[os.path.realpath(scan)]
        keep = np.ones(T, bool)
        keep[HIGH_FD[sub]] = False
        kept_idx = np.nonzero(keep)[0]
        assert series.shape[0] == T - len(HIGH_FD[sub]), (sub, series.shape)
        # Each kept row's label is its own volume's: the labels of dropped volumes went with them.
        assert [names[v] for v in label] == [f"v{t:03d}" for t in kept_idx], (sub, label)
        conf = read_confounds(conf_path)
        want = expected_series(parcel_means(scan, lab), np.column_stack([conf[n] for n in AXES]), keep)
        err = float(np.abs(series - want).max())
        assert err < 2e-4, (sub, err)
    print(f"--scrub {FD}: volumes {HIGH_FD['sub-01']} of sub-01 dropped with their labels, sub-02's FD = {FD} kept, "
          "sub-03 (55 volumes left) skipped; cleaned series match numpy over the kept volumes")
    p = run(base + ["--out", out + "_tr", "--scrub", str(FD), "--target-tr", "1.0"], ok=False)
    assert p.returncode == 2 and "--scrub and --target-tr" in p.stderr, p.stderr
    assert not os.path.exists(out + "_tr")


def check_bad_input(bfm, base, work, runs):
    conf = runs["sub-01"][1]
    good = open(conf).read()
    lines = good.splitlines()
    header = lines[0].split("\t")
    bad_cell = lines[4].split("\t")
    bad_cell[header.index("trans_z")] = "1,5"
    cases = [
        ("fewer rows", "\n".join(lines[:-1]) + "\n", f"{conf}:{T}:", "rows"),
        ("missing column", good.replace("trans_y\t", "trans_q\t", 1), f"{conf}:1:", "trans_y"),
        ("not a number", "\n".join(lines[:4] + ["\t".join(bad_cell)] + lines[5:]) + "\n", f"{conf}:5:",
         "not a number"),
    ]
    fresh = os.path.join(work, "bad_fresh")
    for what, text, where, needle in cases:
        open(conf, "w").write(text)
        try:
            shutil.rmtree(fresh, ignore_errors=True)
            p = run(base + ["--out", fresh, "--confounds", "motion6"], ok=False)
            errors = [l for l in p.stderr.splitlines() if l.startswith("bfm: error")]
            assert p.returncode == 2 and len(errors) == 1, (what, p.returncode, p.stderr)
            assert where in errors[0] and needle in errors[0], (what, where, errors)
            assert not os.path.exists(fresh), (what, os.listdir(fresh))
        finally:
            open(conf, "w").write(good)
        print(f"bad input: {what}: exit 2, one line naming {os.path.basename(conf)}{where[len(conf):]}")


NILEARN = "nilearn==0.10.3"  # reads Debian 12's scikit-learn 1.2, scipy 1.10, pandas 1.5; signal.clean as used here


def run_in_nilearn_venv(venv):
    """Installs NILEARN into venv (a venv seeing the system's packages, numpy pinned to the system's) unless it is
    there, then runs this script again in it with --require-nilearn."""
    python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".bfm-nilearn")
    want = f"{NILEARN} numpy=={np.__version__}"
    if not (os.path.exists(stamp) and open(stamp).read() == want):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
        p = subprocess.run([python, "-m", "pip", "install", "-q", *want.split()], capture_output=True, text=True,
                           timeout=600)
        if p.returncode != 0:
            sys.exit(f"installing {want} into {venv} failed (PyPI needed the first time):\n{p.stdout}{p.stderr}")
        open(stamp, "w").write(want)
    argv = [a for i, a in enumerate(sys.argv[1:]) if a != "--nilearn-venv" and sys.argv[i] != "--nilearn-venv"]
    os.execv(python, [python, os.path.abspath(__file__), *argv, "--require-nilearn"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--nilearn-venv", help="install nilearn into this venv and run there (needs PyPI once)")
    ap.add_argument("--require-nilearn", action="store_true")
    args = ap.parse_args()
    if args.nilearn_venv:
        run_in_nilearn_venv(args.nilearn_venv)
    os.makedirs(args.workdir, exist_ok=True)
    rng = np.random.default_rng(16)
    study = os.path.join(args.workdir, "conf")
    runs = make_study(study, rng)
    atlas = os.path.join(args.workdir, "atlas.nii.gz")
    lab = make_atlas(atlas)
    try:
        import nilearn  # noqa: F401
        use_nilearn = True
    except ImportError:
        if args.require_nilearn:
            sys.exit(f"nilearn does not import in {sys.executable}")
        use_nilearn = False
        print("nilearn is not installed: the cleaned series are checked against numpy only")
    base = [args.bfm, "convert", "--bids", study, "--atlas", atlas]
    spec_file = os.path.join(args.workdir, "confounds.json")
    json.dump({"columns": JSON_COLUMNS}, open(spec_file, "w"))
    for spec, columns in (("motion6", AXES), ("motion24", MOTION24), ("acompcor", ACOMPCOR[:5]),
                          (spec_file, JSON_COLUMNS)):
        check_cleaned(args.bfm, base, args.workdir, runs, lab, spec, columns, use_nilearn)
    check_scrub(args.bfm, base, args.workdir, runs, lab)
    check_bad_input(args.bfm, base, args.workdir, runs)
    print("confounds: all checks passed")


if __name__ == "__main__":
    main()
