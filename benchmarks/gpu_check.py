"""GPU check: GPT-2 small, bf16, tokens/s and MFU, in one command under 10 minutes.

    python benchmarks/gpu_check.py [--batch 16] [--steps 30] [--compile]

Runs full optimizer steps of ``gptcore.train`` on random tokens (block 1024,
vocab 50304 padded for tensor cores), after warm-up, and reports tokens/s and
MFU = tokens/s x FLOPs per token / the GPU's bf16 peak. Goal: >= 50% MFU on an
H100/H200-class GPU. It also checks that the fused and explicit attention
paths agree on the GPU and that a short bf16 training run's loss decreases.
"""

from __future__ import annotations

import argparse
import time

import torch

from gptcore.device import peak_flops
from gptcore.model import GPT, GPTConfig
from gptcore.train import configure_optimizer, get_batch, optimization_step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check")
        return 0
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(torch.cuda.get_device_name(dev), "torch", torch.__version__)

    # 1. fused vs explicit attention on the GPU
    from gptcore.model.attention import CausalSelfAttention

    small = GPTConfig.preset("test", n_embd=64, n_head=4, block_size=128)
    attn = CausalSelfAttention(small).to(dev).eval()
    x = torch.randn(2, 128, 64, device=dev)
    with torch.no_grad():
        fused = attn(x)
        explicit, _ = attn(x, return_weights=True)
    print("fused vs explicit attention max diff:", float((fused - explicit).abs().max()))

    # 2. GPT-2 small throughput and MFU
    cfg = GPTConfig.preset("gpt2", vocab_size=50304)
    torch.manual_seed(0)
    model = GPT(cfg).to(dev)
    opt = configure_optimizer(model, 6e-4, 0.1, fused=True)
    run = torch.compile(model) if args.compile else model
    data = torch.randint(0, 50257, (10_000_000,))
    gen = torch.Generator().manual_seed(0)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16)

    def batch():
        x, y = get_batch(data, args.batch, cfg.block_size, gen)
        return x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)

    losses = []
    for _ in range(5):  # warm-up (and compilation)
        losses.append(optimization_step(run, opt, [batch()], 1.0, autocast=autocast)[0])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        losses.append(optimization_step(run, opt, [batch()], 1.0, autocast=autocast)[0])
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tok_s = args.steps * args.batch * cfg.block_size / dt
    peak = peak_flops(dev, torch.bfloat16)
    mfu = tok_s * model.flops_per_token(cfg.block_size) / peak if peak else float("nan")
    print(f"GPT-2 small, bf16, batch {args.batch}x{cfg.block_size}, compile={args.compile}")
    print(
        f"tokens/s: {tok_s:,.0f}   MFU: {mfu:.1%} (goal >= 50%)   peak {peak / 1e12 if peak else 0:.0f} TFLOP/s"
    )
    print(
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
