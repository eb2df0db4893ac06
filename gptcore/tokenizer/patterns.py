"""Regex patterns that pre-split text into chunks before BPE runs.

BPE never merges across chunk boundaries, so the pattern decides which byte
sequences can ever become one token: it keeps letters, digits, punctuation and
whitespace apart, and attaches one leading space to a word (" the"). Both
strings are taken verbatim from tiktoken so that gptcore and tiktoken split
text identically; they need the third-party ``regex`` module (``\\p{L}``,
possessive quantifiers), not the standard library's ``re``.
"""

# GPT-2 (r50k_base). Equivalent to the original release's
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# rewritten with possessive quantifiers, which match the same text faster.
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

# GPT-4 (cl100k_base): case-insensitive contractions, digits in groups of at
# most three, and newlines kept out of ordinary punctuation chunks.
GPT4_SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""

__all__ = ["GPT2_SPLIT_PATTERN", "GPT4_SPLIT_PATTERN"]
