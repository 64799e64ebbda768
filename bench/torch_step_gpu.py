#!/usr/bin/env python3
"""PyTorch side of the GPU training-step benchmark (bench/gpu_check.sh): the brain model of bench_step_gpu.cpp,
written the way a PyTorch user would on a GPU: fp32 parameters under bf16 autocast, torch's fused LayerNorm and
tanh-GELU, torch.nn.functional.scaled_dot_product_attention (whatever back-end it picks: flash for the
bidirectional MAE encoder and decoder; the time-causal mask is a boolean attn_mask, which rules flash out), and
the fused AdamW with global-norm clipping. One step = zero_grad, forward, loss, backward, clip, AdamW; the loss is
read back each step (one synchronisation per step, as bfm does). Median of --steps after --warmup.

Models (as bench_step_gpu): brainlm = P 424, T 200, L 20 (4,240 tokens), D 768, 12 layers, 12 heads, MAE 0.75,
decoder 512 wide, 8 heads, 4 layers; causal = the same encoder, time-causal over all 4,240 tokens, next-patch loss.
Prints one CSV row: torch,<model>,bf16,<batch>,<ms_per_step>,<samples_per_s>,<model_tflops>,<mfu>
"""
import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

P, T, L, D, H, LAYERS = 424, 200, 20, 768, 12, 12
NT = T // L
N = NT * P


class Block(torch.nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc1, self.fc2 = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, h, mask):
        B, n, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).view(B, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.proj(a.transpose(1, 2).reshape(B, n, d))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h)), approximate="tanh"))


class Model(torch.nn.Module):
    def __init__(self, which):
        super().__init__()
        self.which = which
        self.patch_embed = torch.nn.Linear(L, D)
        self.parcel_embed = torch.nn.Parameter(0.02 * torch.randn(P, D))
        self.time_embed = torch.nn.Parameter(0.02 * torch.randn(NT, D))
        self.blocks = torch.nn.ModuleList(Block(D, H) for _ in range(LAYERS))
        self.ln_f = torch.nn.LayerNorm(D)
        if which == "brainlm":
            Dd = 512
            self.dec_embed = torch.nn.Linear(D, Dd)
            self.mask_token = torch.nn.Parameter(torch.zeros(Dd))
            self.dec_parcel = torch.nn.Parameter(0.02 * torch.randn(P, Dd))
            self.dec_time = torch.nn.Parameter(0.02 * torch.randn(NT, Dd))
            self.dec_blocks = torch.nn.ModuleList(Block(Dd, 8) for _ in range(4))
            self.dec_ln = torch.nn.LayerNorm(Dd)
            self.head = torch.nn.Linear(Dd, L)
        else:
            self.next_head = torch.nn.Linear(D, L)
            patch = torch.arange(N) // P
            self.register_buffer("allowed", patch[None, :] <= patch[:, None], persistent=False)

    def forward(self, x, visible):
        B = x.shape[0]
        tokens = x.view(B, NT, L, P).permute(0, 1, 3, 2).reshape(B, N, L)
        pos = (self.time_embed[:, None] + self.parcel_embed[None]).reshape(N, D)
        if self.which == "brainlm":
            idx = visible
            h = self.patch_embed(torch.gather(tokens, 1, idx[..., None].expand(-1, -1, L))) + pos[idx]
            for b in self.blocks:
                h = b(h, None)
            z = self.dec_embed(self.ln_f(h))
            full = self.mask_token.to(z.dtype).expand(B, N, -1).clone()
            full.scatter_(1, idx[..., None].expand(-1, -1, z.shape[-1]), z)
            h = full + (self.dec_time[:, None] + self.dec_parcel[None]).reshape(N, -1)
            for b in self.dec_blocks:
                h = b(h, None)
            rec = self.head(self.dec_ln(h)).float()
            masked = torch.ones(B, N, dtype=torch.bool, device=x.device)
            masked.scatter_(1, idx, False)
            return ((rec - tokens) ** 2)[masked].mean()
        h = self.patch_embed(tokens) + pos
        for b in self.blocks:
            h = b(h, self.allowed)
        pred = self.next_head(self.ln_f(h)).float()
        return ((pred[:, :N - P] - tokens[:, P:]) ** 2).mean()


def model_flops(which, batch):
    """Forward+backward model FLOPs per step, counted as bench_step_gpu.cpp does."""
    def stack(layers, n, w, hidden, pairs):
        return layers * (2.0 * n * (3 * w * w + w * w + 2 * w * hidden) + 4.0 * pairs * w)
    if which == "brainlm":
        nv = N - round(0.75 * N)
        f = stack(12, nv, D, 4 * D, nv * nv) + 2.0 * nv * D * 512 + stack(4, N, 512, 2048, N * N) + 2.0 * N * 512 * L
    else:
        f = stack(12, N, D, 4 * D, P * P * NT * (NT + 1) / 2) + 2.0 * N * D * L
    f += 2.0 * N * L * D
    return 3.0 * f * batch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="brainlm", choices=["brainlm", "causal"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    a = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = Model(a.model).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)
    x = torch.randn(a.batch, T, P, device=dev)
    n_vis = N - round(0.75 * N)
    visible = torch.sort(torch.rand(a.batch, N, device=dev).argsort(dim=1)[:, :n_vis], dim=1).values
    times = []
    for step in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x, visible)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_value = loss.item()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    tf = model_flops(a.model, a.batch) / s / 1e12
    print(f"torch_step_gpu: {a.model} batch {a.batch}: {s * 1e3:.2f} ms/step, loss {loss_value:.4f}, "
          f"peak memory {torch.cuda.max_memory_allocated() / 1e9:.1f} GB", file=sys.stderr)
    print(f"torch,{a.model},bf16,{a.batch},{s * 1e3:.2f},{a.batch / s:.1f},{tf:.1f},{tf / a.peak_tflops:.3f}")


if __name__ == "__main__":
    main()
