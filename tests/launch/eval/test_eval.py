#!/usr/bin/env python3
"""bfm finetune and bfm eval as a user runs them, checked independently:

- every metric in results.csv recomputed with scikit-learn / numpy from the predictions bfm eval wrote;
- the cross-validation never puts a stimulus in two folds of one subject (each test row's stimulus has one fold);
- fine-tuning lowers the task loss, and its checkpoint loads in the PyTorch reference (python/bfm/model.py) with the
  task head applied to the reference's pooled output giving the validation accuracy's ingredients;
- eval over 2 MPI ranks writes the same results as over 1;
- the PCA baseline's basis (pca.csv) against numpy's SVD of the pre-training subjects' patches read with h5py;
- the paired comparisons (comparisons.csv) recomputed from results.csv with the t quantile from scipy (or a table);
- the label-scarce protocol: the K subjects' trials are what fine-tuning used (trials found with h5py), and the
  population methods of K = 2 do not move when every other pre-training subject's labels are permuted;
- bad input (a checkpoint of another atlas, a missing corpus, a bad fraction) is one clear error line.

    /usr/bin/python3 tests/launch/eval/test_eval.py --bfm build/launch/bfm --workdir DIR [--mpirun mpirun]
"""
import argparse
import csv
import warnings
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, r2_score, roc_auc_score

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "python"))
from bfm import model as bfm_torch  # noqa: E402

MODEL = ["--set", "model.n_parcels=24", "--set", "model.window=12", "--set", "model.patch_len=6",
         "--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.n_layers=1",
         "--set", "model.decoder.d_model=16", "--set", "model.decoder.n_heads=2", "--set", "model.decoder.n_layers=1",
         "--set", 'model.objectives=["mae"]']


def run(cmd, ok=True, timeout=600):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    if not ok and proc.returncode == 0:
        raise AssertionError(f"{' '.join(cmd)} succeeded, expected an error")
    return proc


def one_error_line(proc, *needles):
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("bfm: error")]
    assert len(lines) == 1, f"expected one error line, got: {proc.stderr!r}"
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"


def read_results(path):
    rows = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            key = (r["task"], r["method"], float(r["fraction"]), r["subject"], int(r["fold"]), r["metric"])
            rows[key] = float(r["value"])
    return rows


def close(a, b, tol=1e-6):
    if np.isnan(a) and np.isnan(b):
        return True
    return abs(a - b) <= tol * (1 + abs(b))


def check_category(rep, results):
    groups = defaultdict(list)
    with open(os.path.join(rep, "predictions", "category.csv")) as f:
        reader = csv.reader(f)
        header = next(reader)
        n_classes = len([h for h in header if h.startswith("score_")])
        for r in reader:
            groups[(r[0], float(r[1]), r[2], int(r[3]))].append((int(r[4]), int(r[5]), [float(v) for v in r[6:]]))
    assert groups, "no category predictions"
    checked = 0
    for (method, q, subject, fold), rows in groups.items():
        truth = np.array([r[0] for r in rows])
        pred = np.array([r[1] for r in rows])
        scores = np.array([r[2] for r in rows])
        assert (pred == scores.argmax(1)).all(), "predicted class is not the argmax of the scores"
        key = ("category", method, q, subject, fold)
        assert close(results[key + ("accuracy",)], accuracy_score(truth, pred))
        assert close(results[key + ("balanced_accuracy",)], balanced_accuracy_score(truth, pred))
        aucs = [roc_auc_score(truth == c, scores[:, c]) for c in range(n_classes) if 0 < (truth == c).sum() < len(truth)]
        want = np.mean(aucs) if aucs else float("nan")
        assert close(results[key + ("auc",)], want), (key, results[key + ("auc",)], want)
        checked += 1
    return checked


def embedding_predictions(rep):
    """predictions/embedding.csv: (method, fraction, subject, fold) -> [(stimulus, truth [S], prediction [S])], S."""
    groups = defaultdict(list)
    with open(os.path.join(rep, "predictions", "embedding.csv")) as f:
        reader = csv.reader(f)
        header = next(reader)
        S = len([h for h in header if h.startswith("truth_")])
        for r in reader:
            groups[(r[0], float(r[1]), r[2], int(r[3]))].append(
                (int(r[4]), np.array(r[5:5 + S], float), np.array(r[5 + S:5 + 2 * S], float)))
    return groups, S


def identification_ranks(rows):
    """Retrieval as docs/EVALUATION.md defines it: the candidates are the fold's distinct test stimuli (their true
    embeddings), ranked by correlation with each decoded one; per row the number of candidates ranked above its own,
    and the candidates' stimulus ids."""
    ids = []
    for r in rows:
        if r[0] not in ids:
            ids.append(r[0])
    cand = np.stack([next(x[1] for x in rows if x[0] == i) for i in ids])
    ranks = []
    for r in rows:
        sim = np.array([np.corrcoef(r[2], c)[0, 1] for c in cand])
        ranks.append(int((sim > sim[ids.index(r[0])]).sum()))
    return np.array(ranks), ids


