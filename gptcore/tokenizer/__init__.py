"""Tokenizers: byte-level BPE (trainable, GPT-2 compatible) and characters.

Each satisfies the ``Tokenizer`` protocol (encode, decode, vocab_size, save, load).

>>> from gptcore.tokenizer import gpt2
>>> gpt2().encode("Hello world")
[15496, 995]
"""

from .base import Tokenizer
from .bpe import BPETokenizer, merge_pair
from .char import CharTokenizer
from .patterns import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN
from .pretrained import ENDOFTEXT, gpt2, gpt2_encoding

__all__ = [
    "ENDOFTEXT",
    "GPT2_SPLIT_PATTERN",
    "GPT4_SPLIT_PATTERN",
    "BPETokenizer",
    "CharTokenizer",
    "Tokenizer",
    "gpt2",
    "gpt2_encoding",
    "merge_pair",
]
