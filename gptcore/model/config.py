"""GPTConfig: the shape of a GPT, and the named presets the course and CLI use."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["GPTConfig"]


@dataclass
class GPTConfig:
    block_size: int = 1024  # longest sequence the model can read (context length)
    vocab_size: int = 50257  # GPT-2's 50,000 merges + 256 bytes + <|endoftext|>
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # GPT-2 has biases in Linear layers and LayerNorms

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # A few thousand parameters: unit tests and quick experiments.
        "test": dict(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=16),
        # The character-level Shakespeare model (about 10.7M parameters).
        "baby": dict(block_size=256, vocab_size=65, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
        # The baby model shrunk to what a 2-core CPU trains well in 3 minutes
        # (the shape of nanoGPT's CPU example; gptcore.train.cpu_recipe trains it faster).
        "baby-cpu": dict(
            block_size=64, vocab_size=65, n_layer=4, n_head=4, n_embd=128, dropout=0.0
        ),
        "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
        "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
        "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
        "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    }

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: each head gets "
                f"n_embd / n_head channels; try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """A named configuration, with optional overrides: ``GPTConfig.preset("baby", n_layer=4)``."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head
