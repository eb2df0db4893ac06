"""A character-level tokenizer: one token per distinct character of a corpus.

The character-level lessons (n-grams, the baby Shakespeare GPT) use it: its
vocabulary is tiny (65 symbols for Tiny Shakespeare), so every probability
table fits on screen.

File format (``save`` / ``load``): a JSON list of the characters in id order,
``["\\n", " ", "!", ...]``, the ``tokenizer-chars.json`` of a training run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..atomic import write_text_atomic

__all__ = ["CharTokenizer"]


class CharTokenizer:
    """Maps each distinct character to an id, in sorted character order.

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.chars, tok.encode("hell"), tok.decode([1, 0, 2, 2, 3])
    ('ehlo', [1, 0, 2, 2], 'hello')
    """

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        if not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError(
                "CharTokenizer needs single characters; use CharTokenizer.from_text(text)"
            )
        self.chars = "".join(sorted(set(chars)))
        if not self.chars:
            raise ValueError("CharTokenizer needs at least one character")
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """A vocabulary of every character that occurs in ``text``."""
        if not isinstance(text, str):
            raise ValueError(f"from_text() takes a str, got {type(text).__name__}")
        return cls(text)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    n_vocab = vocab_size  # tiktoken's name, kept for code written against it

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"encode() takes a str, got {type(text).__name__}")
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            pos = next(i for i, c in enumerate(text) if c not in stoi)
            raise ValueError(
                f"character {text[pos]!r} at position {pos} is not in the vocabulary; "
                "build the tokenizer from text that contains it"
            ) from None

    def decode(self, ids: Sequence[int] | Iterable[int]) -> str:
        chars, n = self.chars, len(self.chars)
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"token id {i} is outside the vocabulary (0..{n - 1})")
            out.append(chars[i])
        return "".join(out)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the vocabulary as a JSON list of characters, atomically."""
        path = Path(path)
        return write_text_atomic(path, json.dumps(list(self.chars)))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CharTokenizer:
        """Read a file written by ``save``. Anything else raises ValueError."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path} does not exist; pass the file written by CharTokenizer.save")
        try:
            chars = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(
                f"{path} is not a CharTokenizer file ({e}); save the tokenizer again"
            ) from None
        if not isinstance(chars, list) or not chars or not all(isinstance(c, str) for c in chars):
            raise ValueError(
                f"{path} should hold a JSON list of characters; save the tokenizer again"
            )
        if len(set(chars)) != len(chars) or chars != sorted(chars):
            # ids are positions in the list: a reordered list would silently renumber them
            raise ValueError(
                f"{path}: the characters must be distinct and sorted, as save writes them"
            )
        try:
            return cls(chars)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
