"""The ``gptcore`` command line.

Library commands, defined here:

gptcore tokenize [--tokenizer gpt2] TEXT   show how a tokenizer splits text
gptcore data [NAME]                        fetch a corpus (checksummed) and print its path
gptcore train [DATA] [--out DIR] ...       train a GPT (the same command resumes)
gptcore sample RUN_DIR [--prompt TEXT]     stream text from a trained run
gptcore sft RUN_DIR [--base RUN]           fine-tune on chat demonstrations (gptcore.align)
gptcore reward RUN_DIR --sft DIR           train a reward model on preference pairs
gptcore rlhf RUN_DIR --sft DIR --reward DIR   policy gradient against the reward model, KL-penalised
gptcore dpo RUN_DIR --sft DIR              direct preference optimization
gptcore chat RUN_DIR                       chat in the terminal (stdin lines; EOF ends)

Course commands (``grade``, ``release``, ``class``) are added by ``gptcore.course.cli``
through the ``gptcore.commands`` entry point group.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from typing import Any

from . import __version__


def cmd_tokenize(args: argparse.Namespace) -> int:
    from .tokenizer import BPETokenizer, gpt2

    tok = gpt2() if args.tokenizer == "gpt2" else BPETokenizer.load(args.tokenizer)
    ids = tok.encode(args.text, allowed_special="all")
    for i in ids:
        print(f"{i:>7}  {tok.decode_bytes([i])!r}")
    print(f"{len(args.text)} characters -> {len(ids)} tokens")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data import REGISTRY, fetch

    if not args.name:
        for c in REGISTRY.values():
            print(f"{c.name:<16} {c.size:>10,} bytes  {c.description}")
        return 0
    print(fetch(args.name))
    return 0


# TrainConfig fields set by dedicated arguments or not settable from the command line.
_TRAIN_SKIP = {"data", "out_dir", "model"}
_MODEL_FIELDS = {
    "block_size": int,
    "n_layer": int,
    "n_head": int,
    "n_embd": int,
    "dropout": float,
    "bias": bool,
}


def _field_type(f) -> type:
    text = str(f.type)
    for name, typ in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if text.startswith(name):
            return typ
    raise AssertionError(f"unsupported TrainConfig field type {text}")


def _add_train_arguments(t: argparse.ArgumentParser) -> None:
    import dataclasses

    from .train import TrainConfig

    t.add_argument(
        "data", nargs="?", default="tinyshakespeare", help="a corpus name or a text file"
    )
    t.add_argument("--out", "--out_dir", dest="out_dir", default="runs/baby", help="run directory")
    for f in dataclasses.fields(TrainConfig):
        if f.name in _TRAIN_SKIP:
            continue
        typ = _field_type(f)
        default = f.default
        if typ is bool:
            t.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=default)
        else:
            t.add_argument(
                f"--{f.name}",
                type=typ,
                default=default,
                metavar=typ.__name__.upper(),
                help=f"default: {default}",
            )
    for name, typ in _MODEL_FIELDS.items():
        if typ is bool:
            t.add_argument(
                f"--{name}",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="model override",
            )
        else:
            t.add_argument(
                f"--{name}",
                type=typ,
                default=None,
                metavar=typ.__name__.upper(),
                help="model override (default: the preset's)",
            )


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from .train import TrainConfig, TrainingDiverged, train

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    kwargs = {k: v for k, v in vars(args).items() if k in fields}
    model = {k: getattr(args, k) for k in _MODEL_FIELDS if getattr(args, k) is not None}
    config = TrainConfig(**kwargs, model=model)
    try:
        result = train(config)
    except TrainingDiverged as e:
        print(f"gptcore train: stopped: {e}", file=sys.stderr)
        return 1
    val = f"{result.val_loss:.4f}" if result.val_loss is not None else "n/a"
    print(f"step {result.step}: validation loss {val}; checkpoints in {result.out_dir}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import codecs

    from .sample import check_sampling_args, stream
    from .train import load_run

    check_sampling_args(args.temperature, args.top_k, args.top_p)
    model, tokenizer, _ = load_run(args.run_dir, device=args.device)
    prompt = args.prompt if args.prompt is not None else "\n"
    ids = tokenizer.encode(prompt)
    # Tokens can split a UTF-8 character; the incremental decoder holds bytes
    # back until the character is complete.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    as_bytes = getattr(tokenizer, "decode_bytes", None)
    sys.stdout.write(prompt)
    for token in stream(
        model,
        ids,
        args.n,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    ):
        piece = decoder.decode(as_bytes([token])) if as_bytes else tokenizer.decode([token])
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write(decoder.decode(b"", final=True) + "\n")
    return 0


def _run_align(name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        from .align import commands

        return getattr(commands, f"cmd_{name}")(args)

    return run


def _add_align_commands(sub: Any) -> None:
    """sft, reward, rlhf, dpo and chat (gptcore.align; the stages run in that order)."""
    stages = {
        "sft": "fine-tune a GPT on chat demonstrations (the same command again resumes)",
        "reward": "train a reward model from an SFT run on preference pairs",
        "rlhf": "RLHF: REINFORCE against a reward model with a KL penalty to the SFT model",
        "dpo": "direct preference optimization of an SFT run",
    }
    for name, text in stages.items():
        s = sub.add_parser(name, help=text)
        s.add_argument("run_dir", help="the run directory this stage writes")
        if name == "sft":
            s.add_argument("--base", default=None, help="a gptcore train run (default: a new tiny GPT)")
            s.add_argument("--examples", type=int, default=2000, help="demonstrations to make")
        else:
            s.add_argument("--sft", required=True, help="the gptcore sft run directory")
            s.add_argument("--pairs", type=int, default=1000, help="preference pairs to make")
        if name == "rlhf":
            s.add_argument("--reward", required=True, help="the gptcore reward run directory")
        if name in ("rlhf", "dpo"):
            s.add_argument(
                "--beta", type=float, default=None, help="KL strength (rlhf 0.1, 0 = off; dpo 0.5)"
            )
        for arg, typ in (("max_iters", int), ("lr", float), ("batch_size", int), ("threads", int)):
            s.add_argument(f"--{arg}", type=typ, default=None, help="default: the stage's")
        s.add_argument("--seed", type=int, default=0, help="data and training seed")
        s.add_argument("--eval", type=int, default=120, help="questions measured (default: all)")
        s.add_argument("--device", default="cpu")
        s.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
        s.set_defaults(func=_run_align(name))
    c = sub.add_parser("chat", help="chat with an SFT, DPO or RLHF run (stdin lines, EOF ends)")
    c.add_argument("run_dir", help="a directory written by gptcore sft, dpo or rlhf")
    c.add_argument("--system", default=None, help="a system turn to start with")
    c.add_argument("-n", "--max-new-tokens", dest="n", type=int, default=200)
    c.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="cpu")
    c.set_defaults(func=_run_align("chat"))


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line that says what to change, not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="gptcore", description="How GPT Works: library and course tools")
    p.add_argument("--version", action="version", version=f"gptcore {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    t = sub.add_parser("tokenize", help="show the tokens of a text")
    t.add_argument("text")
    t.add_argument(
        "--tokenizer", default="gpt2", help="gpt2 (default) or a file saved by BPETokenizer.save"
    )
    t.set_defaults(func=cmd_tokenize)

    tr = sub.add_parser("train", help="train a GPT (the same command again resumes)")
    _add_train_arguments(tr)
    tr.set_defaults(func=cmd_train)

    sp = sub.add_parser("sample", help="stream text from a trained run")
    sp.add_argument("run_dir", help="a directory written by gptcore train")
    sp.add_argument("--prompt", default=None, help="text to continue (default: a newline)")
    sp.add_argument("-n", "--max-new-tokens", dest="n", type=int, default=500)
    sp.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    sp.add_argument("--top-k", dest="top_k", type=int, default=None)
    sp.add_argument("--top-p", dest="top_p", type=float, default=None)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--device", default="cpu")
    sp.set_defaults(func=cmd_sample)

    d = sub.add_parser("data", help="list corpora, or fetch one and print its local path")
    d.add_argument("name", nargs="?", help="a corpus name, e.g. tinyshakespeare")
    d.set_defaults(func=cmd_data)

    _add_align_commands(sub)

    # Course commands (grade, release, class) live in gptcore.course and are
    # found through an entry point, so the library never imports the course side.
    for entry in entry_points(group="gptcore.commands"):
        entry.load()(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # user mistakes: one line that says what to change
        print(f"gptcore {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
