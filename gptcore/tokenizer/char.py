"""A character-level tokenizer: one token per distinct character of a corpus.

The character-level lessons (n-grams, the baby Shakespeare GPT) use it: its
vocabulary is tiny (65 symbols for Tiny Shakespeare), so every probability
table fits on screen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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

    n_vocab = vocab_size

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
