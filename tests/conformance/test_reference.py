#!/usr/bin/python3
"""Checks of the PyTorch reference itself (python/bfm/model.py), so that the conformance test's oracle is right.

- a second, naive implementation of the spec in numpy float64 (per-sample, per-head, per-query loops) that the
  module's outputs and losses must match to 1e-10;
- finite differences of loss_total along a random direction of every parameter tensor (float64);
- properties the spec implies: causal outputs of patch j ignore later patches, the mae encoder ignores masked
  tokens, contrastive loss with B = 1 is 0, gelu/LayerNorm equal torch's;
- a save/load round trip of a checkpoint, with the safetensors bytes read independently of the reader.

Run: /usr/bin/python3 tests/conformance/test_reference.py   (exit 0 on pass; a few seconds)
"""
import json
import math
import os
import struct
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from bfm import model as bfm_torch  # noqa: E402

torch.set_num_threads(2)

BASE = dict(n_parcels=3, window=6, patch_len=2, d_model=8, n_heads=2, n_layers=2, mlp_ratio=2, mask_ratio=0.5,
            stim_dim=4, proj_dim=3)
DECODER = dict(d_model=6, n_heads=3, n_layers=1)
CONFIGS = {
    "mae": dict(BASE, objectives=["mae"], decoder=DECODER),
    "mae+contrastive": dict(BASE, objectives=["mae", "contrastive"], decoder=DECODER,
                            loss_weights={"mae": 0.7, "contrastive": 1.3}),
    "causal": dict(BASE, objectives=["causal"], mlp_ratio=4),
    "causal+contrastive": dict(BASE, objectives=["causal", "contrastive"]),
}


# --------------------------------------------------------------------------------------------------------------
# Naive numpy float64 forward, one sample at a time, loops where the spec says "for each".
# --------------------------------------------------------------------------------------------------------------
def np_layernorm(u, w, b, eps=1e-5):
    out = np.empty_like(u)
    for i in range(u.shape[0]):
        mu = u[i].sum() / u.shape[1]
        var = ((u[i] - mu) ** 2).sum() / u.shape[1]
        out[i] = (u[i] - mu) / math.sqrt(var + eps) * w + b
    return out


def np_block(h, s, prefix, n_heads, allowed):
    """h [n, D]; allowed(i, k) -> bool."""
    n, D = h.shape
    dh = D // n_heads
    u = np_layernorm(h, s[prefix + "ln1.weight"], s[prefix + "ln1.bias"])
    qkv = u @ s[prefix + "attn.qkv.weight"].T + s[prefix + "attn.qkv.bias"]
    o = np.zeros((n, D))
    for hd in range(n_heads):
        cols = slice(hd * dh, (hd + 1) * dh)
        q, k, v = qkv[:, 0:D][:, cols], qkv[:, D:2 * D][:, cols], qkv[:, 2 * D:3 * D][:, cols]
        for i in range(n):
            keys = [kk for kk in range(n) if allowed(i, kk)]
            scores = np.array([q[i] @ k[kk] / math.sqrt(dh) for kk in keys])
            p = np.exp(scores - scores.max())
            p /= p.sum()
            o[i, cols] = sum(p[a] * v[kk] for a, kk in enumerate(keys))
    h = h + o @ s[prefix + "attn.proj.weight"].T + s[prefix + "attn.proj.bias"]
    u = np_layernorm(h, s[prefix + "ln2.weight"], s[prefix + "ln2.bias"])
    f = u @ s[prefix + "mlp.fc1.weight"].T + s[prefix + "mlp.fc1.bias"]
    f = 0.5 * f * (1 + np.tanh(math.sqrt(2 / math.pi) * (f + 0.044715 * f ** 3)))
    return h + f @ s[prefix + "mlp.fc2.weight"].T + s[prefix + "mlp.fc2.bias"]


