"""Tokenizers: byte-level BPE (trainable, GPT-2 compatible) and characters.

>>> from gptcore.tokenizer import gpt2
>>> gpt2().encode("Hello world")
[15496, 995]
"""

from .bpe import BPETokenizer
from .char import CharTokenizer
from .patterns import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN
from .pretrained import ENDOFTEXT, gpt2, gpt2_encoding

__all__ = [
    "ENDOFTEXT",
    "GPT2_SPLIT_PATTERN",
    "GPT4_SPLIT_PATTERN",
    "BPETokenizer",
    "CharTokenizer",
    "gpt2",
    "gpt2_encoding",
]
