#!/usr/bin/env python3
"""A released bfm checkpoint evaluated through brainmarks (tools/brainmarks_plugin/brainmarks/models/bfm.py), with
brainmarks 0.1.1 really installed.

    /usr/bin/python3 tests/tools/test_brainmarks.py BFM_BINARY [--workdir DIR] [--venv DIR]

Run by the system Python, it installs brainmarks into VENV (default: BFM_BINARY's build folder/brainmarks-venv) with
tools/brainmarks_plugin/install.sh (PyPI the first time, quiet and quick after), then runs itself again under the
venv's Python with the plugin folder on PYTHONPATH, as a user would. There it makes released checkpoints with the
bfm binary (a tiny 400-parcel model: `bfm pretrain` a few steps + `bfm export`, and `bfm init`), and checks:
  - brainmarks' registry discovers the plugin, and brainmarks' own model test (pytest on
    brainmarks.models.test_models -k bfm) passes on a checkpoint;
  - the same test logic in-process (create_model("bfm", ckpt_path=...), get_dummy_sample, transform,
    default_collate, forward) with the exact shapes the windows imply;
  - the numbers independently: a window's cls embedding is `bfm forward`'s `pooled` of that window and the patch
    embeddings are its `encoder_out` (the C++ model against the PyTorch one), for an mae and a causal checkpoint;
    the transform's resampling, detrending and z-scoring against numpy.interp / scipy.signal.detrend / numpy;
  - the errors a user meets (space dimension != n_parcels, no space, no checkpoint, wrong bold width) name the
    checkpoint and the numbers.
Prints PASS/FAIL per case and "N passed, N failed"; exit status 1 on any failure.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN = os.path.join(REPO, "tools", "brainmarks_plugin")
INSTALL = os.path.join(PLUGIN, "install.sh")

TINY_TOML = """\
# A tiny model in the schaefer400 space's 400 parcels: windows of 16 time points in patches of 8 (800 tokens).
[model]
n_parcels = 400
window = 16
patch_len = 8
d_model = 16
n_heads = 2
n_layers = 2
objectives = ["mae"]
mask_ratio = 0.5

[model.decoder]
d_model = 16
n_heads = 2
n_layers = 1

