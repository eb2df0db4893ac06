"""Checks for lesson 1 (tokenization): pair counts, merge, training, encode, decode, GPT-2.

Each check compares the learner's function with gptcore's byte-level BPE
(``gptcore.tokenizer``) on hand-checkable examples, then on ``cases`` random
inputs drawn from ``random.Random(seed)``. ``edge_cases=True`` adds inputs at
the edges of the contract (empty inputs, a text that runs out of pairs,
invalid UTF-8, a merge table with nothing in it); the hidden tests use it.

On a wrong answer the message names the input, shows what was expected and
what came back, and, where a known mistake reproduces the wrong answer
exactly, says which mistake it is.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from typing import Any, NoReturn

import regex

from gptcore.tokenizer import (
    GPT2_SPLIT_PATTERN,
    GPT4_SPLIT_PATTERN,
    BPETokenizer,
    gpt2,
    gpt2_encoding,
)
from gptcore.tokenizer.bpe import _merge_pair  # the reference merge step

from . import (
    call,
    check_dict,
    check_int,
    check_int_list,
    check_str,
    describe_call,
    diagnose,
    fail,
    first_difference,
    int_problem,
    passed,
    show,
    type_name,
)

__all__ = ["bpe_decode", "bpe_encode", "bpe_merge", "bpe_pair_counts", "bpe_train", "gpt2_parity"]

Pair = tuple[int, int]
Merges = dict[Pair, int]
PATTERNS = (GPT4_SPLIT_PATTERN, GPT2_SPLIT_PATTERN, None)
_DEFAULT = object()  # "call without the pattern argument": the default must be GPT-4's pattern
_REGEX_HINT = (
    "the split patterns need the third-party regex module: import regex, then "
    "regex.findall(pattern, text). Python's re does not know \\p{L}."
)


# ------------------------------------------------------------------ references
def _stats(ids: list[int]) -> dict[Pair, int]:
    return dict(Counter(pairwise(ids)))


def _split(text: str, pattern: str | None) -> list[str]:
    return regex.findall(pattern, text) if pattern else [text]


def _train(text: str, vocab_size: int, pattern: str | None) -> Merges:
    return dict(BPETokenizer.train(text, vocab_size, pattern).merges)


def _encode(text: str, merges: Merges, pattern: str | None) -> list[int]:
    return BPETokenizer(merges, pattern=pattern).encode_ordinary(text)


def _vocab(merges: Merges) -> dict[int, bytes]:
    vocab = {i: bytes([i]) for i in range(256)}
    for (left, right), idx in sorted(merges.items(), key=lambda kv: kv[1]):
        vocab[idx] = vocab[left] + vocab[right]
    return vocab


def _pattern_name(pattern: Any) -> str:
    names = {GPT4_SPLIT_PATTERN: "GPT4_SPLIT_PATTERN", GPT2_SPLIT_PATTERN: "GPT2_SPLIT_PATTERN"}
    return "None" if pattern is None else names.get(pattern, show(pattern, 40))


def _wrong(where: str, expected: Any, got: Any, *notes: str) -> NoReturn:
    """Fail showing both results; strings that are already formatted are shown as they are."""

    def fmt(x: Any) -> str:
        return x if isinstance(x, _Shown) else show(x, 300)

    lines = [f"{where} is wrong.", f"  expected: {fmt(expected)}", f"  got:      {fmt(got)}"]
    lines += [n for n in notes if n]
    fail("\n".join(lines))


class _Shown(str):
    """Text already formatted for a failure message."""


def _hint(text: str) -> str:
    return f"Hint: {text}" if text else ""


# ------------------------------------------------------------- random inputs
_IDS = (0, 1, 2, 3, 5, 7, 32, 101, 255, 256, 257, 300, 1000, 50255)
_FRAGMENTS = (
    "the", "The", "a", "cat", "sat", "hat", "aaa", "abab", "ab", "ba", "é", "naïve", "日本",
    "語", "😀", "👍🏽", "Привет", "123", "4567", "'s", "'ll", "n't", "DON'T", "\n", "\n\n",
    "  ", "\t", ".", ",", "!?", "_x", "(y)", "-->", "x=1;", "\r\n",
)  # fmt: skip
_SEPARATORS = (" ", " ", " ", "", "\n", "  ")


def _random_ids(rng: random.Random, max_len: int = 24) -> list[int]:
    # A few distinct ids, so that pairs repeat and runs like [5, 5, 5] appear.
    alphabet = rng.sample(_IDS, rng.randint(2, 4))
    return [rng.choice(alphabet) for _ in range(rng.randint(2, max_len))]


def _random_text(rng: random.Random, n_words: int) -> str:
    words = rng.sample(_FRAGMENTS, rng.randint(3, 10))
    return "".join(rng.choice(words) + rng.choice(_SEPARATORS) for _ in range(n_words))


# ----------------------------------------------------------------- get_stats
def _pair_key(value: Any, what: str) -> Pair:
    must = f"{what} must be a tuple of two ints (left, right), but {show(value, 40)}"
    if type(value) is not tuple or len(value) != 2:
        fail(
            f"{must} is a {type_name(value)}"
            + (f" of length {len(value)}" if type(value) is tuple else "")
        )
    for item in value:
        if type(item) is not int:
            fail(f"{must} holds {int_problem(item)}")
    return value


def _check_merges(value: Any, where: str) -> Merges:
    return check_dict(value, where, _pair_key, check_int)


def _stats_mistakes(ids: list[int], got: dict[Pair, int], expected: dict[Pair, int]):
    return [
        (
            lambda: _nonoverlapping_counts(ids),
            "count the pair at every position i, even where pairs overlap: [5, 5, 5] holds "
            "(5, 5) twice, at positions 0 and 1. (Skipping overlaps is merge()'s job.)",
        ),
        (
            lambda: _stats(ids[:-1]),
            "you missed the last pair (ids[-2], ids[-1]). Pairs start at positions "
            "0 .. len(ids) - 2, so loop over range(len(ids) - 1).",
        ),
        (
            lambda: dict(Counter(zip(ids[1:], ids))),
            "a key is (ids[i], ids[i + 1]): the left id first.",
        ),
        (
            lambda: dict.fromkeys(pairwise(ids), 1),
            "a value is how many times the pair occurs, not 1.",
        ),
        (
            lambda: _stats([*ids, ids[0]]),
            "the last id has no right neighbour: do not wrap around to ids[0].",
        ),
        (
            lambda: {**expected, **{p: 0 for p in got if p not in expected}},
            "leave out pairs that do not occur (a count of 0).",
        ),
    ]


def _nonoverlapping_counts(ids: list[int]) -> dict[Pair, int]:
    counts: Counter[Pair] = Counter()
    for pair in set(pairwise(ids)):
        counts[pair] = len(ids) - len(_merge_pair(ids, *pair, -1))
    return dict(counts)


def bpe_pair_counts(
    get_stats: Callable[[list[int]], dict[Pair, int]],
    *,
    seed: int = 0,
    cases: int = 50,
    edge_cases: bool = False,
) -> None:
    """Check ``get_stats(ids) -> {(left, right): count}``; overlapping pairs all count."""
    inputs = [[1, 2, 3, 1, 2], [5, 5, 5]]
    if edge_cases:
        inputs += [
            [],
            [7],
            [5, 5, 5, 5],
            [0, 255, 256, 50255, 0, 255],
            [3] * 1000,
            list(range(600)) * 2,
        ]
    rng = random.Random(seed)
    inputs += [_random_ids(rng) for _ in range(cases)]
    for ids in inputs:
        where = describe_call("get_stats", ids)
        got = call(get_stats, ids, name="get_stats")
        got = check_dict(
            got, where, _pair_key, check_int,
            hint="\nHint: return {pair: count}, e.g. {(1, 2): 2, (2, 3): 1, (3, 1): 1} for [1, 2, 3, 1, 2].",
        )  # fmt: skip
        expected = _stats(ids)
        if got != expected:
            bad = next(p for p in [*expected, *got] if got.get(p) != expected.get(p))
            _wrong(
                where,
                expected,
                got,
                f"  first wrong pair: {bad}: expected count {expected.get(bad, 0)}, got {got.get(bad, 'no key')}",
                _hint(diagnose(got, _stats_mistakes(ids, got, expected))),
            )
    passed("get_stats", len(inputs))


# --------------------------------------------------------------------- merge
def _merge_first_only(ids: list[int], pair: Pair, idx: int) -> list[int]:
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return [*ids[:i], idx, *ids[i + 2 :]]
    return list(ids)


def _merge_no_skip(ids: list[int], pair: Pair, idx: int) -> list[int]:
    # Emits idx where the pair starts but then copies the pair's second id too.
    return [idx if (a, b) == pair else a for a, b in zip(ids, [*ids[1:], None])]


def _merge_mistakes(ids: list[int], pair: Pair, idx: int, expected: list[int]):
    return [
        (
            lambda: _merge_no_skip(ids, pair, idx),
            "after replacing the pair at positions i, i + 1, continue at i + 2: the second id "
            "of the pair is now part of the new token and must not be copied as well.",
        ),
        (lambda: list(ids), "nothing was replaced. Compare (ids[i], ids[i + 1]) == pair as tuples: a list [1, 2] never equals the tuple (1, 2)."),
        (lambda: _merge_first_only(ids, pair, idx), "replace every occurrence of the pair, not only the first."),
        (
            lambda: _merge_pair(ids[::-1], pair[1], pair[0], idx)[::-1],
            "scan from left to right: in [5, 5, 5] the pair (5, 5) at positions 0, 1 is "
            "replaced and the last 5 stays, giving [256, 5].",
        ),
        (lambda: expected[:-1], "the last id is missing: an id that ends the list and is not part of a replaced pair must still be copied."),
        (lambda: [*expected, ids[-1]], "the last id appears twice: copy the final id only if it was not consumed by a replaced pair."),
    ]  # fmt: skip


def _overlap_hint(ids: list[int], pair: Pair) -> str:
    a, b = pair
    if a == b and any(ids[i : i + 3] == [a, a, a] for i in range(len(ids) - 2)):
        return (
            f"{pair} overlaps itself in this input. Occurrences are replaced left to right and "
            f"never overlap: after replacing the pair at positions i, i + 1, continue at i + 2. "
            f"So merge([5, 5, 5], (5, 5), 256) == [256, 5] and merge([5, 5, 5, 5], (5, 5), 256) == [256, 256]."
        )
    return ""


def bpe_merge(
    merge: Callable[[list[int], Pair, int], list[int]],
    *,
    seed: int = 0,
    cases: int = 50,
    edge_cases: bool = False,
) -> None:
    """Check ``merge(ids, pair, idx)``: every non-overlapping occurrence, left to right."""
    inputs = [([1, 2, 3, 1, 2], (1, 2), 256), ([5, 5, 5], (5, 5), 256), ([5, 5, 5, 5], (5, 5), 257)]
    if edge_cases:
        inputs += [
            ([], (1, 2), 256),
            ([7], (7, 7), 256),
            ([1, 2, 3], (3, 1), 256),  # absent: only the other order occurs
            ([3, 1, 2], (1, 2), 50256),  # at the very end
            ([2, 2, 2, 1, 2, 2], (2, 2), 300),
            ([9, 8] * 500, (9, 8), 1000),
        ]
    rng = random.Random(seed)
    for _ in range(cases):
        ids = _random_ids(rng)
        r = rng.random()
        if r < 0.75:
            i = rng.randrange(len(ids) - 1)
            pair = (ids[i], ids[i + 1])
        elif r < 0.9:
            x = rng.choice(ids)
            pair = (x, x)
        else:
            pair = (rng.choice(ids), 999)  # never occurs
        inputs.append((ids, pair, rng.choice([256, 258, 300, 4096, 50256])))
    for ids, pair, idx in inputs:
        where = describe_call("merge", ids, pair, idx)
        got = check_int_list(call(merge, ids, pair, idx, name="merge"), f"the result of {where}")
        expected = _merge_pair(ids, pair[0], pair[1], idx)
        if got != expected:
            hint = diagnose(got, _merge_mistakes(ids, pair, idx, expected)) or _overlap_hint(
                ids, pair
            )
            i = first_difference(got, expected)
            _wrong(where, expected, got, f"  first difference at position {i}", _hint(hint))
    passed("merge", len(inputs))


# ----------------------------------------------------------------- train_bpe
def _show_merges(pairs: list[Pair], limit: int = 12) -> str:
    body = ", ".join(f"{256 + i}: {p}" for i, p in enumerate(pairs[:limit]))
    return _Shown("{" + body + (f", … ({len(pairs)} merges)" if len(pairs) > limit else "") + "}")


def _variant_train(
    text: str,
    vocab_size: int,
    pattern: str | None,
    *,
    tie: str = "smallest",
    weighted: bool = True,
    stop_at_one: bool = False,
) -> Merges:
    """train_bpe() with one known mistake in how the pair to merge is chosen."""
    chunks = Counter(_split(text, pattern))
    words = [list(c.encode("utf-8")) for c in chunks]
    freqs = list(chunks.values()) if weighted else [1] * len(words)
    merges: Merges = {}
    for idx in range(256, vocab_size):
        stats: dict[Pair, int] = {}  # in order of first appearance, as a learner's loop builds it
        for word, freq in zip(words, freqs):
            for pair in pairwise(word):
                stats[pair] = stats.get(pair, 0) + freq
        if not stats:
            break
        if tie == "first":
            pair = max(stats, key=stats.__getitem__)
        elif tie == "largest":
            pair = max(stats, key=lambda p: (stats[p], p))
        else:
            pair = min(stats, key=lambda p: (-stats[p], p))
        if stop_at_one and stats[pair] < 2:
            break
        words = [_merge_pair(w, *pair, idx) for w in words]
        merges[pair] = idx
    return merges


_TIE_HINT = (
    "break ties by the smallest pair: among equally frequent pairs, take the smallest in tuple "
    "order, min(...) over (-count, pair). max() over a dict returns the first pair it meets "
    "among the most frequent, which is another rule."
)


def _train_mistakes(text: str, vocab_size: int, pattern: str | None):
    return [
        (
            lambda: (
                _train(text, vocab_size, GPT4_SPLIT_PATTERN)
                if pattern != GPT4_SPLIT_PATTERN
                else None
            ),
            f"use the pattern argument: this call passes pattern={_pattern_name(pattern)}, but "
            "your merges are those of GPT4_SPLIT_PATTERN.",
        ),
        (
            lambda: _train(text, vocab_size, None) if pattern is not None else None,
            "your merges are those of the whole text taken as one chunk. Did you count pairs "
            "across chunk boundaries? Split the text with the pattern, turn each chunk into its "
            "own list of byte ids, and count pairs only inside each list.",
        ),
        (lambda: _variant_train(text, vocab_size, pattern, tie="first"), _TIE_HINT),
        (lambda: _variant_train(text, vocab_size, pattern, tie="largest"), _TIE_HINT),
        (
            lambda: _variant_train(text, vocab_size, pattern, weighted=False),
            "count every chunk each time it occurs: a chunk that occurs 5 times in the text "
            "contributes its pairs 5 times (multiply by its count if you keep each chunk once).",
        ),
        (
            lambda: _variant_train(text, vocab_size, pattern, stop_at_one=True),
            f"you stopped early, but this call asks for {vocab_size - 256} merges. Keep merging "
            "while any pair is left, even a pair that occurs only once.",
        ),
    ]


def _train_hint(
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
    chunks = [list(c.encode("utf-8")) for c in _split(text, pattern)]
    for i, (a, b) in enumerate(exp[:k]):
        chunks = [_merge_pair(c, a, b, 256 + i) for c in chunks]
    inside: Counter[Pair] = Counter()
    for c in chunks:
        inside.update(pairwise(c))
    flat = [t for c in chunks for t in c]
    across = Counter(pairwise(flat))
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


def bpe_train(
    train_bpe: Callable[..., Merges],
    *,
    seed: int = 0,
    cases: int = 15,
    edge_cases: bool = False,
) -> None:
    """Check ``train_bpe(text, vocab_size, pattern)`` against ``BPETokenizer.train(...).merges``."""
    inputs: list[tuple[str, int, Any]] = [
        ("aaabdaaabac", 259, None),  # {(97, 97): 256, (97, 98): 257, (256, 257): 258}; 257 is a tie
        ("the cat ate the hat", 262, _DEFAULT),  # across chunks, (101, 32) 'e ' would win a tie
        ("low lower lowest, slow slower slowest", 266, GPT2_SPLIT_PATTERN),
    ]
    if edge_cases:
        inputs += [
            ("", 300, GPT4_SPLIT_PATTERN),
            ("a", 300, None),
            ("ab ab ab", 300, GPT4_SPLIT_PATTERN),  # runs out of pairs after 3 merges
            ("hello world", 256, GPT4_SPLIT_PATTERN),  # no merges at all
            ("abcdefgh", 263, None),  # every pair ties
            ("aaaaaaaaaa aaaaa", 262, None),
            ("日本語 日本語 😀😀 naïve naïve", 280, GPT2_SPLIT_PATTERN),
            ("it's IT'S 12345678 x\r\n\r\n  y", 270, GPT4_SPLIT_PATTERN),
        ]
    rng = random.Random(seed)
    for _ in range(cases):
        text = _random_text(rng, rng.randint(20, 60))
        pattern = rng.choice(PATTERNS)
        available = len(_train(text, 256 + 40, pattern))  # never ask for more than the text has
        inputs.append((text, 256 + rng.randint(1, min(30, available)), pattern))
    for text, vocab_size, pattern in inputs:
        args = (text, vocab_size) if pattern is _DEFAULT else (text, vocab_size, pattern)
        pattern = GPT4_SPLIT_PATTERN if pattern is _DEFAULT else pattern
        where = f"train_bpe({show(text, 60)}, vocab_size={vocab_size}, pattern={_pattern_name(pattern)})"
        expected = _train(text, vocab_size, pattern)
        hints: dict[type[BaseException], str] = {re.error: _REGEX_HINT}
        if len(expected) < vocab_size - 256:
            hints[Exception] = (
                f"this text has no pair left after {len(expected)} merges, fewer than "
                f"vocab_size - 256 = {vocab_size - 256}. When no pair is left, stop and return "
                "the merges learned so far."
            )
        got = _check_merges(
            call(train_bpe, *args, name="train_bpe", where=where, error_hints=hints),
            f"the result of {where}",
        )
        if got == expected:
            continue
        ids = sorted(got.values())
        if ids != list(range(256, 256 + len(ids))):
            first = (
                " The first merge gets id 256: ids 0..255 are the bytes."
                if ids and ids[0] != 256
                else ""
            )
            fail(
                f"{where}: the new ids must be 256, 257, 258, ... with no gaps or repeats, but they are {show(ids)}.{first}"
            )
        got_pairs = sorted(got, key=got.__getitem__)
        exp_pairs = list(expected)
        _wrong(
            where,
            _show_merges(exp_pairs),
            _show_merges(got_pairs),
            _hint(
                diagnose(got, _train_mistakes(text, vocab_size, pattern))
                or _train_hint(text, vocab_size, pattern, got_pairs, exp_pairs)
            ),
        )
    passed("train_bpe", len(inputs))


# -------------------------------------------------------------------- encode
def _variant_encode(
    text: str, merges: Merges, pattern: str | None, *, leftmost: bool = False, use_ord: bool = False
) -> list[int]:
    """encode() with one known mistake: merging the leftmost pair, or starting from ord()."""
    out: list[int] = []
    for chunk in _split(text, pattern):
        ids = [ord(c) for c in chunk] if use_ord else list(chunk.encode("utf-8"))
        while True:
            present = [p for p in pairwise(ids) if p in merges]
            if not present:
                break
            pair = present[0] if leftmost else min(present, key=merges.__getitem__)
            ids = _merge_pair(ids, *pair, merges[pair])
        out += ids
    return out


def _encode_mistakes(text: str, merges: Merges, pattern: str | None):
    return [
        (
            lambda: _variant_encode(text, merges, pattern, leftmost=True),
            "among the adjacent pairs that have a merge, apply the one with the LOWEST merge id "
            "first (training learned it first), not the leftmost one.",
        ),
        (
            lambda: list(text.encode("utf-8")),
            "these are the raw UTF-8 bytes: apply the merges too.",
        ),
        (
            lambda: _encode(text, merges, None) if pattern is not None else None,
            "split the text with the pattern and encode each chunk on its own: merges never cross chunk boundaries.",
        ),
        (
            lambda: (
                _encode(text, merges, GPT4_SPLIT_PATTERN) if pattern != GPT4_SPLIT_PATTERN else None
            ),
            f"use the pattern argument: this call passes pattern={_pattern_name(pattern)}.",
        ),
        (
            lambda: _variant_encode(text, merges, pattern, use_ord=True),
            "start from the UTF-8 bytes of each chunk, list(chunk.encode('utf-8')), not from ord() of each character.",
        ),
    ]


def bpe_encode(
    encode: Callable[..., list[int]],
    *,
    seed: int = 0,
    cases: int = 20,
    edge_cases: bool = False,
) -> None:
    """Check ``encode(text, merges, pattern)`` against ``BPETokenizer(merges, pattern).encode``."""
    toy = _train("aaabdaaabac", 259, None)
    hello = _train("hello hello world, hello there", 264, GPT4_SPLIT_PATTERN)
    inputs: list[tuple[str, Merges, Any]] = [
        ("aaabdaaabac", toy, None),  # [258, 100, 258, 97, 99]
        # [97, 256]: the pair with the lower id wins, not the leftmost pair
        ("abc", {(98, 99): 256, (97, 98): 257}, None),
        ("hello world! hello", hello, _DEFAULT),
    ]
    if edge_cases:
        runs = _train("a" * 64, 262, None)
        inputs += [
            ("", hello, GPT4_SPLIT_PATTERN),
            ("no merges at all: é😀", {}, GPT4_SPLIT_PATTERN),
            ("Ωμέγα ✓ unseen characters", hello, GPT2_SPLIT_PATTERN),
            ("a" * 37, runs, None),
            ("a a  aaa   aaaa", runs, GPT4_SPLIT_PATTERN),
            ("<|endoftext|> is ordinary text here\r\n\r\n   ", hello, GPT2_SPLIT_PATTERN),
        ]
    rng = random.Random(seed)
    for _ in range(cases):
        pattern = rng.choice(PATTERNS)
        merges = _train(_random_text(rng, 50), 256 + rng.randint(0, 40), pattern)
        inputs.append((_random_text(rng, rng.randint(5, 25)), merges, pattern))
    for text, merges, pattern in inputs:
        args = (text, merges) if pattern is _DEFAULT else (text, merges, pattern)
        pattern = GPT4_SPLIT_PATTERN if pattern is _DEFAULT else pattern
        where = (
            f"encode({show(text, 60)}, merges={show(merges, 60)}, pattern={_pattern_name(pattern)})"
        )
        hints = {
            re.error: _REGEX_HINT,
            UnicodeEncodeError: "encode each chunk as UTF-8: chunk.encode('utf-8').",
        }
        got = check_int_list(
            call(encode, *args, name="encode", where=where, error_hints=hints),
            f"the result of {where}",
        )
        expected = _encode(text, merges, pattern)
        if got != expected:
            i = first_difference(got, expected)
            _wrong(
                where,
                expected,
                got,
                f"  first difference at position {i}",
                _hint(diagnose(got, _encode_mistakes(text, merges, pattern))),
            )
    passed("encode", len(inputs))


# -------------------------------------------------------------------- decode
_STRICT_HINT = (
    "a list of ids can end in the middle of a character, or hold bytes that are not UTF-8 at "
    "all. decode must not crash: use .decode('utf-8', errors='replace'), which turns invalid "
    "bytes into U+FFFD '\ufffd', as tiktoken does."
)


def _decode_mistakes(ids: list[int], merges: Merges):
    vocab = _vocab(merges)
    raw = b"".join(vocab[i] for i in ids)
    replace = "decode must use errors='replace': invalid UTF-8 must become U+FFFD '\ufffd'"
    return [
        (lambda: raw.decode("utf-8", "ignore"), replace + ", not vanish (errors='ignore' drops it)."),
        (lambda: raw.decode("utf-8", "backslashreplace"), replace + "."),
        (lambda: raw.decode("utf-8", "surrogateescape"), replace + "."),
        (
            lambda: "".join(vocab[i].decode("utf-8", "replace") for i in ids),
            "join the bytes of all the tokens first, then decode once: one character's bytes can be "
            "spread over two tokens (é is b'\\xc3\\xa9').",
        ),
        (lambda: raw.decode("latin-1"), "the bytes are UTF-8: decode them with .decode('utf-8', errors='replace')."),
        (lambda: "".join(map(chr, ids)), "ids are not characters: look up each id's bytes, join them, and decode the bytes as UTF-8."),
    ]  # fmt: skip


def bpe_decode(
    decode: Callable[[list[int], Merges], str],
    *,
    seed: int = 0,
    cases: int = 30,
    edge_cases: bool = False,
) -> None:
    """Check ``decode(ids, merges)`` against ``BPETokenizer(merges).decode(ids)``."""
    toy = _train("aaabdaaabac", 259, None)
    inputs: list[tuple[list[int], Merges]] = [
        ([258, 100, 258, 97, 99], toy),  # "aaabdaaabac"
        ([104, 105, 32, 0xC3, 0xA9], {}),  # "hi é": é's two bytes are two tokens
        ([104, 105, 32, 0xE2, 0x82], {}),  # "hi \ufffd": a character cut short
    ]
    if edge_cases:
        inputs += [
            ([], toy),
            ([0xFF], {}),
            ([0x80, 104, 0x80], {}),
            (list(range(256)), {}),
            ([0], toy),
            ([256, 0xF0, 0x9F, 0x98, 256], {(0xF0, 0x9F): 256}),
        ]
    rng = random.Random(seed)
    for _ in range(cases):
        pattern = rng.choice(PATTERNS)
        merges = _train(_random_text(rng, 50), 256 + rng.randint(0, 40), pattern)
        ids = _encode(_random_text(rng, rng.randint(3, 15)), merges, pattern)
        r = rng.random()
        if r < 0.4 and len(ids) > 2:  # a slice can cut a character in half
            a = rng.randrange(len(ids))
            ids = ids[a : rng.randint(a + 1, len(ids))]
        elif r < 0.7:  # any ids at all, valid UTF-8 or not
            ids = [rng.randrange(256 + len(merges)) for _ in range(rng.randint(1, 12))]
        inputs.append((ids, merges))
    for ids, merges in inputs:
        where = describe_call("decode", ids, merges)
        got = call(
            decode, ids, merges, name="decode", error_hints={UnicodeDecodeError: _STRICT_HINT}
        )
        got = check_str(
            got,
            f"the result of {where}",
            hint="\nHint: join the bytes, then .decode('utf-8', errors='replace') them into a str."
            if isinstance(got, bytes)
            else "",
        )
        expected = BPETokenizer(merges, pattern=None).decode(ids)
        if got != expected:
            _wrong(where, expected, got, _hint(diagnose(got, _decode_mistakes(ids, merges))))
    passed("decode", len(inputs))


# --------------------------------------------------------------- GPT-2 parity
PARITY_TEXT = (
    "Hello world! GPT-2's tokenizer doesn't split words the way you'd expect.\n"
    "    def add(a, b):\n        return a + b  # four spaces, then eight\n\n"
    "Numbers: 0 7 42 1234 3.14159 1,000,000 and 2024-01-31; call +44 20 7946 0958.\n"
    "I'm, you're, we've, they'll, she'd, DON'T, O'Neil's\n"
    "Tabs\tand   runs   of    spaces,   trailing spaces   \n\n\n"
    "Emoji: 😀 👍🏽 🇫🇷 ❤️ and accents: café, naïve, Zürich, São Paulo.\n"
    "Русский текст, ελληνικά, 日本語のテキスト, 中文文本, 한국어, हिन्दी, العربية.\n"
    "<|endoftext|> is plain text here. URL: https://example.com/a?b=c&d=e   "
)


def _random_parity_text(rng: random.Random) -> str:
    words = regex.findall(r"\S+", PARITY_TEXT)
    seps = [" ", " ", " ", "  ", "\n", "\t", "   \n", "\n\n ", ""]
    return "".join(rng.choice(words) + rng.choice(seps) for _ in range(rng.randint(10, 60)))


def gpt2_parity(encode: Callable[..., list[int]], *, seed: int = 0, cases: int = 0) -> None:
    """Check that ``encode`` with GPT-2's merges and pattern gives tiktoken's GPT-2 tokens.

    ``encode`` returns ids in raw-byte space (0..255 are byte values); GPT-2
    numbers its byte tokens differently, so the check maps every id below 256
    through ``gpt2().byte_ids`` before comparing.
    """
    tok, enc = gpt2(), gpt2_encoding()
    merges = dict(tok.merges)
    rng = random.Random(seed)
    texts = [PARITY_TEXT] + [_random_parity_text(rng) for _ in range(cases)]
    for text in texts:
        where = f"encode({show(text, 60)}, gpt2().merges, GPT2_SPLIT_PATTERN)"
        got = call(
            encode,
            text,
            merges,
            GPT2_SPLIT_PATTERN,
            name="encode",
            where=where,
            error_hints={re.error: _REGEX_HINT},
        )
        got = check_int_list(got, f"the result of {where}")
        mapped = [tok.byte_ids[i] if i < 256 else i for i in got]
        expected = enc.encode_ordinary(text)
        if mapped == expected:
            continue
        if got == expected:
            fail(
                f"{where} returned GPT-2's final ids, with the byte ids already mapped. Return ids "
                "in raw-byte space (a leftover byte b is id b); the check maps them through "
                "gpt2().byte_ids itself."
            )
        for chunk in regex.findall(GPT2_SPLIT_PATTERN, text):  # the first chunk that goes wrong
            mine = [
                tok.byte_ids[i] if type(i) is int and i < 256 else i
                for i in encode(chunk, merges, GPT2_SPLIT_PATTERN)
            ]
            theirs = enc.encode_ordinary(chunk)
            if mine != theirs:
                pieces = [tok.decode_bytes([i]) for i in theirs]
                fail(
                    f"{where} differs from tiktoken's GPT-2 tokens.\n"
                    f"  first chunk that differs: {chunk!r}\n"
                    f"  tiktoken: {theirs} = {pieces}\n"
                    f"  yours:    {mine} (byte ids mapped through gpt2().byte_ids)\n"
                    "Hint: run checks.bpe_encode(encode) first. If it passes, look at this chunk: "
                    "with 50,000 merges, applying a merge out of order (lowest id first) or "
                    "starting from anything but the chunk's UTF-8 bytes shows up here."
                )
        _wrong(
            where,
            expected,
            mapped,
            "Hint: every chunk encodes correctly on its own; check that you encode the chunks in order and concatenate all of them.",
        )
    passed("GPT-2 parity", len(texts))
