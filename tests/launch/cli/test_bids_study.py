#!/usr/bin/env python3
"""`bfm convert --bids` on a study with task events, a stimulus feature table and participants.tsv, checked against
numpy here (no bfm code is called to compute what is expected):

- every time point's label, stimulus index and stimulus embedding: the event whose [onset, onset + duration) holds
  k * TR + median(SliceTiming) (latest onset where events overlap), label names sorted over the whole study; events
  found by BIDS inheritance (one subject's events come from the dataset root); also after --target-tr, and over
  --part jobs (the same label mapping in every part);
- every subject's age, sex, diagnosis (--diagnosis group=patient) and numeric scores from participants.tsv;
- bfm inspect shows label names with counts, the stimuli and the traits;
- bad input (events without onset, a negative duration, an event past the run's end, a non-numeric onset, a
  stimulus missing from the table, a SliceTiming in ms, participants listed twice, a feature row with another number
  of cells, a feature that is not a number): exit status 2, one error line naming the file and line, and the output
  folder as it was;
- end to end: the corpus pre-trained for a few steps, then `bfm eval` has category, embedding, retrieval, encoding and
  trait rows.

    /usr/bin/python3 tests/launch/cli/test_bids_study.py --bfm build/launch/bfm --workdir DIR
"""
import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys

import h5py
import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "common"))
from scans import make_scan  # noqa: E402

TR = 1.5
SLICE_TIMING = [0.0, 0.5, 1.0, 0.25, 0.75, 1.25]  # median (0.5 + 0.75) / 2 = 0.625 s
SLICE_REF = float(np.median(SLICE_TIMING))
T_MOVIE = 64
N_SUBJECTS = 14
NAMES = ["face", "house", "tool", "scene"]
SLACK = 1e-6  # bfm compares times to 1 microsecond (io/bids_events.h)


def run(cmd, ok=True, timeout=300):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    if not ok and proc.returncode == 0:
        raise AssertionError(f"{' '.join(cmd)} succeeded, expected an error\n{proc.stderr}")
    return proc


def dec(v):
    return v.decode() if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------------------------------------------- the study
def write_tsv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(str(c) for c in r) + "\n")


def random_events(rng, stimuli, run_seconds):
    """Events with gaps, of the study's names and stimuli; as strings, as a user's file has them."""
    rows, t = [], float(rng.uniform(0.3, 3.0))
    while t < run_seconds - 10:
        d = float(rng.uniform(3.0, 6.0))
        rows.append([f"{t:.3f}", f"{d:.3f}", str(rng.choice(NAMES[:3])), str(rng.choice(stimuli)),
                     f"{rng.uniform(0.3, 1.2):.2f}"])
        t += d + float(rng.uniform(1.0, 4.0))
    return rows


