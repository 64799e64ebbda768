#!/usr/bin/env python3
"""The `bfm` command as a user meets it: subcommands with --help, TOML configs with overrides, and bad input
answered by a non-zero exit and one clear line on stderr that names the file and what is wrong, with nothing
half-written left behind.

    /usr/bin/python3 tests/launch/test_cli.py --bfm build/launch/bfm --workdir DIR
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def run(bfm, *args, ok=True):
    proc = subprocess.run([bfm, *args], capture_output=True, text=True, timeout=120)
    if ok and proc.returncode != 0:
        raise AssertionError(f"bfm {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    if not ok and proc.returncode == 0:
        raise AssertionError(f"bfm {' '.join(args)} succeeded, expected an error")
    return proc


def one_error_line(proc, *needles):
    lines = [l for l in proc.stderr.strip().splitlines() if l]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {proc.stderr!r}"
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"


TINY = ["--set", "model.n_parcels=5", "--set", "model.window=12", "--set", "model.patch_len=4",
        "--set", "model.d_model=8", "--set", "model.n_heads=2", "--set", "model.n_layers=1",
        "--set", "model.decoder.d_model=8", "--set", "model.decoder.n_heads=2", "--set", "model.decoder.n_layers=1"]


@case
def help_for_every_subcommand(bfm, work):
    for sub in ["init", "forward", "pretrain", "config", "info"]:
        out = run(bfm, sub, "--help").stdout
        assert "--help" in out and len(out) > 100, out
    proc = run(bfm, ok=False)
    assert proc.returncode != 0


@case
def defaults_round_trip_through_a_config_file(bfm, work):
    path = os.path.join(work, "defaults.toml")
    with open(path, "w") as f:
        f.write(run(bfm, "config", "--defaults").stdout)
    resolved = json.loads(run(bfm, "config", "--config", path, "--set", "model.d_model=64",
                              "--set", "train.mask_strategy=tube").stdout)
    assert resolved["d_model"] == 64 and resolved["train"]["mask_strategy"] == "tube", resolved


@case
def unknown_key_is_named(bfm, work):
    path = os.path.join(work, "typo.toml")
    with open(path, "w") as f:
        f.write("[model]\nd_modle = 64\n")
    one_error_line(run(bfm, "init", "--config", path, "--out", os.path.join(work, "x"), ok=False),
                   "typo.toml", "model.d_modle")


@case
def bad_values_are_named(bfm, work):
    one_error_line(run(bfm, "init", "--out", os.path.join(work, "x"), "--set", "model.d_model=30",
                       "--set", "model.n_heads=4", ok=False), "d_model 30 is not a multiple of n_heads 4")
    one_error_line(run(bfm, "init", "--out", os.path.join(work, "x"), "--set", "model.window=30", ok=False),
                   "window 30 is not a multiple of patch_len 8")
    one_error_line(run(bfm, "init", "--out", os.path.join(work, "x"),
                       "--set", 'model.objectives=["mae","causal"]', ok=False), "cannot be combined")
    one_error_line(run(bfm, "init", "--out", os.path.join(work, "x"), "--set", "model.d_model=1000000000000",
                       ok=False), "model.d_model = 1000000000000 is out of range")
    one_error_line(run(bfm, "init", "--out", os.path.join(work, "x"), "--set", "train.mask_strategy=blocks",
                       ok=False), "unknown mask strategy")
    one_error_line(run(bfm, "init", "--out", os.path.join(work, "x"), "--set", "train.device=tpu", ok=False),
                   "train.device is 'tpu', expected auto, cpu or cuda")
    one_error_line(run(bfm, "init", "--out", os.path.join(work, "x"), "--set", "train.precision=fp16", ok=False),
                   "train.precision is 'fp16', expected bf16 or fp32")
    path = os.path.join(work, "broken.toml")
    with open(path, "w") as f:
        f.write("[model\nd_model = 64\n")
    one_error_line(run(bfm, "init", "--config", path, "--out", os.path.join(work, "x"), ok=False), "broken.toml")
    assert not os.path.exists(os.path.join(work, "x"))


def make_checkpoint(bfm, work, name="ckpt"):
    ckpt = os.path.join(work, name)
    run(bfm, "init", "--out", ckpt, *TINY)
    return ckpt


@case
def forward_rejects_bad_inputs_naming_file_and_dataset(bfm, work):
    ckpt = make_checkpoint(bfm, work)
    out = os.path.join(work, "out.h5")
    cases = [
        ({"x": np.zeros((2, 12, 4), np.float32)}, "'x' has shape [2, 12, 4]"),
        ({"y": np.zeros((2, 12, 5), np.float32)}, "missing dataset 'x'"),
        ({"x": np.full((2, 12, 5), np.nan, np.float32)}, "'x' holds a non-finite value"),
        ({"x": np.zeros((2, 12, 5), np.float32), "mask": np.zeros((2, 14), np.uint8)}, "'mask' has shape [2, 14]"),
        ({"x": np.zeros((2, 12, 5), np.float32), "mask": np.array([[1] * 8 + [0] * 7, [1] * 7 + [0] * 8], np.uint8)},
         "mask row 1"),
    ]
    for i, (datasets, needle) in enumerate(cases):
        path = os.path.join(work, f"bad{i}.h5")
        with h5py.File(path, "w") as f:
            for k, v in datasets.items():
                f[k] = v
        one_error_line(run(bfm, "forward", "--checkpoint", ckpt, "--input", path, "--output", out, ok=False),
                       f"bad{i}.h5", needle)
        assert not os.path.exists(out) and not os.path.exists(out + ".tmp"), "a failed run left output behind"
    with open(os.path.join(work, "noth5.h5"), "w") as f:
        f.write("not hdf5")
    one_error_line(run(bfm, "forward", "--checkpoint", ckpt, "--input", os.path.join(work, "noth5.h5"),
                       "--output", out, ok=False), "noth5.h5")


@case
def forward_keeps_an_existing_output_when_it_fails(bfm, work):
    ckpt = make_checkpoint(bfm, work, "ckpt2")
    good = os.path.join(work, "good.h5")
    rng = np.random.default_rng(0)
    with h5py.File(good, "w") as f:
        f["x"] = rng.standard_normal((2, 12, 5)).astype(np.float32)
        f["mask"] = np.array([[1] * 11 + [0] * 4, [0] * 4 + [1] * 11], np.uint8)
    out = os.path.join(work, "kept.h5")
    run(bfm, "forward", "--checkpoint", ckpt, "--input", good, "--output", out)
    with h5py.File(out, "r") as f:
        before = f["reconstruction"][...]
        assert f["encoder_out"].shape == (2, 4, 8)
    bad = os.path.join(work, "nan.h5")
    with h5py.File(bad, "w") as f:
        f["x"] = np.full((2, 12, 5), np.inf, np.float32)
    run(bfm, "forward", "--checkpoint", ckpt, "--input", bad, "--output", out, ok=False)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["reconstruction"][...], before)


@case
def forward_names_a_checkpoint_of_another_config(bfm, work):
    a = make_checkpoint(bfm, work, "ckpt_a")
    b = os.path.join(work, "ckpt_b")
    run(bfm, "init", "--out", b, *TINY, "--set", "model.n_layers=2")
    shutil.copy(os.path.join(a, "config.json"), os.path.join(b, "config.json"))  # weights of 2 layers, config of 1
    good = os.path.join(work, "in.h5")
    with h5py.File(good, "w") as f:
        f["x"] = np.zeros((1, 12, 5), np.float32)
    one_error_line(run(bfm, "forward", "--checkpoint", b, "--input", good, "--output", os.path.join(work, "o.h5"),
                       ok=False), "blocks.1.", "another config")


@case
def pretrain_writes_metrics_and_a_loadable_checkpoint(bfm, work):
    out = os.path.join(work, "run")
    proc = run(bfm, "pretrain", *TINY, "--set", "train.steps=20", "--set", "train.log_every=5", "--out", out)
    assert "step 20/20" in proc.stderr and "ETA" in proc.stderr and "samples/s" in proc.stderr, proc.stderr
    lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    train = [l for l in lines if l["split"] == "train"]
    assert len(train) == 20 and all("mae" in l and "lr" in l for l in train)
    config = json.load(open(os.path.join(out, "checkpoint", "config.json")))
    assert config["train_steps"] == 20 and config["format"] == "bfm-checkpoint"
    assert os.path.exists(os.path.join(out, "checkpoint", "README.md"))


@case
def pretrain_on_cuda_without_a_gpu_is_a_clear_error(bfm, work):
    # CI machines have no GPU: asking for one must say so (and what the machine has), and write nothing.
    import subprocess as sp
    has_gpu = sp.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0 if shutil.which("nvidia-smi") else False
    if has_gpu:
        return
    out = os.path.join(work, "run")
    one_error_line(run(bfm, "pretrain", *TINY, "--set", "train.device=cuda", "--out", out, ok=False),
                   "train.device = \"cuda\" but this")
    assert not os.path.exists(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bfm", required=True)
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    passed = failed = 0
    for fn in CASES:
        work = os.path.join(args.workdir, fn.__name__)
        os.makedirs(work)
        try:
            fn(os.path.abspath(args.bfm), work)
            passed += 1
            print(f"PASS  {fn.__name__}")
        except Exception as e:  # noqa: BLE001 - report every failure, then exit non-zero
            failed += 1
            print(f"FAIL  {fn.__name__}: {e}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
