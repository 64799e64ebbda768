"""PyTorch implementation of the bfm brain model (docs: /work/shared/MODEL_SPEC.md, "The brain model, exactly (v1)").

Written from the spec page alone, without reading the C++ model, so that it can serve as the independent oracle
of `bfm forward` (tests/conformance/test_conformance.py) and as the way to load a released checkpoint:

    config, state = load_checkpoint("ckpt/")
    model = BrainModel(config, dtype=torch.float64)
    model.load_state_dict(state, strict=True)
    out = model(x, mask=mask, stim=stim)      # x [B, T, P]; mask [B, N] bool (True = masked); stim [B, S]

Parameter names are exactly the spec's, so `load_state_dict(strict=True)` takes the file's tensors as they are.
Attention, LayerNorm and gelu are written out from the spec's formulas rather than taken from torch, so that
this file reads as the maths it checks. The safetensors format is read and written by hand (no dependency).

Run as a module to load a checkpoint and push one random window through it:
    python3 -m bfm CHECKPOINT_DIR
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch

FORMAT = "bfm-checkpoint"
FORMAT_VERSION = 1
LN_EPS = 1e-5
LOGIT_SCALE_MAX = math.log(100.0)
LOGIT_SCALE_INIT = math.log(1.0 / 0.07)

# ---------------------------------------------------------------------------------------------------------------
# safetensors, by hand: u64 little-endian header length, JSON header {name: {dtype, shape, data_offsets}} plus an
# optional "__metadata__" of strings, then the raw row-major little-endian bytes; offsets are relative to the end
# of the header.
# ---------------------------------------------------------------------------------------------------------------
_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """Returns ({name: float32/.. torch.Tensor}, metadata dict). Raises ValueError naming the file if malformed."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: {len(blob)} bytes, shorter than the 8-byte header length")
    (n_header,) = struct.unpack("<Q", blob[:8])
    if 8 + n_header > len(blob):
        raise ValueError(f"{path}: header length {n_header} runs past the end of the file ({len(blob)} bytes)")
    header = json.loads(blob[8:8 + n_header].decode("utf-8"))
    data = memoryview(blob)[8 + n_header:]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - begin != expected or end > len(data):
            raise ValueError(f"{path}: tensor {name} {shape} has data_offsets [{begin}, {end}], "
                             f"expected {expected} bytes within {len(data)}")
        array = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
        tensors[name] = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))
    return tensors, metadata


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: tensor}, written as F32 in name order. Header padded with spaces to a multiple of 8."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        array = tensors[name].detach().cpu().to(torch.float32).contiguous().numpy().astype("<f4")
        raw = array.tobytes(order="C")
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint folder: model.safetensors + config.json
# ---------------------------------------------------------------------------------------------------------------
def complete_config(config):
    """The spec's config.json from the model sizes: fills format keys, ln_eps, gelu, nulls and provenance."""
    c = dict(config)
    c["format"] = FORMAT
    c["format_version"] = FORMAT_VERSION
    c.setdefault("ln_eps", LN_EPS)
    c.setdefault("gelu", "tanh")
    c.setdefault("mask_ratio", 0.0)
    if "mae" not in c["objectives"]:
        c["decoder"] = None
    if "contrastive" not in c["objectives"]:
        c.setdefault("stim_dim", None)
        c.setdefault("proj_dim", None)
    c.setdefault("decoder", None)
    # Provenance of a checkpoint made here: synthetic, untrained.
    c.setdefault("atlas", "synthetic")
    c.setdefault("tr_seconds", 1.0)
    c.setdefault("train_steps", 0)
    c.setdefault("train_subjects", 0)
    c.setdefault("train_datasets", [])
    c.setdefault("code_version", "bfm_torch reference")
    return c


def load_checkpoint(folder):
    """Returns (config dict, {name: float32 torch.Tensor}) of a released checkpoint folder."""
    config_path = os.path.join(folder, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{config_path}: format {config.get('format')!r} version {config.get('format_version')!r},"
                         f" expected {FORMAT!r} version {FORMAT_VERSION}")
    state, _ = read_safetensors(os.path.join(folder, "model.safetensors"))
    return config, state


def save_checkpoint(folder, config, state):
    """Writes folder/config.json (completed by complete_config) and folder/model.safetensors (float32)."""
    os.makedirs(folder, exist_ok=True)
    config = complete_config(config)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(folder, "model.safetensors"), state, {"format": "pt"})
    return config


