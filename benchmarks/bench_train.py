"""Training on the CPU: throughput against the machine's matmul peak, and the 3-minute recipe.

    python benchmarks/bench_train.py throughput [--threads 2]
    python benchmarks/bench_train.py recipe [--seconds 180]

``throughput``: the baby config (6 layers, 384 wide, 256 context), fp32, the
given threads, batch 12 x 256 tokens, full optimizer steps (forward, backward,
clip, AdamW). Reports tokens/s and the fraction of this machine's fp32 matmul
peak, both measured in this run (nanoGPT, not on PyPI, reaches 80-84% of that
peak, about 1,750 tok/s, on the reference 2-core machine).

``recipe``: trains ``gptcore.train.cpu_recipe()`` for the given wall time and
prints the validation loss. nanoGPT's documented CPU recipe (4 layers, 128 wide,
64 context, batch 12, 2000 iterations) reaches about 1.88 after about 3 minutes.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from gptcore.device import measure_matmul_flops
from gptcore.model import GPT, GPTConfig
from gptcore.train import configure_optimizer, cpu_recipe, get_batch, optimization_step, train


def throughput(threads: int, steps: int = 8, batch: int = 12) -> None:
    torch.set_num_threads(threads)
    cfg = GPTConfig.preset("baby", dropout=0.0)
    torch.manual_seed(0)
    model = GPT(cfg)
    opt = configure_optimizer(model, 1e-3, 0.1)
    data = torch.randint(0, cfg.vocab_size, (100_000,))
    gen = torch.Generator().manual_seed(0)
    batches = [get_batch(data, batch, cfg.block_size, gen) for _ in range(steps + 2)]
    for x, y in batches[:2]:
        optimization_step(model, opt, [(x, y)], 1.0)  # warm-up
    t0 = time.perf_counter()
    for x, y in batches[2:]:
        optimization_step(model, opt, [(x, y)], 1.0)
    dt = time.perf_counter() - t0
    tok_s = steps * batch * cfg.block_size / dt
    peak = measure_matmul_flops(n=1536, seconds=1.0)
    achieved = tok_s * model.flops_per_token(cfg.block_size)
    print(f"baby config, fp32, {threads} threads, batch {batch}x{cfg.block_size}")
    print(f"throughput:        {tok_s:,.0f} tokens/s")
    print(f"fp32 matmul peak:  {peak / 1e9:,.1f} GFLOP/s (measured now)")
    print(f"fraction of peak:  {achieved / peak:.1%} (nanoGPT: 80-84%)")


def recipe(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = train(cpu_recipe(out_dir=out, max_seconds=seconds, progress=False))
        dt = time.perf_counter() - t0
    print(
        f"cpu_recipe: {result.step} steps in {dt:.0f} s, validation loss {result.val_loss:.4f} "
        f"(nanoGPT's CPU recipe: about 1.88 after about 3 minutes)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["throughput", "recipe"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=180.0)
    args = ap.parse_args(argv)
    if args.what == "throughput":
        throughput(args.threads)
    else:
        torch.set_num_threads(args.threads)
        recipe(args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
