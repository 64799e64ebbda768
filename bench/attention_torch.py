#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the shapes of bench/bench_attention.cu, bf16 on one CUDA GPU.

Each available backend (FlashAttention-2 and cuDNN; a backend that refuses a shape is reported on stderr and
skipped) is timed for forward, and forward + backward, and printed in bench_attention's format:
    impl,mode,N,dh,fwd_tflops,fwdbwd_tflops      impl = torch-flash or torch-cudnn
Shapes: B = 8, D = H * dh = 768, N in 1024, 2048, 4096, dh in 64, 128. The "causal" mode is is_causal=True, i.e.
token-causal: the flash backend takes no arbitrary mask, so bfm's time-causal mask (patches of 128 tokens) has no
exact counterpart; token-causal has the same FLOP count under the convention below (ATTENTION_NOTES.md).
FLOPs (FlashAttention's convention): forward 4 B H N^2 dh, halved for causal; backward 2.5 times forward.
Timing: 3 warm-up calls, then the median over --reps calls, each between two torch.cuda.Events.

Usage: python3 bench/attention_torch.py [--reps 20]       (PyTorch >= 2.3 for torch.nn.attention.sdpa_kernel)
"""
import argparse
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = [("torch-flash", getattr(SDPBackend, "FLASH_ATTENTION", None)),
            ("torch-cudnn", getattr(SDPBackend, "CUDNN_ATTENTION", None))]


def median_ms(reps, run, prepare=None):
    for _ in range(3):
        if prepare is not None:
            prepare()
        run()
    times = []
    for _ in range(reps):
        if prepare is not None:
            prepare()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def bench_shape(impl, backend, n, dh, causal, reps):
    b, d = 8, 768
    h = d // dh
    # Contiguous [B, H, N, dh] q, k, v: each backend's preferred layout (bfm reads them from one [B, N, 3D] buffer).
    gen = torch.Generator(device="cuda").manual_seed(1)

    def uniform(*shape):
        x = torch.rand(*shape, device="cuda", generator=gen, dtype=torch.float32) * 2 - 1
        return x.to(torch.bfloat16)

    q, k, v = (uniform(b, h, n, dh).requires_grad_(True) for _ in range(3))
    dout = uniform(b, h, n, dh)

    with sdpa_kernel(backend):

        def forward():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        def step():
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            out.backward(dout)

        def zero_grad():
            q.grad = k.grad = v.grad = None

        fwd_ms = median_ms(reps, forward)
        step_ms = median_ms(reps, step, zero_grad)
    fwd_flops = 4.0 * b * h * n * n * dh * (0.5 if causal else 1.0)
    mode = "causal" if causal else "bidir"
    print(f"{impl},{mode},{n},{dh},{fwd_flops / (fwd_ms * 1e9):.1f},{3.5 * fwd_flops / (step_ms * 1e9):.1f}",
          flush=True)
    print(f"{impl} {mode} N={n} dh={dh} B={b} H={h}: forward {fwd_ms:.3f} ms, forward+backward {step_ms:.3f} ms",
          file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("attention_torch.py: no CUDA device")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.reps} reps", file=sys.stderr)
    print("impl,mode,N,dh,fwd_tflops,fwdbwd_tflops", flush=True)
    for impl, backend in BACKENDS:
        if backend is None:
            print(f"{impl}: this PyTorch has no such SDPBackend", file=sys.stderr)
            continue
        for causal in (False, True):
            for dh in (64, 128):
                for n in (1024, 2048, 4096):
                    try:
                        bench_shape(impl, backend, n, dh, causal, args.reps)
                    except RuntimeError as err:  # backend unavailable for this build, GPU or shape
                        first_line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                        print(f"{impl}: unavailable for N={n} dh={dh} causal={causal}: {first_line}", file=sys.stderr)
                    finally:
                        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
