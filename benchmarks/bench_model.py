"""Forward + backward speed of gptcore's GPT against peers, on CPU, in one run.

    python benchmarks/bench_model.py [--preset baby] [--batch 8] [--threads 2] [--repeats 5]

Peers, each built with the same shape (layers, heads, width, context,
vocabulary), fp32, dropout 0, training mode:

- Hugging Face ``transformers``' GPT2LMHeadModel (its default attention);
- the ``llms-from-scratch`` package's ch04 ``GPTModel`` (``pip install --no-deps
  llms-from-scratch``), the model of Raschka's book.

Each step is zero_grad, forward, cross-entropy, backward. The figure is the
best step time after warm-up, the peers timed in turn; ratios > 1 mean gptcore is faster.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from gptcore.model import GPT, GPTConfig, hf_config


def _time_interleaved(steps: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Best step time of each peer, timed round-robin so that a change in the
    machine's load hits every peer alike instead of whichever runs at the time."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def gptcore_step(cfg: GPTConfig, x, y):
    model = GPT(cfg).train()

    def step():
        model.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()

    return step, model.num_params()


def hf_step(cfg: GPTConfig, x, y):
    try:
        from transformers import GPT2LMHeadModel
    except ImportError:
        return None, 0
    model = GPT2LMHeadModel(hf_config(cfg)).train()

    def step():
        model.zero_grad(set_to_none=True)
        logits = model(x).logits
        F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)).backward()

    return step, sum(p.numel() for p in model.parameters())


def lfs_step(cfg: GPTConfig, x, y):
    try:
        from llms_from_scratch.ch04 import GPTModel
    except ImportError:
        return None, 0
    model = GPTModel(
        {
            "vocab_size": cfg.vocab_size,
            "context_length": cfg.block_size,
            "emb_dim": cfg.n_embd,
            "n_heads": cfg.n_head,
            "n_layers": cfg.n_layer,
            "drop_rate": 0.0,
            "qkv_bias": True,
        }
    ).train()

    def step():
        model.zero_grad(set_to_none=True)
        logits = model(x)
        F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)).backward()

    return step, sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="baby")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = GPTConfig.preset(args.preset, dropout=0.0)
    x = torch.randint(0, cfg.vocab_size, (args.batch, cfg.block_size))
    y = torch.randint(0, cfg.vocab_size, (args.batch, cfg.block_size))
    print(
        f"preset {args.preset}: {cfg}; batch {args.batch}; {args.threads} threads; fp32; torch {torch.__version__}"
    )
    steps, sizes = {}, {}
    for name, make in [
        ("gptcore GPT", gptcore_step),
        ("HF GPT2LMHeadModel", hf_step),
        ("llms-from-scratch GPTModel", lfs_step),
    ]:
        step, n = make(cfg, x, y)
        if step is None:
            print(f"{name:28} not installed, skipped")
            continue
        steps[name], sizes[name] = step, n
    results = _time_interleaved(steps, args.repeats)
    for name, t in results.items():
        tok_s = args.batch * cfg.block_size / t
        print(f"{name:28} {t * 1000:9.1f} ms/step  {tok_s:9,.0f} tok/s  {sizes[name]:,} params")
    base = results["gptcore GPT"]
    for name, t in results.items():
        if name != "gptcore GPT":
            print(
                f"gptcore speed / {name}: {t / base:.2f}x (target >= 1.00: {'met' if t >= base else 'NOT met'})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
