#!/usr/bin/env python3
"""The `bfm` command as a user meets it: subcommands with --help, TOML configs with overrides, and bad input
answered by a non-zero exit and one clear line on stderr that names the file and what is wrong, with nothing
half-written left behind.

    /usr/bin/python3 tests/launch/cli/test_cli.py --bfm build/launch/bfm --workdir DIR
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

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
def the_same_synth_twice_is_the_same_bytes(bfm, work):
    # No HDF5 object timestamps: a corpus depends only on its options (docs/FORMAT.md), down to the bytes.
    import filecmp
    import time
    a, b = os.path.join(work, "a"), os.path.join(work, "b")
    args = ["synth", "--subjects", "6", "--parcels", "12", "--minutes", "1.5", "--subjects-per-shard", "4"]
    run(bfm, *args, "--out", a)
    time.sleep(1.1)  # timestamps, were they written, would now differ
    run(bfm, *args, "--out", b)
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b)) and "shard-00001.h5" in names and "ground_truth.h5" in names, names
    for n in names:
        assert filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False), f"{n} differs between two runs"


@case
def help_for_every_subcommand(bfm, work):
    for sub in ["init", "forward", "pretrain", "config", "info", "plot"]:
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
def init_reads_only_the_model_of_a_training_config(bfm, work):
    # The quickstart's config leaves data.corpus to pretrain's command line: init needs only [model].
    path = os.path.join(work, "training.toml")
    with open(path, "w") as f:
        f.write('[model]\nd_model = 32\nn_heads = 2\n\n[data]\nsource = "corpus"\n')
    out = os.path.join(work, "init-from-training-config")
    run(bfm, "init", "--config", path, "--out", out)
    assert json.load(open(os.path.join(out, "config.json")))["d_model"] == 32


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
    # A value from --set is blamed on the --set, not on a config file; a check of the whole config names both.
    path = os.path.join(work, "good.toml")
    with open(path, "w") as f:
        f.write("[train]\nsteps = 10\n")
    one_error_line(run(bfm, "init", "--config", path, "--out", os.path.join(work, "x"), "--set", "train.steps=abc",
                       ok=False), "--set train.steps=abc: train.steps must be an integer")
    one_error_line(run(bfm, "init", "--config", path, "--out", os.path.join(work, "x"), "--set", "train.lr=-1",
                       ok=False), "good.toml with --set train.lr=-1: train.lr must be positive")
    # A model far larger than memory: its size, not an allocation failure.
    proc = run(bfm, "init", "--out", os.path.join(work, "x"), "--set", "model.d_model=100000", ok=False)
    assert proc.returncode == 2, proc.returncode
    one_error_line(proc, "parameters", "d_model 100000", "more than this machine's")
    # A missing --config file: exit status 2 (bad input), the file named.
    proc = run(bfm, "init", "--config", os.path.join(work, "none.toml"), "--out", os.path.join(work, "x"), ok=False)
    assert proc.returncode == 2 and "none.toml" in proc.stderr, (proc.returncode, proc.stderr)
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
    config = json.load(open(os.path.join(out, "release", "config.json")))
    assert config["train_steps"] == 20 and config["format"] == "bfm-checkpoint"
    assert os.path.exists(os.path.join(out, "release", "README.md"))
    # A training checkpoint was written at the end; bfm export makes a released checkpoint of it with a model card,
    # equal in parameters to the one pretrain wrote, and the PyTorch example loads both.
    assert os.path.exists(os.path.join(out, "checkpoints", "latest")), os.listdir(out)
    exported = os.path.join(out, "export")
    run(bfm, "export", out, "--out", exported)
    card = open(os.path.join(exported, "README.md")).read()
    assert "20 steps" in card and "Last held-out losses: step 20" in card and "load_checkpoint" in card, card
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "python"))
    from bfm import model as bfm_torch
    _, a = bfm_torch.load_checkpoint(os.path.join(out, "release"))
    _, b = bfm_torch.load_checkpoint(exported)
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a), "export differs from pretrain's"
    example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools",
                           "load_checkpoint_example.py")
    for folder in (os.path.join(out, "release"), exported):
        proc = subprocess.run([sys.executable, example, folder], capture_output=True, text=True)
        assert proc.returncode == 0 and "pooled embeddings (4, 8)" in proc.stdout, proc.stdout + proc.stderr
    one_error_line(run(bfm, "export", os.path.join(work, "nothing"), ok=False), "no training checkpoint")


@case
def inspect_verify_names_a_non_finite_value(bfm, work):
    # NaN written into a shard through h5py keeps every chunk's checksum good: --verify must still name the file,
    # the run and the time point, and exit non-zero.
    import h5py
    corpus = os.path.join(work, "nan_corpus")
    run(bfm, "synth", "--subjects", "4", "--parcels", "12", "--minutes", "1.5", "--out", corpus)
    run(bfm, "inspect", corpus, "--verify")
    shard = os.path.join(corpus, "shard-00000.h5")
    with h5py.File(shard, "r+") as f:
        offset = int(f["runs/offset"][1])
        f["runs/timeseries"][offset + 7, 3] = float("nan")
    proc = run(bfm, "inspect", corpus, "--verify", ok=False)
    line = [l for l in proc.stderr.splitlines() if "non-finite" in l]
    assert len(line) == 1, proc.stderr
    for needle in (shard, "run 1", "time point 7", "parcel 3"):
        assert needle in line[0], line[0]


@case
def pretrain_names_what_differs_from_the_run_it_would_resume(bfm, work):
    # A second run into the same folder with another model or seed: refused, naming each setting that differs,
    # before any tensor is read; an --out that is a file is named too.
    out = os.path.join(work, "resume_other")
    base = [*TINY, "--set", "train.steps=3", "--set", "train.device=cpu", "--set", "train.validate_every=3"]
    run(bfm, "pretrain", *base, "--out", out)
    proc = run(bfm, "pretrain", *base, "--set", "model.d_model=16", "--set", "train.seed=5", "--out", out, ok=False)
    assert proc.returncode == 2, proc.returncode
    errors = [l for l in proc.stderr.splitlines() if l.startswith("bfm: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in ("written by a run with another", "d_model 8 there, 16 now", "seed 0 there, 5 now"):
        assert needle in errors[0], errors[0]
    a_file = os.path.join(work, "a_file")
    open(a_file, "w").close()
    one_error_line(run(bfm, "pretrain", *base, "--out", a_file, ok=False), a_file, "is not a folder")


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


def read_png(path):
    """An independent PNG reader for what bfm writes (8-bit RGB, not interlaced): checks the signature, every chunk's
    CRC and the IHDR/IDAT/IEND order, inflates the IDAT data and undoes the five scanline filters. Returns
    (height, width, 3) uint8, checked against PIL's decoding where the system Python has PIL."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: no PNG signature"
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in chunk {kind}"
        chunks.append((kind, body))
        pos += 12 + length
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds, f"{path}: chunks {kinds}"
    width, height, depth, colour_type, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour_type, compression, filtering, interlace) == (8, 2, 0, 0, 0), chunks[0][1]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride, bpp = width * 3, 3
    assert len(raw) == height * (stride + 1), f"{path}: {len(raw)} bytes of scanlines for {width}x{height}"
    out = np.zeros((height, stride), np.uint8)
    prev = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        assert kind <= 4, f"{path}: row {y} has filter type {kind}"
        if kind == 2:
            line = bytearray(((np.frombuffer(line, np.uint8).astype(np.int32) + np.frombuffer(prev, np.uint8)) & 255)
                             .astype(np.uint8).tobytes())
        elif kind != 0:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        out[y] = np.frombuffer(line, np.uint8)
        prev = line
    image = out.reshape(height, width, 3)
    try:  # a second, unrelated decoder where the system Python has one
        from PIL import Image
        np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), image)
    except ImportError:
        pass
    return image


