"""Model code: embeddings, the neural bigram, and (later lessons) the GPT stack."""

from .bigram import BigramLM
from .embeddings import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    one_hot_embed,
    sinusoidal_positional_encoding,
)

__all__ = [
    "BigramLM",
    "LearnedPositionalEmbedding",
    "SinusoidalPositionalEncoding",
    "one_hot_embed",
    "sinusoidal_positional_encoding",
]
