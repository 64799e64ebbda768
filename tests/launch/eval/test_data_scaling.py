#!/usr/bin/python3
"""bench/data_scaling.py end to end on a tiny corpus (`bfm synth`, 24 subjects; N = 4 and 8 pre-training subjects, 20
steps each, 3 held-out subjects; the evaluations on 2 ranks where mpirun is there), checked against what its design promises
and against numbers recomputed here from bfm eval's own results.csv files:

- the views: each N trains on the first N of one seeded order of the corpus' training subjects (N = 4's are among
  N = 8's), validation and test splits untouched, the shards linked, not copied;
- what does not read the model (ridge, ridge_pop: the same held-out and labelled subjects at every N) gives the same
  value for every subject at both N, and what does (probe) moves;
- data_scaling_paired.csv's mean paired difference N = 8 - N = 4 and its 95 % t interval equal those recomputed with
  numpy and scipy from the per-fold values;
- data_scaling.csv has a row per N, task, method, fraction and metric, and the plot is a PNG.

    /usr/bin/python3 test_data_scaling.py --bfm build/launch/bfm --workdir DIR
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict

import numpy as np
from scipy import stats

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
SCRIPT = os.path.join(REPO, "bench", "data_scaling.py")


def per_subject(results_csv, task, method, metric, fraction=1.0):
    """subject -> the mean over its folds of one method's metric, from bfm eval's results.csv."""
    folds = defaultdict(list)
    for r in csv.DictReader(open(results_csv)):
        if (r["task"], r["method"], r["metric"]) == (task, method, metric) and abs(float(r["fraction"]) - fraction) < 1e-9:
            v = float(r["value"])
            if np.isfinite(v):
                folds[r["subject"]].append(v)
    return {s: float(np.mean(v)) for s, v in folds.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    out = os.path.join(a.workdir, "ds")
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    ranks = "2" if shutil.which("mpirun") else "1"
    # A corpus of 24 subjects (about 19 training), so that the views of 4 and 8 are proper subsets of it.
    corpus_dir = os.path.join(a.workdir, "corpus")
    subprocess.run([a.bfm, "synth", "--subjects", "24", "--out", corpus_dir, "--parcels", "16", "--minutes", "6",
                    "--studies", "2", "--stim-dim", "8", "--categories", "3", "--clips", "30", "--seed", "3"],
                   check=True, capture_output=True, timeout=300)
    cmd = [sys.executable, SCRIPT, "--out", out, "--bfm", a.bfm, "--corpus", corpus_dir, "--subjects", "4,8",
           "--config", os.path.join(REPO, "configs", "quickstart.toml"),
           "--held-out", "3", "--steps", "20", "--ranks", "1", "--eval-ranks", ranks, "--tasks", "category",
           "--fractions", "1", "--set", "model.n_parcels=16", "--set", "model.stim_dim=8",
           "--set", "train.warmup_steps=5"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"data_scaling.py failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"

    # The views.
    corpus = json.load(open(os.path.join(corpus_dir, "manifest.json")))["split"]
    assert len(corpus["train"]) > 8, corpus["train"]
    views = {n: json.load(open(os.path.join(out, "views", str(n), "manifest.json")))["split"] for n in (4, 8)}
    for n, split in views.items():
        assert len(split["train"]) == n and set(split["train"]) <= set(corpus["train"]), (n, split["train"])
        for part in corpus:
            if part != "train":
                assert split[part] == corpus[part], f"view {n}: split {part} changed"
    assert set(views[4]["train"]) <= set(views[8]["train"]), "N = 4's subjects are not among N = 8's"
    for name in os.listdir(os.path.join(out, "views", "8")):
        if name != "manifest.json":
            assert os.path.islink(os.path.join(out, "views", "8", name)), f"{name} copied, not linked"

    # Model-free methods stay put, the probe moves.
    results = {n: os.path.join(out, "eval", str(n), "results.csv") for n in (4, 8)}
    for method in ("ridge", "ridge_pop"):
        lo, hi = (per_subject(results[n], "category", method, "balanced_accuracy") for n in (4, 8))
        assert lo and lo.keys() == hi.keys(), method
        assert all(lo[s] == hi[s] for s in lo), f"{method} differs between N = 4 and N = 8: {lo} vs {hi}"
    lo, hi = (per_subject(results[n], "category", "probe", "auc") for n in (4, 8))
    assert any(lo[s] != hi[s] for s in lo), f"the probe is the same at N = 4 and N = 8 (one checkpoint for both?): {lo}"
    lo, hi = (per_subject(results[n], "category", "probe", "balanced_accuracy") for n in (4, 8))
    assert lo.keys() == hi.keys() and len(lo) == 3, (lo, hi)

    # The paired difference and its interval, recomputed.
    d = np.array([hi[s] - lo[s] for s in sorted(lo)])
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    row = [r for r in csv.DictReader(open(os.path.join(out, "data_scaling_paired.csv")))
           if (r["task"], r["method"], r["metric"]) == ("category", "probe", "balanced_accuracy")]
    assert len(row) == 1, row
    r = row[0]
    assert (int(r["n_low"]), int(r["n_high"]), int(r["n"])) == (4, 8, 3), r
    assert abs(float(r["mean_difference"]) - d.mean()) < 1e-9, (r, d)
    # The script's t quantile comes from a printed table (3 decimals).
    assert abs(float(r["ci_low"]) - (d.mean() - half)) < 1e-3 * (1 + half), (r, d.mean() - half)
    assert abs(float(r["ci_high"]) - (d.mean() + half)) < 1e-3 * (1 + half), (r, d.mean() + half)

    # The summary CSV and the plot.
    rows = list(csv.DictReader(open(os.path.join(out, "data_scaling.csv"))))
    for n in (4, 8):
        got = [x for x in rows if int(x["n_subjects"]) == n and x["method"] == "probe" and x["metric"] == "balanced_accuracy"]
        assert len(got) == 1 and abs(float(got[0]["mean"]) - np.mean(list((lo if n == 4 else hi).values()))) < 1e-9, got
    with open(os.path.join(out, "data_scaling.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", "data_scaling.png is not a PNG"
    print(f"data_scaling: ok (probe N = 8 - N = 4: {d.mean():+.3f} +- {half:.3f}; evaluations on {ranks} rank(s))")


if __name__ == "__main__":
    main()