def make_study(root, rng):
    """N_SUBJECTS subjects, one task-movie run each (sub-01 also a rest run without events), on a 6 x 6 x 4 grid.
    Returns {scan path: events file path or None} and the feature table."""
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    json.dump({"Name": "lab", "BIDSVersion": "1.8.0"}, open(os.path.join(root, "dataset_description.json"), "w"))
    json.dump({"RepetitionTime": TR, "SliceTiming": SLICE_TIMING, "TaskName": "movie"},
              open(os.path.join(root, "task-movie_bold.json"), "w"))
    json.dump({"RepetitionTime": 2.0}, open(os.path.join(root, "task-rest_bold.json"), "w"))
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-9, -9, -6]
    # 12 stimuli in the table, of which the events show 9 (the others are retrieval candidates never shown).
    ids = [f"stim/clip{i:02d}.mp4" for i in range(12)]
    features = rng.normal(size=(12, 4)).round(4)
    shown = ids[:9]
    runs = {}
    extra = ["response_time"]
    for s in range(1, N_SUBJECTS + 1):
        sub = f"sub-{s:02d}"
        scan = f"{root}/{sub}/func/{sub}_task-movie_run-1_bold.nii.gz"
        make_scan(scan, (6, 6, 4), affine, T_MOVIE, 3.0, rng)
        events = random_events(rng, shown, T_MOVIE * TR)
        if s == 1:  # BIDS' n/a: an event without a label, one without a stimulus, a zero-length one of a 4th name
            events[1][2] = "n/a"
            events[2][3] = "n/a"
            events.insert(3, [f"{float(events[3][0]) - 0.5:.3f}", "0", "scene", shown[0], "n/a"])
        if s == 2:  # an event inside another: the later onset wins where both hold
            events.append([f"{float(events[0][0]) + 1.0:.3f}", "1.500", "house", shown[4], "0.5"])
        if s == 3:  # the last event runs past the run's end: cut there
            events.append([f"{T_MOVIE * TR - 2.0:.3f}", "5.000", "tool", shown[2], "0.4"])
        path = f"{root}/{sub}/func/{sub}_task-movie_run-1_events.tsv"
        if s == 13:  # no events file of its own: the dataset root's task-movie_events.tsv applies (inheritance)
            path = f"{root}/task-movie_events.tsv"
        write_tsv(path, ["onset", "duration", "trial_type", "stim_file"] + extra, events)
        runs[scan] = path
        if s == 1:
            rest = f"{root}/{sub}/func/{sub}_task-rest_bold.nii.gz"
            make_scan(rest, (6, 6, 4), affine, 20, 3.0, rng)
            runs[rest] = None
    # participants.tsv: ids with and without sub-, sex spelled several ways, an age "89+" (missing), a non-numeric
    # column (left out), sub-14 missing and sub-15 without scans.
    sexes = ["M", "F", "male", "female", "m", "f", "n/a"]
    rows = []
    for s in range(1, N_SUBJECTS + 2):
        if s == 14:
            continue
        pid = f"sub-{s:02d}" if s % 2 else f"{s:02d}"
        age = "n/a" if s == 5 else "89+" if s == 6 else f"{20 + 3 * s}"
        group = "n/a" if s == 7 else ("patient" if s % 3 == 0 else "control" if s % 3 == 1 else "HC")
        iq = "n/a" if s == 8 else f"{90 + s * 1.5}"
        rows.append([pid, age, sexes[s % len(sexes)], group, "R" if s % 4 else "L", iq, f"{21.0 + s * 0.25}"])
    write_tsv(os.path.join(root, "participants.tsv"), ["participant_id", "age", "sex", "group", "handedness", "iq",
                                                      "bmi"], rows)
    feat = os.path.join(os.path.dirname(root), "features.tsv")
    write_tsv(feat, ["stimulus", "f0", "f1", "f2", "f3"], [[i] + list(map(repr, f)) for i, f in zip(ids, features)])
    return runs, ids, features, feat


def make_atlas(path):
    lab = np.zeros((6, 6, 4), np.int16)
    for i in range(6):
        for j in range(6):
            lab[i, j, :] = 1 + i // 2 + 3 * (j // 3)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-9, -9, -6]
    img = nib.Nifti1Image(lab, affine)
    img.set_sform(affine, code=4)
    nib.save(img, path)


# ------------------------------------------------------------------------------------------- expected, in numpy
def read_events(path):
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        return [dict(zip(header, line.rstrip("\n").split("\t"))) for line in f if line.strip()]


def expected_rows(events, n_time, tr, ref, names, ids, features, allow_missing=False):
    label = np.full(n_time, -1, np.int32)
    stim = np.full(n_time, -1, np.int32)
    emb = np.zeros((n_time, features.shape[1]), np.float32)
    t = np.arange(n_time) * tr + ref + SLACK
    order = sorted(range(len(events)), key=lambda i: float(events[i]["onset"]))  # stable: later line wins on ties
    for i in order:
        e = events[i]
        on, du = float(e["onset"]), float(e["duration"])
        covered = (t >= on) & (t < on + du)
        label[covered] = names.index(e["trial_type"]) if e["trial_type"] != "n/a" else -1
        missing = e["stim_file"] == "n/a" or (allow_missing and e["stim_file"] not in ids)
        s = -1 if missing else ids.index(e["stim_file"])
        stim[covered] = s
        emb[covered] = features[s] if s >= 0 else 0
    return label, stim, emb


