#!/usr/bin/env python3
"""Generalisation where per-subject models fail, as a user runs it, checked independently with h5py and numpy:

- `bfm pretrain --set data.exclude_studies=["study02"]` never reads study02: the same run on a copy of the corpus
  whose study02 runs hold NaN succeeds (and fails without the exclusion, naming the NaN); the released config.json
  lists the studies trained on and the number of training subjects (both counted with h5py from the shards);
- `bfm eval --heldout-study study02` evaluates exactly the subjects with a run of study02 (any split), learns the
  population methods from the other studies' training subjects only, warns when the checkpoint was pre-trained on
  the study and not otherwise;
- `top1_novel` (identification of the test trials whose stimulus no population subject's trial showed) recomputed
  from the predictions with the novel set found independently in the shards;
- a study that no run carries is one clear error line (exit 2) for pretrain and eval.

    /usr/bin/python3 tests/launch/eval/test_generalisation.py --bfm build/launch/bfm --workdir DIR
"""
import argparse
import json
import os
import shutil
import sys
from collections import defaultdict

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_eval import (MODEL, corpus_runs, embedding_predictions, identification_ranks, one_error_line,  # noqa: E402
                       read_results, run, trial_onsets)

CONFIG = os.path.join(HERE, "..", "..", "..", "configs", "quickstart.toml")
WINDOW = 12


def studies_of(corpus):
    """subject id -> the set of studies of its runs, read from the shards."""
    manifest = json.load(open(os.path.join(corpus, "manifest.json")))
    out = defaultdict(set)
    for shard in manifest["shards"]:
        with h5py.File(os.path.join(corpus, shard["file"])) as f:
            ids = [x.decode() if isinstance(x, bytes) else x for x in f["subjects/id"][:]]
            for r, s in enumerate(f["runs/study"][:]):
                out[ids[f["runs/subject"][r]]].add(s.decode() if isinstance(s, bytes) else s)
    return out, manifest


def poison(corpus, study):
    """NaN into every run of `study` (h5py rewrites the chunks and their checksums)."""
    manifest = json.load(open(os.path.join(corpus, "manifest.json")))
    hit = 0
    for shard in manifest["shards"]:
        with h5py.File(os.path.join(corpus, shard["file"]), "r+") as f:
            for r, s in enumerate(f["runs/study"][:]):
                if (s.decode() if isinstance(s, bytes) else s) == study:
                    o, n = int(f["runs/offset"][r]), int(f["runs/length"][r])
                    block = f["runs/timeseries"][o:o + n]
                    block[:, 0] = np.nan
                    f["runs/timeseries"][o:o + n] = block
                    hit += 1
    assert hit > 0


def pretrain(bfm, corpus, out, *extra, ok=True):
    return run([bfm, "pretrain", "--config", CONFIG, *MODEL, "--set", f'data.corpus="{corpus}"', "--set",
                f'train.out="{out}"', "--set", "train.steps=12", "--set", "train.batch_size=8", "--set",
                "train.validate_every=6", "--set", "train.checkpoint_every=12", "--set", "data.stride=6",
                "--set", "model.stim_dim=6", *extra], ok=ok)