def np_forward(c, s, x, mask, stim):
    P, T, L = c["n_parcels"], c["window"], c["patch_len"]
    n_t = T // L
    N = n_t * P
    B = x.shape[0]
    objectives = c["objectives"]
    weights = c.get("loss_weights", {})
    out = {k: [] for k in ("encoder_out", "pooled", "reconstruction", "next_pred")}
    sq_mae, n_mae, sq_causal, n_causal = 0.0, 0, 0.0, 0
    for b in range(B):
        patch = np.zeros((N, L))
        for j in range(n_t):
            for p in range(P):
                for l in range(L):
                    patch[j * P + p, l] = x[b, j * L + l, p]
        use_mask = "mae" in objectives and mask is not None
        run = [i for i in range(N) if not (use_mask and mask[b, i])]
        h = np.stack([patch[i] @ s["patch_embed.weight"].T + s["patch_embed.bias"]
                      + s["parcel_embed"][i % P] + s["time_embed"][i // P] for i in run])
        if "causal" in objectives and not use_mask:
            allowed = lambda i, k: run[k] // P <= run[i] // P  # noqa: E731
        else:
            allowed = lambda i, k: True  # noqa: E731
        for layer in range(c["n_layers"]):
            h = np_block(h, s, f"blocks.{layer}.", c["n_heads"], allowed)
        enc = np_layernorm(h, s["ln_f.weight"], s["ln_f.bias"])
        out["encoder_out"].append(enc)
        out["pooled"].append(enc.mean(axis=0))
        if use_mask:
            z = enc @ s["decoder.embed.weight"].T + s["decoder.embed.bias"]
            full = np.stack([s["decoder.mask_token"]] * N)
            for a, i in enumerate(run):
                full[i] = z[a]
            for i in range(N):
                full[i] = full[i] + s["decoder.parcel_embed"][i % P] + s["decoder.time_embed"][i // P]
            for layer in range(c["decoder"]["n_layers"]):
                full = np_block(full, s, f"decoder.blocks.{layer}.", c["decoder"]["n_heads"], lambda i, k: True)
            rec = np_layernorm(full, s["decoder.ln_f.weight"], s["decoder.ln_f.bias"]) @ s["decoder.head.weight"].T \
                + s["decoder.head.bias"]
            out["reconstruction"].append(rec)
            for i in range(N):
                if mask[b, i]:
                    sq_mae += ((rec[i] - patch[i]) ** 2).sum()
                    n_mae += L
        if "causal" in objectives:
            pred = enc @ s["next_head.weight"].T + s["next_head.bias"]
            out["next_pred"].append(pred)
            for j in range(n_t - 1):
                for p in range(P):
                    sq_causal += ((pred[j * P + p] - patch[(j + 1) * P + p]) ** 2).sum()
                    n_causal += L
    result = {k: np.stack(v) for k, v in out.items() if v}
    losses = {}
    if n_mae:
        losses["mae"] = sq_mae / n_mae
    if n_causal:
        losses["causal"] = sq_causal / n_causal
    if "contrastive" in objectives and stim is not None:
        zb = result["pooled"] @ s["brain_proj.weight"].T
        zs = stim @ s["stim_proj.weight"].T
        zb /= np.linalg.norm(zb, axis=1, keepdims=True)
        zs /= np.linalg.norm(zs, axis=1, keepdims=True)
        logits = math.exp(min(float(s["logit_scale"]), math.log(100))) * zb @ zs.T
        rows = -np.mean([logits[i, i] - math.log(np.exp(logits[i]).sum()) for i in range(B)])
        cols = -np.mean([logits[i, i] - math.log(np.exp(logits[:, i]).sum()) for i in range(B)])
        losses["contrastive"] = (rows + cols) / 2
    for k, v in losses.items():
        result["loss_" + k] = np.array(v)
    if losses:
        result["loss_total"] = np.array(sum(weights.get(k, 1.0) * v for k, v in losses.items()))
    return result


# --------------------------------------------------------------------------------------------------------------
def make_inputs(c, B, seed, with_mask=True):
    g = torch.Generator().manual_seed(seed)
    model_n = (c["window"] // c["patch_len"]) * c["n_parcels"]
    x = torch.randn(B, c["window"], c["n_parcels"], generator=g, dtype=torch.float64)
    mask = None
    if with_mask:
        mask = torch.zeros(B, model_n, dtype=torch.bool)
        for b in range(B):
            mask[b, torch.randperm(model_n, generator=g)[:round(c["mask_ratio"] * model_n)]] = True
    stim = torch.randn(B, c["stim_dim"], generator=g, dtype=torch.float64)
    return x, mask, stim


def build(c, seed):
    state = bfm_torch.random_state(c, torch.Generator().manual_seed(seed))
    model = bfm_torch.BrainModel(c, dtype=torch.float64)
    model.load_state_dict(state, strict=True)
    return model, state


FAILURES = []


def check(name, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}")
    if not ok:
        FAILURES.append(name)


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def test_against_naive():
    for cname, c in CONFIGS.items():
        for with_mask in (True, False):
            model, state = build(c, 1)
            x, mask, stim = make_inputs(c, 3, 2, with_mask)
            with torch.no_grad():
                out = model(x, mask, stim)
            ref = np_forward(c, {k: v.double().numpy() for k, v in state.items()}, x.numpy(),
                             None if mask is None else mask.numpy(), stim.numpy())
            same_keys = set(out) == set(ref)
            worst = max(rel(out[k].numpy(), ref[k]) for k in ref) if same_keys else float("inf")
            check(f"naive numpy == module [{cname}, mask={with_mask}]", same_keys and worst < 1e-10,
                  f"keys {sorted(out)} vs {sorted(ref)}, worst rel err {worst:.2e}")


def test_finite_differences():
    for cname, c in CONFIGS.items():
        model, _ = build(c, 3)
        x, mask, stim = make_inputs(c, 3, 4)
        loss = model(x, mask, stim)["loss_total"]
        params = dict(model.named_parameters())
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True)))
        g = torch.Generator().manual_seed(5)
        worst, worst_name = 0.0, ""
        for name, p in params.items():
            direction = torch.randn(p.shape, generator=g, dtype=torch.float64)
            eps = 1e-5
            with torch.no_grad():
                p += eps * direction
                up = float(model(x, mask, stim)["loss_total"])
                p -= 2 * eps * direction
                down = float(model(x, mask, stim)["loss_total"])
                p += eps * direction
            numeric = (up - down) / (2 * eps)
            analytic = 0.0 if grads[name] is None else float((grads[name] * direction).sum())
            err = abs(numeric - analytic) / max(abs(numeric), 1e-6)
            if err > worst:
                worst, worst_name = err, name
        check(f"finite differences of loss_total, every parameter [{cname}]", worst < 1e-6,
              f"worst rel err {worst:.2e} ({worst_name})")
    # And torch's own gradcheck with respect to the input window.
    c = CONFIGS["causal+contrastive"]
    model, _ = build(c, 6)
    x, _, stim = make_inputs(c, 2, 7, with_mask=False)
    x.requires_grad_(True)
    check("torch.autograd.gradcheck of loss_total w.r.t. x [causal+contrastive]",
          torch.autograd.gradcheck(lambda xx: model(xx, None, stim)["loss_total"], (x,)))


def test_properties():
    c = CONFIGS["causal"]
    model, _ = build(c, 8)
    x, _, _ = make_inputs(c, 2, 9, with_mask=False)
    P, L = c["n_parcels"], c["patch_len"]
    x2 = x.clone()
    x2[:, -L:, :] += 10.0                            # change only the last time patch
    with torch.no_grad():
        a, b = model(x)["encoder_out"], model(x2)["encoder_out"]
    n_early = a.shape[1] - P
    check("causal: earlier patches ignore the last patch", torch.equal(a[:, :n_early], b[:, :n_early])
          and not torch.allclose(a[:, n_early:], b[:, n_early:]))

    c = CONFIGS["mae"]
    model, _ = build(c, 10)
    x, mask, _ = make_inputs(c, 2, 11)
    tokens = model.patches(x)
    tokens2 = tokens.clone()
    tokens2[mask] += 5.0
    x2 = tokens2.reshape(2, model.n_t, model.P, model.L).permute(0, 1, 3, 2).reshape(x.shape)
    with torch.no_grad():
        a, b = model(x, mask), model(x2, mask)
    check("mae: encoder ignores masked tokens, loss sees them",
          torch.equal(a["encoder_out"], b["encoder_out"]) and float(a["loss_mae"]) != float(b["loss_mae"]))

    c = CONFIGS["mae+contrastive"]
    model, _ = build(c, 12)
    x, mask, stim = make_inputs(c, 1, 13)
    check("contrastive with B = 1 is 0", float(model(x, mask, stim)["loss_contrastive"]) == 0.0)

    u = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    check("gelu_tanh == torch gelu(approximate='tanh')",
          torch.allclose(bfm_torch.gelu_tanh(u), torch.nn.functional.gelu(u, approximate="tanh"), atol=1e-14))
    c = CONFIGS["mae+contrastive"]
    model, state = build(c, 15)
    fused = bfm_torch.BrainModel(c, dtype=torch.float64, fused=True)
    fused.load_state_dict(state, strict=True)
    x, mask, stim = make_inputs(c, 2, 16)
    with torch.no_grad():
        a, b = model(x, mask, stim), fused(x, mask, stim)
    check("fused=True (benchmark) == written-out model", all(torch.allclose(a[k], b[k], rtol=1e-12) for k in a))
    ln = bfm_torch.LayerNorm(7, 1e-5, torch.float64)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    v = torch.randn(5, 7, dtype=torch.float64)
    check("LayerNorm == torch layer_norm", torch.allclose(
        ln(v), torch.nn.functional.layer_norm(v, (7,), ln.weight, ln.bias, 1e-5), atol=1e-13))


def test_round_trip():
    c = CONFIGS["mae+contrastive"]
    state = bfm_torch.random_state(c, torch.Generator().manual_seed(14))
    with tempfile.TemporaryDirectory() as folder:
        written = bfm_torch.save_checkpoint(folder, c, state)
        config, loaded = bfm_torch.load_checkpoint(folder)
        check("round trip: same tensors, bit for bit", set(loaded) == set(state)
              and all(torch.equal(loaded[k], state[k]) and loaded[k].dtype == torch.float32 for k in state))
        keys = {"format", "format_version", "n_parcels", "window", "patch_len", "d_model", "n_heads", "n_layers",
                "mlp_ratio", "objectives", "mask_ratio", "decoder", "stim_dim", "proj_dim", "ln_eps", "gelu",
                "atlas", "tr_seconds", "train_steps", "train_subjects", "train_datasets", "code_version"}
        check("round trip: config.json has the spec's keys", keys <= set(config) and config == written,
              f"missing {sorted(keys - set(config))}")
        # Read one tensor straight from the bytes: header length, JSON, offset, little-endian float32, row-major.
        with open(os.path.join(folder, "model.safetensors"), "rb") as f:
            blob = f.read()
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + n])
        info = header["blocks.1.attn.qkv.weight"]
        begin = 8 + n + info["data_offsets"][0]
        raw = np.frombuffer(blob[begin:begin + 4 * 24 * 8], dtype="<f4").reshape(24, 8)
        check("round trip: raw bytes are F32 row-major at data_offsets", info["dtype"] == "F32"
              and info["shape"] == [24, 8] and np.array_equal(raw, state["blocks.1.attn.qkv.weight"].numpy())
              and header["logit_scale"]["shape"] == [] and n % 8 == 0)
        model = bfm_torch.BrainModel(config)
        model.load_state_dict(loaded, strict=True)
        check("round trip: strict load_state_dict", True)


if __name__ == "__main__":
    test_against_naive()
    test_finite_differences()
    test_properties()
    test_round_trip()
    print(f"{'FAILED: ' + ', '.join(FAILURES) if FAILURES else 'all passed'}")
    sys.exit(1 if FAILURES else 0)
