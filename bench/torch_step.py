#!/usr/bin/python3
"""PyTorch side of the CPU training-step benchmark: one step = forward + backward + AdamW of the reference model
(python/bfm/model.py) in float32 on the CPU, with the benchmark config below. Warm-up steps, then the median of
--steps timed steps. LayerNorm and gelu use torch's fused kernels (fused=True), as a PyTorch user would. Each step draws a fresh window batch and mae mask so no step is cheaper than another.

Run:  /usr/bin/python3 bench/torch_step.py --threads 2
Prints one JSON line: {"impl": "pytorch", "threads": N, "step_ms": ..., "samples_per_s": ...}
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from bfm import model as bfm_torch  # noqa: E402

# P=64 parcels, T=64 time points in patches of 8 -> N = 512 tokens, 384 masked, 128 seen by the encoder.
CONFIG = dict(n_parcels=64, window=64, patch_len=8, d_model=128, n_heads=4, n_layers=4, mlp_ratio=4,
              objectives=["mae"], mask_ratio=0.75, decoder=dict(d_model=64, n_heads=4, n_layers=2))
BATCH = 16


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=BATCH)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    model = bfm_torch.BrainModel(CONFIG, dtype=torch.float32, fused=True)
    model.load_state_dict(bfm_torch.random_state(CONFIG, generator, std=0.02), strict=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.05)
    n_mask = bfm_torch.n_masked(CONFIG, model.N)

    times = []
    for step in range(args.warmup + args.steps):
        x = torch.randn(args.batch, model.T, model.P, generator=generator)
        mask = bfm_torch.random_mask(args.batch, model.N, n_mask, generator)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model(x, mask=mask)["loss_total"]
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        if step >= args.warmup:
            times.append(elapsed)
    step_s = statistics.median(times)
    print(json.dumps({"impl": "pytorch", "threads": args.threads, "step_ms": round(step_s * 1e3, 3),
                      "samples_per_s": round(args.batch / step_s, 2), "batch": args.batch,
                      "torch": torch.__version__, "loss": round(float(loss), 4)}))


if __name__ == "__main__":
    main()
