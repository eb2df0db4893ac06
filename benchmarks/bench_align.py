"""Every alignment stage on the CPU: its metric before and after, and its wall time.

    python benchmarks/bench_align.py [--threads 1] [--out /tmp/bench-align]

The task is gptcore.align.data's (opposites, made from a seed). The base model
is a new character-level GPT (2 layers, 64 wide, ~100k parameters): the
stages are measured, not pretraining. Each stage runs with the defaults of
``gptcore sft / reward / rlhf / dpo`` (gptcore.align.commands.STAGE_DEFAULTS):

- SFT: share of well-formed (and correct) replies over all 120 questions;
- reward model: pairwise accuracy on 100 held-out preference pairs;
- RLHF and DPO: mean reward-model score, KL from the SFT model,
  well-formed, correct and preferred-style shares. RLHF also runs longer at a
  higher learning rate with beta 0 (reward hacking) and with beta 0.1.

Replies are sampled at temperature 1 with a fixed seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

import torch

from gptcore.align import (
    ChatFormat,
    RewardModel,
    demonstrations,
    evaluate_chat,
    finetune,
    pairwise_accuracy,
    preference_pairs,
    prompts,
    rlhf,
    train_dpo,
    train_reward_model,
)
from gptcore.align.commands import BETA, FRESH, STAGE_DEFAULTS
from gptcore.align.data import TASK_CHARS
from gptcore.align.sft import align_config
from gptcore.model import GPT, GPTConfig
from gptcore.tokenizer import CharTokenizer


def _show(name: str, metrics: dict[str, float]) -> None:
    print(f"  {name:<12}" + "  ".join(f"{k} {v:6.3f}" for k, v in metrics.items()), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/bench-align", help="run folders (emptied first)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)

    def config(stage: str, name: str | None = None):
        kw = {**STAGE_DEFAULTS[stage], "progress": False, "threads": args.threads, "seed": args.seed}
        kw.setdefault("eval_interval", kw["max_iters"])
        return align_config(str(out / (name or stage)), **kw)

    chat = ChatFormat(CharTokenizer.from_text(TASK_CHARS))
    every = prompts()
    torch.manual_seed(args.seed)
    base = GPT(GPTConfig(vocab_size=chat.vocab_size, **FRESH))
    print(f"base model: {base.num_params():,} parameters, {len(every)} questions")

    before = evaluate_chat(base, chat, every, seed=args.seed)  # finetune trains base in place
    t = time.perf_counter()
    sft = finetune(base, chat, demonstrations(2000, seed=args.seed), config("sft")).model
    print(f"SFT ({time.perf_counter() - t:.1f} s)")
    _show("base", before)
    _show("sft", evaluate_chat(sft, chat, every, seed=args.seed))

    pairs = preference_pairs(1100, seed=args.seed + 1)
    held, train_pairs = pairs[:100], pairs[100:]
    t = time.perf_counter()
    rm_before = pairwise_accuracy(RewardModel.from_gpt(sft), chat, held)  # an untrained head
    rm = train_reward_model(sft, chat, train_pairs, config("reward"), val_fraction=0.0).model
    print(f"reward model ({time.perf_counter() - t:.1f} s)")
    print(f"  held-out pairwise accuracy {rm_before:.3f} -> {pairwise_accuracy(rm, chat, held):.3f}")

    def measured(model: GPT) -> dict[str, float]:
        return evaluate_chat(model, chat, every, reward_model=rm, reference=sft, seed=args.seed)

    _show("sft", measured(sft))
    # The stage's defaults, then a longer, faster run with and without the KL
    # penalty: without it the policy drifts to replies the reward model over-rates.
    hack = dict(lr=5e-4, min_lr=5e-4, max_iters=200, eval_interval=200)
    runs = [("default", BETA["rlhf"], {}), ("no KL", 0.0, hack), ("same, KL", BETA["rlhf"], hack)]
    for name, beta, extra in runs:
        t = time.perf_counter()
        cfg = dataclasses.replace(config("rlhf", f"rlhf-{len(extra)}-{beta}"), **extra)
        result, stats = rlhf(sft, rm, chat, every, cfg, beta=beta)
        print(
            f"RLHF {name}: beta={beta}, lr {cfg.lr:g}, {cfg.max_iters} steps "
            f"({time.perf_counter() - t:.1f} s): batch reward {stats.reward[0]:.2f} -> "
            f"{stats.reward[-1]:.2f}, KL {stats.kl[0]:.2f} -> {stats.kl[-1]:.2f}"
        )
        _show("rlhf", measured(result.model))
    t = time.perf_counter()
    dpo = train_dpo(sft, chat, train_pairs, config("dpo"), beta=BETA["dpo"]).model
    print(f"DPO beta={BETA['dpo']} ({time.perf_counter() - t:.1f} s)")
    _show("dpo", measured(dpo))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
