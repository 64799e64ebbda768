"""bfm released checkpoints as a brainmarks model (https://pypi.org/project/brainmarks/).

A namespace-package plugin: with `tools/brainmarks_plugin` on sys.path (PYTHONPATH), brainmarks' registry finds this
module and registers the model `bfm`:

    transform, wrapper = create_model("bfm", ckpt_path="runs/quickstart/export", space="schaefer400")

`ckpt_path` is a released checkpoint folder (model.safetensors + config.json, docs/MODEL_SPEC.md); without it the
environment variable BFM_CHECKPOINT names one (brainmarks' own `test_models` calls `create_model(name)` with no
arguments). The checkpoint is loaded by the project's PyTorch implementation of the spec, the `bfm` package
(python/: `load_checkpoint`, `BrainModel`; installed with pip, else taken from this checkout), and frozen (eval
mode, no gradients).

Keywords of `create_model("bfm", ...)`:
  ckpt_path     the checkpoint folder (default: $BFM_CHECKPOINT).
  space         the brainmarks input space (a key of brainmarks.readers.DATA_DIMS). Default: from the checkpoint's
                `atlas` ("Schaefer400", "Schaefer2018_400Parcels...", "A424", ...; see ATLAS_SPACES), else
                $BFM_SPACE. Checkpoints that bfm writes today say atlas "synthetic", "corpus" or "none", which names
                no space: pass space= (or set BFM_SPACE) for those. The space's dimension must equal the
                checkpoint's n_parcels, and the parcels must be in the atlas order the model was trained on.
  tr_seconds    the TR (seconds) the model expects; default the checkpoint's `tr_seconds`. 0 = no resampling.
  detrend       remove a least-squares line per parcel first, as `bfm convert` does (default True).
  last_window   "drop" (default) or "pad": what to do with the frames after the last whole window.
  max_windows   windows per forward pass inside the wrapper (bounds memory; default 64).

Transform (one sample {bold [n_frames, dim] z-scored per parcel, mean, std, tr} -> the same dict with bold
[n_windows, window, n_parcels] float32), the per-run preprocessing of `bfm convert` (io/run_preprocess.cpp) as the
`bfm` package implements it (bfm.preprocess, with the checkpoint's data_provenance but this transform's detrend and
TR, and no confounds or scrubbing), so that the model sees what it was trained on:
  1. linear detrend per parcel (skipped with detrend=False);
  2. linear interpolation from the sample's TR onto the grid k * tr_seconds, k = 0 .. floor((n-1) tr / tr_seconds),
     never extrapolating past the last frame (numpy.interp on the same grid gives the same numbers); skipped when
     tr_seconds is 0 or equal to the sample's TR;
  3. scaling per parcel as the checkpoint's corpus had it (z-score by default: population std; a constant parcel
     becomes 0), since interpolation shrinks the variance and bfm's windows are scaled per parcel per run;
  4. consecutive, non-overlapping windows of the checkpoint's `window` frames. The frames after the last whole
     window are DROPPED by default: zero-padding them would feed the model frames of "no signal" (0 is the parcel
     mean after z-scoring) that it never saw in training, and because the embedding is a mean over all tokens the
     padded share would bias every run's embedding by an amount depending on its length. Dropping loses fewer than
     `window` frames of a run. A run shorter than one window has nothing to drop to, so it is zero-padded to one
     window (its embedding is then partly padding; brainmarks' own test feeds 16-frame samples). last_window="pad"
     pads the last partial window instead of dropping it.
The un-normalised signal (bold * std + mean) is not used: bfm trains on per-run z-scored series, which is what
brainmarks hands over.

Wrapper (`__space__` from the above): batch["bold"] [B, W, T, P] -> brainmarks Embeddings, each window run through
the model as `bfm forward` runs it without a mask (bidirectional encoder for mae checkpoints, time-causal for causal
ones), in float32:
  cls_embeds   [B, 1, D]: mean over the W windows of `pooled`. The model has no CLS token; `pooled` (the mean of
               the encoder's output tokens, after ln_f) is the spec's own one-vector summary of a window, the one its
               contrastive head reads, so it is the natural "cls" of a window, and the mean over windows the natural
               one of a run. (All windows have N tokens, so it also equals the mean of patch_embeds over tokens.)
  reg_embeds   None (no register tokens).
  patch_embeds [B, W*N, D]: the encoder output tokens of every window (token j*P + p = time patch j, parcel p,
               docs/MODEL_SPEC.md), windows concatenated in time order, as brainmarks' BrainLM wrapper does. These
               are the finest representation the encoder has: one token per parcel and patch of time, what
               brainmarks' attention-pooling probes ("patch" representation) are for.
"""
import os
import re
import sys
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from brainmarks.models.base import Embeddings
from brainmarks.models.registry import register_model

