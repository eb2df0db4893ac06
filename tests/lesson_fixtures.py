"""Known facts about the lesson notebooks, for the tests that release and grade them.

For each lesson:

- ``LESSONnn_SOLUTION_IDS``: grade ids of the solution cells, in notebook order;
- ``LESSONnn_POINTS``: grade id of each autograded test cell -> its points;
- ``LESSONnn_WRONG_VISIBLE_ONLY``: solution grade id -> the full source of a
  replacement cell with a plausible mistake that the visible test cell misses
  and the hidden tests catch. Grading a notebook with it must lose exactly the
  points of that exercise's test cell.
"""

from __future__ import annotations

from .lesson02_fixtures import LESSON02_WRONG_VISIBLE_ONLY
from .lesson03_fixtures import LESSON03_WRONG_VISIBLE_ONLY
from .lesson04_fixtures import LESSON04_WRONG_VISIBLE_ONLY
from .lesson05_fixtures import LESSON05_WRONG_VISIBLE_ONLY
from .lesson06_fixtures import LESSON06_WRONG_VISIBLE_ONLY
from .lesson07_fixtures import LESSON07_WRONG_VISIBLE_ONLY

LESSON01_SOLUTION_IDS: list[str] = [
    "bpe_pair_counts",
    "bpe_merge",
    "bpe_train",
    "bpe_encode",
    "bpe_decode",
]

LESSON01_POINTS: dict[str, int] = {
    "bpe_pair_counts_tests": 1,
    "bpe_merge_tests": 2,
    "bpe_train_tests": 4,
    "bpe_encode_tests": 3,
    "bpe_decode_tests": 2,
    "gpt2_parity": 2,
}

# A trainer that never stops early: on a text that runs out of pairs before
# vocab_size is reached, min() gets an empty dict and raises. The visible tests
# only ask for as many merges as their texts have; the hidden ones do not.
LESSON01_WRONG_VISIBLE_ONLY: dict[str, str] = {
    "bpe_train": '''\
from collections import Counter


def train_bpe(
    text: str, vocab_size: int, pattern: str | None = GPT4_SPLIT_PATTERN
) -> dict[tuple[int, int], int]:
    """Learn BPE merges (forgets to stop when no pair is left)."""
    chunk_counts = Counter(regex.findall(pattern, text) if pattern else [text])
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())
    merges: dict[tuple[int, int], int] = {}
    for idx in range(256, vocab_size):
        stats: dict[tuple[int, int], int] = {}
        for word, freq in zip(words, freqs):
            for pair, n in get_stats(word).items():
                stats[pair] = stats.get(pair, 0) + n * freq
        pair = min(stats, key=lambda p: (-stats[p], p))
        words = [merge(word, pair, idx) for word in words]
        merges[pair] = idx
    return merges
''',
}


# Every lesson's wrong-but-visible-passing submissions, by lesson name.
WRONG_VISIBLE_ONLY: dict[str, dict[str, str]] = {
    "01_tokenization": LESSON01_WRONG_VISIBLE_ONLY,
    "02_ngram": LESSON02_WRONG_VISIBLE_ONLY,
    "03_embeddings": LESSON03_WRONG_VISIBLE_ONLY,
    "04_attention": LESSON04_WRONG_VISIBLE_ONLY,
    "05_gpt": LESSON05_WRONG_VISIBLE_ONLY,
    "06_training": LESSON06_WRONG_VISIBLE_ONLY,
    "07_sampling": LESSON07_WRONG_VISIBLE_ONLY,
}