def expected_traits():
    """{subject id: (age, sex, diagnosis, [iq, bmi])} from the rules of make_study, written out independently."""
    out = {}
    sexes = {"M": "M", "F": "F", "male": "M", "female": "F", "m": "M", "f": "F", "n/a": ""}
    order = ["M", "F", "male", "female", "m", "f", "n/a"]
    for s in range(1, N_SUBJECTS + 1):
        sid = f"lab/sub-{s:02d}"
        if s == 14:
            out[sid] = (math.nan, "", "", [math.nan, math.nan])
            continue
        age = math.nan if s in (5, 6) else 20 + 3 * s
        dx = "" if s == 7 else ("patient" if s % 3 == 0 else "control")
        out[sid] = (age, sexes[order[s % 7]], dx, [math.nan if s == 8 else 90 + s * 1.5, 21.0 + s * 0.25])
    return out


def read_shards(out):
    """Per source: (subject, label, stimulus, embedding, tr), and per subject its traits, over every shard."""
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    runs, subjects, headers = {}, {}, []
    for s in manifest["shards"]:
        with h5py.File(os.path.join(out, s["file"]), "r") as f:
            headers.append(([dec(x) for x in f["runs/label_names"][:]], [dec(x) for x in f["stimuli/id"][:]],
                            f["stimuli/features"][:], [dec(x) for x in f["subjects/score_names"][:]]))
            ids = [dec(x) for x in f["subjects/id"][:]]
            for i, sid in enumerate(ids):
                subjects[sid] = (float(f["subjects/age"][i]), dec(f["subjects/sex"][i]),
                                 dec(f["subjects/diagnosis"][i]), [float(v) for v in f["subjects/scores"][i]])
            for r in range(len(f["runs/offset"])):
                o, n = f["runs/offset"][r], f["runs/length"][r]
                runs[dec(f["runs/source"][r])] = (ids[f["runs/subject"][r]], f["runs/label"][o:o + n],
                                                   f["runs/stimulus"][o:o + n], f["runs/stim_embedding"][o:o + n],
                                                   float(f["runs/tr"][r]))
    return manifest, runs, subjects, headers


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-4


def check_corpus(out, runs, ids, features, target_tr=0.0):
    names = sorted({e["trial_type"] for p in runs.values() if p for e in read_events(p)} - {"n/a"})
    assert names == ["face", "house", "scene", "tool"], names
    manifest, got, subjects, headers = read_shards(out)
    assert manifest["labels"] == names, manifest.get("labels")
    assert manifest["stimuli"] == {"count": 12, "dim": 4}, manifest.get("stimuli")
    for label_names, stim_ids, feats, score_names in headers:  # every shard the same mapping and table
        assert label_names == names and stim_ids == ids, (label_names, stim_ids)
        assert np.array_equal(feats, features.astype(np.float32)), feats
        assert score_names == ["iq", "bmi"], score_names
    assert sorted(got) == sorted(os.path.realpath(p) for p in runs), sorted(got)
    labelled = 0
    for scan, events_path in runs.items():
        subject, label, stim, emb, tr = got[os.path.realpath(scan)]
        T = nib.load(scan).shape[3]
        src_tr = TR if "movie" in scan else 2.0
        n = T if not target_tr else int(math.floor((T - 1) * src_tr / target_tr + 1e-9)) + 1
        assert tr == (target_tr or src_tr) and len(label) == n, (scan, tr, len(label), n)
        if events_path is None:
            assert (label == -1).all() and (stim == -1).all() and (emb == 0).all(), scan
            continue
        want_l, want_s, want_e = expected_rows(read_events(events_path), n, tr, SLICE_REF, names, ids, features)
        bad = np.nonzero(label != want_l)[0]
        assert bad.size == 0, f"{scan}: labels differ at {bad[:10]}: {label[bad[:10]]} vs {want_l[bad[:10]]}"
        assert np.array_equal(stim, want_s), (scan, stim, want_s)
        assert np.array_equal(emb, want_e), scan
        labelled += int((label >= 0).sum())
    assert labelled > 200, labelled
    want = expected_traits()
    assert sorted(subjects) == sorted(want), sorted(subjects)
    for sid, (age, sex, dx, scores) in want.items():
        g_age, g_sex, g_dx, g_scores = subjects[sid]
        assert same(g_age, age) and g_sex == sex and g_dx == dx, (sid, subjects[sid], want[sid])
        assert all(same(a, b) for a, b in zip(g_scores, scores)), (sid, g_scores, scores)
    return manifest, got


