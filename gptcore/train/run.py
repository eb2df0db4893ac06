"""A run folder's data and tokenizer on the way in (prepare_data), and the trained run on the way out (load_run)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import latest_checkpoint, load_checkpoint, load_state
from ..model.gpt import GPT, GPTConfig
from ..tokenizer.base import Tokenizer
from .config import TrainConfig

__all__ = ["load_run", "prepare_data"]

# A character-level run's vocabulary depends on its corpus, so the run keeps it.
CHARS_FILE = "tokenizer-chars.json"


def _load_tokenizer(spec: str, text: str, out_dir: Path) -> Tokenizer:
    from ..tokenizer import BPETokenizer, CharTokenizer, gpt2

    saved_chars = out_dir / CHARS_FILE
    if spec == "char":
        if saved_chars.is_file():  # a resumed run must keep its vocabulary
            return CharTokenizer.load(saved_chars)
        return CharTokenizer.from_text(text)
    if spec == "gpt2":
        return gpt2()
    if Path(spec).is_file():
        return BPETokenizer.load(spec)
    raise ValueError(
        f"tokenizer={spec!r}: use char, gpt2, or the path of a saved BPE tokenizer file"
    )


def prepare_data(
    config: TrainConfig, out_dir: Path, write: bool = True
) -> tuple[np.ndarray, np.ndarray, Tokenizer]:
    """Tokenize the corpus once into out_dir/data/{train,val}.bin and memory-map them.

    With ``write=False`` (the other processes of a distributed run) the files
    written by the main process are only read.

    The split is gptcore.data.train_val_split's: the n-gram baselines of lesson 2
    are measured on exactly this validation text.
    """
    from ..data import load_text, train_val_split

    text = load_text(config.data)
    tokenizer = _load_tokenizer(config.tokenizer, text, out_dir)
    dtype = np.uint16 if tokenizer.vocab_size < 2**16 else np.uint32
    key = hashlib.sha256(f"{config.tokenizer}\0{len(text)}\0{text[:4096]}".encode()).hexdigest()[
        :12
    ]
    folder = out_dir / "data"
    paths = {s: folder / f"{s}-{key}.bin" for s in ("train", "val")}
    if write and not all(p.is_file() for p in paths.values()):
        folder.mkdir(parents=True, exist_ok=True)
        train_text, val_text = train_val_split(text)
        for split, part in (("train", train_text), ("val", val_text)):
            ids = np.asarray(tokenizer.encode(part), dtype=dtype)
            tmp = paths[split].with_suffix(".tmp")
            ids.tofile(tmp)
            os.replace(tmp, paths[split])
    if write and config.tokenizer == "char":
        tokenizer.save(out_dir / CHARS_FILE)
    arrays = [np.memmap(paths[s], dtype=dtype, mode="r") for s in ("train", "val")]
    return arrays[0], arrays[1], tokenizer


def load_run(
    run_dir: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer, dict[str, Any]]:
    """The trained model (eval mode), its tokenizer and its saved state, from a run directory.

    Nothing in the folder is unpickled (see gptcore.checkpoint): a run folder
    from someone else cannot run code.
    """
    run = Path(run_dir)
    folder = latest_checkpoint(run)
    if folder is None:
        raise ValueError(f"{run} has no checkpoint; train first: gptcore train --out {run}")
    state = load_state(folder)
    model = GPT(GPTConfig(**state["model_config"]))
    load_checkpoint(run, model, map_location=device)
    spec = state["train_config"]["tokenizer"]
    if spec == "char":
        from ..tokenizer import CharTokenizer

        tokenizer: Tokenizer = CharTokenizer.load(run / CHARS_FILE)
    else:
        tokenizer = _load_tokenizer(spec, "", run)
    return model.to(device).eval(), tokenizer, state
