"""gptcore.course.checks.tokenization: right answers pass, plausible wrong answers fail with the hint.

The right answers are gptcore's own BPE (the notebook's solution cells are
test_contract.py's). Each wrong answer is a mistake a learner could make; its
check must fail with a message that names it.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
import regex

from gptcore.course.checks import tokenization as checks
from gptcore.tokenizer import GPT4_SPLIT_PATTERN, BPETokenizer, gpt2
from gptcore.tokenizer.bpe import merge_pair

from ..lesson_fixtures import LESSON01_POINTS, LESSON01_WRONG_CAUGHT_VISIBLE
from ..notebook_cells import HIDDEN_BEGIN, LessonNotebook

HIDDEN = HIDDEN_BEGIN

# The hidden calls' arguments, read from the notebook's test cells (the one place a seed
# is written); the visible calls give none (test_contract.py holds both).
LESSON_NB = LessonNotebook.for_lesson("01_tokenization")
HIDDEN_ARGS: dict[str, dict] = LESSON_NB.hidden_arguments()


def _args(which: str, check: str) -> dict:
    return {} if which == "visible" else HIDDEN_ARGS[check]


# ------------------------------------------------------------------ notebook
_namespace = LESSON_NB.namespace
cells, _ = LESSON_NB.fixtures()  # the solution namespace: test_contract.py runs it


# --------------------------------------------------------- right answers pass
def ref_stats(ids):
    return Counter(pairwise(ids))  # a Counter is a dict: accepted


def ref_merge(ids, pair, idx):
    return merge_pair(ids, pair[0], pair[1], idx)


def ref_train(text, vocab_size, pattern=GPT4_SPLIT_PATTERN):
    return dict(BPETokenizer.train(text, vocab_size, pattern).merges)


def ref_encode(text, merges, pattern=GPT4_SPLIT_PATTERN):
    return BPETokenizer(merges, pattern=pattern).encode_ordinary(text)


def ref_decode(ids, merges):
    return BPETokenizer(merges).decode(ids)


REFERENCE = {
    "bpe_pair_counts": ref_stats,
    "bpe_merge": ref_merge,
    "bpe_train": ref_train,
    "bpe_encode": ref_encode,
    "bpe_decode": ref_decode,
}


@pytest.mark.parametrize("check", list(REFERENCE))
@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_reference_passes(check, args):
    getattr(checks, check)(REFERENCE[check], **_args(args, check))


def test_gpt2_parity_passes():
    # The notebook's encode on the visible and hidden cases is test_contract.py's.
    checks.gpt2_parity(ref_encode, seed=1, cases=3)


# ------------------------------------------------------- wrong answers fail
class AlwaysEqual:
    def __eq__(self, other):
        return True

    __hash__ = None


class EqualList(list):
    def __eq__(self, other):
        return True


class EqualDict(dict):
    def __eq__(self, other):
        return True


class EqualStr(str):
    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


# get_stats
def stats_off_by_one(ids):
    return Counter((ids[i], ids[i + 1]) for i in range(len(ids) - 2))


def stats_no_overlap(ids):
    counts, i = {}, 0
    while i < len(ids) - 1:
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
        i += 2 if ids[i] == ids[i + 1] else 1
    return counts


def stats_mutates(ids):
    counts = {}
    while len(ids) > 1:
        pair = (ids[0], ids[1])
        counts[pair] = counts.get(pair, 0) + 1
        ids.pop(0)
    return counts


WRONG_STATS = [
    (stats_off_by_one, "missed the last pair"),
    (stats_no_overlap, "even where pairs overlap"),
    (lambda ids: list(pairwise(ids)), "must be a dict"),
    (lambda ids: AlwaysEqual(), "must be a dict"),
    (lambda ids: EqualDict(), "is wrong"),
    (lambda ids: {p: float(n) for p, n in Counter(pairwise(ids)).items()}, "must be an int"),
    (lambda ids: dict(Counter(zip(np.array(ids), ids[1:]))), "numpy"),
    (
        lambda ids: {f"{a},{b}": n for (a, b), n in Counter(pairwise(ids)).items()},
        "tuple of two ints",
    ),
    (
        lambda ids: {(a, b, 0): n for (a, b), n in Counter(pairwise(ids)).items()},
        "tuple of two ints",
    ),
    (lambda ids: {p: n > 0 for p, n in Counter(pairwise(ids)).items()}, "bool"),
    (lambda ids: dict(Counter(zip(ids[1:], ids))), "left id first"),
    (lambda ids: dict.fromkeys(pairwise(ids), 1), "not 1"),
    (lambda ids: dict(Counter(zip(ids, [*ids[1:], ids[0]]))), "wrap around"),
    (stats_mutates, "changed its argument"),
]


# merge
def merge_no_skip(ids, pair, idx):
    out = []
    for i in range(len(ids)):
        if i < len(ids) - 1 and (ids[i], ids[i + 1]) == pair:
            out.append(idx)
        else:
            out.append(ids[i])
    return out


def merge_overlapping(ids, pair, idx):
    # skips the second id, but lets a pair start inside the previous one
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(idx)
            i += 2 if i + 2 >= len(ids) or (ids[i + 1], ids[i + 2]) != pair else 1
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_first_only(ids, pair, idx):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return [*ids[:i], idx, *ids[i + 2 :]]
    return list(ids)


def merge_right_to_left(ids, pair, idx):
    return merge_pair(ids[::-1], pair[1], pair[0], idx)[::-1]


def merge_drops_last(ids, pair, idx):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_in_place(ids, pair, idx):
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            ids[i : i + 2] = [idx]
        i += 1
    return ids


def merge_list_compare(ids, pair, idx):
    out, i = [], 0
    while i < len(ids):
        if [ids[i], ids[i + 1] if i + 1 < len(ids) else None] == pair:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


WRONG_MERGE = [
    (merge_no_skip, "continue at i + 2"),
    (merge_overlapping, "overlaps itself"),
    (merge_first_only, "not only the first"),
    (merge_right_to_left, "scan from left to right"),
    (merge_drops_last, "last id is missing"),
    (merge_in_place, "changed its argument"),
    (merge_list_compare, "as tuples"),
    (lambda ids, pair, idx: tuple(ref_merge(ids, pair, idx)), "must be a list of ints"),
    (lambda ids, pair, idx: EqualList(), "must be a list of ints"),
    (lambda ids, pair, idx: [np.int64(i) for i in ref_merge(ids, pair, idx)], "int(...)"),
]


# train_bpe
def smallest_most_frequent(stats):
    return min(stats, key=lambda p: (-stats[p], p))


def make_trainer(*, choose=None, split=True, ids_from=256, extra=0, weighted=True, stop_at_one=False,
                 findall=regex.findall, early_stop=True, fixed_pattern=None):  # fmt: skip
    """A trainer with one configurable mistake."""

    def train(text, vocab_size, pattern=GPT4_SPLIT_PATTERN):
        pattern = fixed_pattern or pattern
        chunks = findall(pattern, text) if pattern and split else [text]
        counts = Counter(chunks)
        words = [list(c.encode("utf-8")) for c in counts]
        freqs = list(counts.values()) if weighted else [1] * len(counts)
        merges = {}
        for idx in range(ids_from, vocab_size + extra + ids_from - 256):
            stats = {}
            for w, f in zip(words, freqs):
                for p in pairwise(w):
                    stats[p] = stats.get(p, 0) + f
            if not stats and early_stop:
                break
            pair = (choose or smallest_most_frequent)(stats)
            if stop_at_one and stats[pair] < 2:
                break
            words = [merge_pair(w, *pair, idx) for w in words]
            merges[pair] = idx
        return merges

    return train


WRONG_TRAIN = [
    (make_trainer(choose=lambda s: max(s, key=s.get)), "smallest pair"),
    (make_trainer(choose=lambda s: max(s, key=lambda p: (s[p], p))), "smallest pair"),
    (make_trainer(split=False), "across chunk boundaries"),
    (make_trainer(fixed_pattern=GPT4_SPLIT_PATTERN), "use the pattern argument"),
    (make_trainer(extra=1), "vocab_size counts the 256 byte tokens"),
    (make_trainer(ids_from=257), "The first merge gets id 256"),
    (make_trainer(weighted=False), "count every chunk each time it occurs"),
    (make_trainer(stop_at_one=True), "even a pair that occurs only once"),
    (make_trainer(findall=re.findall), "regex module"),
    (
        lambda text, vocab_size, pattern=None: list(ref_train(text, vocab_size, pattern)),
        "must be a dict",
    ),
    (lambda text, vocab_size, pattern=None: EqualDict(), "is wrong"),
]
EDGE_TRAIN = [(make_trainer(early_stop=False), "no pair left")]


# encode
def encode_leftmost(text, merges, pattern=GPT4_SPLIT_PATTERN):
    out = []
    for chunk in regex.findall(pattern, text) if pattern else [text]:
        ids = list(chunk.encode("utf-8"))
        while pair := next((p for p in pairwise(ids) if p in merges), None):
            ids = merge_pair(ids, *pair, merges[pair])
        out += ids
    return out


def encoder(start):
    """A correct encoder except for how a chunk becomes its first ids."""

    def encode(text, merges, pattern=GPT4_SPLIT_PATTERN):
        out = []
        for chunk in regex.findall(pattern, text) if pattern else [text]:
            ids = start(chunk)
            while present := [p for p in pairwise(ids) if p in merges]:
                pair = min(present, key=merges.get)
                ids = merge_pair(ids, *pair, merges[pair])
            out += ids
        return out

    return encode


def encode_most_frequent(text, merges, pattern=GPT4_SPLIT_PATTERN):
    out = []
    for chunk in regex.findall(pattern, text) if pattern else [text]:
        ids = list(chunk.encode("utf-8"))
        while True:
            stats = Counter(p for p in pairwise(ids) if p in merges)
            if not stats:
                break
            pair = max(stats, key=stats.get)
            ids = merge_pair(ids, *pair, merges[pair])
        out += ids
    return out


def encode_pops_merges(text, merges, pattern=GPT4_SPLIT_PATTERN):
    out = ref_encode(text, dict(merges), pattern)
    merges.clear()
    return out


WRONG_ENCODE = [
    (encode_leftmost, "LOWEST merge id"),
    (lambda text, merges, pattern=GPT4_SPLIT_PATTERN: ref_encode(text, merges, None), "merges never cross chunk boundaries"),
    (lambda text, merges, pattern=GPT4_SPLIT_PATTERN: ref_encode(text, merges, GPT4_SPLIT_PATTERN), "use the pattern argument"),
    (lambda text, merges, pattern=GPT4_SPLIT_PATTERN: list(text.encode("utf-8")), "raw UTF-8 bytes"),
    (encoder(start=lambda chunk: [ord(c) for c in chunk]), "not from ord()"),
    (encoder(start=lambda chunk: list(chunk.encode("latin-1"))), "as UTF-8"),
    (encode_most_frequent, "is wrong"),
    (encode_pops_merges, "changed its argument"),
    (lambda text, merges, pattern=GPT4_SPLIT_PATTERN: np.array(ref_encode(text, merges, pattern)), "must be a list of ints"),
    (lambda text, merges, pattern=GPT4_SPLIT_PATTERN: EqualList(), "must be a list of ints"),
]  # fmt: skip


# decode
def vocab_of(merges):
    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), idx in sorted(merges.items(), key=lambda kv: kv[1]):
        vocab[idx] = vocab[a] + vocab[b]
    return vocab


def decoder(errors="replace", per_token=False, codec="utf-8", swap=False, as_bytes=False):
    def decode(ids, merges):
        vocab = vocab_of(merges)
        if swap:
            for (a, b), idx in sorted(merges.items(), key=lambda kv: kv[1]):
                vocab[idx] = vocab[b] + vocab[a]
        if per_token:
            return "".join(vocab[i].decode(codec, errors) for i in ids)
        raw = b"".join(vocab[i] for i in ids)
        return raw if as_bytes else raw.decode(codec, errors)

    return decode


WRONG_DECODE = [
    (decoder(errors="strict"), "errors='replace'"),
    (decoder(errors="ignore"), "errors='ignore' drops it"),
    (decoder(errors="backslashreplace"), "errors='replace'"),
    (decoder(per_token=True), "join the bytes of all the tokens first"),
    (decoder(codec="latin-1"), "the bytes are UTF-8"),
    (decoder(as_bytes=True), "must be a str"),
    (decoder(swap=True), "is wrong"),
    (lambda ids, merges: "".join(map(chr, ids)), "ids are not characters"),
    (lambda ids, merges: EqualStr("x"), "must be a str"),
]

WRONG = (
    [("bpe_pair_counts", f, h) for f, h in WRONG_STATS]
    + [("bpe_merge", f, h) for f, h in WRONG_MERGE]
    + [("bpe_train", f, h) for f, h in WRONG_TRAIN]
    + [("bpe_encode", f, h) for f, h in WRONG_ENCODE]
    + [("bpe_decode", f, h) for f, h in WRONG_DECODE]
)


@pytest.mark.parametrize(("check", "fn", "hint"), WRONG, ids=[f"{c}-{h}" for c, _, h in WRONG])
@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_wrong_answer_fails_with_hint(check, fn, hint, args):
    with pytest.raises(AssertionError) as failure:
        getattr(checks, check)(fn, **_args(args, check))
    assert hint in str(failure.value), str(failure.value)


@pytest.mark.parametrize(("fn", "hint"), EDGE_TRAIN)
def test_edge_case_mistake_fails_the_visible_check(fn, hint):
    # The visible cell grades every rule the hidden one does (issue 12): an edge case
    # that only the hidden tests used to run now fails the visible call alone.
    for which in ("visible", "hidden"):
        with pytest.raises(AssertionError, match=hint):
            checks.bpe_train(fn, **_args(which, "bpe_train"))


def test_gpt2_parity_failures():
    tok = gpt2()
    with pytest.raises(AssertionError, match="first chunk that differs"):
        checks.gpt2_parity(encode_leftmost)

    def pre_mapped(text, merges, pattern):
        return [tok.byte_ids[i] if i < 256 else i for i in ref_encode(text, merges, pattern)]

    with pytest.raises(AssertionError, match="already mapped"):
        checks.gpt2_parity(pre_mapped)
    with pytest.raises(AssertionError, match="first chunk that differs"):
        checks.gpt2_parity(
            lambda text, merges, pattern: ref_encode(text, merges, GPT4_SPLIT_PATTERN)
        )
    with pytest.raises(AssertionError, match="must be a list of ints"):
        checks.gpt2_parity(lambda text, merges, pattern: EqualList())


def test_messages_name_the_input_and_both_results():
    with pytest.raises(AssertionError) as failure:
        checks.bpe_merge(merge_no_skip)
    message = str(failure.value)
    assert "merge([1, 2, 3, 1, 2], (1, 2), 256)" in message
    assert "expected: [256, 3, 256]" in message
    assert "got:      [256, 2, 3, 256, 2]" in message


def test_checks_leave_their_inputs_alone():
    # A learner that records its inputs sees the same lists the check compares against.
    seen = []

    def spy(ids, pair, idx):
        seen.append((ids, list(ids)))
        return ref_merge(ids, pair, idx)

    checks.bpe_merge(spy, cases=20)
    assert all(ids == snapshot for ids, snapshot in seen)


# ----------------------------------------------------------- the wrong fixtures
@pytest.mark.parametrize("gid", sorted(LESSON01_WRONG_CAUGHT_VISIBLE))
def test_visible_test_cell_catches_what_only_hidden_tests_used_to(cells, gid):
    """A mistake that once passed the visible cell fails it now; every other cell passes."""
    ns = _namespace(cells, replace={gid: LESSON01_WRONG_CAUGHT_VISIBLE[gid]})
    with pytest.raises(AssertionError):
        exec(cells[f"{gid}_tests"].split(HIDDEN)[0], dict(ns))
    for other in LESSON01_POINTS:
        if other != f"{gid}_tests":
            exec(cells[other], dict(ns))
