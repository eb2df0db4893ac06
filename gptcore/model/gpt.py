"""The GPT-2 decoder stack, parameter for parameter.

token + position embeddings -> n_layer x Block -> LayerNorm -> logits, where
Block = x + attn(ln_1(x)), then x + mlp(ln_2(x)) ("pre-LN": each sub-layer
sees a normalised input while the residual stream itself is never normalised,
which keeps deep stacks trainable). Module names follow GPT-2's checkpoint
(transformer.h.0.attn.c_attn, ...), so its weights load with a transpose of
the Conv1D matrices and nothing else.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CausalSelfAttention, KVCache
from .config import GPTConfig
from .hf import convert_hf_state_dict

__all__ = ["GPT", "MLP", "Block", "GPTCache", "GPTConfig", "LayerNorm"]


class GPTCache:
    """One KVCache per layer; ``length`` is how many positions are cached."""

    def __init__(self, layers: list[KVCache]) -> None:
        self.layers = layers

    @property
    def length(self) -> int:
        return self.layers[0].length

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's always has one)."""

    def __init__(self, ndim: int, bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> GELU (tanh approximation, as GPT-2) -> C."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """One pre-LN transformer block: communicate (attention), then compute (MLP)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache=cache)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    """A GPT-2-style language model: ``forward(idx, targets=None) -> (logits, loss)``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the same matrix maps ids to vectors and vectors back to
        # logits. It saves vocab_size * n_embd parameters (38M in GPT-2 small).
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections are scaled by 1/sqrt(2 * n_layer), since each
        # of the 2 * n_layer sub-layers adds to the same residual stream.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count, tied weights counted once. GPT-2 small: 124,439,808.

        ``non_embedding=True`` leaves out the position embeddings (the token
        embedding is also the output layer, so it stays), as in scaling-law papers.
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied tensor once
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B:
        6 N for the matmuls with weights, plus 12 L H Q T for attention."""
        cfg = self.config
        t = seq_len or cfg.block_size
        return (
            6 * self.num_params(non_embedding=True)
            + 12 * cfg.n_layer * cfg.n_head * cfg.head_size * t
        )

    def new_cache(self, batch_size: int = 1) -> GPTCache:
        """An empty KV cache for generation: one per layer, block_size positions long."""
        cfg, p = self.config, self.lm_head.weight
        return GPTCache(
            [
                KVCache(batch_size, cfg.n_head, cfg.block_size, cfg.head_size, p.device, p.dtype)
                for _ in range(cfg.n_layer)
            ]
        )

    def hidden_states(self, idx: torch.Tensor, cache: GPTCache | None = None) -> torch.Tensor:
        """idx (B, T) int64 -> the final hidden states (B, T, C), after ln_f and before lm_head.

        The body of ``forward``; a head other than the LM head (the reward
        model's scalar head, gptcore.align.reward) reads these. ``cache`` as in
        ``forward``.
        """
        if idx.ndim != 2 or idx.dtype != torch.long:
            raise ValueError(f"idx must be a (B, T) LongTensor, got {tuple(idx.shape)} {idx.dtype}")
        _, t = idx.shape
        start = cache.length if cache is not None else 0
        if start + t > self.config.block_size:
            raise ValueError(
                f"sequence length {start + t} exceeds block_size={self.config.block_size}; "
                f"feed at most the last {self.config.block_size} tokens (idx[:, -block_size:])"
            )
        # (Skipped under torch.compile, where reading the ids back would break the graph;
        # there a bad id fails inside the embedding instead.)
        if (
            idx.numel()
            and not torch.compiler.is_compiling()
            and (int(idx.max()) >= self.config.vocab_size or int(idx.min()) < 0)
        ):
            raise ValueError(
                f"token ids must be in 0..{self.config.vocab_size - 1}, got {int(idx.min())}..{int(idx.max())}; "
                "was the text encoded with a different tokenizer?"
            )
        pos = torch.arange(start, start + t, device=idx.device)  # (T,)
        x = self.transformer.drop(
            self.transformer.wte(idx) + self.transformer.wpe(pos)
        )  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache.layers[i] if cache is not None else None)
        return self.transformer.ln_f(x)  # (B, T, C)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: GPTCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) int64 -> logits (B, T, vocab_size), and the mean cross-entropy if targets.

        With a ``cache``, idx holds only the tokens after the ``cache.length``
        already cached ones; they get positions cache.length, cache.length + 1, ...
        """
        logits = self.lm_head(self.hidden_states(idx, cache))  # (B, T, V)
        loss = None
        if targets is not None:
            b, t = idx.shape
            loss = F.cross_entropy(logits.view(b * t, -1), targets.reshape(b * t), ignore_index=-1)
        return logits, loss

    # ------------------------------------------------------------- GPT-2 weights
    @classmethod
    def from_hf_state_dict(cls, sd: dict[str, torch.Tensor], config: GPTConfig) -> GPT:
        """Build a GPT from a Hugging Face ``GPT2LMHeadModel`` state dict.

        HF's GPT-2 uses Conv1D layers, whose weights are stored (in, out): the
        transpose of nn.Linear's (out, in). Attention bias buffers are not weights.
        ``config_from_hf(hf_model.config)`` gives the matching ``config``.
        """
        model = cls(config)
        convert_hf_state_dict(sd, model.state_dict(), config)
        return model

    @classmethod
    def from_pretrained(cls, name: str = "gpt2", **overrides: Any) -> GPT:
        """OpenAI's GPT-2 weights via Hugging Face ``transformers`` (downloads on first use;
        needs network and ``pip install transformers``). ``name``: gpt2, gpt2-medium,
        gpt2-large or gpt2-xl."""
        if name not in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"):
            raise ValueError(f"unknown GPT-2 checkpoint {name!r}")
        try:
            from transformers import GPT2LMHeadModel
        except ImportError:
            raise ValueError(
                "from_pretrained needs transformers: pip install transformers"
            ) from None
        hf = GPT2LMHeadModel.from_pretrained(name)
        config = GPTConfig.preset(name, **overrides)
        return cls.from_hf_state_dict(hf.state_dict(), config)
