"""Lesson 1's references and tables of known mistakes.

The references wrap gptcore's byte-level BPE (``gptcore.tokenizer``). Each
``*_mistakes`` function returns, for one input, a table of (hint, what a
function with that mistake returns), evaluated lazily by
``gptcore.course.checks.report.diagnose``. The ``variant_*`` functions are the
learner's function with one known mistake built in.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import Any

import regex

from gptcore.tokenizer import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, BPETokenizer
from gptcore.tokenizer.bpe import merge_pair

from ..report import Mistakes, first_difference, show

Pair = tuple[int, int]
Merges = dict[Pair, int]


# ------------------------------------------------------------------ references
def stats(ids: list[int]) -> dict[Pair, int]:
    return dict(Counter(pairwise(ids)))


def split(text: str, pattern: str | None) -> list[str]:
    return regex.findall(pattern, text) if pattern else [text]


def train(text: str, vocab_size: int, pattern: str | None) -> Merges:
    return dict(BPETokenizer.train(text, vocab_size, pattern).merges)


def encode(text: str, merges: Merges, pattern: str | None) -> list[int]:
    return BPETokenizer(merges, pattern=pattern).encode_ordinary(text)


def vocab(merges: Merges) -> dict[int, bytes]:
    table = {i: bytes([i]) for i in range(256)}
    for (left, right), idx in sorted(merges.items(), key=lambda kv: kv[1]):
        table[idx] = table[left] + table[right]
    return table


def pattern_name(pattern: Any) -> str:
    names = {GPT4_SPLIT_PATTERN: "GPT4_SPLIT_PATTERN", GPT2_SPLIT_PATTERN: "GPT2_SPLIT_PATTERN"}
    return "None" if pattern is None else names.get(pattern, show(pattern, 40))


# ----------------------------------------------------------------- get_stats
def nonoverlapping_counts(ids: list[int]) -> dict[Pair, int]:
    counts: Counter[Pair] = Counter()
    for pair in set(pairwise(ids)):
        counts[pair] = len(ids) - len(merge_pair(ids, *pair, -1))
    return dict(counts)


def stats_mistakes(ids: list[int], got: dict[Pair, int], expected: dict[Pair, int]) -> Mistakes:
    return [
        (
            "count the pair at every position i, even where pairs overlap: [5, 5, 5] holds "
            "(5, 5) twice, at positions 0 and 1. (Skipping overlaps is merge()'s job.)",
            lambda: nonoverlapping_counts(ids),
        ),
        (
            "you missed the last pair (ids[-2], ids[-1]). Pairs start at positions "
            "0 .. len(ids) - 2, so loop over range(len(ids) - 1).",
            lambda: stats(ids[:-1]),
        ),
        ("a key is (ids[i], ids[i + 1]): the left id first.", lambda: dict(Counter(zip(ids[1:], ids)))),
        ("a value is how many times the pair occurs, not 1.", lambda: dict.fromkeys(pairwise(ids), 1)),
        ("the last id has no right neighbour: do not wrap around to ids[0].", lambda: stats([*ids, ids[0]])),
        (
            "leave out pairs that do not occur (a count of 0).",
            lambda: {**expected, **{p: 0 for p in got if p not in expected}},
        ),
    ]  # fmt: skip


# --------------------------------------------------------------------- merge
def merge_first_only(ids: list[int], pair: Pair, idx: int) -> list[int]:
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return [*ids[:i], idx, *ids[i + 2 :]]
    return list(ids)


def merge_no_skip(ids: list[int], pair: Pair, idx: int) -> list[int]:
    # Emits idx where the pair starts but then copies the pair's second id too.
    return [idx if (a, b) == pair else a for a, b in zip(ids, [*ids[1:], None])]


def merge_mistakes(ids: list[int], pair: Pair, idx: int, expected: list[int]) -> Mistakes:
    return [
        (
            "after replacing the pair at positions i, i + 1, continue at i + 2: the second id "
            "of the pair is now part of the new token and must not be copied as well.",
            lambda: merge_no_skip(ids, pair, idx),
        ),
        ("nothing was replaced. Compare (ids[i], ids[i + 1]) == pair as tuples: a list [1, 2] never equals the tuple (1, 2).", lambda: list(ids)),
        ("replace every occurrence of the pair, not only the first.", lambda: merge_first_only(ids, pair, idx)),
        (
            "scan from left to right: in [5, 5, 5] the pair (5, 5) at positions 0, 1 is "
            "replaced and the last 5 stays, giving [256, 5].",
            lambda: merge_pair(ids[::-1], pair[1], pair[0], idx)[::-1],
        ),
        ("the last id is missing: an id that ends the list and is not part of a replaced pair must still be copied.", lambda: expected[:-1]),
        ("the last id appears twice: copy the final id only if it was not consumed by a replaced pair.", lambda: [*expected, ids[-1]]),
    ]  # fmt: skip


def overlap_hint(ids: list[int], pair: Pair) -> str:
    a, b = pair
    if a == b and any(ids[i : i + 3] == [a, a, a] for i in range(len(ids) - 2)):
        return (
            f"{pair} overlaps itself in this input. Occurrences are replaced left to right and "
            f"never overlap: after replacing the pair at positions i, i + 1, continue at i + 2. "
            f"So merge([5, 5, 5], (5, 5), 256) == [256, 5] and merge([5, 5, 5, 5], (5, 5), 256) == [256, 256]."
        )
    return ""


# ----------------------------------------------------------------- train_bpe
def variant_train(
    text: str,
    vocab_size: int,
    pattern: str | None,
    *,
    tie: str = "smallest",
    weighted: bool = True,
    stop_at_one: bool = False,
) -> Merges:
    """train_bpe() with one known mistake in how the pair to merge is chosen."""
    chunks = Counter(split(text, pattern))
    words = [list(c.encode("utf-8")) for c in chunks]
    freqs = list(chunks.values()) if weighted else [1] * len(words)
    merges: Merges = {}
    for idx in range(256, vocab_size):
        counts: dict[Pair, int] = {}  # in order of first appearance, as a learner's loop builds it
        for word, freq in zip(words, freqs):
            for pair in pairwise(word):
                counts[pair] = counts.get(pair, 0) + freq
        if not counts:
            break
        if tie == "first":
            pair = max(counts, key=counts.__getitem__)
        elif tie == "largest":
            pair = max(counts, key=lambda p: (counts[p], p))
        else:
            pair = min(counts, key=lambda p: (-counts[p], p))
        if stop_at_one and counts[pair] < 2:
            break
        words = [merge_pair(w, *pair, idx) for w in words]
        merges[pair] = idx
    return merges


TIE_HINT = (
    "break ties by the smallest pair: among equally frequent pairs, take the smallest in tuple "
    "order, min(...) over (-count, pair). max() over a dict returns the first pair it meets "
    "among the most frequent, which is another rule."
)


def train_mistakes(text: str, vocab_size: int, pattern: str | None) -> Mistakes:
    return [
        (
            f"use the pattern argument: this call passes pattern={pattern_name(pattern)}, but "
            "your merges are those of GPT4_SPLIT_PATTERN.",
            lambda: (
                train(text, vocab_size, GPT4_SPLIT_PATTERN) if pattern != GPT4_SPLIT_PATTERN else None
            ),
        ),
        (
            "your merges are those of the whole text taken as one chunk. Did you count pairs "
            "across chunk boundaries? Split the text with the pattern, turn each chunk into its "
            "own list of byte ids, and count pairs only inside each list.",
            lambda: train(text, vocab_size, None) if pattern is not None else None,
        ),
        (TIE_HINT, lambda: variant_train(text, vocab_size, pattern, tie="first")),
        (TIE_HINT, lambda: variant_train(text, vocab_size, pattern, tie="largest")),
        (
            "count every chunk each time it occurs: a chunk that occurs 5 times in the text "
            "contributes its pairs 5 times (multiply by its count if you keep each chunk once).",
            lambda: variant_train(text, vocab_size, pattern, weighted=False),
        ),
        (
            f"you stopped early, but this call asks for {vocab_size - 256} merges. Keep merging "
            "while any pair is left, even a pair that occurs only once.",
            lambda: variant_train(text, vocab_size, pattern, stop_at_one=True),
        ),
    ]


def train_hint(
    text: str, vocab_size: int, pattern: str | None, got: list[Pair], exp: list[Pair]
) -> str:
    """Why ``got`` (pairs in id order) differs from ``exp``: replay training up to the first difference."""
    k = first_difference(got, exp)
    if k == len(exp):  # got has extra merges after a correct prefix
        if len(exp) < vocab_size - 256:
            return (
                f"after {len(exp)} merges every chunk is a single token and no pair is left. "
                "Stop there and return the merges learned so far."
            )
        return "vocab_size counts the 256 byte tokens: learn vocab_size - 256 merges, ids 256 .. vocab_size - 1."
    if k == len(got):
        return (
            f"you stopped after {len(got)} merges, but this call asks for {len(exp)}. Keep merging "
            "while any pair is left, even a pair that occurs only once."
        )
    # Replay the first k (shared) merges, then look at the counts the k-th merge was chosen from.
    chunks = [list(c.encode("utf-8")) for c in split(text, pattern)]
    for i, (a, b) in enumerate(exp[:k]):
        chunks = [merge_pair(c, a, b, 256 + i) for c in chunks]
    inside: Counter[Pair] = Counter()
    for c in chunks:
        inside.update(pairwise(c))
    across = Counter(pairwise([t for c in chunks for t in c]))
    g, e = got[k], exp[k]
    at = f"merge #{k + 1} (id {256 + k})"
    if inside[g] == inside[e]:
        return (
            f"{at}: {e} and {g} both occur {inside[e]} times, and the smaller pair, {e}, wins the "
            "tie. Did you break ties by the smallest pair? If you did, check your counts: "
            "your code may not have seen the two pairs as equally frequent."
        )
    if across[g] > inside[g] and across[g] >= inside[e]:
        return (
            f"{at}: {g} occurs {inside[g]} times inside chunks, {across[g]} times if a pair may "
            f"straddle two chunks; {e} occurs {inside[e]} times. Did you count pairs across chunk "
            "boundaries? Count pairs only inside each chunk."
        )
    if inside[g] == 0:
        return f"{at}: {g} is not an adjacent pair anywhere in the text after the first {k} merges. Did you merge the wrong pair, or give a merge the wrong id?"
    return (
        f"{at}: {e} occurs {inside[e]} times, more than {g} ({inside[g]} times). Merge the most "
        "frequent pair; count overlapping pairs too ('aaa' holds (97, 97) twice) and count every "
        "chunk each time it occurs."
    )


# -------------------------------------------------------------------- encode
def variant_encode(
    text: str, merges: Merges, pattern: str | None, *, leftmost: bool = False, use_ord: bool = False
) -> list[int]:
    """encode() with one known mistake: merging the leftmost pair, or starting from ord()."""
    out: list[int] = []
    for chunk in split(text, pattern):
        ids = [ord(c) for c in chunk] if use_ord else list(chunk.encode("utf-8"))
        while True:
            present = [p for p in pairwise(ids) if p in merges]
            if not present:
                break
            pair = present[0] if leftmost else min(present, key=merges.__getitem__)
            ids = merge_pair(ids, *pair, merges[pair])
        out += ids
    return out


def encode_mistakes(text: str, merges: Merges, pattern: str | None) -> Mistakes:
    return [
        (
            "among the adjacent pairs that have a merge, apply the one with the LOWEST merge id "
            "first (training learned it first), not the leftmost one.",
            lambda: variant_encode(text, merges, pattern, leftmost=True),
        ),
        ("these are the raw UTF-8 bytes: apply the merges too.", lambda: list(text.encode("utf-8"))),
        (
            "split the text with the pattern and encode each chunk on its own: merges never cross chunk boundaries.",
            lambda: encode(text, merges, None) if pattern is not None else None,
        ),
        (
            f"use the pattern argument: this call passes pattern={pattern_name(pattern)}.",
            lambda: encode(text, merges, GPT4_SPLIT_PATTERN) if pattern != GPT4_SPLIT_PATTERN else None,
        ),
        (
            "start from the UTF-8 bytes of each chunk, list(chunk.encode('utf-8')), not from ord() of each character.",
            lambda: variant_encode(text, merges, pattern, use_ord=True),
        ),
    ]  # fmt: skip


# -------------------------------------------------------------------- decode
STRICT_HINT = (
    "a list of ids can end in the middle of a character, or hold bytes that are not UTF-8 at "
    "all. decode must not crash: use .decode('utf-8', errors='replace'), which turns invalid "
    "bytes into U+FFFD '\ufffd', as tiktoken does."
)


def decode_mistakes(ids: list[int], merges: Merges) -> Mistakes:
    table = vocab(merges)
    raw = b"".join(table[i] for i in ids)
    replace = "decode must use errors='replace': invalid UTF-8 must become U+FFFD '\ufffd'"
    return [
        (replace + ", not vanish (errors='ignore' drops it).", lambda: raw.decode("utf-8", "ignore")),
        (replace + ".", lambda: raw.decode("utf-8", "backslashreplace")),
        (replace + ".", lambda: raw.decode("utf-8", "surrogateescape")),
        (
            "join the bytes of all the tokens first, then decode once: one character's bytes can be "
            "spread over two tokens (é is b'\\xc3\\xa9').",
            lambda: "".join(table[i].decode("utf-8", "replace") for i in ids),
        ),
        ("the bytes are UTF-8: decode them with .decode('utf-8', errors='replace').", lambda: raw.decode("latin-1")),
        ("ids are not characters: look up each id's bytes, join them, and decode the bytes as UTF-8.", lambda: "".join(map(chr, ids))),
    ]  # fmt: skip
