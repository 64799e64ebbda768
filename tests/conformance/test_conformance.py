#!/usr/bin/python3
"""Conformance of `bfm forward` (C++, float32) with the PyTorch reference python/bfm/model.py (float64).

Each forward case makes a checkpoint (random parameters from a seeded torch generator, or `bfm init`), writes
in.h5, runs `bfm forward ... --grads grads.safetensors`, and compares every dataset of out.h5 and every gradient
of loss_total with the reference: ||bfm - ref|| / max(||ref||, 1e-12) < 1e-4, the name sets exactly the expected
ones, the shapes equal. Two more cases feed bfm a broken checkpoint and expect a clean one-line error.

Run:  /usr/bin/python3 tests/conformance/test_conformance.py --bfm build/launch/bfm --workdir /tmp/conformance
Prints one line per case, a table of every mismatch if any, and last `N passed, N failed`; exit 1 on failure.
"""
import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from bfm import model as bfm_torch  # noqa: E402

torch.set_num_threads(2)
TOLERANCE = 1e-4
BFM_TIMEOUT_S = 60

# Odd sizes: P=7, T=15, L=5 -> n_t=3, N=21; D=24, H=3 (dh=8); decoder Dd=16 with 2 heads (dh=8).
ODD = dict(n_parcels=7, window=15, patch_len=5, d_model=24, n_heads=3, n_layers=2, mlp_ratio=4, mask_ratio=0.5)
DECODER = dict(d_model=16, n_heads=2, n_layers=1)
STIM = dict(stim_dim=5, proj_dim=6)


def case(name, config, B=3, mask=True, stim=True, grads=True, seed=0):
    return dict(name=name, config=config, B=B, mask=mask, stim=stim, grads=grads, seed=seed)


FORWARD_CASES = [
    case("mae", dict(ODD, objectives=["mae"], decoder=DECODER), stim=False, seed=1),
    case("mae+contrastive", dict(ODD, **STIM, objectives=["mae", "contrastive"], decoder=DECODER, mlp_ratio=2),
         seed=2),
    case("causal", dict(ODD, objectives=["causal"]), mask=False, stim=False, seed=3),
    case("causal+contrastive", dict(ODD, **STIM, objectives=["causal", "contrastive"], mlp_ratio=2), mask=False,
         seed=4),
    # P=5, T=12, L=4 -> n_t=3, N=15; D=16 with 4 heads (dh=4), 3 layers; decoder 8 wide, 1 head, 2 layers.
    case("mae, other sizes, mask_ratio 0.75",
         dict(n_parcels=5, window=12, patch_len=4, d_model=16, n_heads=4, n_layers=3, mlp_ratio=2,
              mask_ratio=0.75, objectives=["mae"], decoder=dict(d_model=8, n_heads=1, n_layers=2)),
         stim=False, seed=5),
    case("mae+contrastive, loss_weights 0.5/2",
         dict(ODD, **STIM, objectives=["mae", "contrastive"], decoder=DECODER,
              loss_weights={"mae": 0.5, "contrastive": 2.0}), seed=6),
    case("mae without mask (all tokens, no reconstruction, no loss)", dict(ODD, objectives=["mae"], decoder=DECODER),
         mask=False, stim=False, grads=False, seed=7),
    case("mae+contrastive without mask (loss = contrastive, decoder grads 0)",
         dict(ODD, **STIM, objectives=["mae", "contrastive"], decoder=DECODER), mask=False, seed=8),
    case("mae+contrastive without stim (loss = mae)",
         dict(ODD, **STIM, objectives=["mae", "contrastive"], decoder=DECODER), stim=False, seed=9),
    case("causal+contrastive with a mask (ignored)",
         dict(ODD, **STIM, objectives=["causal", "contrastive"]), mask=True, seed=10),
    case("mae+contrastive B=1 (contrastive 0)", dict(ODD, **STIM, objectives=["mae", "contrastive"], decoder=DECODER),
         B=1, seed=11),
    case("causal B=1", dict(ODD, objectives=["causal"]), B=1, mask=False, stim=False, seed=12),
]

