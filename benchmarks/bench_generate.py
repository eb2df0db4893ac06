"""Generation speed on CPU: gptcore cached vs uncached vs Hugging Face, in one run.

    python benchmarks/bench_generate.py [--preset baby] [--new 500] [--threads 2]

Same weights everywhere (a random baby-config GPT-2 built in ``transformers``
and loaded into gptcore), batch 1, a 1-token prompt, greedy decoding so every
implementation does the same work. Targets: cached >= 10x uncached, and
cached >= 1.2x HF's cached ``generate``.
"""

from __future__ import annotations

import argparse
import time

import torch

from gptcore.model import GPT, GPTConfig, hf_config
from gptcore.sample import generate


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="baby")
    ap.add_argument("--new", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = GPTConfig.preset(args.preset, dropout=0.0)
    n = min(args.new, cfg.block_size * 2)
    torch.manual_seed(0)
    from transformers import GPT2LMHeadModel

    # gptcore needs block_size >= prompt + new tokens to keep using its cache.
    ours_cfg = GPTConfig(**{**cfg.__dict__, "block_size": max(cfg.block_size, n + 1)})
    hf = GPT2LMHeadModel(hf_config(ours_cfg)).eval()
    ours = GPT.from_hf_state_dict(hf.state_dict(), ours_cfg).eval()
    prompt = torch.tensor([[0]])
    print(f"{args.preset}: {ours_cfg}; {n} new tokens, batch 1, greedy, {args.threads} threads")

    def hf_run(cache: bool):
        with torch.inference_mode():
            return hf.generate(
                prompt,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                use_cache=cache,
                pad_token_id=0,
            )[0, 1:].tolist()

    rows = {
        "gptcore, KV cache": lambda: generate(ours, [0], n, temperature=0),
        "gptcore, no cache": lambda: generate(ours, [0], n, temperature=0, use_cache=False),
        "HF generate, cache": lambda: hf_run(True),
    }
    same = rows["gptcore, KV cache"]() == hf_run(True)
    times = {
        name: _best(fn, args.repeats if "no cache" not in name else 1) for name, fn in rows.items()
    }
    for name, t in times.items():
        print(f"{name:22} {t:8.2f} s  {n / t:8.1f} tok/s")
    cached = times["gptcore, KV cache"]
    print(f"cached / uncached speed-up: {times['gptcore, no cache'] / cached:.1f}x (target >= 10x)")
    print(
        f"gptcore cached / HF cached: {times['HF generate, cache'] / cached:.2f}x (target >= 1.2x)"
    )
    print(f"identical greedy tokens to HF: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