def check_novel(rep, results, corpus, population):
    """top1_novel of every (method, fraction, subject, fold) recomputed: the ranks of the fold's test trials among
    its distinct test stimuli (correlation, as test_eval checks top1), over the trials whose true embedding no trial
    of a population subject shows (trials found with h5py)."""
    seen = set()
    for sid, _, _, lab, emb in corpus_runs(corpus):
        if sid in population:
            for t in trial_onsets(lab, emb, WINDOW):
                seen.add(tuple(np.float32(emb[t])))
    groups, _ = embedding_predictions(rep)
    checked = novel_trials = 0
    for (method, q, subject, fold), rows in groups.items():
        ranks, _ = identification_ranks(rows)
        novel = np.array([tuple(np.float32(r[1])) not in seen for r in rows])
        key = ("retrieval", method, q, subject, fold, "top1_novel")
        if novel.any():
            assert abs(results[key] - float((ranks[novel] < 1).mean())) < 1e-9, (key, results[key])
            novel_trials += int(novel.sum())
            checked += 1
        else:
            assert key not in results, key
    return checked, novel_trials


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    bfm, work = args.bfm, args.workdir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    corpus = os.path.join(work, "corpus")
    # Many clips, so that a held-out subject sees stimuli no one else did (the novel ones).
    run([bfm, "synth", "--subjects", "30", "--parcels", "24", "--minutes", "12", "--studies", "2", "--stim-dim", "6",
         "--categories", "3", "--clips", "1500", "--seed", "5", "--out", corpus])
    studies, manifest = studies_of(corpus)
    in_02 = {s for s, st in studies.items() if "study02" in st}
    train_01 = {s for s in manifest["split"]["train"] if s not in in_02}
    assert in_02 and train_01

    # Pre-training without study02 never reads it: NaN there changes nothing; without the exclusion it is named.
    poisoned = os.path.join(work, "poisoned")
    shutil.copytree(corpus, poisoned)
    poison(poisoned, "study02")
    excl = ["--set", 'data.exclude_studies=["study02"]']
    pretrain(bfm, poisoned, os.path.join(work, "run-poisoned"), *excl)
    proc = pretrain(bfm, poisoned, os.path.join(work, "run-poisoned-all"), ok=False)
    assert proc.returncode == 2 and "study02/" in proc.stderr and "holds nan" in proc.stderr, proc.stderr[-2000:]

    pretrain(bfm, corpus, os.path.join(work, "run"), *excl)
    cfg = json.load(open(os.path.join(work, "run", "release", "config.json")))
    assert cfg["train_datasets"] == ["study01"], cfg["train_datasets"]
    assert cfg["train_subjects"] == len(train_01), (cfg["train_subjects"], len(train_01))
    pretrain(bfm, corpus, os.path.join(work, "run-all"))
    cfg_all = json.load(open(os.path.join(work, "run-all", "release", "config.json")))
    assert sorted(cfg_all["train_datasets"]) == ["study01", "study02"], cfg_all["train_datasets"]
    assert cfg_all["train_subjects"] == len(manifest["split"]["train"])
    proc = pretrain(bfm, corpus, os.path.join(work, "run-bad"), "--set", 'data.exclude_studies=["study09"]', ok=False)
    assert proc.returncode == 2, proc.returncode
    one_error_line(proc, "study09", "study01, study02")
    proc = pretrain(bfm, corpus, os.path.join(work, "run-none"), "--set", 'data.exclude_studies=["study01", "study02"]',
                    ok=False)
    assert proc.returncode == 2, proc.returncode
    one_error_line(proc, "leaves no training subject")

    # Leave study02 out: its subjects are the new ones, the population the other study's training subjects.
    rep = os.path.join(work, "report")
    proc = run([bfm, "eval", "--checkpoint", os.path.join(work, "run", "release"), "--corpus", corpus, "--out", rep,
                "--tasks", "category,embedding,retrieval", "--fractions", "0.5,1", "--folds", "3",
                "--heldout-study", "study02"])
    assert "warning: --heldout-study" not in proc.stderr, proc.stderr
    results = read_results(os.path.join(rep, "results.csv"))
    evaluated = {k[3] for k in results if k[0] in ("category", "embedding")}
    assert evaluated == in_02, (sorted(evaluated), sorted(in_02))
    rcfg = json.load(open(os.path.join(rep, "config.json")))
    assert rcfg["heldout_study"] == "study02" and rcfg["population_subjects"] == len(train_01), rcfg
    assert "leave one study out" in open(os.path.join(rep, "summary.md")).read()
    checked, novel = check_novel(rep, results, corpus, train_01)
    assert checked > 0 and novel > 0, (checked, novel)
    print(f"leave-one-study-out: {len(in_02)} study02 subjects evaluated against {len(train_01)} study01 population "
          f"subjects; top1_novel of {checked} folds ({novel} novel trials) recomputed")

    # A checkpoint that saw the study is named; an unknown study is refused.
    proc = run([bfm, "eval", "--checkpoint", os.path.join(work, "run-all", "release"), "--corpus", corpus, "--out",
                os.path.join(work, "report-all"), "--tasks", "category", "--fractions", "1", "--folds", "3",
                "--heldout-study", "study02", "--no-predictions"])
    assert "warning: --heldout-study study02" in proc.stderr, proc.stderr
    proc = run([bfm, "eval", "--checkpoint", os.path.join(work, "run", "release"), "--corpus", corpus, "--out",
                os.path.join(work, "report-bad"), "--heldout-study", "study09"], ok=False)
    assert proc.returncode == 2, proc.returncode
    one_error_line(proc, "study09", "study01, study02")
    print("ok")


if __name__ == "__main__":
    main()