# ---------------------------------------------------------------------------------------------------- bad input
def check_bad_input(bfm, base_cmd, work, study, runs, feat, ids, features):
    movie = [p for p in runs.values() if p and "sub-02" in p][0]
    good_events = open(movie).read()
    lines = good_events.splitlines()
    run_end = T_MOVIE * TR

    def replace_line(text, n, cells):  # line n (1 = header) of a TSV given as text
        ls = text.splitlines()
        ls[n - 1] = "\t".join(cells)
        return "\n".join(ls) + "\n"

    first = lines[1].split("\t")
    cases = [
        ("no onset column", movie, good_events.replace("onset\t", "start\t", 1), movie + ":1:", "onset"),
        ("negative duration", movie, replace_line(good_events, 3, [lines[2].split("\t")[0], "-1.5"] +
                                                   lines[2].split("\t")[2:]), movie + ":3:", "negative"),
        ("past the end", movie, replace_line(good_events, 4, [f"{run_end + 1:.3f}"] + lines[3].split("\t")[1:]),
         movie + ":4:", "end of the run"),
        ("not a number", movie, replace_line(good_events, 2, ["12,5"] + first[1:]), movie + ":2:", "not a number"),
        ("unknown stimulus", movie, replace_line(good_events, 2, first[:3] + ["stim/unknown.mp4"] + first[4:]),
         movie + ":2:", "stim/unknown.mp4"),
    ]
    sidecar = os.path.join(study, "task-movie_bold.json")  # SliceTiming in ms, a common mistake: > TR
    cases.append(("SliceTiming past the TR", sidecar, json.dumps({"RepetitionTime": TR, "SliceTiming":
                                                                  [1000 * v for v in SLICE_TIMING]}),
                  sidecar + ": SliceTiming", "not less than the TR"))
    parts = os.path.join(study, "participants.tsv")
    good_parts = open(parts).read()
    plines = good_parts.splitlines()
    dup_text = "\n".join(plines[:5] + ["\t".join(["01"] + plines[1].split("\t")[1:])] + plines[5:]) + "\n"
    cases.append(("participant twice", parts, dup_text, parts + ":6:", "sub-01"))
    good_feat = open(feat).read()
    flines = good_feat.splitlines()
    cases.append(("feature row short", feat, "\n".join(flines[:4] + ["\t".join(flines[4].split("\t")[:-1])] +
                                                       flines[5:]) + "\n", feat + ":5:", "cells"))
    cases.append(("feature not a number", feat, "\n".join(flines[:2] + ["\t".join(flines[2].split("\t")[:2] + ["x"] +
                                                          flines[2].split("\t")[3:])] + flines[3:]) + "\n",
                  feat + ":3:", "not a number"))

    # Into a folder that does not exist: it must not exist afterwards. Into one with a finished corpus and
    # --overwrite: the corpus is untouched (nothing is deleted before the tables are checked).
    fresh = os.path.join(work, "bad_fresh")
    kept = os.path.join(work, "bad_kept")
    shutil.rmtree(kept, ignore_errors=True)
    run(base_cmd + ["--out", kept, "--subjects-per-shard", "7"])
    before = {f: os.stat(os.path.join(kept, f)).st_mtime_ns for f in os.listdir(kept)}
    for what, path, text, where, needle in cases:
        good = open(path).read()
        open(path, "w").write(text)
        try:
            for out, extra in ((fresh, []), (kept, ["--overwrite", "--subjects-per-shard", "7"])):
                shutil.rmtree(fresh, ignore_errors=True)
                p = run(base_cmd + ["--out", out] + extra, ok=False)
                assert p.returncode == 2, (what, p.returncode, p.stderr)
                errors = [l for l in p.stderr.splitlines() if l.startswith("bfm: error")]
                assert len(errors) == 1 and where in errors[0] and needle in errors[0], (what, where, p.stderr)
                assert not os.path.exists(fresh), (what, os.listdir(fresh))
                now = {f: os.stat(os.path.join(kept, f)).st_mtime_ns for f in os.listdir(kept)}
                assert now == before, (what, before, now)
        finally:
            open(path, "w").write(good)
        print(f"bad input: {what}: exit 2, one line naming {os.path.basename(path)}{where[len(path):]}")

    # --allow-missing-stimuli: the unknown stimulus' event keeps its label, has no stimulus and a zero embedding.
    open(movie, "w").write(cases[4][2])
    try:
        out = os.path.join(work, "allow_missing")
        p = run(base_cmd + ["--out", out, "--overwrite", "--allow-missing-stimuli"])
        assert "stim/unknown.mp4" in p.stderr, p.stderr
        _, got, _, _ = read_shards(out)
        scan = [s for s, e in runs.items() if e == movie][0]
        _, label, stim, emb, _ = got[os.path.realpath(scan)]
        want_l, want_s, want_e = expected_rows(read_events(movie), len(label), TR, SLICE_REF,
                                               ["face", "house", "scene", "tool"], ids, features, allow_missing=True)
        on, du = float(first[0]), float(first[1])
        t = np.arange(len(label)) * TR + SLICE_REF + SLACK
        assert ((want_s == -1) & (want_l >= 0) & (t >= on) & (t < on + du)).any()  # the case is really there
        assert np.array_equal(label, want_l) and np.array_equal(stim, want_s) and np.array_equal(emb, want_e)
    finally:
        open(movie, "w").write(good_events)
    print("--allow-missing-stimuli: the event keeps its label, no stimulus")


