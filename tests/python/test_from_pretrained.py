#!/usr/bin/env python3
"""bfm.BrainModel.from_pretrained, run from the installed package (the venv of install_venv.py), against the C++:

- checkpoints written by `bfm init` (mae + contrastive, causal) loaded with from_pretrained (float32, and float64),
  model(x) gives every output `bfm forward` writes for the same x, within float32 tolerance (relative error of the
  whole tensor < 1e-4, as tests/conformance does);
- the model comes back in eval mode, float32 by default, on the device asked for;
- a folder of another format or without config.json is an error naming the file;
- tools/load_checkpoint_example.py and `python3 -m bfm` run on the checkpoint with the installed package.

    BUILD/tests/python/venv/bin/python tests/python/test_from_pretrained.py --bfm BUILD/launch/bfm --workdir DIR
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import torch

import bfm

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 1e-4
CASES = {
    "mae_contrastive": ['model.objectives=["mae","contrastive"]', "model.stim_dim=5", "model.proj_dim=6",
                        "model.decoder.d_model=8", "model.decoder.n_heads=2", "model.decoder.n_layers=1"],
    "causal": ['model.objectives=["causal"]'],
}
SIZES = ["model.n_parcels=7", "model.window=12", "model.patch_len=4", "model.d_model=16", "model.n_heads=2",
         "model.n_layers=2"]


def run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    return proc


def installed_package():
    """The test is about the installed package: the venv's copy, never the checkout's python/."""
    where = os.path.realpath(bfm.__file__)
    assert where.startswith(os.path.realpath(sys.prefix) + os.sep), f"bfm imported from {where}, not {sys.prefix}"
    return where


def rel_err(got, ref):
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))


def check_case(bfm_bin, work, name, sets):
    folder = os.path.join(work, name)
    ckpt = os.path.join(folder, "ckpt")
    os.makedirs(folder)
    run([bfm_bin, "init", "--out", ckpt, "--seed", "7"] + [a for s in SIZES + sets for a in ("--set", s)])
    config = json.load(open(os.path.join(ckpt, "config.json")))
    x = np.random.default_rng(len(name)).normal(size=(3, config["window"], config["n_parcels"])).astype(np.float32)
    with h5py.File(os.path.join(folder, "in.h5"), "w") as f:
        f.create_dataset("x", data=x)
    run([bfm_bin, "forward", "--checkpoint", ckpt, "--input", os.path.join(folder, "in.h5"), "--output",
         os.path.join(folder, "out.h5")], env=dict(os.environ, OMP_NUM_THREADS="2"))
    with h5py.File(os.path.join(folder, "out.h5"), "r") as f:
        want = {k: f[k][()] for k in f.keys()}
    assert {"encoder_out", "pooled"} <= set(want), sorted(want)

    model = bfm.BrainModel.from_pretrained(ckpt, device="cpu")
    assert not model.training, "from_pretrained left the model in training mode"
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    worst = 0.0
    for dtype in (torch.float32, torch.float64):
        m = model if dtype == torch.float32 else bfm.BrainModel.from_pretrained(ckpt, dtype=torch.float64)
        with torch.no_grad():
            out = m(torch.from_numpy(x).to(dtype))
        assert set(out) == set(want), (name, sorted(out), sorted(want))
        for key, ref in want.items():
            err = rel_err(out[key].numpy().astype(np.float64), ref.astype(np.float64))
            assert err < TOLERANCE, f"{name} {key} ({dtype}): relative error {err:.2e} against bfm forward"
            worst = max(worst, err)
    print(f"{name}: from_pretrained(...)(x) == bfm forward for {sorted(want)}, worst relative error {worst:.1e}")
    return ckpt


def check_errors(work, ckpt):
    bad = os.path.join(work, "bad")
    shutil.copytree(ckpt, bad)
    config = json.load(open(os.path.join(bad, "config.json")))
    json.dump(dict(config, format="something-else"), open(os.path.join(bad, "config.json"), "w"))
    for folder, needle in ((bad, os.path.join(bad, "config.json")), (os.path.join(work, "nothing"), "config.json")):
        try:
            bfm.BrainModel.from_pretrained(folder)
        except (ValueError, OSError) as e:
            assert needle in str(e), (needle, str(e))
        else:
            raise AssertionError(f"from_pretrained({folder}) succeeded")
    print("a config of another format, and a folder without config.json: errors naming the file")


def check_scripts(ckpt):
    python = sys.executable  # the venv's
    example = os.path.join(HERE, "..", "..", "tools", "load_checkpoint_example.py")
    out = run([python, example, ckpt]).stdout
    assert "pooled embeddings (4, 16)" in out, out
    out = run([python, "-m", "bfm", ckpt], cwd=os.path.dirname(ckpt)).stdout
    assert "pooled" in out and "[2, 16]" in out, out
    print("tools/load_checkpoint_example.py and python3 -m bfm run with the installed package")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    print(f"bfm package: {installed_package()}")
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    ckpts = [check_case(args.bfm, args.workdir, name, sets) for name, sets in CASES.items()]
    check_errors(args.workdir, ckpts[0])
    check_scripts(ckpts[0])
    print("from_pretrained: all checks passed")


if __name__ == "__main__":
    main()