def check_embedding(rep, results):
    groups, S = embedding_predictions(rep)
    checked = 0
    for (method, q, subject, fold), rows in groups.items():
        truth = np.stack([r[1] for r in rows])
        pred = np.stack([r[2] for r in rows])
        key = ("embedding", method, q, subject, fold)
        rs = [np.corrcoef(truth[:, j], pred[:, j])[0, 1] for j in range(S)]
        assert close(results[key + ("r",)], float(np.nanmean(rs)))
        assert close(results[key + ("r2",)], r2_score(truth, pred, multioutput="uniform_average"))
        ranks, ids = identification_ranks(rows)
        rkey = ("retrieval", method, q, subject, fold)
        assert close(results[rkey + ("top1",)], float((ranks < 1).mean()))
        assert close(results[rkey + ("top5",)], float((ranks < 5).mean()))
        assert results[rkey + ("candidates",)] == len(ids)
        checked += 1
    # No stimulus of a subject is tested in two folds (so it never trains the model that is tested on it).
    fold_of = {}
    for (method, q, subject, fold), rows in groups.items():
        for r in rows:
            k = (method, q, subject, r[0])
            assert fold_of.setdefault(k, fold) == fold, f"stimulus {r[0]} of {subject} in folds {fold_of[k]} and {fold}"
    return checked


def check_subject_tasks(rep, results):
    checked = 0
    for task, classes in [("diagnosis", True), ("sex", True), ("age", False), ("score", False)]:
        path = os.path.join(rep, "predictions", task + ".csv")
        if not os.path.exists(path):
            continue
        groups = defaultdict(list)
        with open(path) as f:
            reader = csv.reader(f)
            next(reader)
            for r in reader:
                groups[(r[0], float(r[1]))].append([float(v) for v in r[4:]])
        for (method, q), rows in groups.items():
            a = np.array(rows)
            key = (task, method, q, "all", -1)
            if classes:
                truth, s0, s1 = a[:, 0].astype(int), a[:, 1], a[:, 2]
                pred = (s1 > s0).astype(int)
                assert close(results[key + ("accuracy",)], accuracy_score(truth, pred))
                assert close(results[key + ("balanced_accuracy",)], balanced_accuracy_score(truth, pred))
                want = roc_auc_score(truth, s1 - s0) if 0 < truth.sum() < len(truth) else float("nan")
                assert close(results[key + ("auc",)], want)
            else:
                truth, pred = a[:, 0], a[:, 1]
                assert close(results[key + ("r",)], float(np.corrcoef(truth, pred)[0, 1]))
                assert close(results[key + ("r2",)], r2_score(truth, pred))
            checked += 1
        assert {"connectivity", "probe", "probe_conn"} <= {m for m, _ in groups}, (task, sorted(groups))
    return checked


def check_encoding(rep, results):
    groups = defaultdict(list)
    with open(os.path.join(rep, "predictions", "encoding.csv")) as f:
        reader = csv.reader(f)
        header = next(reader)
        P = len([h for h in header if h.startswith("truth_")])
        for r in reader:
            groups[(r[0], float(r[1]), r[2], int(r[3]))].append(np.array(r[4:], float))
    checked = 0
    for (method, q, subject, fold), rows in groups.items():
        a = np.stack(rows)
        truth, pred = a[:, :P], a[:, P:]
        rs = [np.corrcoef(truth[:, p], pred[:, p])[0, 1] for p in range(P)]
        key = ("encoding", method, q, subject, fold)
        assert close(results[key + ("r",)], float(np.nanmean(rs)), 1e-5)
        assert close(results[key + ("r2",)], r2_score(truth, pred, multioutput="uniform_average"), 1e-5)
        checked += 1
    return checked


def corpus_runs(corpus):
    """Every run of the corpus as (subject id, held out, time series [n, P] float64, labels, embeddings)."""
    import h5py
    manifest = json.load(open(os.path.join(corpus, "manifest.json")))
    held = set(manifest["split"]["validation"]) | set(manifest["split"]["test"])
    for shard in manifest["shards"]:
        with h5py.File(os.path.join(corpus, shard["file"])) as f:
            ids = [x.decode() if isinstance(x, bytes) else x for x in f["subjects/id"][:]]
            for r in range(len(f["runs/offset"])):
                o, n = int(f["runs/offset"][r]), int(f["runs/length"][r])
                sid = ids[f["runs/subject"][r]]
                yield (sid, sid in held, f["runs/timeseries"][o:o + n].astype(np.float64), f["runs/label"][o:o + n],
                       f["runs/stim_embedding"][o:o + n])


def trial_onsets(lab, emb, T):
    """The trials of a run as docs/EVALUATION.md defines them: maximal stretches of one label (>= 0) and embedding
    whose window of T time points fits in the run; their onsets."""
    n, t, out = len(lab), 0, []
    while t < n:
        if lab[t] < 0:
            t += 1
            continue
        e = t + 1
        while e < n and lab[e] == lab[t] and np.array_equal(emb[e], emb[t]):
            e += 1
        if t + T <= n:
            out.append(t)
        t = e
    return out


