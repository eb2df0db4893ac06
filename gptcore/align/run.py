"""Run folders of the alignment stages: the base tokenizer beside the checkpoints.

An SFT, reward, DPO or RLHF run folder is a ``gptcore train`` run folder (the
same checkpoints, ``latest`` pointer and metrics file) plus ``align.json``,
which says what the stage was and which base tokenizer its chat format wraps.
The chat format itself needs no file: its four special ids follow from the
base tokenizer (see gptcore.align.chat).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import latest_checkpoint, load_checkpoint, load_state
from ..model.gpt import GPT, GPTConfig
from ..tokenizer.base import Tokenizer
from .chat import ChatFormat

__all__ = ["load_aligned", "save_stage", "tokenizer_spec"]

ALIGN_FILE = "align.json"
CHARS_FILE = "tokenizer-chars.json"  # the name gptcore.train gives a char run's vocabulary
BPE_FILE = "tokenizer.bpe"


def tokenizer_spec(out_dir: Path, tokenizer: Tokenizer) -> str:
    """Save ``tokenizer`` into ``out_dir`` (if it is not GPT-2's) and return its spec."""
    from ..tokenizer import BPETokenizer, CharTokenizer

    if isinstance(tokenizer, CharTokenizer):
        tokenizer.save(out_dir / CHARS_FILE)
        return "char"
    if isinstance(tokenizer, BPETokenizer):
        if getattr(tokenizer, "name", None) == "gpt2":
            return "gpt2"
        tokenizer.save(out_dir / BPE_FILE)
        return "bpe"
    raise ValueError(f"cannot save a {type(tokenizer).__name__}; use CharTokenizer or BPETokenizer")


def _load_tokenizer(run: Path, spec: str) -> Tokenizer:
    from ..tokenizer import BPETokenizer, CharTokenizer, gpt2

    if spec == "char":
        return CharTokenizer.load(run / CHARS_FILE)
    if spec == "gpt2":
        return gpt2()
    if spec == "bpe":
        return BPETokenizer.load(run / BPE_FILE)
    raise ValueError(f"{run / ALIGN_FILE}: unknown tokenizer {spec!r}")


def save_stage(out_dir: str | os.PathLike[str], stage: str, tokenizer: Tokenizer) -> str:
    """Write ``align.json`` for a stage (sft, reward, dpo, rlhf); returns the tokenizer spec."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = tokenizer_spec(out, tokenizer)
    (out / ALIGN_FILE).write_text(json.dumps({"stage": stage, "tokenizer": spec}) + "\n")
    return spec


def load_aligned(
    run_dir: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, ChatFormat, dict[str, Any]]:
    """The model of an alignment run (eval mode), its chat format and its saved state.

    A reward run gives a ``RewardModel``, every other stage a ``GPT``. Like
    ``load_run``, nothing is unpickled.
    """
    run = Path(run_dir)
    meta_path = run / ALIGN_FILE
    if not meta_path.is_file():
        raise ValueError(
            f"{run} is not an alignment run (no {ALIGN_FILE}); make one with gptcore sft"
        )
    meta = json.loads(meta_path.read_text())
    folder = latest_checkpoint(run)
    if folder is None:
        raise ValueError(f"{run} has no checkpoint yet; run its stage first")
    state = load_state(folder)
    config = GPTConfig(**state["model_config"])
    if meta["stage"] == "reward":
        from .reward import RewardModel

        model: nn.Module = RewardModel(config)
    else:
        model = GPT(config)
    load_checkpoint(run, model, map_location=device)
    chat = ChatFormat(_load_tokenizer(run, meta["tokenizer"]))
    if chat.vocab_size != config.vocab_size:
        raise ValueError(
            f"{run}: the model has {config.vocab_size} tokens but the chat format "
            f"{chat.vocab_size}; the run folder was changed by hand"
        )
    return model.to(device).eval(), chat, state