# Atlas names (lower case, letters and digits only) that name a brainmarks space, with that space.
ATLAS_SPACES = {
    "schaefer400": "schaefer400",
    "schaefer2018400parcels": "schaefer400",  # prefix of the Schaefer2018_400Parcels_{7,17}Networks_... files
    "schaefer400tians3": "schaefer400_tians3",
    "schaefer400tians3buckner7": "schaefer400_tians3_buckner7",
    "a424": "a424",
}

# tools/brainmarks_plugin/brainmarks/models/bfm.py -> the checkout's python/ (used when `bfm` is not installed)
_BFM_PYTHON = Path(__file__).resolve().parents[4] / "python"


def _bfm_module(name):
    """A module of the project's `bfm` package (model: the PyTorch model; preprocess: bfm convert's per-run steps):
    installed (pip install bfm's python/), or else from the checkout this plugin sits in."""
    import importlib
    try:
        return importlib.import_module(f"bfm.{name}")
    except ImportError:
        if not (_BFM_PYTHON / "bfm" / f"{name}.py").is_file():
            raise ImportError(f"bfm plugin: the bfm package is not installed and {_BFM_PYTHON} has none; "
                              "pip install bfm's python/ folder") from None
        sys.path.insert(0, str(_BFM_PYTHON))
        return importlib.import_module(f"bfm.{name}")


def _atlas_key(atlas) -> str:
    return re.sub(r"[^a-z0-9]", "", str(atlas).lower())


def space_of_atlas(atlas):
    """The brainmarks space an atlas name stands for, or None."""
    key = _atlas_key(atlas)
    if key in ATLAS_SPACES:
        return ATLAS_SPACES[key]
    for prefix, space in ATLAS_SPACES.items():
        if len(prefix) > len("schaefer400") and key.startswith(prefix):
            return space
    return None


class BfmTransform:
    """One brainmarks sample -> bold [n_windows, window, n_parcels] float32 (module docstring, "Transform")."""

    def __init__(self, n_parcels: int, window: int, tr_seconds: float, detrend: bool = True,
                 last_window: str = "drop", name: str = "bfm", provenance: dict = None):
        if last_window not in ("drop", "pad"):
            raise ValueError(f"bfm: last_window must be 'drop' or 'pad', not {last_window!r}")
        self.n_parcels, self.window, self.tr_seconds = int(n_parcels), int(window), float(tr_seconds or 0.0)
        self.detrend, self.last_window, self.name = detrend, last_window, name
        # The package's preprocessing with the checkpoint's provenance (its scaling, its parcel count), but this
        # transform's detrend and TR, and no confounds or scrubbing: brainmarks hands over series without them.
        self.provenance = dict(provenance or {}, detrend=bool(detrend), target_tr=self.tr_seconds, confounds="none",
                               scrub_fd=0.0, tr=None)

    def preprocess(self, bold, tr: float) -> Tensor:
        """bold [n_frames, n_parcels] -> detrended, resampled, scaled [K, n_parcels] float64 (bfm.preprocess)."""
        x = torch.as_tensor(bold).detach().to("cpu", torch.float64)
        if x.ndim != 2 or x.shape[1] != self.n_parcels:
            raise ValueError(f"{self.name}: bold has shape {tuple(x.shape)}, expected [n_frames, {self.n_parcels}] "
                             f"(the checkpoint's n_parcels)")
        if x.shape[0] < 1:
            raise ValueError(f"{self.name}: bold has no frames")
        tr = float(tr)
        if self.tr_seconds > 0 and abs(self.tr_seconds - tr) > 1e-9 * tr and not tr > 0:
            raise ValueError(f"{self.name}: sample TR {tr} s; cannot resample to {self.tr_seconds} s")
        return torch.from_numpy(_bfm_module("preprocess").preprocess(x.numpy(), self.provenance, tr=tr))

    def windows(self, x: Tensor) -> Tensor:
        """[K, P] -> [W, window, P]: consecutive windows; the tail dropped (or padded), a short run padded."""
        K, P = x.shape
        W = K // self.window
        if W == 0 or (self.last_window == "pad" and K % self.window):
            W += 1
            x = torch.cat([x, x.new_zeros(W * self.window - K, P)])
        return x[:W * self.window].reshape(W, self.window, P)

    def __call__(self, sample: dict) -> dict:
        out = dict(sample)
        out["bold"] = self.windows(self.preprocess(sample["bold"], sample["tr"])).to(torch.float32)
        return out


