"""What ``gptcore sft / reward / dpo / rlhf / chat`` do (the parsers are in gptcore.cli).

Each stage reads the previous stage's run folder, makes its data from
``--seed`` (gptcore.align.data), trains into RUN_DIR with gptcore.train (the
same command again resumes), then prints the task's metrics.
"""

from __future__ import annotations

import argparse
import codecs
import sys
from typing import Any

import torch

from ..model.gpt import GPT, GPTConfig
from .chat import ChatFormat, Message, grow_vocab
from .data import TASK_CHARS, demonstrations, preference_pairs, prompts
from .evaluate import evaluate_chat
from .run import load_aligned
from .sft import align_config

__all__ = ["BETA", "STAGE_DEFAULTS", "cmd_chat", "cmd_dpo", "cmd_reward", "cmd_rlhf", "cmd_sft"]

# Measured with benchmarks/bench_align.py: each stage moves its metric in well under a minute.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": dict(max_iters=400, lr=3e-3, min_lr=3e-4),
    "reward": dict(max_iters=200, lr=1e-3),
    "dpo": dict(max_iters=100, lr=5e-5, min_lr=5e-6),
    "rlhf": dict(max_iters=150, lr=1e-4, min_lr=1e-5, batch_size=16, eval_iters=1),
}
# KL strength: DPO's beta scales its log-ratio margins, so the two are not the same number.
BETA = {"rlhf": 0.1, "dpo": 0.5}
# The model `gptcore sft` fine-tunes when it is given no --base run.
FRESH = dict(block_size=48, n_layer=2, n_head=4, n_embd=64)


def _config(args: argparse.Namespace, stage: str) -> Any:
    given = {
        k: getattr(args, k)
        for k in ("max_iters", "lr", "batch_size", "seed", "device", "threads", "progress")
        if getattr(args, k, None) is not None
    }
    overrides = {**STAGE_DEFAULTS[stage], **given}
    overrides.setdefault("eval_interval", max(1, overrides["max_iters"] // 4))
    return align_config(args.run_dir, **overrides)


def _prompts(args: argparse.Namespace) -> list[list[Message]]:
    return prompts(args.seed)[: args.eval]  # the measured questions, shuffled by the seed


def _print_metrics(name: str, metrics: dict[str, float]) -> None:
    print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))


def _gpt(run_dir: str, device: str) -> tuple[GPT, ChatFormat]:
    model, chat, _ = load_aligned(run_dir, device)
    if not isinstance(model, GPT):
        raise ValueError(f"{run_dir} holds a reward model; pass an SFT, DPO or RLHF run")
    return model, chat


def cmd_sft(args: argparse.Namespace) -> int:
    from ..tokenizer import CharTokenizer
    from ..train import load_run
    from .sft import finetune

    if args.base:
        base, tokenizer, _ = load_run(args.base, device=args.device)
        chat = ChatFormat(tokenizer)
        model = grow_vocab(base, chat.vocab_size, seed=args.seed)
    else:
        chat = ChatFormat(CharTokenizer.from_text(TASK_CHARS))
        torch.manual_seed(args.seed)
        model = GPT(GPTConfig(vocab_size=chat.vocab_size, **FRESH))
    every = _prompts(args)
    _print_metrics("before", evaluate_chat(model, chat, every, seed=args.seed))
    result = finetune(model, chat, demonstrations(args.examples, seed=args.seed), _config(args, "sft"))
    _print_metrics("after", evaluate_chat(result.model, chat, every, seed=args.seed))
    return 0


def cmd_reward(args: argparse.Namespace) -> int:
    from .reward import pairwise_accuracy, train_reward_model

    sft, chat = _gpt(args.sft, args.device)
    pairs = preference_pairs(args.pairs, seed=args.seed)
    held = pairs[: max(1, len(pairs) // 10)]
    result = train_reward_model(sft, chat, pairs[len(held) :], _config(args, "reward"), val_fraction=0.0)
    print(f"held-out pairwise accuracy {pairwise_accuracy(result.model, chat, held):.3f}")
    return 0


def cmd_dpo(args: argparse.Namespace) -> int:
    from .dpo import train_dpo

    sft, chat = _gpt(args.sft, args.device)
    pairs = preference_pairs(args.pairs, seed=args.seed)
    beta = BETA["dpo"] if args.beta is None else args.beta
    result = train_dpo(sft, chat, pairs, _config(args, "dpo"), beta=beta)
    every = _prompts(args)
    _print_metrics("sft", evaluate_chat(sft, chat, every, seed=args.seed))
    _print_metrics("dpo", evaluate_chat(result.model, chat, every, reference=sft, seed=args.seed))
    return 0


def cmd_rlhf(args: argparse.Namespace) -> int:
    from .reward import RewardModel
    from .rl import rlhf

    sft, chat = _gpt(args.sft, args.device)
    rm, rm_chat, _ = load_aligned(args.reward, args.device)
    if not isinstance(rm, RewardModel) or rm_chat.vocab_size != chat.vocab_size:
        raise ValueError(f"{args.reward} is not a reward run made from this SFT model's format")
    beta = BETA["rlhf"] if args.beta is None else args.beta
    result, _ = rlhf(sft, rm, chat, prompts(), _config(args, "rlhf"), beta=beta)
    every = _prompts(args)
    for name, model in (("sft", sft), ("rlhf", result.model)):
        metrics = evaluate_chat(model, chat, every, reward_model=rm, reference=sft, seed=args.seed)
        _print_metrics(name, metrics)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Read user lines from stdin, stream each reply; the conversation is kept; EOF ends."""
    from ..sample import check_sampling_args, stream

    check_sampling_args(args.temperature, None, None)
    model, chat = _gpt(args.run_dir, args.device)
    history: list[Message] = []
    if args.system:
        history.append(Message(role="system", content=args.system))
    interactive = sys.stdin.isatty()
    gen = torch.Generator().manual_seed(args.seed)
    as_bytes = getattr(chat.tokenizer, "decode_bytes", None)
    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            return 0
        history.append(Message(role="user", content=line.rstrip("\n")))
        try:
            ids = chat.render_prompt(history)
        except ValueError as e:  # e.g. a character the model's vocabulary lacks: say so, go on
            history.pop()
            print(f"gptcore chat: {e}", file=sys.stderr)
            continue
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        reply: list[int] = []
        for token in stream(
            model, ids, args.n, temperature=args.temperature, generator=gen, stop_tokens=(chat.end_id,)
        ):
            if token >= chat.tokenizer.vocab_size:  # a special token ends the reply
                break
            reply.append(token)
            piece = decoder.decode(as_bytes([token])) if as_bytes else chat.tokenizer.decode([token])
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write(decoder.decode(b"", final=True) + "\n")
        history.append(Message(role="assistant", content=chat.tokenizer.decode(reply)))
