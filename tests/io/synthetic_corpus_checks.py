# Independent checks of a `bfm synth` corpus with h5py and numpy (Debian's /usr/bin/python3).
#   synthetic_corpus_checks.py CHECK CORPUS [OTHER_CORPUS]
# Prints "ok" and exits 0 when the check holds; raises (exit 1) with the reason otherwise.
import glob, json, os, sys

import h5py
import numpy as np

check, corpus = sys.argv[1], sys.argv[2]
expected_tr = [0.8, 1.5, 2.0]


def shards(d):
    return sorted(glob.glob(os.path.join(d, "shard-*.h5")))


def s(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def runs(d):
    # Yields (study, task, tr, subject_id, diagnosis, x [T, P] float64, stim [T, S], label [T]) per run.
    for path in shards(d):
        with h5py.File(path, "r") as f:
            ts, off, ln = f["runs/timeseries"], f["runs/offset"][:], f["runs/length"][:]
            ids = [s(v) for v in f["subjects/id"][:]]
            dx = [s(v) for v in f["subjects/diagnosis"][:]]
            for r in range(len(off)):
                o, n = off[r], ln[r]
                subj = f["runs/subject"][r]
                yield (s(f["runs/study"][r]), s(f["runs/task"][r]), float(f["runs/tr"][r]), ids[subj], dx[subj],
                       ts[o:o + n].astype(np.float64), f["runs/stim_embedding"][o:o + n], f["runs/label"][o:o + n])


if check == "zscore":
    count = 0
    for study, task, tr, sid, dx, x, stim, label in runs(corpus):
        assert np.allclose(x.mean(0), 0, atol=1e-3), (sid, task, np.abs(x.mean(0)).max())
        assert np.allclose(x.std(0), 1, atol=1e-3), (sid, task, x.std(0))
        count += 1
    assert count > 0

elif check == "studies":
    gt = json.load(open(os.path.join(corpus, "ground_truth.json")))
    seen = {}
    for study, task, tr, sid, dx, x, stim, label in runs(corpus):
        k = int(study.replace("study", "")) - 1
        assert abs(tr - expected_tr[k % 3]) < 1e-9, (study, tr)
        assert sid.startswith(study + "/"), (sid, study)
        # 2 minutes per subject: the rest and task runs add up to 120 s at the study's TR.
        seen.setdefault(sid, 0)
        seen[sid] += len(x) * tr
        if task == "rest":
            assert np.all(label == -1) and np.all(stim == 0), (sid, "rest run has stimuli")
        else:
            assert task == "emovideo" and k % 3 != 2, (sid, task)
            shown = label >= 0
            assert 0.3 < shown.mean() < 0.9, (sid, shown.mean())
            assert np.all(label < 27)
            assert np.all(np.abs(stim[shown]).sum(1) > 0) and np.all(stim[~shown] == 0)
            # Time points of one label run share one clip's embedding; that clip is of the label's category.
            emb = h5py.File(os.path.join(corpus, "ground_truth.h5"))["clips/embedding"][:]
            cat = h5py.File(os.path.join(corpus, "ground_truth.h5"))["clips/category"][:]
            for t in np.nonzero(shown)[0]:
                clip = np.nonzero(np.all(np.abs(emb - stim[t]) < 1e-6, axis=1))[0]
                assert len(clip) == 1 and cat[clip[0]] == label[t], (sid, t)
    assert len(seen) == gt["n_subjects"], (len(seen), gt["n_subjects"])
    for sid, secs in seen.items():
        assert abs(secs - 120) < 2.1, (sid, secs)

elif check == "splits":
    m = json.load(open(os.path.join(corpus, "manifest.json")))
    sp = m["split"]
    sets = [set(sp[k]) for k in ("train", "validation", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    ids = set()
    for path in shards(corpus):
        with h5py.File(path, "r") as f:
            ids |= {s(v) for v in f["subjects/id"][:]}
    assert sets[0] | sets[1] | sets[2] == ids, "split does not cover the subjects"
    assert m["n_subjects"] == len(ids) == len(json.load(open(os.path.join(corpus, "ground_truth.json")))["subjects"])
    assert m["n_shards"] == len(shards(corpus))

elif check == "ground_truth":
    gt = json.load(open(os.path.join(corpus, "ground_truth.json")))
    n, P, K, C, N, S = (gt[k] for k in ("n_subjects", "n_parcels", "n_networks", "n_categories", "n_clips", "stim_dim"))
    with h5py.File(os.path.join(corpus, "ground_truth.h5"), "r") as g:
        shapes = {"parcels/coords": (P, 3), "networks/maps": (K, P), "networks/group_coupling": (K, K),
                  "subjects/coupling": (n, K, K), "subjects/coupling_deviation": (n, K, K), "subjects/age": (n,),
                  "subjects/patient": (n,), "categories/response": (C, K), "clips/embedding": (N, S),
                  "clips/category": (N,), "studies/tr": (len(gt["studies"]),), "effects/diagnosis": (K, K),
                  "subjects/maps": (n, K, P), "subjects/site": (n,), "sites/gain": (len(gt["sites"]),),
                  "sites/noise": (len(gt["sites"]),), "sites/bias": (len(gt["sites"]), P)}
        for name, shape in shapes.items():
            assert g[name].shape == shape, (name, g[name].shape, shape)
        assert np.allclose(g["studies/tr"][:], [expected_tr[i % 3] for i in range(len(gt["studies"]))])
        # coupling = I + group + deviation + sum of trait effects (the documented model), recomputed here.
        M = g["subjects/coupling"][:]
        base = np.eye(K) + g["networks/group_coupling"][:] + g["subjects/coupling_deviation"][:]
        code = {"diagnosis": g["subjects/patient"][:], "age": (g["subjects/age"][:] - 45) / 15,
                "sex": g["subjects/sex_female"][:] - 0.5, "score": g["subjects/score"][:]}
        for e in gt["trait_effects"]:
            base = base + code[e["trait"]][:, None, None] * g["effects/" + e["trait"]][:][None]
        assert np.allclose(M, base, atol=1e-5)
        with h5py.File(shards(corpus)[0], "r") as f:
            assert np.allclose(f["parcels/coords"][:], g["parcels/coords"][:])
            sub = [s(v) for v in f["subjects/diagnosis"][:]]
            assert sub == ["patient" if v else "control" for v in g["subjects/patient"][:len(sub)]]

elif check == "model":
    # The documented generative model (docs/FORMAT.md), recomputed from the ground truth alone: a rest run's
    # parcel-by-parcel correlation matrix is, up to sampling error, that of
    #   cov = gain_e^2 * B^T M_i M_i^T B + noise_e^2 * I,   B = subjects/maps[i] * sites/bias[e]
    # (unit-variance independent oscillators; z-scoring does not change correlations). The subject's own maps, its
    # site and its coupling must each fit its data better than the group maps, another site or another subject's
    # coupling: so every one of them is stored as it was used.
    gt = json.load(open(os.path.join(corpus, "ground_truth.json")))
    g = h5py.File(os.path.join(corpus, "ground_truth.h5"), "r")
    ids = gt["subjects"]
    row = {sid: i for i, sid in enumerate(ids)}
    site_names = [e["name"] for e in gt["sites"]]
    maps, M, group = g["subjects/maps"][:], g["subjects/coupling"][:], g["networks/maps"][:]
    gain, noise, bias = g["sites/gain"][:], g["sites/noise"][:], g["sites/bias"][:]
    site_of, study_of = g["subjects/site"][:].astype(int), g["subjects/study"][:].astype(int)
    assert np.allclose(maps.mean(0), group, rtol=0.3, atol=0.05) and np.all(maps != group[None])
    # Sites: each study has its own, subjects of a study take them in turn, the shards name the subject's site.
    for st in gt["studies"]:
        assert len(st["sites"]) == int(sys.argv[3]), st
    for i in range(len(ids)):
        st = gt["studies"][study_of[i]]
        assert site_names[site_of[i]] == st["sites"][(i // len(gt["studies"])) % len(st["sites"])], i

    def implied(A, Mi, e):
        B = A * bias[e][None, :]
        C = gain[e] ** 2 * B.T @ Mi @ Mi.T @ B + noise[e] ** 2 * np.eye(A.shape[1])
        sd = np.sqrt(np.diag(C))
        return C / np.outer(sd, sd)

    err = {"own": [], "group maps": [], "another site": [], "another subject's coupling": []}
    for path in shards(corpus):
        with h5py.File(path, "r") as f:
            sub_ids = [s(v) for v in f["subjects/id"][:]]
            off, ln = f["runs/offset"][:], f["runs/length"][:]
            for r in range(len(off)):
                if s(f["runs/task"][r]) != "rest":
                    continue
                i = row[sub_ids[f["runs/subject"][r]]]
                e = site_of[i]
                assert s(f["runs/site"][r]) == site_names[e], (path, r)
                R = np.corrcoef(f["runs/timeseries"][off[r]:off[r] + ln[r]].astype(np.float64).T)
                iu = np.triu_indices(len(R), 1)
                mse = lambda C: np.mean((C[iu] - R[iu]) ** 2)
                other_site = (e + 1) % len(gain)
                err["own"].append(mse(implied(maps[i], M[i], e)))
                err["group maps"].append(mse(implied(group, M[i], e)))
                err["another site"].append(mse(implied(maps[i], M[i], other_site)))
                err["another subject's coupling"].append(mse(implied(maps[i], M[(i + 1) % len(ids)], e)))
    own = np.array(err["own"])
    assert len(own) == len(ids), len(own)
    for k, v in err.items():
        v = np.array(v)
        print("%-28s mean squared correlation error %.5f, own fits better in %.2f of subjects"
              % (k, v.mean(), np.mean(own < v)))
        if k != "own":
            assert own.mean() < v.mean() and np.mean(own < v) >= 0.75, k
    assert own.mean() < 0.6 * np.mean(err["another site"]) and own.mean() < 0.6 * np.mean(
        err["another subject's coupling"])

elif check == "chunks":
    # CORPUS was written with --chunk-rows N, OTHER with the default chunks and otherwise the same options.
    other, rows = sys.argv[3], int(sys.argv[4])
    a, b = shards(corpus), shards(other)
    assert [os.path.basename(p) for p in a] == [os.path.basename(p) for p in b] and a
    for pa, pb in zip(a, b):
        with h5py.File(pa, "r") as fa, h5py.File(pb, "r") as fb:
            for name in ("runs/timeseries", "runs/stim_embedding", "runs/label"):
                x, y = fa[name], fb[name]
                assert x.chunks == (rows,) + x.shape[1:], (pa, name, x.chunks)
                assert y.chunks == (256,) + y.shape[1:], (pb, name, y.chunks)
                assert x.fletcher32 and np.array_equal(x[:], y[:]), (pa, name)

elif check == "same":
    other = sys.argv[3]
    a, b = shards(corpus), shards(other)
    assert [os.path.basename(p) for p in a] == [os.path.basename(p) for p in b] and a
    for pa, pb in zip(a, b):
        with h5py.File(pa, "r") as fa, h5py.File(pb, "r") as fb:
            for name in ("runs/timeseries", "runs/stim_embedding", "runs/label", "runs/length", "subjects/id"):
                x, y = fa[name][:], fb[name][:]
                assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), (pa, name)
    ma = json.load(open(os.path.join(corpus, "manifest.json")))
    mb = json.load(open(os.path.join(other, "manifest.json")))
    assert ma == mb

elif check == "float16":
    for path in shards(corpus):
        with h5py.File(path, "r") as f:
            assert f["runs/timeseries"].dtype == np.float16, f["runs/timeseries"].dtype

elif check == "diagnosis":
    # Correlation of the mean signals of the parcels that belong to networks a and b (the diagnosis effect's pair),
    # per subject over its rest run: patients (effect > 0) must show a higher correlation than controls.
    gt = json.load(open(os.path.join(corpus, "ground_truth.json")))
    e = [e for e in gt["trait_effects"] if e["trait"] == "diagnosis"][0]
    a, b = e["networks"]
    maps = h5py.File(os.path.join(corpus, "ground_truth.h5"))["networks/maps"][:]
    owner = maps.argmax(0)
    pa, pb = owner == a, owner == b
    assert pa.any() and pb.any()
    r = {"patient": [], "control": []}
    for study, task, tr, sid, dx, x, stim, label in runs(corpus):
        if task == "rest":
            r[dx].append(np.corrcoef(x[:, pa].mean(1), x[:, pb].mean(1))[0, 1])
    p, c = np.array(r["patient"]), np.array(r["control"])
    assert len(p) >= 5 and len(c) >= 5, (len(p), len(c))
    t = (p.mean() - c.mean()) / np.sqrt(p.var(ddof=1) / len(p) + c.var(ddof=1) / len(c))
    print("patients r=%.3f (n=%d), controls r=%.3f (n=%d), t=%.2f" % (p.mean(), len(p), c.mean(), len(c), t))
    assert e["effect"] > 0 and t > 3, t

else:
    raise SystemExit("unknown check " + check)
print("ok")