[train]
steps = 3
batch_size = 4
warmup_steps = 1
log_every = 1
validate_every = 100
checkpoint_every = 0
device = "cpu"
"""

# float32 C++ against float32 PyTorch (different summation orders): observed differences are ~1e-6.
ATOL, RTOL = 2e-5, 2e-5


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bfm", help="the bfm binary")
    ap.add_argument("--workdir", help="scratch folder (default: BUILD/tests/tools/work_brainmarks)")
    ap.add_argument("--venv", help="brainmarks venv (default: BUILD/brainmarks-venv; made by install.sh)")
    ap.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.bfm = os.path.abspath(args.bfm)
    build = os.path.dirname(os.path.dirname(args.bfm))  # BUILD/launch/bfm
    args.workdir = os.path.abspath(args.workdir or os.path.join(build, "tests", "tools", "work_brainmarks"))
    args.venv = os.path.abspath(args.venv or os.path.join(build, "brainmarks-venv"))
    return args


def outer(args):
    """System Python: install brainmarks into the venv, then run the checks under the venv's Python."""
    if not os.access(args.bfm, os.X_OK):
        print(f"FAIL  setup: {args.bfm} is not an executable bfm binary\n0 passed, 1 failed")
        return 1
    proc = subprocess.run(["bash", INSTALL, args.venv])
    if proc.returncode != 0:
        print(f"FAIL  install: {INSTALL} {args.venv} exited {proc.returncode}\n0 passed, 1 failed")
        return 1
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    env = dict(os.environ)
    for name in ("BFM_CHECKPOINT", "BFM_SPACE", "BFM_TORCH"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join([PLUGIN] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    # What brainmarks' dependencies write on import (templateflow's home, pycortex's and matplotlib's config) goes
    # into the scratch folder, not the user's home.
    for name, sub in [("TEMPLATEFLOW_HOME", "templateflow"), ("XDG_CONFIG_HOME", "config"),
                      ("XDG_DATA_HOME", "data"), ("MPLCONFIGDIR", "matplotlib")]:
        env[name] = os.path.join(args.workdir, "home", sub)
    python = os.path.join(args.venv, "bin", "python")
    sys.stdout.flush()
    cmd = [python, os.path.abspath(__file__), args.bfm, "--workdir", args.workdir, "--venv", args.venv, "--in-venv"]
    return subprocess.run(cmd, env=env).returncode


# ---------------------------------------------------------------------------------------------------------------
# Under the venv
# ---------------------------------------------------------------------------------------------------------------
CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


class Env:
    """The checkpoints, made once with the bfm binary."""

    def __init__(self, bfm, work):
        self.bfm, self.work = bfm, work
        toml = os.path.join(work, "tiny.toml")
        with open(toml, "w") as f:
            f.write(TINY_TOML)
        self.toml = toml
        # A trained and exported checkpoint, as a user gets one: atlas "synthetic", tr_seconds 0.
        run([bfm, "pretrain", "--config", toml, "--out", os.path.join(work, "run")], cwd=work)
        self.mae = os.path.join(work, "ck_mae")
        run([bfm, "export", os.path.join(work, "run"), "--out", self.mae])
        # The same weights with the provenance a checkpoint trained on a Schaefer400 corpus at TR 0.8 s carries
        # (bfm does not write an atlas name or TR into config.json yet: pretrain says "corpus"/"synthetic", 0).
        self.s400 = os.path.join(work, "ck_s400")
        shutil.copytree(self.mae, self.s400)
        self.set_provenance(self.s400, atlas="Schaefer400", tr_seconds=0.8)
        # A time-causal encoder (next-patch + CLIP objectives), randomly initialised.
        self.causal = os.path.join(work, "ck_causal")
        run([bfm, "init", "--config", toml, "--set", 'model.objectives=["causal", "contrastive"]', "--seed", "3",
             "--out", self.causal])
        # Another seed of the mae model (to show the comparison with bfm forward can tell models apart).
        self.other = os.path.join(work, "ck_other")
        run([bfm, "init", "--config", toml, "--seed", "7", "--out", self.other])
        # 64 parcels: no brainmarks space has that dimension.
        self.p64 = os.path.join(work, "ck_p64")
        run([bfm, "init", "--config", toml, "--set", "model.n_parcels=64", "--out", self.p64])
        for ck in (self.mae, self.s400, self.causal, self.other, self.p64):
            assert os.path.isfile(os.path.join(ck, "model.safetensors")), ck

    @staticmethod
    def set_provenance(ck, **values):
        path = os.path.join(ck, "config.json")
        with open(path) as f:
            config = json.load(f)
        config.update(values)
        with open(path, "w") as f:
            json.dump(config, f, indent=2)

    def config(self, ck):
        with open(os.path.join(ck, "config.json")) as f:
            return json.load(f)

    def forward(self, ck, x, name):
        """`bfm forward` of windows x [W, T, P]: (pooled [W, D], encoder_out [W, N, D]) as numpy float64."""
        import h5py
        import numpy as np
        inp, out = os.path.join(self.work, name + ".in.h5"), os.path.join(self.work, name + ".out.h5")
        with h5py.File(inp, "w") as f:
            f.create_dataset("x", data=np.asarray(x, dtype=np.float32))
        run([self.bfm, "forward", "--checkpoint", ck, "--input", inp, "--output", out, "--device", "cpu"])
        with h5py.File(out, "r") as f:
            return np.asarray(f["pooled"], dtype=np.float64), np.asarray(f["encoder_out"], dtype=np.float64)


def expect_close(name, got, want):
    import numpy as np
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
    err = np.abs(got - want)
    bound = ATOL + RTOL * np.abs(want)
    assert (err <= bound).all(), (f"{name}: max |difference| {err.max():.3g} at {np.unravel_index(err.argmax(), err.shape)}"
                                  f" (allowed {ATOL} + {RTOL}*|value|)")
    return float(err.max())


def create(ck, **kwargs):
    from brainmarks.models.registry import create_model
    return create_model("bfm", ckpt_path=ck, **kwargs)


def expect_error(fn, exc_type, *needles):
    try:
        fn()
    except exc_type as e:
        for n in needles:
            assert str(n) in str(e), f"{n!r} not in the error {str(e)!r}"
        return str(e)
    raise AssertionError(f"no {exc_type.__name__} raised (expected one naming {needles})")


@case
def registry_discovers_the_plugin(env):
    import importlib.metadata
    import torch
    import brainmarks.models.registry as registry
    import brainmarks.models.test_models  # noqa: F401 - importable is the point
    assert importlib.metadata.version("brainmarks") == "0.1.1", importlib.metadata.version("brainmarks")
    assert "bfm" in registry.list_models(), registry.list_models()
    module = sys.modules["brainmarks.models.bfm"]
    assert os.path.samefile(module.__file__, os.path.join(PLUGIN, "brainmarks", "models", "bfm.py")), module.__file__
    assert torch.__file__.startswith("/usr/lib/python3/"), f"torch from {torch.__file__}, not Debian's"


@case
def brainmarks_own_model_test_passes(env):
    # brainmarks' test_model(name, n_samples) for n_samples 16 and 160, through pytest as its __main__ runs it
    # (its __main__ drops pytest's exit status, so pytest is called directly).
    for ck, extra in [(env.mae, {"BFM_SPACE": "schaefer400"}), (env.s400, {}), (env.causal, {"BFM_SPACE": "schaefer400"})]:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
                               "brainmarks.models.test_models", "-k", "bfm",
                               "-W", "ignore::pytest.PytestAssertRewriteWarning"],
                              capture_output=True, text=True, timeout=300, cwd=env.work,
                              env=dict(os.environ, BFM_CHECKPOINT=ck, **extra))
        tail = (proc.stdout + proc.stderr)[-3000:]
        assert proc.returncode == 0, f"pytest on {ck} exited {proc.returncode}:\n{tail}"
        assert "2 passed" in proc.stdout and "failed" not in proc.stdout, tail