# ---------------------------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--mpirun", default="")
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()
    bfm, work = os.path.abspath(args.bfm), os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(5)
    study = os.path.join(work, "lab")
    runs, ids, features, feat = make_study(study, rng)
    atlas = os.path.join(work, "atlas.nii.gz")
    make_atlas(atlas)
    base = [bfm, "convert", "--bids", study, "--atlas", atlas, "--stim-features", feat, "--diagnosis", "group=patient",
            "--train-fraction", "0.6", "--validation-fraction", "0.2"]

    # 1. one process, 3 shards: labels, stimuli, embeddings, traits
    out = os.path.join(work, "corpus")
    p = run(base + ["--out", out, "--overwrite", "--subjects-per-shard", "5"])
    for needle in ("sub-15", "sub-14", "handedness"):  # participants without scans and the reverse; a skipped column
        assert needle in p.stderr, (needle, p.stderr)
    manifest, got = check_corpus(out, runs, ids, features)
    assert manifest["n_shards"] == 3, manifest["n_shards"]
    print("convert: every label, stimulus, embedding and trait as numpy computes them")

    # 1b. the same table as CSV (quoted ids) and as HDF5 (h5py's variable-length strings): the same rows
    csv_path = os.path.join(work, "features.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(["stimulus", "a", "b", "c", "d"])
        for i, row in zip(ids, features):
            w.writerow([i] + [float(v) for v in row])
    h5_path = os.path.join(work, "features.h5")
    with h5py.File(h5_path, "w") as f:
        f["ids"] = np.array(ids, dtype=object).astype(h5py.string_dtype())
        f["features"] = features  # float64: read as float32
    npz_path = os.path.join(work, "features.npz")  # np.savez: stored members; ids as numpy's UTF-32 'U'
    np.savez(npz_path, ids=np.array(ids), features=features.astype(np.float32))
    npz_zip = os.path.join(work, "features_compressed.npz")  # deflated members, ids as bytes 'S', features float64
    np.savez_compressed(npz_zip, features=features, ids=np.array([i.encode() for i in ids]))
    for table in (csv_path, h5_path, npz_path, npz_zip):
        other = os.path.join(work, "corpus_" + os.path.basename(table).replace(".", "_"))
        cmd = [c if c != feat else table for c in base]
        run(cmd + ["--out", other, "--overwrite", "--subjects-per-shard", "5"])
        _, got_other = check_corpus(other, runs, ids, features)
        for k in got:
            assert np.array_equal(got[k][3], got_other[k][3]) and np.array_equal(got[k][2], got_other[k][2]), k
    print("convert: the feature table as CSV, HDF5 and .npz (stored, compressed) gives the same rows")
    pickled = os.path.join(work, "features_pickled.npz")  # an object array is a pickle: refused, named
    np.savez(pickled, ids=np.array(ids, dtype=object), features=features)
    p = run([c if c != feat else pickled for c in base] + ["--out", os.path.join(work, "corpus_pickled")], ok=False)
    errors = [l for l in p.stderr.splitlines() if l.startswith("bfm: error")]
    assert p.returncode == 2 and len(errors) == 1 and "features_pickled.npz: ids.npy" in errors[0], p.stderr

    # 2. inspect: label names with counts, stimuli, traits
    p = run([bfm, "inspect", out])
    j = json.loads(run([bfm, "inspect", out, "--json"]).stdout)
    want_counts = {k: 0 for k in range(len(manifest["labels"]))}  # "scene" only has a zero-length event
    for (subject, label, stim, emb, tr) in got.values():
        for v in label[label >= 0]:
            want_counts[int(v)] = want_counts.get(int(v), 0) + 1
    names = manifest["labels"]
    want_named = {names[k]: n for k, n in want_counts.items()}
    assert {l["name"]: l["timepoints"] for l in j["labels"]} == want_named, j["labels"]
    assert j["stimuli"]["count"] == 12 and j["stimuli"]["dim"] == 4 and j["stimuli"]["shown"] == 9, j["stimuli"]
    assert j["traits"] == ["age", "sex", "diagnosis", "iq", "bmi"], j["traits"]
    for needle in [f"{names[k]} {n} (" for k, n in want_counts.items()] + ["12 in the table (9 shown)", "iq, bmi"]:
        assert needle in p.stdout, (needle, p.stdout)
    run([bfm, "inspect", out, "--verify"])
    print("inspect: label counts, stimuli and traits")

    # 3. --target-tr: labels on the resampled grid
    out_tr = os.path.join(work, "corpus_tr")
    run(base + ["--out", out_tr, "--overwrite", "--target-tr", "1.0"])
    check_corpus(out_tr, runs, ids, features, target_tr=1.0)
    print("convert --target-tr 1.0: labels on the resampled grid")

    # 4. parts: the same mapping in every part, the same rows as one process
    out_parts = os.path.join(work, "corpus_parts")
    shutil.rmtree(out_parts, ignore_errors=True)
    for i in range(3):
        run(base + ["--out", out_parts, "--subjects-per-shard", "5", "--part", f"{i}/3"])
    run(base + ["--out", out_parts, "--subjects-per-shard", "5", "--manifest-only"])
    _, got_parts = check_corpus(out_parts, runs, ids, features)
    for k in got:
        assert np.array_equal(got[k][1], got_parts[k][1]) and np.array_equal(got[k][3], got_parts[k][3]), k
    print("convert --part I/3 + --manifest-only: the same labels and embeddings")

    # 4b. two MPI ranks (each reads every table, writes its shards): the same rows; a bad table is one error line
    if args.mpirun:
        mpi = [args.mpirun, "-np", "2", "--oversubscribe"]
        out_mpi = os.path.join(work, "corpus_mpi")
        run(mpi + base + ["--out", out_mpi, "--overwrite", "--subjects-per-shard", "5"])
        _, got_mpi = check_corpus(out_mpi, runs, ids, features)
        for k in got:
            assert np.array_equal(got[k][1], got_mpi[k][1]) and np.array_equal(got[k][3], got_mpi[k][3]), k
        good = open(feat).read()
        open(feat, "w").write(good.replace("\n", "\tx\n", 1))  # a header with one column more than the rows
        try:
            shutil.rmtree(os.path.join(work, "corpus_mpi_bad"), ignore_errors=True)
            p = run(mpi + base + ["--out", os.path.join(work, "corpus_mpi_bad")], ok=False)
            errors = [l for l in p.stderr.splitlines() if l.startswith("bfm: error")]
            assert len(errors) == 1 and feat + ":2:" in errors[0], p.stderr
            assert not os.path.exists(os.path.join(work, "corpus_mpi_bad"))
        finally:
            open(feat, "w").write(good)
        print("convert on 2 ranks: the same rows; a bad table is one error line")

    # 5. bad input
    check_bad_input(bfm, base, work, study, runs, feat, ids, features)

    if args.skip_eval:
        print("ok")
        return
    # 6. end to end: pre-train a tiny model on the converted study, then evaluate it
    split = manifest["split"]
    assert len(split["train"]) >= 4 and len(split["validation"]) + len(split["test"]) >= 2, split
    model = ["--set", "model.n_parcels=6", "--set", "model.window=12", "--set", "model.patch_len=6",
             "--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.n_layers=1",
             "--set", "model.decoder.d_model=16", "--set", "model.decoder.n_heads=2",
             "--set", "model.decoder.n_layers=1", "--set", "model.stim_dim=4", "--set", 'model.objectives=["mae"]']
    train = os.path.join(work, "pretrain")
    shutil.rmtree(train, ignore_errors=True)
    run([bfm, "pretrain", *model, "--set", 'data.source="corpus"', "--set", f'data.corpus="{out}"',
         "--set", "data.stride=4", "--set", "train.steps=20", "--set", "train.batch_size=8",
         "--set", "train.validate_every=10", "--set", "train.checkpoint_every=0", "--out", train])
    report = os.path.join(work, "eval")
    shutil.rmtree(report, ignore_errors=True)
    p = run([bfm, "eval", "--checkpoint", os.path.join(train, "release"), "--corpus", out, "--out", report,
             "--fractions", "1", "--folds", "3", "--finetune-steps", "0"], timeout=600)
    with open(os.path.join(report, "results.csv")) as f:
        tasks = {r["task"] for r in csv.DictReader(f) if r["value"] not in ("", "nan")}
    for task in ("category", "embedding", "retrieval", "encoding", "diagnosis", "sex", "age", "score"):
        assert task in tasks, (task, sorted(tasks), p.stdout, p.stderr)
    # Three categories have trials ("scene" only a zero-length event): chance is 1/3, not 1/4.
    with open(os.path.join(report, "summary.csv")) as f:
        chance = {r["metric"]: float(r["chance"]) for r in csv.DictReader(f) if r["task"] == "category"}
    assert abs(chance["balanced_accuracy"] - 1 / 3) < 1e-9, chance
    print("pretrain + eval on the converted study: " + ", ".join(sorted(tasks)))
    print("ok")


if __name__ == "__main__":
    main()
