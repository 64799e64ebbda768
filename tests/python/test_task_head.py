#!/usr/bin/env python3
"""bfm.TaskHead.from_pretrained, run from the installed package, on heads that `bfm finetune` wrote:

- category: head(model(x)) equals flatten(tokens @ Wp.T + bp) @ W.T + b with Wp, bp, W, b decoded here from
  task_head.safetensors' raw bytes (struct + numpy, not the package's reader) and the tokens (encoder_out) from the
  package's model; on the corpus' training trials the fine-tuned head's argmax beats chance, so the head is the one
  the C++ trained, applied to the right input;
- embedding: the predictions are de-standardised, (... @ W.T + b) * target_scale + target_mean with both taken
  from task.json, and they fit the trials' stimulus embeddings better than their mean does;
- task.json of another format, a head whose shape disagrees with task.json, and a head on the pooled output (bfm
  before 2026-12-04): errors naming the file.

    BUILD/tests/python/venv/bin/python tests/python/test_task_head.py --bfm BUILD/launch/bfm --workdir DIR
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

import h5py
import numpy as np
import torch

import bfm

MODEL = ["model.n_parcels=16", "model.window=12", "model.patch_len=6", "model.d_model=16", "model.n_heads=2",
         "model.n_layers=1", "model.decoder.d_model=16", "model.decoder.n_heads=2", "model.decoder.n_layers=1",
         'model.objectives=["mae"]']


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    return proc


def raw_head(folder):
    """(Wp [C, D], bp [C], W [O, N*C], b [O]) float64 from the bytes of task_head.safetensors: u64 header length, JSON
    header, F32 data."""
    blob = open(os.path.join(folder, "task_head.safetensors"), "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]

    def tensor(name):
        info = header[name]
        assert info["dtype"] == "F32", info
        begin, end = info["data_offsets"]
        return np.frombuffer(data[begin:end], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return (tensor("task_head.proj.weight"), tensor("task_head.proj.bias"), tensor("task_head.weight"),
            tensor("task_head.bias"))


def raw_outputs(folder, tokens):
    """The head's raw outputs on encoder tokens [B, N, D] (numpy float64), from the file's bytes."""
    pw, pb, w, b = raw_head(folder)
    return (tokens @ pw.T + pb).reshape(tokens.shape[0], -1) @ w.T + b


def training_trials(corpus, window):
    """(windows [n, window, P], labels [n], embeddings [n, S]) of the pre-training subjects' trials: maximal stretches
    of one label (>= 0) whose window fits in the run (docs/EVALUATION.md), the window starting at the onset."""
    manifest = json.load(open(os.path.join(corpus, "manifest.json")))
    held = set(manifest["split"]["validation"]) | set(manifest["split"]["test"])
    xs, labels, embs = [], [], []
    for shard in manifest["shards"]:
        with h5py.File(os.path.join(corpus, shard["file"]), "r") as f:
            ids = [v.decode() if isinstance(v, bytes) else v for v in f["subjects/id"][:]]
            for r in range(len(f["runs/offset"])):
                if ids[f["runs/subject"][r]] in held:
                    continue
                o, n = int(f["runs/offset"][r]), int(f["runs/length"][r])
                x, lab, emb = f["runs/timeseries"][o:o + n], f["runs/label"][o:o + n], f["runs/stim_embedding"][o:o + n]
                t = 0
                while t < n:
                    e = t + 1
                    while e < n and lab[e] == lab[t] and np.array_equal(emb[e], emb[t]):
                        e += 1
                    if lab[t] >= 0 and t + window <= n:
                        xs.append(x[t:t + window])
                        labels.append(int(lab[t]))
                        embs.append(emb[t])
                    t = e
    return np.array(xs, np.float32), np.array(labels), np.array(embs, np.float64)


def check_category(ft, x, labels):
    model = bfm.BrainModel.from_pretrained(ft, dtype=torch.float64)
    head = bfm.TaskHead.from_pretrained(ft, dtype=torch.float64)
    assert head.classification and head.task == "category" and not head.training, head
    with torch.no_grad():
        out = model(torch.from_numpy(x).double())
        logits = head(out).numpy()
        assert np.array_equal(logits, head(out["encoder_out"]).numpy()), "head(dict) differs from head(encoder_out)"
    want = raw_outputs(ft, out["encoder_out"].numpy())
    err = float(np.abs(logits - want).max() / np.abs(want).max())
    assert err < 1e-12, f"category logits differ from the raw file's Wp, bp, W, b by {err:.1e}"
    accuracy = float((logits.argmax(1) == labels).mean())
    chance = float(np.bincount(labels).max() / len(labels))
    assert accuracy > chance + 0.1, f"fine-tuned head: training accuracy {accuracy:.2f}, majority class {chance:.2f}"
    print(f"category: logits == flatten(tokens @ Wp.T + bp) @ W.T + b of the raw file; training accuracy {accuracy:.2f} "
          f"(majority class {chance:.2f}) over {len(labels)} trials")


def check_embedding(ft, x, embs):
    task = json.load(open(os.path.join(ft, "task.json")))
    mean, scale = np.array(task["target_mean"]), np.array(task["target_scale"])
    # With mean 0 and scale 1 the de-standardisation could be missing and this test would not see it.
    assert np.abs(mean).max() > 0.05 and np.abs(scale - 1).max() > 0.05, (mean, scale)
    model = bfm.BrainModel.from_pretrained(ft, dtype=torch.float64)
    head = bfm.TaskHead.from_pretrained(ft)  # float32, as a user gets it
    assert not head.classification and head.outputs == embs.shape[1]
    with torch.no_grad():
        tokens = model(torch.from_numpy(x).double())["encoder_out"]
        pred = head(tokens.float()).double().numpy()
    want = raw_outputs(ft, tokens.numpy()) * scale + mean
    err = float(np.abs(pred - want).max() / np.abs(want).max())
    assert err < 1e-5, f"embedding predictions differ from (head outputs) * scale + mean by {err:.1e}"
    fit, base = float(((pred - embs) ** 2).mean()), float(((embs.mean(0) - embs) ** 2).mean())
    assert fit < base, f"predicted embeddings (mse {fit:.3f}) fit worse than their mean (mse {base:.3f})"
    print(f"embedding: predictions == (head outputs) * target_scale + target_mean (float32, {err:.1e}); "
          f"mse {fit:.3f} against the mean's {base:.3f}")


def check_errors(work, ft):
    bad = os.path.join(work, "bad")
    shutil.copytree(ft, bad)
    task_json = os.path.join(bad, "task.json")
    task = json.load(open(task_json))
    cases = [(dict(task, format="bfm-checkpoint"), "format"), (dict(task, outputs=task["outputs"] + 1), "outputs"),
             (dict(task, components=task["components"] + 1), "components"),
             (dict(task, input="pooled", format_version=1), "pooled")]
    for spec, needle in cases:
        json.dump(spec, open(task_json, "w"))
        try:
            bfm.TaskHead.from_pretrained(bad)
        except ValueError as e:
            assert "task.json" in str(e) and needle in str(e), str(e)
        else:
            raise AssertionError(f"TaskHead.from_pretrained accepted a task.json with {needle} changed")
    print("task.json of another format, disagreeing with the head's shape, or of a pooled head: errors naming the file")


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
    corpus, ckpt = os.path.join(work, "corpus"), os.path.join(work, "init")
    run([args.bfm, "synth", "--subjects", "12", "--parcels", "16", "--minutes", "8", "--studies", "1",
         "--stim-dim", "4", "--categories", "3", "--clips", "20", "--seed", "5", "--out", corpus])
    run([args.bfm, "init", "--out", ckpt, "--seed", "1"] + [a for s in MODEL for a in ("--set", s)])
    x, labels, embs = training_trials(corpus, 12)
    fts = {}
    for task in ("category", "embedding"):
        fts[task] = os.path.join(work, "ft-" + task)
        run([args.bfm, "finetune", "--checkpoint", ckpt, "--corpus", corpus, "--task", task, "--out", fts[task],
             "--steps", "150", "--batch-size", "16", "--lr", "5e-3", "--head-lr", "5e-2"])
    check_category(fts["category"], x, labels)
    check_embedding(fts["embedding"], x, embs)
    check_errors(work, fts["category"])
    print("TaskHead: all checks passed")


if __name__ == "__main__":
    main()