INIT_CASES = [
    ("init mae+contrastive", """[model]
n_parcels = 7
window = 15
patch_len = 5
d_model = 24
n_heads = 3
n_layers = 2
mlp_ratio = 4
objectives = ["mae", "contrastive"]
mask_ratio = 0.5
stim_dim = 5
proj_dim = 6
[model.decoder]
d_model = 16
n_heads = 2
n_layers = 1
""", dict(ODD, **STIM, objectives=["mae", "contrastive"], decoder=DECODER)),
    ("init causal+contrastive", """[model]
n_parcels = 6
window = 16
patch_len = 4
d_model = 16
n_heads = 2
n_layers = 3
mlp_ratio = 2
objectives = ["causal", "contrastive"]
stim_dim = 3
proj_dim = 4
""", dict(n_parcels=6, window=16, patch_len=4, d_model=16, n_heads=2, n_layers=3, mlp_ratio=2, stim_dim=3,
          proj_dim=4, objectives=["causal", "contrastive"], decoder=None)),
]

SPEC_CONFIG_KEYS = ["format", "format_version", "n_parcels", "window", "patch_len", "d_model", "n_heads", "n_layers",
                    "mlp_ratio", "objectives", "mask_ratio", "decoder", "stim_dim", "proj_dim", "ln_eps", "gelu",
                    "atlas", "tr_seconds", "train_steps", "train_subjects", "train_datasets", "code_version"]


class Case:
    """Collects the mismatches of one case; a case passes when it has none."""

    def __init__(self, name):
        self.name, self.problems, self.worst, self.worst_item = name, [], 0.0, ""

    def fail(self, item, detail):
        self.problems.append((item, detail))

    def compare(self, kind, name, got, ref):
        """got: numpy array from bfm (or None if absent); ref: float64 numpy array."""
        if got is None:
            return self.fail(f"{kind} {name}", "missing from bfm's output")
        if tuple(got.shape) != tuple(ref.shape):
            return self.fail(f"{kind} {name}", f"shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
        got = got.astype(np.float64)
        if not np.all(np.isfinite(got)):
            return self.fail(f"{kind} {name}", "has NaN or inf")
        err = float(np.linalg.norm(got - ref) / max(float(np.linalg.norm(ref)), 1e-12))
        if err > self.worst:
            self.worst, self.worst_item = err, f"{kind} {name}"
        if not err < TOLERANCE:
            self.fail(f"{kind} {name}", f"rel err {err:.3e} (|ref| {np.linalg.norm(ref):.3e})")


# --------------------------------------------------------------------------------------------------------------
def run_bfm(bfm, args, where):
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="1")
    try:
        p = subprocess.run([bfm] + args, cwd=where, env=env, capture_output=True, text=True, timeout=BFM_TIMEOUT_S)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {BFM_TIMEOUT_S} s"
    except OSError as e:
        return None, "", f"cannot run {bfm}: {e}"


def write_inputs(path, config, B, with_mask, with_stim, seed):
    """in.h5 with x [B,T,P] f32, mask [B,N] u8 (n_masked per row), stim [B,S] f32; returns the float64 tensors."""
    g = torch.Generator().manual_seed(1000 + seed)
    N = (config["window"] // config["patch_len"]) * config["n_parcels"]
    x = torch.randn(B, config["window"], config["n_parcels"], generator=g).to(torch.float32)
    mask = bfm_torch.random_mask(B, N, bfm_torch.n_masked(config, N), g) if with_mask else None
    stim = torch.randn(B, config["stim_dim"], generator=g).to(torch.float32) if with_stim else None
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=x.numpy())
        if mask is not None:
            f.create_dataset("mask", data=mask.numpy().astype(np.uint8))
        if stim is not None:
            f.create_dataset("stim", data=stim.numpy())
    return x.double(), mask, None if stim is None else stim.double()


