"""Known facts about the lesson notebooks, for the tests that release and grade them.

For each lesson:

- ``LESSONnn_SOLUTION_IDS``: grade ids of the solution cells, in notebook order;
- ``LESSONnn_POINTS``: grade id of each autograded test cell -> its points;
- ``LESSONnn_WRONG_CAUGHT_VISIBLE`` (lessons 1-3): mistakes that only the hidden
  tests used to catch, which the visible test cell catches now.

tests/registry.py collects them, one entry per lesson.
"""

from __future__ import annotations

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

# Lessons 1-3 have no wrong answer that passes the visible tests and fails the
# hidden ones: a visible test cell grades every rule its hidden tests grade,
# which only add other seeds and more cases (issue 12). The mistakes that the
# hidden tests alone used to catch are in ``LESSONnn_WRONG_CAUGHT_VISIBLE``:
# solution grade id -> a replacement cell that now fails the visible test cell.
#
# A trainer that never stops early: on a text that runs out of pairs before
# vocab_size is reached, min() gets an empty dict and raises. The visible tests
# once asked only for as many merges as their texts have.
LESSON01_WRONG_CAUGHT_VISIBLE: dict[str, str] = {
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