@case
def model_test_logic_with_exact_shapes(env):
    import torch
    from torch.utils.data import default_collate
    from brainmarks.models.test_models import get_dummy_sample
    from brainmarks.models.base import Embeddings
    for ck, kwargs in [(env.mae, {"space": "schaefer400"}), (env.s400, {}), (env.causal, {"space": "schaefer400"})]:
        c = env.config(ck)
        T, P, D, L = c["window"], c["n_parcels"], c["d_model"], c["patch_len"]
        N = (T // L) * P
        transform, model = create(ck, **kwargs)
        assert model.__space__ == "schaefer400", model.__space__
        assert not model.training and not any(p.requires_grad for p in model.parameters()), "model not frozen"
        for n_samples in (16, 160):
            batch = [get_dummy_sample(model.__space__, n_samples) for _ in range(2)]
            batch = default_collate([transform(s) for s in batch])
            # Frames after resampling from the dummy TR (1 s) to the checkpoint's, then whole windows (at least 1).
            tr = c["tr_seconds"] or 1.0
            frames = int((n_samples - 1) * 1.0 / tr + 1e-9) + 1
            W = max(1, frames // T)
            assert tuple(batch["bold"].shape) == (2, W, T, P), (ck, n_samples, tuple(batch["bold"].shape))
            assert batch["bold"].dtype == torch.float32
            with torch.no_grad():
                out = model(batch)
            assert isinstance(out, Embeddings), type(out)
            cls, reg, patch = out
            assert reg is None
            assert tuple(cls.shape) == (2, 1, D), tuple(cls.shape)
            assert tuple(patch.shape) == (2, W * N, D), tuple(patch.shape)
            assert torch.isfinite(cls).all() and torch.isfinite(patch).all()
            # cls is the mean of pooled over windows = the mean of all the windows' tokens.
            gap = float((cls[:, 0] - patch.mean(dim=1)).abs().max())
            assert gap <= 1e-5, f"{ck}, {n_samples} frames: cls differs from the mean of patch_embeds by {gap:.3g}"


@case
def embeddings_equal_bfm_forward(env):
    import numpy as np
    import torch
    from torch.utils.data import default_collate
    from brainmarks.models.test_models import get_dummy_sample
    torch.manual_seed(0)
    sample = get_dummy_sample("schaefer400", 50)  # 50 frames at TR 1 -> 3 windows of 16 (2 frames dropped)
    worst = 0.0
    for ck in (env.mae, env.causal):
        transform, model = create(ck, space="schaefer400")
        windows = transform(sample)["bold"]  # [W, T, P]
        assert windows.shape[0] == 3, tuple(windows.shape)
        pooled, encoder_out = env.forward(ck, windows.numpy(), os.path.basename(ck))
        W, N, D = encoder_out.shape
        with torch.no_grad():
            # The run as one sample: cls = mean over its windows of pooled, patch = the windows' tokens in order.
            cls, _, patch = model(default_collate([transform(sample)]))
            # Each window as its own sample: its cls is exactly that window's pooled.
            per_window = model({"bold": windows[:, None]})[0]
        worst = max(worst, expect_close(f"{ck}: cls of each window vs bfm forward pooled", per_window[:, 0], pooled))
        worst = max(worst, expect_close(f"{ck}: cls of the run vs mean of pooled", cls[0, 0], pooled.mean(axis=0)))
        worst = max(worst, expect_close(f"{ck}: patch_embeds vs bfm forward encoder_out",
                                        patch[0].reshape(W, N, D), encoder_out))
    # The comparison tells models apart: another seed's embeddings are far outside the tolerance.
    transform, other = create(env.other, space="schaefer400")
    windows = transform(sample)["bold"]
    pooled, _ = env.forward(env.mae, windows.numpy(), "mae_again")
    with torch.no_grad():
        gap = float(np.abs(other({"bold": windows[:, None]})[0][:, 0].numpy() - pooled).max())
    assert gap > 100 * (ATOL + RTOL), f"another checkpoint's cls is only {gap:.3g} from this one's pooled"
    print(f"      max |bfm forward - wrapper| {worst:.2g}; another seed differs by {gap:.2g}")


def numpy_pipeline(bold, tr, target_tr, window, detrend, pad):
    """The transform written with numpy / scipy: detrend, numpy.interp, z-score, windows."""
    import numpy as np
    import scipy.signal
    x = np.asarray(bold, dtype=np.float64)
    if detrend:
        x = scipy.signal.detrend(x, axis=0, type="linear")
    if target_tr and abs(target_tr - tr) > 1e-9 * tr:
        t_in = np.arange(x.shape[0]) * tr
        t_out = np.arange(0.0, t_in[-1] + 1e-9 * target_tr, target_tr)
        x = np.stack([np.interp(t_out, t_in, x[:, p]) for p in range(x.shape[1])], axis=1)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    K = x.shape[0]
    W = K // window
    if W == 0 or (pad and K % window):
        W += 1
        x = np.concatenate([x, np.zeros((W * window - K, x.shape[1]))])
    return x[:W * window].reshape(W, window, x.shape[1])


@case
def transform_matches_numpy(env):
    import numpy as np
    import torch
    rng = np.random.default_rng(1)
    c = env.config(env.s400)
    T, P = c["window"], c["n_parcels"]
    assert c["tr_seconds"] == 0.8
    transform, _ = create(env.s400)
    assert transform.tr_seconds == 0.8
    # z-scored runs with a trend, at TRs above, below and equal to the checkpoint's 0.8 s, and the pipeline's options.
    for n, tr, kwargs in [(160, 1.0, {}), (160, 1.0, {"detrend": False}), (97, 0.72, {}), (40, 2.0, {"detrend": False}),
                          (100, 0.8, {}), (53, 1.0, {"last_window": "pad"}), (9, 1.0, {}),
                          (120, 1.0, {"tr_seconds": 0}), (120, 0.5, {"tr_seconds": 0.5})]:
        raw = rng.standard_normal((n, P)) + np.linspace(0, 3, n)[:, None] * rng.standard_normal(P)
        bold = (raw - raw.mean(0)) / raw.std(0)
        sample = {"bold": torch.tensor(bold, dtype=torch.float32), "mean": torch.zeros(1, P),
                  "std": torch.ones(1, P), "tr": tr}
        t = transform if not kwargs else create(env.s400, **kwargs)[0]
        got = t(sample)["bold"]
        target = kwargs.get("tr_seconds", 0.8)
        want = numpy_pipeline(sample["bold"].numpy(), tr, target, T, kwargs.get("detrend", True),
                              kwargs.get("last_window") == "pad")
        label = f"{n} frames at TR {tr} -> {target} {kwargs}"
        assert got.dtype == torch.float32, label
        expect_close(label, got, want)
        assert sample["bold"].shape == (n, P), "the transform changed its input"
    # Resampling alone (the bfm package's, which the transform calls) against numpy.interp, on a ramp-plus-sine
    # signal whose interpolation error is visible.
    sys.path.insert(0, os.path.join(REPO, "python"))  # the package the plugin imports (installed or this checkout)
    from bfm import preprocess
    x = np.sin(np.arange(30)[:, None] * np.array([0.3, 1.1, 2.0])) + np.arange(30)[:, None] * 0.1
    for tr, target in [(1.0, 0.8), (0.72, 0.8), (2.0, 0.7), (0.8, 2.4)]:
        got = preprocess(x, {"detrend": False, "scaling": "none", "target_tr": target}, tr=tr)
        t_in = np.arange(30) * tr
        t_out = np.arange(0.0, t_in[-1] + 1e-9 * target, target)
        want = np.stack([np.interp(t_out, t_in, x[:, p]) for p in range(3)], axis=1)
        expect_close(f"resampling TR {tr} -> {target}", got, want)


@case
def errors_name_the_checkpoint_and_numbers(env):
    expect_error(lambda: create(env.p64, space="schaefer400"), ValueError, env.p64, "n_parcels 64", "dimension 400",
                 "schaefer400")
    expect_error(lambda: create(env.mae), ValueError, env.mae, "'synthetic'", "space=", "BFM_SPACE")
    expect_error(lambda: create(env.mae, space="no_such_space"), ValueError, "no_such_space", env.mae)
    env.set_provenance(env.p64, atlas="Schaefer400")  # an atlas whose space has another dimension
    expect_error(lambda: create(env.p64), ValueError, env.p64, "n_parcels 64", "dimension 400")
    from brainmarks.models.registry import create_model
    expect_error(lambda: create_model("bfm"), ValueError, "BFM_CHECKPOINT")
    expect_error(lambda: create_model("bfm", ckpt_path=env.work), FileNotFoundError, env.work)
    import torch
    transform, _ = create(env.s400)
    expect_error(lambda: transform({"bold": torch.zeros(20, 399), "tr": 1.0}), ValueError, "(20, 399)", "400",
                 env.s400)


def inner(args):
    for name in ("BFM_CHECKPOINT", "BFM_SPACE"):
        os.environ.pop(name, None)
    try:
        env = Env(args.bfm, args.workdir)
    except Exception as e:  # noqa: BLE001
        print(f"FAIL  setup (making checkpoints with {args.bfm}): {e}\n0 passed, 1 failed")
        return 1
    passed = failed = 0
    for fn in CASES:
        try:
            fn(env)
            passed += 1
            print(f"PASS  {fn.__name__}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure, then exit non-zero
            failed += 1
            print(f"FAIL  {fn.__name__}: {e}", flush=True)
            if not isinstance(e, AssertionError):
                traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def main():
    args = parse_args()
    if args.in_venv:
        # brainmarks' registry logs a warning for each of its own optional model plugins whose extra is absent.
        import logging
        logging.getLogger("brainmarks.models").setLevel(logging.ERROR)
        return inner(args)
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