def reference(config, state, x, mask, stim, want_grads):
    """Float64 outputs (numpy) and, if wanted, d loss_total / d every parameter (zeros where unused)."""
    model = bfm_torch.BrainModel(config, dtype=torch.float64)
    model.load_state_dict(state, strict=True)
    out = model(x, mask=mask, stim=stim)
    grads = None
    if want_grads:
        params = dict(model.named_parameters())
        found = torch.autograd.grad(out["loss_total"], list(params.values()), allow_unused=True)
        grads = {n: (torch.zeros_like(p) if d is None else d).numpy() for (n, p), d in zip(params.items(), found)}
    return {k: v.detach().numpy() for k, v in out.items()}, grads


def read_out_h5(path, result):
    datasets = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: datasets.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        for name in datasets:
            if f[name].dtype != np.float32:
                result.fail(f"output {name}", f"dtype {f[name].dtype}, expected float32")
    return {k: np.asarray(v) for k, v in datasets.items()}


def forward_and_compare(result, bfm, folder, config, state, B, with_mask, with_stim, want_grads, seed):
    x, mask, stim = write_inputs(os.path.join(folder, "in.h5"), config, B, with_mask, with_stim, seed)
    args = ["forward", "--checkpoint", os.path.join(folder, "ckpt"), "--input", os.path.join(folder, "in.h5"),
            "--output", os.path.join(folder, "out.h5")]
    if want_grads:
        args += ["--grads", os.path.join(folder, "grads.safetensors")]
    rc, _, err = run_bfm(bfm, args, folder)
    if rc != 0:
        return result.fail("bfm forward", f"exit {rc}: {err.strip()[-300:]}")
    ref_out, ref_grads = reference(config, state, x, mask, stim, want_grads)
    got = read_out_h5(os.path.join(folder, "out.h5"), result)
    if set(got) != set(ref_out):
        result.fail("output names", f"extra {sorted(set(got) - set(ref_out))}, "
                                    f"missing {sorted(set(ref_out) - set(got))}")
    for name in sorted(ref_out):
        result.compare("output", name, got.get(name), ref_out[name])
    if want_grads:
        try:
            grads, _ = bfm_torch.read_safetensors(os.path.join(folder, "grads.safetensors"))
        except (OSError, ValueError, KeyError) as e:
            return result.fail("grads file", str(e))
        if set(grads) != set(ref_grads):
            result.fail("grad names", f"extra {sorted(set(grads) - set(ref_grads))}, "
                                      f"missing {sorted(set(ref_grads) - set(grads))}")
        for name in sorted(ref_grads):
            g = grads.get(name)
            if g is not None and g.dtype != torch.float32:
                result.fail(f"grad {name}", f"dtype {g.dtype}, expected float32")
            result.compare("grad", name, None if g is None else g.numpy(), ref_grads[name])


# --------------------------------------------------------------------------------------------------------------
def run_forward_case(bfm, workdir, spec):
    result = Case(spec["name"])
    folder = os.path.join(workdir, f"case{spec['seed']:02d}")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    config = spec["config"]
    state = bfm_torch.random_state(config, torch.Generator().manual_seed(spec["seed"]))
    config = bfm_torch.save_checkpoint(os.path.join(folder, "ckpt"), config, state)
    forward_and_compare(result, bfm, folder, config, state, spec["B"], spec["mask"],
                        spec["stim"] and "contrastive" in config["objectives"], spec["grads"], spec["seed"])
    return result