class BfmModelWrapper(nn.Module):
    """batch["bold"] [B, W, T, P] -> Embeddings(mean pooled [B, 1, D], None, encoder tokens [B, W*N, D])."""

    __space__: str = "schaefer400"

    def __init__(self, model: nn.Module, space: str, max_windows: int = 64):
        super().__init__()
        self.model = model
        self.__space__ = space
        self.max_windows = max(1, int(max_windows))

    def forward(self, batch: dict) -> Embeddings:
        bold = batch["bold"]
        if bold.ndim == 3:  # one window per sample, without the window axis
            bold = bold.unsqueeze(1)
        B, W, T, P = bold.shape
        x = bold.reshape(B * W, T, P).to(self.model.patch_embed.weight)
        encoder_out, pooled = [], []
        for start in range(0, B * W, self.max_windows):
            out = self.model(x[start:start + self.max_windows])
            encoder_out.append(out["encoder_out"])
            pooled.append(out["pooled"])
        encoder_out = torch.cat(encoder_out)  # [B*W, N, D]
        pooled = torch.cat(pooled)            # [B*W, D]
        N, D = encoder_out.shape[1:]
        return Embeddings(cls_embeds=pooled.reshape(B, W, D).mean(dim=1, keepdim=True),
                          reg_embeds=None,
                          patch_embeds=encoder_out.reshape(B, W * N, D))


def load_model(ckpt_path):
    """(config dict, frozen float32 BrainModel in eval mode) of a released checkpoint folder."""
    bt = _bfm_module("model")
    config, state = bt.load_checkpoint(str(ckpt_path))
    model = bt.BrainModel(config, dtype=torch.float32, fused=True)
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)
    model.eval()
    return config, model


def resolve_space(config, ckpt_path, space=None):
    """The brainmarks space for a checkpoint, checked against brainmarks' DATA_DIMS and the checkpoint's n_parcels."""
    from brainmarks.readers import DATA_DIMS  # brainmarks' own table of space dimensions

    atlas, n_parcels = config.get("atlas"), int(config["n_parcels"])
    space = space or space_of_atlas(atlas) or os.environ.get("BFM_SPACE") or None
    if space is None:
        raise ValueError(f"bfm: checkpoint {ckpt_path} has atlas {atlas!r} ({n_parcels} parcels), which names no "
                         f"brainmarks space; pass space=... (one of {sorted(DATA_DIMS)}) or set BFM_SPACE")
    if space not in DATA_DIMS:
        raise ValueError(f"bfm: space {space!r} for checkpoint {ckpt_path} is not a brainmarks space "
                         f"(one of {sorted(DATA_DIMS)})")
    if DATA_DIMS[space] != n_parcels:
        raise ValueError(f"bfm: checkpoint {ckpt_path} has n_parcels {n_parcels} (atlas {atlas!r}) but brainmarks "
                         f"space {space!r} has dimension {DATA_DIMS[space]}")
    return space


@register_model
def bfm(ckpt_path=None, space=None, tr_seconds=None, detrend=True, last_window="drop", max_windows=64, **kwargs):
    """A bfm released checkpoint (module docstring). Returns (BfmTransform, BfmModelWrapper)."""
    if kwargs:
        raise TypeError(f"bfm: unknown keyword(s) {sorted(kwargs)}")
    ckpt_path = ckpt_path or os.environ.get("BFM_CHECKPOINT")
    if not ckpt_path:
        raise ValueError("bfm: no checkpoint: pass ckpt_path=FOLDER (a released checkpoint: model.safetensors + "
                         "config.json) or set BFM_CHECKPOINT")
    ckpt_path = str(ckpt_path)
    if not os.path.isfile(os.path.join(ckpt_path, "config.json")):
        raise FileNotFoundError(f"bfm: {ckpt_path} is not a released checkpoint folder (no config.json)")
    config, model = load_model(ckpt_path)
    space = resolve_space(config, ckpt_path, space)
    if tr_seconds is None:
        tr_seconds = config.get("tr_seconds") or 0.0
    transform = BfmTransform(config["n_parcels"], config["window"], tr_seconds, detrend=detrend,
                             last_window=last_window, name=f"bfm ({ckpt_path})",
                             provenance=config.get("data_provenance") or {})
    return transform, BfmModelWrapper(model, space, max_windows=max_windows).eval()
