"""Model code: the GPT and its parts (attention, embeddings), and the neural bigram."""

from .attention import CausalSelfAttention, KVCache
from .bigram import BigramLM
from .config import GPTConfig
from .embeddings import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    one_hot_embed,
    sinusoidal_positional_encoding,
)
from .gpt import GPT, MLP, Block, GPTCache, LayerNorm
from .hf import config_from_hf, hf_config

__all__ = [
    "GPT",
    "MLP",
    "BigramLM",
    "Block",
    "CausalSelfAttention",
    "GPTCache",
    "GPTConfig",
    "KVCache",
    "LayerNorm",
    "LearnedPositionalEmbedding",
    "SinusoidalPositionalEncoding",
    "config_from_hf",
    "hf_config",
    "one_hot_embed",
    "sinusoidal_positional_encoding",
]
