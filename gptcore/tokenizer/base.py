"""The ``Tokenizer`` protocol: what training, sampling and the CLI need from a tokenizer.

A structural type (``typing.Protocol``): ``CharTokenizer``, ``BPETokenizer`` and
GPT-2's tokenizer (``gpt2()``, a ``BPETokenizer``) satisfy it without inheriting
from it, and so does any class of yours with the same five members::

    def tokens_per_char(tok: Tokenizer, text: str) -> float:
        return len(tok.encode(text)) / len(text)

``isinstance(obj, Tokenizer)`` checks that the members exist (not their
signatures), which is enough to fail early with a clear message.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["Tokenizer"]


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> token ids, a vocabulary size, and a file format."""

    @property
    def vocab_size(self) -> int:
        """One more than the largest id ``encode`` can return: a model's embedding rows."""
        ...

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``."""
        ...

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; ``decode(encode(text)) == text`` for text the tokenizer covers."""
        ...

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the tokenizer to ``path`` (atomically) and return the path."""
        ...

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Read a file written by ``save``; a damaged file raises ValueError."""
        ...
