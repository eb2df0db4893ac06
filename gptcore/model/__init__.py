"""Model code: embeddings, the neural bigram, and (later lessons) the GPT stack."""

from .bigram import BigramLM
from .embeddings import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    one_hot_embed,
    sinusoidal_positional_encoding,
)
from .gpt import GPT, MLP, Block, GPTConfig, LayerNorm

__all__ = [
    "GPT",
    "MLP",
    "BigramLM",
    "Block",
    "GPTConfig",
    "LayerNorm",
    "LearnedPositionalEmbedding",
    "SinusoidalPositionalEncoding",
    "one_hot_embed",
    "sinusoidal_positional_encoding",
]