def check_pca(rep, corpus, patch_len, d_model, components=None):
    """pca.csv against numpy: the SVD of every non-overlapping patch mean of every run of the pre-training subjects;
    as many components as asked, else the fewest explaining 90 % of the variance, at most d_model."""
    patches = []
    for _, held, x, _, _ in corpus_runs(corpus):
        if held:
            continue
        for t0 in range(0, len(x) - patch_len + 1, patch_len):
            patches.append(x[t0:t0 + patch_len].mean(0))
    X = np.array(patches)
    mean = X.mean(0)
    _, sv, vt = np.linalg.svd(X - mean, full_matrices=False)
    var = sv ** 2 / len(X)
    rows = {r[0]: np.array(r[1:], float) for r in csv.reader(open(os.path.join(rep, "pca.csv"))) if r[0] != "row"}
    explained = np.cumsum(var) / var.sum()
    C = components or min(d_model, X.shape[1], int(np.searchsorted(explained, 0.9)) + 1)
    assert len(rows) == C + 1, (len(rows), C)
    assert np.allclose(rows["mean"][1:], mean, rtol=1e-9, atol=1e-9)
    assert abs(rows["mean"][0] - var.sum()) <= 1e-7 * var.sum()
    for c in range(C):
        comp = rows[f"component_{c}"]
        assert abs(comp[0] - var[c]) <= 1e-7 * var[0], (c, comp[0], var[c])
        gap = min(abs(var[c] - var[c - 1]) if c > 0 else np.inf, abs(var[c] - var[c + 1]))
        if gap > 1e-3 * var[0]:  # a well separated component is determined up to its sign
            assert abs(abs(comp[1:] @ vt[c]) - 1) < 1e-6, (c, comp[1:] @ vt[c])
    cfg = json.load(open(os.path.join(rep, "config.json")))["pca"]
    assert cfg["components"] == C and cfg["patches"] == len(X), cfg
    assert abs(cfg["explained_variance"] - var[:C].sum() / var.sum()) < 1e-9, cfg
    return C, var[:C].sum() / var.sum()