def check_init_checkpoint(result, config, state, expected):
    for key in SPEC_CONFIG_KEYS:
        if key not in config:
            result.fail("config.json", f"missing key {key!r}")
    wanted = dict(expected, format="bfm-checkpoint", format_version=1, ln_eps=1e-5, gelu="tanh")
    if "contrastive" not in expected["objectives"]:
        wanted.update(stim_dim=None, proj_dim=None)
    for key, value in wanted.items():
        if key in config and config[key] != value and not (isinstance(value, float) and isinstance(config[key], (
                int, float)) and math.isclose(config[key], value, rel_tol=1e-6)):
            result.fail("config.json", f"{key} = {config[key]!r}, expected {value!r}")
    shapes = bfm_torch.parameter_shapes(expected)
    if set(state) != set(shapes):
        result.fail("parameter names", f"extra {sorted(set(state) - set(shapes))}, "
                                       f"missing {sorted(set(shapes) - set(state))}")
    for name, shape in shapes.items():
        t = state.get(name)
        if t is None:
            continue
        if tuple(t.shape) != shape or t.dtype != torch.float32:
            result.fail(f"param {name}", f"{t.dtype} {tuple(t.shape)}, expected float32 {shape}")
            continue
        v = t.double()
        if name.endswith(("ln1.weight", "ln2.weight", "ln_f.weight")):
            ok, want = bool((v == 1).all()), "all 1"
        elif name.endswith(("ln1.bias", "ln2.bias", "ln_f.bias")):
            ok, want = bool((v == 0).all()), "all 0"
        elif name == "logit_scale":
            ok, want = abs(float(v) - math.log(1 / 0.07)) < 1e-6, f"ln(1/0.07) = {math.log(1 / 0.07):.6f}"
        elif name.endswith(".bias"):
            ok, want = float(v.std() if v.numel() > 1 else v.abs()) <= 0.04, "small (std <= 0.04)"
        elif name.endswith(("parcel_embed", "time_embed")):
            # MAE's 2-D sin-cos position code split over the two tables (model/params.h, ParamInit):
            # parcel tables hold the 1-D code of the parcel index in the first half of channels, time tables the
            # code of the patch index in the second half; the other half is zero.
            rows, width = shape
            half, quarter = width // 2, width // 4
            omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
            angle = torch.arange(rows, dtype=torch.float64)[:, None] * omega[None, :]
            table = torch.zeros(rows, width, dtype=torch.float64)
            first = 0 if name.endswith("parcel_embed") else width - half
            table[:, first:first + quarter] = torch.sin(angle)
            table[:, first + quarter:first + 2 * quarter] = torch.cos(angle)
            ok, want = bool((v - table).abs().max() < 1e-6), "the sin-cos position table"
        else:
            n = v.numel()
            ok = 0.005 <= float(v.std()) <= 0.04 and abs(float(v.mean())) < 4 * 0.04 / math.sqrt(n) + 1e-3
            want = "mean ~0, std about 0.02 (0.005..0.04)"
        if not ok:
            result.fail(f"init {name}", f"mean {float(v.mean()):.4g} std {float(v.std()) if v.numel() > 1 else 0:.4g}"
                                        f" min {float(v.min()):.4g} max {float(v.max()):.4g}, expected {want}")


def run_init_case(bfm, workdir, index, name, toml, expected):
    result = Case(name)
    folder = os.path.join(workdir, f"init{index}")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    with open(os.path.join(folder, "model.toml"), "w") as f:
        f.write(toml)
    rc, _, err = run_bfm(bfm, ["init", "--config", os.path.join(folder, "model.toml"), "--out",
                               os.path.join(folder, "ckpt"), "--seed", "7"], folder)
    if rc != 0:
        result.fail("bfm init", f"exit {rc}: {err.strip()[-300:]}")
        return result
    try:
        config, state = bfm_torch.load_checkpoint(os.path.join(folder, "ckpt"))
    except (OSError, ValueError, KeyError) as e:
        result.fail("load_checkpoint", str(e))
        return result
    check_init_checkpoint(result, config, state, expected)
    if result.problems:
        return result
    forward_and_compare(result, bfm, folder, config, state, 3, "mae" in expected["objectives"],
                        "contrastive" in expected["objectives"], True, 20 + index)
    return result