# ---------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------
def hidden_width(mlp_ratio, width):
    """F = mlp_ratio * width; config.json may hold mlp_ratio as a float (4.0), F must come out whole."""
    F = mlp_ratio * width
    if F != int(F):
        raise ValueError(f"mlp_ratio {mlp_ratio} * width {width} = {F} is not a whole number")
    return int(F)


def gelu_tanh(u):
    return 0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u * u * u)))


class LayerNorm(torch.nn.Module):
    """Biased variance over the last axis, affine weight and bias."""

    def __init__(self, width, eps, dtype, fused=False):
        super().__init__()
        self.eps, self.fused = eps, fused
        self.weight = torch.nn.Parameter(torch.ones(width, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(width, dtype=dtype))

    def forward(self, u):
        if self.fused:
            return torch.nn.functional.layer_norm(u, self.weight.shape, self.weight, self.bias, self.eps)
        mean = u.mean(dim=-1, keepdim=True)
        var = ((u - mean) ** 2).mean(dim=-1, keepdim=True)
        return (u - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class Attention(torch.nn.Module):
    def __init__(self, width, n_heads, dtype):
        super().__init__()
        assert width % n_heads == 0, f"d_model {width} is not a multiple of n_heads {n_heads}"
        self.n_heads = n_heads
        self.qkv = torch.nn.Linear(width, 3 * width, dtype=dtype)
        self.proj = torch.nn.Linear(width, width, dtype=dtype)

    def forward(self, u, allowed):
        """u [B, N, D]; allowed [N, N] bool (query row may see key column) or None for all."""
        B, N, D = u.shape
        H, dh = self.n_heads, D // self.n_heads
        q, k, v = self.qkv(u).split(D, dim=-1)             # each [B, N, D], head h = columns h*dh..(h+1)*dh-1
        q = q.reshape(B, N, H, dh).transpose(1, 2)          # [B, H, N, dh]
        k = k.reshape(B, N, H, dh).transpose(1, 2)
        v = v.reshape(B, N, H, dh).transpose(1, 2)
        s = q @ k.transpose(-1, -2) / math.sqrt(dh)         # [B, H, N, N]
        if allowed is not None:
            s = s.masked_fill(~allowed, float("-inf"))
        o = torch.softmax(s, dim=-1) @ v                    # [B, H, N, dh]
        return self.proj(o.transpose(1, 2).reshape(B, N, D))


class MLP(torch.nn.Module):
    def __init__(self, width, hidden, dtype, fused=False):
        super().__init__()
        self.fused = fused
        self.fc1 = torch.nn.Linear(width, hidden, dtype=dtype)
        self.fc2 = torch.nn.Linear(hidden, width, dtype=dtype)

    def forward(self, u):
        if self.fused:
            return self.fc2(torch.nn.functional.gelu(self.fc1(u), approximate="tanh"))
        return self.fc2(gelu_tanh(self.fc1(u)))


class Block(torch.nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, width, n_heads, mlp_ratio, eps, dtype, fused=False):
        super().__init__()
        self.ln1 = LayerNorm(width, eps, dtype, fused)
        self.attn = Attention(width, n_heads, dtype)
        self.ln2 = LayerNorm(width, eps, dtype, fused)
        self.mlp = MLP(width, hidden_width(mlp_ratio, width), dtype, fused)

    def forward(self, h, allowed):
        h = h + self.attn(self.ln1(h), allowed)
        return h + self.mlp(self.ln2(h))


class Decoder(torch.nn.Module):
    """The mae decoder: encoder output of the visible tokens -> reconstructed patch of every token."""

    def __init__(self, c, dtype, fused=False):
        super().__init__()
        d = c["decoder"]
        D, Dd, P, n_t, L = c["d_model"], d["d_model"], c["n_parcels"], c["window"] // c["patch_len"], c["patch_len"]
        eps = c.get("ln_eps", LN_EPS)
        self.embed = torch.nn.Linear(D, Dd, dtype=dtype)
        self.mask_token = torch.nn.Parameter(torch.zeros(Dd, dtype=dtype))
        self.parcel_embed = torch.nn.Parameter(torch.zeros(P, Dd, dtype=dtype))
        self.time_embed = torch.nn.Parameter(torch.zeros(n_t, Dd, dtype=dtype))
        self.blocks = torch.nn.ModuleList(
            Block(Dd, d["n_heads"], c["mlp_ratio"], eps, dtype, fused) for _ in range(d["n_layers"]))
        self.ln_f = LayerNorm(Dd, eps, dtype, fused)
        self.head = torch.nn.Linear(Dd, L, dtype=dtype)

    def forward(self, encoder_out, visible_index, N):
        """encoder_out [B, Nv, D] of tokens visible_index [B, Nv] (increasing) -> reconstruction [B, N, L]."""
        B = encoder_out.shape[0]
        z = self.embed(encoder_out)                                          # [B, Nv, Dd]
        full = self.mask_token.expand(B, N, -1).clone()                     # [B, N, Dd]
        rows = torch.arange(B, device=visible_index.device).unsqueeze(1).expand_as(visible_index)
        full[rows, visible_index] = z
        position = (self.time_embed[:, None, :] + self.parcel_embed[None, :, :]).reshape(N, -1)  # token j*P+p
        h = full + position
        for block in self.blocks:
            h = block(h, None)
        return self.head(self.ln_f(h))


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------
class BrainModel(torch.nn.Module):
    """fused=True swaps the written-out LayerNorm and gelu for torch's fused kernels (same maths; for speed)."""

    def __init__(self, config, dtype=torch.float32, fused=False):
        super().__init__()
        c = self.config = config
        self.objectives = list(c["objectives"])
        unknown = set(self.objectives) - {"mae", "causal", "contrastive"}
        if unknown or ("mae" in self.objectives) == ("causal" in self.objectives):
            raise ValueError(f"objectives {self.objectives}: need exactly one of mae, causal, plus optional contrastive")
        self.P, self.T, self.L = c["n_parcels"], c["window"], c["patch_len"]
        if self.T % self.L:
            raise ValueError(f"window {self.T} is not a multiple of patch_len {self.L}")
        self.n_t = self.T // self.L
        self.N = self.n_t * self.P
        D, eps = c["d_model"], c.get("ln_eps", LN_EPS)
        weights = c.get("loss_weights") or {}
        self.loss_weights = {k: float(weights.get(k, 1.0)) for k in self.objectives}

        self.patch_embed = torch.nn.Linear(self.L, D, dtype=dtype)
        self.parcel_embed = torch.nn.Parameter(torch.zeros(self.P, D, dtype=dtype))
        self.time_embed = torch.nn.Parameter(torch.zeros(self.n_t, D, dtype=dtype))
        self.blocks = torch.nn.ModuleList(
            Block(D, c["n_heads"], c["mlp_ratio"], eps, dtype, fused) for _ in range(c["n_layers"]))
        self.ln_f = LayerNorm(D, eps, dtype, fused)
        if "mae" in self.objectives:
            self.decoder = Decoder(c, dtype, fused)
        if "causal" in self.objectives:
            self.next_head = torch.nn.Linear(D, self.L, dtype=dtype)
        if "contrastive" in self.objectives:
            E = c["proj_dim"]
            self.brain_proj = torch.nn.Linear(D, E, bias=False, dtype=dtype)
            self.stim_proj = torch.nn.Linear(c["stim_dim"], E, bias=False, dtype=dtype)
            self.logit_scale = torch.nn.Parameter(torch.tensor(LOGIT_SCALE_INIT, dtype=dtype))

        # Time-causal: token i = j*P + p may see token k iff patch(k) <= patch(i).
        patch_of = torch.arange(self.N) // self.P
        self.register_buffer("causal_allowed", patch_of[None, :] <= patch_of[:, None], persistent=False)

    @classmethod
    def from_pretrained(cls, folder, device=None, dtype=torch.float32, fused=False):
        """The model of a released checkpoint folder (model.safetensors + config.json), every tensor of the file
        loaded (strict), in eval mode on `device`. model(x) with x [B, window, n_parcels] returns the dict forward()
        describes; out["pooled"] is the embedding of each window."""
        config, state = load_checkpoint(folder)
        model = cls(config, dtype=dtype, fused=fused)
        model.load_state_dict(state, strict=True)
        return model.to(device).eval()

    def patches(self, x):
        """x [B, T, P] -> tokens [B, N, L], token j*P+p holding x[j*L + l, p]."""
        B = x.shape[0]
        return x.reshape(B, self.n_t, self.L, self.P).permute(0, 1, 3, 2).reshape(B, self.N, self.L)

    def encode(self, tokens, token_index, allowed):
        """tokens [B, Ne, L] at token indices token_index [B, Ne] -> ln_f(h) [B, Ne, D]."""
        position = (self.time_embed[:, None, :] + self.parcel_embed[None, :, :]).reshape(self.N, -1)
        h = self.patch_embed(tokens) + position[token_index]
        for block in self.blocks:
            h = block(h, allowed)
        return self.ln_f(h)

    def forward(self, x, mask=None, stim=None):
        """x [B, T, P]; mask [B, N] bool, True = masked (used by mae models only); stim [B, S] (contrastive).

        Returns a dict with encoder_out [B, N_enc, D], pooled [B, D], and where they apply reconstruction [B, N, L],
        next_pred [B, N, L], loss_mae, loss_causal, loss_contrastive, loss_total (0-dim).
        """
        B = x.shape[0]
        if x.shape[1:] != (self.T, self.P):
            raise ValueError(f"x has shape {tuple(x.shape)}, expected [B, {self.T}, {self.P}]")
        tokens = self.patches(x)
        out = {}
        all_index = torch.arange(self.N, device=x.device).expand(B, self.N)
        use_mask = "mae" in self.objectives and mask is not None
        if use_mask:
            mask = mask.to(device=x.device, dtype=torch.bool)
            if mask.shape != (B, self.N):
                raise ValueError(f"mask has shape {tuple(mask.shape)}, expected [{B}, {self.N}]")
            n_visible = int((~mask[0]).sum())
            if not bool(((~mask).sum(dim=1) == n_visible).all()):
                raise ValueError("mask rows mark different numbers of tokens")
            # Visible tokens in increasing index: a stable sort puts the False (visible) entries first, in order.
            visible_index = torch.sort(mask.to(torch.int8), dim=1, stable=True).indices[:, :n_visible]
            encoder_out = self.encode(torch.gather(tokens, 1, visible_index[..., None].expand(-1, -1, self.L)),
                                      visible_index, None)
        elif "causal" in self.objectives:
            encoder_out = self.encode(tokens, all_index, self.causal_allowed)
        else:
            encoder_out = self.encode(tokens, all_index, None)
        out["encoder_out"] = encoder_out
        out["pooled"] = encoder_out.mean(dim=1)

        losses = {}
        if use_mask:
            reconstruction = self.decoder(encoder_out, visible_index, self.N)
            out["reconstruction"] = reconstruction
            losses["mae"] = ((reconstruction - tokens) ** 2)[mask].mean()
        if "causal" in self.objectives:
            next_pred = self.next_head(encoder_out)
            out["next_pred"] = next_pred
            # token (j, p) = j*P + p predicts token (j+1, p) = j*P + p + P, for j = 0..n_t-2
            losses["causal"] = ((next_pred[:, :self.N - self.P] - tokens[:, self.P:]) ** 2).mean()
        if "contrastive" in self.objectives and stim is not None:
            zb = self.brain_proj(out["pooled"])
            zs = self.stim_proj(stim.to(zb))
            zb = zb / zb.norm(dim=-1, keepdim=True)
            zs = zs / zs.norm(dim=-1, keepdim=True)
            scale = torch.exp(torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX))
            logits = scale * zb @ zs.T                                         # [B, B]
            target = torch.arange(B, device=logits.device)
            ce = torch.nn.functional.cross_entropy
            losses["contrastive"] = (ce(logits, target) + ce(logits.T, target)) / 2
        for name, value in losses.items():
            out["loss_" + name] = value
        if losses:
            out["loss_total"] = sum(self.loss_weights[k] * v for k, v in losses.items())
        return out


def parameter_shapes(config):
    """{name: shape} the spec lists for this config, built without the module (an independent check of it)."""
    c = config
    P, L, D, n_t = c["n_parcels"], c["patch_len"], c["d_model"], c["window"] // c["patch_len"]

    def blocks(prefix, n, width):
        F = hidden_width(c["mlp_ratio"], width)
        shapes = {}
        for i in range(n):
            b = f"{prefix}blocks.{i}."
            shapes.update({b + "ln1.weight": (width,), b + "ln1.bias": (width,),
                           b + "attn.qkv.weight": (3 * width, width), b + "attn.qkv.bias": (3 * width,),
                           b + "attn.proj.weight": (width, width), b + "attn.proj.bias": (width,),
                           b + "ln2.weight": (width,), b + "ln2.bias": (width,),
                           b + "mlp.fc1.weight": (F, width), b + "mlp.fc1.bias": (F,),
                           b + "mlp.fc2.weight": (width, F), b + "mlp.fc2.bias": (width,)})
        return shapes

    s = {"patch_embed.weight": (D, L), "patch_embed.bias": (D,), "parcel_embed": (P, D), "time_embed": (n_t, D),
         "ln_f.weight": (D,), "ln_f.bias": (D,)}
    s.update(blocks("", c["n_layers"], D))
    if "mae" in c["objectives"]:
        Dd = c["decoder"]["d_model"]
        s.update({"decoder.embed.weight": (Dd, D), "decoder.embed.bias": (Dd,), "decoder.mask_token": (Dd,),
                  "decoder.parcel_embed": (P, Dd), "decoder.time_embed": (n_t, Dd),
                  "decoder.ln_f.weight": (Dd,), "decoder.ln_f.bias": (Dd,),
                  "decoder.head.weight": (L, Dd), "decoder.head.bias": (L,)})
        s.update(blocks("decoder.", c["decoder"]["n_layers"], Dd))
    if "causal" in c["objectives"]:
        s.update({"next_head.weight": (L, D), "next_head.bias": (L,)})
    if "contrastive" in c["objectives"]:
        s.update({"brain_proj.weight": (c["proj_dim"], D), "stim_proj.weight": (c["proj_dim"], c["stim_dim"]),
                  "logit_scale": ()})
    return s


def random_state(config, generator, std=0.3):
    """Random float32 parameters for testing: every tensor, LayerNorm included, non-trivial; logit_scale < ln 100.

    Linear weights get std 1/sqrt(fan_in) so activations stay O(1) (well conditioned in float32); biases,
    embeddings and the mask token get `std`; LayerNorm weights 1 + 0.2 N(0, 1).
    """
    state = {}
    for name, shape in parameter_shapes(config).items():
        if name == "logit_scale":
            value = torch.tensor(1.0 + 3.0 * float(torch.rand((), generator=generator)))  # in [1, 4) < ln 100
        elif name.endswith(("ln1.weight", "ln2.weight", "ln_f.weight")):
            value = 1.0 + 0.2 * torch.randn(shape, generator=generator)
        elif name.endswith(".weight"):
            value = torch.randn(shape, generator=generator) / math.sqrt(shape[1])
        else:
            value = std * torch.randn(shape, generator=generator)
        state[name] = value.to(torch.float32)
    return state


def n_masked(config, n_tokens):
    """round(mask_ratio * N), ties rounded up (as C's round() does): 0.5 * 21 -> 11."""
    return int(math.floor(config["mask_ratio"] * n_tokens + 0.5))


def random_mask(B, n_tokens, n_mask, generator):
    """[B, N] bool, True = masked, n_mask tokens per row drawn uniformly."""
    mask = torch.zeros(B, n_tokens, dtype=torch.bool)
    for b in range(B):
        mask[b, torch.randperm(n_tokens, generator=generator)[:n_mask]] = True
    return mask


def main(argv):
    if len(argv) != 2:
        print("usage: python3 -m bfm CHECKPOINT_DIR", file=sys.stderr)
        return 2
    config, state = load_checkpoint(argv[1])
    model = BrainModel(config, dtype=torch.float32)
    model.load_state_dict(state, strict=True)
    print(f"{argv[1]}: objectives {config['objectives']}, {sum(v.numel() for v in state.values())} parameters, "
          f"atlas {config.get('atlas')}, trained {config.get('train_steps')} steps")
    generator = torch.Generator().manual_seed(0)
    B = 2
    x = torch.randn(B, model.T, model.P, generator=generator)
    mask = stim = None
    if "mae" in model.objectives:
        mask = random_mask(B, model.N, n_masked(config, model.N), generator)
    if "contrastive" in model.objectives:
        stim = torch.randn(B, config["stim_dim"], generator=generator)
    with torch.no_grad():
        out = model(x, mask=mask, stim=stim)
    for name, value in out.items():
        if value.dim() == 0:
            print(f"  {name:18s} {float(value):.6f}")
        else:
            print(f"  {name:18s} {list(value.shape)}")
    return 0