def check_stimridge(rep, corpus, window, patch_len):
    """stimridge.csv against numpy: ridge from every pre-training trial's raw window (its patch means) to the trial's
    stimulus embedding, inputs standardised by their mean and sd over those trials, intercept unpenalised, at the
    penalty config.json records (chosen by bfm's cross-validation over subjects; one of the grid's values)."""
    X, Y, subjects = [], [], set()
    for sid, held, x, lab, emb in corpus_runs(corpus):
        if held:
            continue
        for t0 in trial_onsets(lab, emb, window):
            w = x[t0:t0 + window]
            X.append(w.reshape(window // patch_len, patch_len, -1).mean(1).reshape(-1))
            Y.append(emb[t0].astype(np.float64))
            subjects.add(sid)
    X, Y = np.array(X), np.array(Y)
    cfg = json.load(open(os.path.join(rep, "config.json")))["stimridge"]
    assert cfg["trials"] == len(X) and cfg["subjects"] == len(subjects), (cfg, len(X), len(subjects))
    assert cfg["features"] == X.shape[1] and cfg["stim_dim"] == Y.shape[1], cfg
    mean, sd = X.mean(0), X.std(0)
    sd[sd <= 1e-12] = 1.0
    Z = (X - mean) / sd
    alpha = cfg["alpha"]
    assert any(abs(alpha - 10.0 ** e) <= 1e-9 * alpha for e in range(-6, 9)), alpha
    Zc, Yc = Z - Z.mean(0), Y - Y.mean(0)
    W = np.linalg.solve(Zc.T @ Zc + alpha * np.eye(Z.shape[1]), Zc.T @ Yc)
    b = Y.mean(0) - Z.mean(0) @ W
    rows = {r[0]: r[1:] for r in csv.reader(open(os.path.join(rep, "stimridge.csv"))) if r[0] != "row"}
    assert np.allclose(np.array(rows["mean"][1:], float), mean, rtol=1e-9, atol=1e-12)
    assert np.allclose(np.array(rows["scale"][1:], float), sd, rtol=1e-9, atol=1e-12)
    got_w = np.array([rows[f"output_{c}"][1:] for c in range(Y.shape[1])], float).T
    got_b = np.array([rows[f"output_{c}"][0] for c in range(Y.shape[1])], float)
    scale = np.abs(W).max()
    assert np.abs(got_w - W).max() <= 1e-6 * scale, np.abs(got_w - W).max()
    assert np.abs(got_b - b).max() <= 1e-6 * (1 + np.abs(b).max()), (got_b, b)
    return len(X), alpha


def check_probe_basis(rep, corpus, ckpt, window):
    """probe_basis.csv against numpy: the encoder's tokens (the PyTorch reference, float64) of every non-overlapping
    window of every run of the pre-training subjects (evenly thinned to 4,096 windows and 2^19 tokens), their mean and covariance
    (divisor: tokens) and its eigenvectors; the fewest components explaining 90 % of the variance, at most d_model and
    at most 4096 / tokens per window."""
    config, state = bfm_torch.load_checkpoint(ckpt)
    model = bfm_torch.BrainModel(config, dtype=bfm_torch.torch.float64)
    model.load_state_dict(state, strict=True)
    windows = []
    for _, held, x, _, _ in corpus_runs(corpus):
        if not held:
            windows += [x[t0:t0 + window] for t0 in range(0, len(x) - window + 1, window)]
    cap = max(1, min(4096, 2 ** 19 // (config["n_parcels"] * (config["window"] // config["patch_len"]))))
    if len(windows) > cap:
        windows = [windows[i * len(windows) // cap] for i in range(cap)]
    with bfm_torch.torch.no_grad():
        tokens = np.concatenate([model(bfm_torch.torch.tensor(np.stack(windows[i:i + 256])))["encoder_out"].numpy()
                                 for i in range(0, len(windows), 256)])
    n_tokens, D = tokens.shape[1], tokens.shape[2]
    E = tokens.reshape(-1, D)
    mean = E.mean(0)
    var, vecs = np.linalg.eigh(np.cov(E, rowvar=False, bias=True))
    var, vecs = var[::-1], vecs[:, ::-1]
    explained = np.cumsum(var) / var.sum()
    C = min(D, max(1, 4096 // n_tokens), int(np.searchsorted(explained, 0.9)) + 1)
    rows = {r[0]: np.array(r[1:], float) for r in csv.reader(open(os.path.join(rep, "probe_basis.csv")))
            if r[0] != "row"}
    assert len(rows) == C + 1, (len(rows), C)
    scale = np.sqrt(var[0])
    assert np.abs(rows["mean"][1:] - mean).max() < 1e-4 * scale, np.abs(rows["mean"][1:] - mean).max()
    assert abs(rows["mean"][0] - var.sum()) < 1e-4 * var.sum(), (rows["mean"][0], var.sum())
    for c in range(C):
        comp = rows[f"component_{c}"]
        assert abs(comp[0] - var[c]) < 1e-4 * var[0], (c, comp[0], var[c])
        gap = min(abs(var[c] - var[c - 1]) if c > 0 else np.inf, abs(var[c] - var[c + 1]))
        if gap > 1e-2 * var[0]:  # a well separated component is determined up to its sign
            assert abs(abs(comp[1:] @ vecs[:, c]) - 1) < 1e-4, (c, comp[1:] @ vecs[:, c])
    cfg = json.load(open(os.path.join(rep, "config.json")))["probe_basis"]
    assert cfg["components"] == C and cfg["tokens"] == len(E) and cfg["d_model"] == D, cfg
    assert abs(cfg["explained_variance"] - var[:C].sum() / var.sum()) < 1e-4, cfg
    return C, var[:C].sum() / var.sum()


# Student's t 0.975 quantiles by degrees of freedom (printed tables), where scipy is missing.
T975 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 5: 2.570582, 6: 2.446912, 7: 2.364624, 8: 2.306004,
        9: 2.262157, 10: 2.228139, 11: 2.200985, 12: 2.178813, 13: 2.160369, 14: 2.144787, 15: 2.131450}


def t975(df):
    try:
        from scipy.stats import t
        return float(t.ppf(0.975, df))
    except ImportError:
        return T975[df]


def check_comparisons(rep):
    """comparisons.csv recomputed from results.csv and summary.csv: the pre-trained method with the best mean, each
    subject's mean over folds, the paired differences' mean and t interval."""
    per = defaultdict(lambda: defaultdict(list))
    main = {"category": "balanced_accuracy", "embedding": "r", "retrieval": "top1"}
    for r in csv.DictReader(open(os.path.join(rep, "results.csv"))):
        if r["task"] in main and r["metric"] == main[r["task"]] and int(r["fold"]) >= 0:
            per[(r["task"], r["method"], float(r["fraction"]))][r["subject"]].append(float(r["value"]))
    means = {(r["task"], r["method"], float(r["fraction"])): float(r["mean"])
             for r in csv.DictReader(open(os.path.join(rep, "summary.csv"))) if r["metric"] == main.get(r["task"])}
    got = list(csv.DictReader(open(os.path.join(rep, "comparisons.csv"))))
    labelled = [g["k"] for g in json.load(open(os.path.join(rep, "config.json")))["labelled"]]
    want = 0
    for task in main:
        for k in labelled:
            sfx = "" if k == "all" else "@" + k
            for q in sorted({key[2] for key in per if key[0] == task}):
                cands = [m for m in ["probe", "probe_pop" + sfx, "finetune" + sfx, "clip"]
                         if (task, m, q) in means and np.isfinite(means[(task, m, q)])]
                if not cands:
                    continue
                best = max(cands, key=lambda m: means[(task, m, q)])
                for b in ["ridge", "ridge_pop" + sfx, "scratch" + sfx, "pca", "pca_pop" + sfx, "stimridge",
                          "stimridge_pop" + sfx, "random", "random_pop" + sfx]:
                    if (task, b, q) not in per:
                        continue
                    mine, theirs = per[(task, best, q)], per[(task, b, q)]
                    d = []
                    for subj in mine:
                        if subj in theirs:
                            a, c = np.nanmean(mine[subj]), np.nanmean(theirs[subj])
                            if np.isfinite(a) and np.isfinite(c):
                                d.append(a - c)
                    d = np.array(d)
                    row = [g for g in got if g["task"] == task and g["labelled"] == k and float(g["fraction"]) == q
                           and g["baseline"] == b]
                    assert len(row) == 1, (task, k, q, b, row)
                    row = row[0]
                    assert row["method"] == best, (row, best)
                    assert int(row["n"]) == len(d)
                    assert close(float(row["mean_difference"]), d.mean() if len(d) else float("nan"), 1e-9)
                    if len(d) < 2:
                        assert np.isnan(float(row["ci_low"])) and np.isnan(float(row["ci_high"])), row
                        want += 1
                        continue
                    half = t975(len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
                    assert close(float(row["ci_low"]), d.mean() - half, 1e-6), (row, d.mean() - half)
                    assert close(float(row["ci_high"]), d.mean() + half, 1e-6), (row, d.mean() + half)
                    want += 1
    assert want == len(got) and want > 0, (want, len(got))
    return want


def check_labelled(bfm, work, corpus, ckpt, window):
    """The label-scarce protocol: K = 0, 2 and all in one run; the draw recorded, fine-tuning on the K subjects'
    trials only, and the population methods of K = 2 blind to every other pre-training subject's labels."""
    import h5py
    args = ["--tasks", "category", "--fractions", "0.5,1", "--folds", "3", "--labelled-subjects", "all,2,0",
            "--labelled-seed", "5", "--pca-components", "5"]
    rep = os.path.join(work, "labelled")
    run([bfm, "eval", "--checkpoint", ckpt, "--corpus", corpus, "--out", rep, "--finetune-steps", "2", *args])
    check_pca(rep, corpus, patch_len=6, d_model=16, components=5)
    cfg = json.load(open(os.path.join(rep, "config.json")))
    groups = {g["k"]: g["subjects"] for g in cfg["labelled"]}
    assert list(groups) == ["0", "2", "all"], groups
    population = sorted({sid for sid, held, *_ in corpus_runs(corpus) if not held})
    assert groups["0"] == [] and len(groups["2"]) == 2 and set(groups["2"]) <= set(population), groups
    assert sorted(groups["all"]) == population
    results = read_results(os.path.join(rep, "results.csv"))
    methods = {k[1] for k in results}
    for m in ["ridge_pop", "pca_pop", "stimridge_pop", "probe_pop", "random_pop", "finetune", "scratch", "oracle_pop"]:
        assert m in methods and m + "@2" in methods and m + "@0" not in methods, (m, methods)
    chosen = set(groups["2"])
    trials = sum(len(trial_onsets(lab, emb, window)) for sid, _, _, lab, emb in corpus_runs(corpus) if sid in chosen)
    for kind in ["finetuned", "scratch"]:
        task = json.load(open(os.path.join(rep, f"{kind}-category@2", "task.json")))
        assert task["train_trials"] == trials, (kind, task["train_trials"], trials)
        assert sorted(task["labelled_subjects"]) == sorted(chosen)
    md = open(os.path.join(rep, "summary.md")).read()
    assert "## Label-scarce curve" in md and "| 2 |" in md and "## Paired comparisons" in md
    check_comparisons(rep)
    # Permute the category labels of every pre-training subject outside the K = 2 draw (trial boundaries unchanged).
    permuted = os.path.join(work, "corpus-permuted")
    shutil.rmtree(permuted, ignore_errors=True)
    shutil.copytree(corpus, permuted)
    manifest = json.load(open(os.path.join(permuted, "manifest.json")))
    held = set(manifest["split"]["validation"]) | set(manifest["split"]["test"])
    n_cat = 1 + max(int(lab.max()) for *_, lab, _ in corpus_runs(corpus))
    for shard in manifest["shards"]:
        with h5py.File(os.path.join(permuted, shard["file"]), "r+") as f:
            ids = [x.decode() if isinstance(x, bytes) else x for x in f["subjects/id"][:]]
            lab = f["runs/label"][:]
            for r in range(len(f["runs/offset"])):
                sid = ids[f["runs/subject"][r]]
                if sid in held or sid in chosen:
                    continue
                o, n = int(f["runs/offset"][r]), int(f["runs/length"][r])
                seg = lab[o:o + n]
                lab[o:o + n] = np.where(seg >= 0, (seg + 1) % n_cat, seg)
            f["runs/label"][...] = lab
    rep2 = os.path.join(work, "labelled-permuted")
    run([bfm, "eval", "--checkpoint", ckpt, "--corpus", permuted, "--out", rep2, *args])
    r2 = read_results(os.path.join(rep2, "results.csv"))
    moved = 0
    for key, v in results.items():
        # stimridge reads the other subjects' stimuli, never their labels: unmoved too.
        if key[1] in ("ridge", "pca", "stimridge", "probe", "random", "ridge_pop@2", "pca_pop@2", "stimridge_pop@2",
                      "probe_pop@2", "random_pop@2", "oracle_pop@2"):
            assert close(v, r2[key], 1e-9), (key, v, r2[key])
        if key[1] == "ridge_pop" and not close(v, r2[key], 1e-9):
            moved += 1
    assert moved > 0, "ridge_pop over every pre-training subject did not see the permuted labels"
    print(f"label-scarce: K = 2 draws {sorted(chosen)}, fine-tuned on their {trials} trials; K = 2 blind to the other "
          f"subjects' labels ({moved} rows of ridge_pop moved)")


def check_zero_shot_retrieval(bfm, work, corpus):
    """`clip` rows against an independent computation: trials found here with h5py, the contrastive projections of
    the PyTorch reference, cosine ranking among each fold's distinct test stimuli, the same candidates (and so the
    same chance) as the decoded retrieval rows. The folds are read from predictions/embedding.csv (ridge's test
    stimuli per fold; a fold keeps a stimulus whole, so its test trials are the subject's trials of those stimuli).
    Ranking among all of the subject's stimuli instead (bfm before 2026-12-04) fails here: ~5x the candidates and
    a chance the summary did not show."""
    import h5py
    ckpt = os.path.join(work, "clip-init")
    run([bfm, "init", "--out", ckpt, "--seed", "4", *MODEL, "--set", 'model.objectives=["mae", "contrastive"]',
         "--set", "model.stim_dim=6", "--set", "model.proj_dim=8"])
    rep = os.path.join(work, "clip-report")
    run([bfm, "eval", "--checkpoint", ckpt, "--corpus", corpus, "--out", rep, "--tasks", "retrieval",
         "--fractions", "1", "--folds", "3"])
    results = read_results(os.path.join(rep, "results.csv"))
    config, state = bfm_torch.load_checkpoint(ckpt)
    model = bfm_torch.BrainModel(config, dtype=bfm_torch.torch.float64)
    model.load_state_dict(state, strict=True)
    wb = state["brain_proj.weight"].double().numpy()
    ws = state["stim_proj.weight"].double().numpy()
    T = config["window"]
    manifest = json.load(open(os.path.join(corpus, "manifest.json")))
    held = set(manifest["split"]["validation"]) | set(manifest["split"]["test"])
    fold_stimuli = defaultdict(lambda: defaultdict(list))  # subject -> fold -> ridge's test embeddings
    with open(os.path.join(rep, "predictions", "embedding.csv")) as f:
        for r in csv.DictReader(f):
            if r["method"] == "ridge" and float(r["fraction"]) == 1.0:
                S = sum(1 for k in r if k.startswith("truth_"))
                fold_stimuli[r["subject"]][int(r["fold"])].append(np.array([float(r[f"truth_{j}"]) for j in range(S)]))
    checked = 0
    for shard in manifest["shards"]:
        with h5py.File(os.path.join(corpus, shard["file"])) as f:
            ids = [x.decode() if isinstance(x, bytes) else x for x in f["subjects/id"][:]]
            per_subject = defaultdict(list)
            for r in range(len(f["runs/offset"])):
                per_subject[ids[f["runs/subject"][r]]].append(r)
            for subject, runs in per_subject.items():
                if subject not in held:
                    continue
                windows, stims = [], []
                for r in runs:
                    o, n = int(f["runs/offset"][r]), int(f["runs/length"][r])
                    lab = f["runs/label"][o:o + n]
                    emb = f["runs/stim_embedding"][o:o + n].astype(np.float64)
                    x = f["runs/timeseries"][o:o + n].astype(np.float64)
                    t = 0
                    while t < n:
                        if lab[t] < 0:
                            t += 1
                            continue
                        e = t + 1
                        while e < n and lab[e] == lab[t] and np.array_equal(emb[e], emb[t]):
                            e += 1
                        if t + T <= n:
                            windows.append(x[t:t + T])
                            stims.append(emb[t])
                        t = e
                if subject not in fold_stimuli:
                    continue
                zb_all = model(bfm_torch.torch.tensor(np.stack(windows)))["pooled"].detach().numpy() @ wb.T
                zb_all /= np.linalg.norm(zb_all, axis=1, keepdims=True)
                for fold, test_stims in fold_stimuli[subject].items():
                    test = [i for i, s_ in enumerate(stims) if any(np.allclose(s_, t, atol=1e-6) for t in test_stims)]
                    cand, target = [], []
                    for i in test:
                        k = next((j for j, c in enumerate(cand) if np.array_equal(c, stims[i])), None)
                        if k is None:
                            cand.append(stims[i])
                            k = len(cand) - 1
                        target.append(k)
                    zs = np.stack(cand) @ ws.T
                    zs /= np.linalg.norm(zs, axis=1, keepdims=True)
                    sim = zb_all[test] @ zs.T
                    ranks = np.array([(sim[i] > sim[i, target[i]]).sum() for i in range(len(target))])
                    key = ("retrieval", "clip", 1.0, subject, fold)
                    assert results[key + ("candidates",)] == len(cand), (subject, fold, results[key + ("candidates",)],
                                                                        len(cand))
                    assert results[("retrieval", "ridge", 1.0, subject, fold, "candidates")] == len(cand)
                    tol = 1.0 / len(target) + 1e-9  # a near-tie may flip between float32 and float64
                    assert abs(results[key + ("top1",)] - (ranks < 1).mean()) <= tol, (subject, fold,
                                                                                      results[key + ("top1",)])
                    assert abs(results[key + ("top5",)] - (ranks < 5).mean()) <= tol, (subject, fold,
                                                                                      results[key + ("top5",)])
                    checked += 1
    assert checked >= 6, checked
    assert not any(k[1] == "clip" and k[4] == -1 for k in results), "clip rows outside the folds"
    # clip is a candidate of the paired comparisons (no label read): recomputed with it among the candidates.
    check_comparisons(rep)
    print(f"zero-shot retrieval of {checked} held-out subject folds matches the PyTorch reference")


def main():
    warnings.simplefilter("ignore")  # constant columns in small folds: NaN correlations, compared as NaN
    np.seterr(all="ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--mpirun", default="")
    args = ap.parse_args()
    bfm, work = args.bfm, args.workdir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    corpus = os.path.join(work, "corpus")
    run([bfm, "synth", "--subjects", "40", "--parcels", "24", "--minutes", "14", "--studies", "2", "--stim-dim", "6",
         "--categories", "3", "--clips", "40", "--seed", "3", "--out", corpus])
    ckpt = os.path.join(work, "init")
    run([bfm, "init", "--out", ckpt, "--seed", "1", *MODEL])

    # Fine-tuning lowers the task loss, and writes a checkpoint the PyTorch reference loads with its head.
    ft = os.path.join(work, "ft-category")
    run([bfm, "finetune", "--checkpoint", ckpt, "--corpus", corpus, "--task", "category", "--out", ft,
         "--steps", "200", "--batch-size", "16", "--lr", "5e-3", "--head-lr", "5e-2"])
    task = json.load(open(os.path.join(ft, "task.json")))
    first, last = task["validation_loss"]
    assert last < first - 0.05, f"fine-tuning did not lower the validation loss: {first} -> {last}"
    config, state = bfm_torch.load_checkpoint(ft)
    model = bfm_torch.BrainModel(config, dtype=bfm_torch.torch.float64)
    model.load_state_dict(state, strict=True)
    head = bfm_torch.read_safetensors(os.path.join(ft, "task_head.safetensors"))
    head = head[0] if isinstance(head, tuple) else head
    pw, pb = np.asarray(head["task_head.proj.weight"]), np.asarray(head["task_head.proj.bias"])
    w, b = np.asarray(head["task_head.weight"]), np.asarray(head["task_head.bias"])
    C, N = task["components"], task["tokens"]
    assert task["input"] == "tokens" and N == (config["window"] // config["patch_len"]) * config["n_parcels"], task
    assert pw.shape == (C, config["d_model"]) and pb.shape == (C,), (pw.shape, pb.shape)
    assert w.shape == (task["outputs"], N * C) and b.shape == (task["outputs"],), (w.shape, b.shape)
    x = bfm_torch.torch.randn(2, config["window"], config["n_parcels"], dtype=bfm_torch.torch.float64)
    tokens = model(x)["encoder_out"].detach().numpy()  # [2, N, D]
    logits = (tokens @ pw.T + pb).reshape(2, N * C) @ w.T + b
    assert np.isfinite(logits).all() and logits.shape == (2, task["outputs"])
    scratch = os.path.join(work, "scratch-category")
    run([bfm, "finetune", "--checkpoint", ckpt, "--corpus", corpus, "--task", "category", "--out", scratch,
         "--steps", "10", "--batch-size", "16", "--scratch"])
    assert json.load(open(os.path.join(scratch, "task.json")))["source_checkpoint"] == "scratch"

    # Eval, 1 rank: every metric recomputed from the predictions.
    rep = os.path.join(work, "report")
    proc = run([bfm, "eval", "--checkpoint", ckpt, "--corpus", corpus, "--out", rep, "--fractions", "0.1,0.5,1",
                "--folds", "4", "--finetuned", "category=" + ft, "--scratch", "category=" + scratch])
    assert "| category | balanced_accuracy |" in proc.stdout, proc.stdout
    for f in ["results.csv", "summary.csv", "summary.md", "config.json", "fewshot_category.png", "encoding_map.png"]:
        assert os.path.exists(os.path.join(rep, f)), f
    results = read_results(os.path.join(rep, "results.csv"))
    methods = {k[1] for k in results if k[0] == "category"}
    assert methods == {"ridge", "ridge_pop", "pca", "pca_pop", "stimridge", "stimridge_pop", "probe", "probe_pop",
                       "random", "random_pop", "finetune", "scratch", "oracle", "oracle_pop"}, methods
    assert not any(k[1].startswith("stimridge") for k in results if k[0] != "category"), "stimridge outside category"
    # The untrained control is MODEL_SPEC's initialisation with seed --seed + 1 (= 1 here): the very weights `bfm init
    # --seed 1` wrote into this checkpoint, so random and probe must agree row for row.
    pairs = [(k, (k[0], k[1].replace("random", "probe"), *k[2:])) for k in results if k[1].startswith("random")]
    assert pairs and all(close(results[a], results[b], 1e-9) for a, b in pairs), \
        [(a, results[a], results[b]) for a, b in pairs if not close(results[a], results[b], 1e-9)][:5]
    print(f"the untrained control equals the probe on the seed-1 initialised checkpoint ({len(pairs)} rows)")
    assert "| pca |" in proc.stdout and "| pca_pop |" in proc.stdout, proc.stdout
    C, explained = check_pca(rep, corpus, patch_len=6, d_model=16)
    print(f"pca basis matches numpy's SVD ({explained:.3f} of the variance in {C} components)")
    n_stim, alpha = check_stimridge(rep, corpus, window=12, patch_len=6)
    print(f"stimulus map matches numpy's ridge on {n_stim} pre-training trials (alpha {alpha:g})")
    C, explained = check_probe_basis(rep, corpus, ckpt, window=12)
    print(f"probe token basis matches numpy on the PyTorch reference's tokens ({explained:.3f} of the variance in "
          f"{C} components)")
    print(f"{check_comparisons(rep)} paired comparisons match the recomputation")
    n = check_category(rep, results)
    n += check_embedding(rep, results)
    n += check_subject_tasks(rep, results)
    n += check_encoding(rep, results)
    print(f"checked {n} groups of predictions against scikit-learn / numpy")
    summary = list(csv.DictReader(open(os.path.join(rep, "summary.csv"))))
    chance = {r["metric"]: float(r["chance"]) for r in summary if r["task"] == "category"}
    assert abs(chance["balanced_accuracy"] - 1 / 3) < 1e-9, chance

    # Over 2 ranks: the same rows.
    if args.mpirun:
        rep2 = os.path.join(work, "report2")
        run([args.mpirun, "-np", "2", "--oversubscribe", bfm, "eval", "--checkpoint", ckpt, "--corpus", corpus, "--out",
             rep2, "--fractions", "0.1,0.5,1", "--folds", "4", "--finetuned", "category=" + ft,
             "--scratch", "category=" + scratch])
        r2 = read_results(os.path.join(rep2, "results.csv"))
        assert set(r2) == set(results), set(r2) ^ set(results)
        for k, v in results.items():
            assert close(v, r2[k], 1e-9), (k, v, r2[k])
        print("2 ranks: the same", len(r2), "rows")

    # A job array over held-out subjects: 2 parts, then --merge, give the same rows and summary as one run.
    parts = []
    for i in range(2):
        d = os.path.join(work, f"part{i}")
        run([bfm, "eval", "--checkpoint", ckpt, "--corpus", corpus, "--out", d, "--fractions", "0.1,0.5,1", "--folds",
             "4", "--finetuned", "category=" + ft, "--scratch", "category=" + scratch, "--part", f"{i}/2"])
        parts.append(d)
    merged = os.path.join(work, "merged")
    one_error_line(run([bfm, "eval", "--merge", parts[0], "--out", merged], ok=False), "part(s) 1 missing")
    run([bfm, "eval", "--merge", *parts, "--out", merged])
    rm = read_results(os.path.join(merged, "results.csv"))
    assert set(rm) == set(results), set(rm) ^ set(results)
    for k, v in results.items():
        assert close(v, rm[k], 1e-9), (k, v, rm[k])
    def summary_of(d):
        return {(r["task"], r["method"], r["fraction"], r["metric"]): (float(r["mean"]), float(r["sd"]))
                for r in csv.DictReader(open(os.path.join(d, "summary.csv")))}
    sa, sb = summary_of(rep), summary_of(merged)
    assert set(sa) == set(sb)
    for k in sa:
        assert all(close(x, y, 1e-9) for x, y in zip(sa[k], sb[k])), (k, sa[k], sb[k])
    n_merged = sum(1 for _ in open(os.path.join(merged, "predictions", "category.csv")))
    n_full = sum(1 for _ in open(os.path.join(rep, "predictions", "category.csv")))
    assert n_merged == n_full, (n_merged, n_full)
    print("2 parts merged: the same rows, summary and predictions")
    one_error_line(run([bfm, "eval", "--checkpoint", ckpt, "--corpus", corpus, "--out", os.path.join(work, "p"),
                        "--part", "2/2"], ok=False), "--part")

    check_zero_shot_retrieval(bfm, work, corpus)
    check_labelled(bfm, work, corpus, ckpt, window=12)

    # Bad input: one clear error line naming what is wrong.
    other = os.path.join(work, "other-atlas")
    run([bfm, "init", "--out", other, *MODEL, "--set", "model.n_parcels=30"])
    one_error_line(run([bfm, "eval", "--checkpoint", other, "--corpus", corpus, "--out", os.path.join(work, "x")],
                       ok=False), other, "30 parcels", "24")
    assert not os.path.exists(os.path.join(work, "x", "results.csv"))
    one_error_line(run([bfm, "eval", "--checkpoint", ckpt, "--corpus", os.path.join(work, "nope"), "--out",
                        os.path.join(work, "y")], ok=False), "nope")
    one_error_line(run([bfm, "eval", "--checkpoint", ckpt, "--corpus", corpus, "--out", os.path.join(work, "z"),
                        "--fractions", "0,1"], ok=False), "fraction")
    one_error_line(run([bfm, "eval", "--checkpoint", ckpt, "--corpus", corpus, "--out", os.path.join(work, "z"),
                        "--folds", "1"], ok=False), "--folds")
    one_error_line(run([bfm, "eval", "--checkpoint", ckpt, "--corpus", corpus, "--out", os.path.join(work, "z"),
                        "--labelled-subjects", "2,two"], ok=False), "--labelled-subjects", "two")
    one_error_line(run([bfm, "eval", "--checkpoint", ckpt, "--corpus", corpus, "--out", os.path.join(work, "z"),
                        "--labelled-subjects", "500", "--tasks", "category"], ok=False), "500", "pre-training subjects")
    one_error_line(run([bfm, "eval", "--checkpoint", ckpt, "--corpus", corpus, "--out", os.path.join(work, "z"),
                        "--finetuned", "diagnosis=" + ft], ok=False), "diagnosis")
    one_error_line(run([bfm, "finetune", "--checkpoint", other, "--corpus", corpus, "--out", os.path.join(work, "w")],
                       ok=False), "30", "24")
    assert not os.path.exists(os.path.join(work, "w"))
    print("test_eval: all passed")


if __name__ == "__main__":
    main()