def run_broken_case(bfm, workdir, name, break_it, must_name, one_line):
    """Copies a good checkpoint, breaks it, and expects `bfm forward` to exit > 0 with stderr naming must_name."""
    result = Case(name)
    folder = os.path.join(workdir, "broken-" + must_name.replace("/", "_").replace(".", "_"))
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    config = dict(ODD, objectives=["mae"], decoder=DECODER)
    state = bfm_torch.random_state(config, torch.Generator().manual_seed(30))
    ckpt = os.path.join(folder, "ckpt")
    config = bfm_torch.save_checkpoint(ckpt, config, state)
    break_it(ckpt, state)
    write_inputs(os.path.join(folder, "in.h5"), config, 2, True, False, 30)
    rc, _, err = run_bfm(bfm, ["forward", "--checkpoint", ckpt, "--input", os.path.join(folder, "in.h5"),
                               "--output", os.path.join(folder, "out.h5")], folder)
    lines = [line for line in err.splitlines() if line.strip()]
    if rc is None or rc <= 0:
        result.fail("exit status", f"{rc} (expected an error exit > 0, not success or a signal); stderr {err[-300:]!r}")
    if must_name not in err:
        result.fail("stderr", f"does not name {must_name!r}: {err.strip()[-300:]!r}")
    if one_line and len(lines) != 1:
        result.fail("stderr", f"{len(lines)} lines, expected 1: {err.strip()[-300:]!r}")
    return result


def truncate(ckpt, state):
    path = os.path.join(ckpt, "model.safetensors")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def drop_tensor(ckpt, state):
    kept = {k: v for k, v in state.items() if k != "blocks.1.attn.proj.bias"}
    bfm_torch.write_safetensors(os.path.join(ckpt, "model.safetensors"), kept, {"format": "pt"})


# --------------------------------------------------------------------------------------------------------------
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    parser.add_argument("--bfm", default=os.path.join(root, "build", "launch", "bfm"), help="the bfm binary")
    parser.add_argument("--workdir", default=None, help="where checkpoints and h5 files go (default: a temp dir)")
    parser.add_argument("-k", default="", help="run only the cases whose name contains this")
    args = parser.parse_args()
    bfm = os.path.abspath(args.bfm)
    if not os.access(bfm, os.X_OK):
        print(f"error: {bfm} is not an executable bfm binary", file=sys.stderr)
        return 2
    workdir = args.workdir or tempfile.mkdtemp(prefix="bfm-conformance-")
    os.makedirs(workdir, exist_ok=True)

    jobs = [(s["name"], lambda s=s: run_forward_case(bfm, workdir, s)) for s in FORWARD_CASES]
    jobs += [(n, lambda i=i, n=n, t=t, e=e: run_init_case(bfm, workdir, i, n, t, e))
             for i, (n, t, e) in enumerate(INIT_CASES)]
    jobs += [("truncated model.safetensors", lambda: run_broken_case(
                 bfm, workdir, "truncated model.safetensors", truncate, "model.safetensors", True)),
             ("checkpoint missing blocks.1.attn.proj.bias", lambda: run_broken_case(
                 bfm, workdir, "checkpoint missing blocks.1.attn.proj.bias", drop_tensor, "blocks.1.attn.proj.bias",
                 False))]
    results = []
    for name, job in jobs:
        if args.k not in name:
            continue
        start = time.time()
        try:
            result = job()
        except Exception as e:  # a crash of one case is that case's failure, not the end of the run
            result = Case(name)
            result.fail("test harness", f"{type(e).__name__}: {e}")
        results.append(result)
        worst = f"worst rel err {result.worst:.2e} ({result.worst_item})" if result.worst_item else ""
        print(f"{'PASS' if not result.problems else 'FAIL'}  {result.name:66s} {time.time() - start:5.1f} s  {worst}",
              flush=True)

    failed = [r for r in results if r.problems]
    if failed:
        print("\nmismatches:")
        print(f"  {'case':66s} {'item':38s} detail")
        for r in failed:
            for item, detail in r.problems:
                print(f"  {r.name:66s} {item:38s} {detail}")
        print(f"\nfiles under {workdir}")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