def plot_area(image):
    """The chart's frame, found in the pixels: the rows and columns of long runs of the frame's grey (90, 90, 90)."""
    frame = np.all(image == (90, 90, 90), axis=2)
    rows = np.nonzero(frame.sum(axis=1) > image.shape[1] // 3)[0]
    cols = np.nonzero(frame.sum(axis=0) > image.shape[0] // 3)[0]
    assert len(rows) >= 2 and len(cols) >= 2, "no plot frame found"
    return rows.min() + 1, rows.max() - 1, cols.min() + 1, cols.max() - 1


@case
def plot_draws_a_runs_metrics_as_png(bfm, work):
    run_dir = os.path.join(work, "run")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        for step in range(1, 51):
            mae, contrastive = 2.0 * 0.97 ** step + 0.3, 3.0 * 0.95 ** step + 0.2
            line = {"step": step, "split": "train", "loss": mae + contrastive, "mae": mae,
                    "contrastive": contrastive, "lr": 1e-3 * min(1, step / 10), "grad_norm": 5.0 / step}
            if step >= 30:
                line.update(samples_per_s=900 + step, data_wait=0.01, comm=0.02)
            f.write(json.dumps(line) + "\n")
            if step % 10 == 0:
                f.write(json.dumps({"step": step, "split": "validation", "loss": mae + contrastive + 0.1,
                                    "mae": mae + 0.05, "contrastive": contrastive + 0.05}) + "\n")
    proc = run(bfm, "plot", run_dir)
    plots = os.path.join(run_dir, "plots")
    names = ["loss.png", "lr.png", "throughput.png"]
    assert proc.stdout.split() == [os.path.join(plots, n) for n in names], proc.stdout
    assert sorted(os.listdir(plots)) == sorted(names), os.listdir(plots)

    loss = read_png(os.path.join(plots, "loss.png"))
    assert loss.shape == (500, 900, 3), loss.shape
    background = np.all(loss == 255, axis=2)
    assert (~background).mean() > 0.03, f"loss.png is nearly blank: {(~background).mean():.3f} drawn"
    # Drawn without anti-aliasing: a handful of flat colours. A scanline filter undone wrongly makes many more.
    colours = len(np.unique(loss.reshape(-1, 3), axis=0))
    assert colours <= 24, f"loss.png has {colours} distinct colours"
    top, bottom, left, right = plot_area(loss)
    assert right - left > 400 and bottom - top > 250, (top, bottom, left, right)
    inside = loss[top:bottom + 1, left:right + 1]
    # The mae line (blue, (31, 119, 180)) runs across the plot and falls: high (small y) on the left, low on the right.
    ys, xs = np.nonzero(np.all(inside == (31, 119, 180), axis=2))
    assert len(set(xs)) > 0.8 * (right - left), f"the mae line covers {len(set(xs))} of {right - left} columns"
    width = right - left
    early, late = np.median(ys[xs < width // 10]), np.median(ys[xs > width * 9 // 10])
    assert early < late - 20, f"the mae line does not fall: rows {early} -> {late}"
    # The moving average of the total (thick, (30, 30, 30)) and the validation losses (red dots, (214, 39, 40)).
    assert np.all(inside == (30, 30, 30), axis=2).sum() > 3 * width, "no thick moving-average line"
    red = np.all(inside == (214, 39, 40), axis=2)
    dots = red[1:-1, 1:-1] & red[:-2, 1:-1] & red[2:, 1:-1] & red[1:-1, :-2] & red[1:-1, 2:]  # not on a 1-pixel line
    assert dots.sum() >= 5 * 5, f"the 5 validation loss markers are missing ({dots.sum()} dot pixels)"

    for name in ["lr.png", "throughput.png"]:
        image = read_png(os.path.join(plots, name))
        assert image.shape[1] == 900 and image.shape[0] >= 300, (name, image.shape)
        assert (~np.all(image == 255, axis=2)).mean() > 0.02, f"{name} is nearly blank"

    # A run still writing its last line: that line is skipped. --out and --metrics are honoured.
    partial = os.path.join(work, "partial.jsonl")
    shutil.copy(os.path.join(run_dir, "metrics.jsonl"), partial)
    with open(partial, "a") as f:
        f.write('{"step": 51, "split": "tr')
    out = os.path.join(work, "elsewhere")
    assert run(bfm, "plot", run_dir, "--metrics", partial, "--out", out).stdout.split()[0] == \
        os.path.join(out, "loss.png")

    # Bad input: one line naming the file (and the line), and nothing written.
    bad = os.path.join(work, "bad")
    os.makedirs(bad)
    lines = open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()
    lines[6] = '{"step": 7, "split": "train", "loss": }'
    with open(os.path.join(bad, "metrics.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    one_error_line(run(bfm, "plot", bad, ok=False), os.path.join(bad, "metrics.jsonl") + ":7:")
    lines[6] = '{"step": "seven", "split": "train"}'
    with open(os.path.join(bad, "metrics.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    one_error_line(run(bfm, "plot", bad, ok=False), "metrics.jsonl:7:", '"step"')
    with open(os.path.join(bad, "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 10, "split": "validation", "loss": 1.0}) + "\n")
    one_error_line(run(bfm, "plot", bad, ok=False), "metrics.jsonl", "no training lines")
    one_error_line(run(bfm, "plot", os.path.join(work, "missing"), ok=False),
                   os.path.join(work, "missing", "metrics.jsonl"))
    assert not os.path.exists(os.path.join(bad, "plots")), "a failed plot left a folder behind"


def _params(folder):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "python"))
    from bfm import model as bfm_torch
    return bfm_torch.load_checkpoint(folder)[1]


@case
def sigusr1_stops_with_a_checkpoint_and_the_rerun_continues_bit_for_bit(bfm, work):
    # A real signal: the run stops at a step boundary, writes a checkpoint and exits 75; the same command again
    # resumes and ends with exactly the parameters and held-out losses of a run that was never stopped.
    import signal
    cfg = [*TINY, "--set", "model.d_model=32", "--set", "model.decoder.d_model=32", "--set", "train.steps=400",
           "--set", "train.log_every=1", "--set", "train.checkpoint_every=0", "--set", "train.validate_every=100"]
    straight = os.path.join(work, "straight")
    run(bfm, "pretrain", *cfg, "--out", straight)
    stopped = os.path.join(work, "stopped")
    proc = subprocess.Popen([bfm, "pretrain", *cfg, "--out", stopped], stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "step  20/400" in line:
            proc.send_signal(signal.SIGUSR1)
    proc.wait(timeout=120)
    text = "".join(seen)
    assert proc.returncode == 75, f"exit {proc.returncode}: {text[-2000:]}"
    assert "stop signal" in text and "run the same command again" in text, text[-2000:]
    assert not os.path.exists(os.path.join(stopped, "release")), "a stopped run must not release a checkpoint"
    latest = open(os.path.join(stopped, "checkpoints", "latest")).read().strip()
    again = run(bfm, "pretrain", *cfg, "--out", stopped)
    assert "resumed from" in again.stderr and latest in again.stderr, again.stderr[-2000:]
    a, b = _params(os.path.join(straight, "release")), _params(os.path.join(stopped, "release"))
    assert all(bool((a[k] == b[k]).all()) for k in a), "the resumed run differs from the uninterrupted one"
    lines = [json.loads(l) for l in open(os.path.join(stopped, "metrics.jsonl"))]
    steps = [l["step"] for l in lines if l["split"] == "train"]
    assert steps == list(range(1, 401)), "metrics must hold every step once"
    va = [l for l in lines if l["split"] == "validation"][-1]
    vb = [json.loads(l) for l in open(os.path.join(straight, "metrics.jsonl")) if '"validation"' in l][-1]
    assert va == vb, (va, vb)


@case
def a_run_of_two_ranks_resumes_on_four(bfm, work):
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        return
    out = os.path.join(work, "run")
    cfg = [*TINY, "--set", "train.steps=30", "--set", "train.checkpoint_every=10", "--set", "train.keep_checkpoints=5",
           "--out", out]
    mp = [mpirun, "--oversubscribe", "-np"]
    proc = subprocess.run([*mp, "2", bfm, "pretrain", *cfg], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpts = sorted(f for f in os.listdir(os.path.join(out, "checkpoints")) if f.startswith("ckpt-"))
    assert ckpts == ["ckpt-00000010.h5", "ckpt-00000020.h5", "ckpt-00000030.h5"], ckpts
    with open(os.path.join(out, "checkpoints", "latest"), "w") as f:  # back to step 20
        f.write("ckpt-00000020.h5\n")
    proc = subprocess.run([*mp, "4", bfm, "pretrain", *cfg], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ckpt-00000020.h5 at step 20 (written by 2 ranks, now 4)" in proc.stderr, proc.stderr[-2000:]
    assert "held-out loss after 30 steps" in proc.stderr, proc.stderr[-2000:]


@case
def pretrain_from_a_corpus_for_one_epoch(bfm, work):
    # A corpus made by bfm synth, train.epochs = 1: as many steps as global batches in one pass over the training
    # subjects' windows (reported in the first line), each logged once.
    corpus = os.path.join(work, "corpus")
    run(bfm, "synth", "--subjects", "80", "--parcels", "8", "--minutes", "2", "--studies", "2", "--out", corpus)
    out = os.path.join(work, "run")
    proc = run(bfm, "pretrain", *TINY, "--set", "model.n_parcels=8", "--set", "data.source=\"corpus\"",
               "--set", f"data.corpus=\"{corpus}\"", "--set", "train.epochs=1", "--set", "train.log_every=1",
               "--out", out)
    import re
    m = re.search(r"global batch 16 .*?\), (\d+) steps, corpus", proc.stderr)
    assert m, proc.stderr[:2000]
    steps = int(m.group(1))
    assert steps > 1, proc.stderr[:2000]
    train = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"train"' in l]
    assert [l["step"] for l in train] == list(range(1, steps + 1))
    # Too few held-out windows for one global batch: a clear error naming the corpus.
    proc = run(bfm, "pretrain", *TINY, "--set", "model.n_parcels=8", "--set", "data.source=\"corpus\"",
               "--set", f"data.corpus=\"{corpus}\"", "--set", "train.batch_size=4096",
               "--out", os.path.join(work, "big"), ok=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert "bfm: error: " + corpus in last and "fewer than one global batch" in last, proc.stderr


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
