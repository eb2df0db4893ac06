"""Checks for lesson 1 (tokenization): pair counts, merge, training, encode, decode, GPT-2.

Each check compares the learner's function with gptcore's byte-level BPE
(``gptcore.tokenizer``) on hand-checkable examples, then on ``cases`` random
inputs drawn from ``random.Random(seed)``. Every call also runs the inputs at
the edges of the contract (empty inputs, a text that runs out of pairs,
invalid UTF-8, a merge table with nothing in it): the visible test cells grade
every rule the hidden ones do, which only add other seeds and more cases.

The checks of the exercises that call ``get_stats`` and ``merge`` (train,
encode, GPT-2 parity) blame them by name when they are the reason for a
failure (``report.check``).

On a wrong answer the message names the input, shows what was expected and
what came back, and, where a known mistake reproduces the wrong answer
exactly, says which mistake it is. The references and the tables of known
mistakes live in ``mistakes.py``.

The plain-value checks (``check_int`` and the like) are importable from here
too: a notebook's hidden tests may call ``checks.check_int(...)`` directly.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any, NoReturn

import regex

from gptcore.tokenizer import (
    GPT2_SPLIT_PATTERN,
    GPT4_SPLIT_PATTERN,
    BPETokenizer,
    gpt2,
    gpt2_encoding,
)
from gptcore.tokenizer.bpe import merge_pair

from ..report import (
    Shown,
    call,
    check,
    describe_call,
    diagnose,
    fail,
    first_difference,
    passed,
    show,
    type_name,
    wrong,
)
from ..values import check_dict, check_int, check_int_list, check_str, int_problem
from . import mistakes as known
from .mistakes import Merges, Pair, pattern_name

__all__ = ["bpe_decode", "bpe_encode", "bpe_merge", "bpe_pair_counts", "bpe_train", "gpt2_parity"]

PATTERNS = (GPT4_SPLIT_PATTERN, GPT2_SPLIT_PATTERN, None)
_DEFAULT = object()  # "call without the pattern argument": the default must be GPT-4's pattern
_REGEX_HINT = (
    "the split patterns need the third-party regex module: import regex, then "
    "regex.findall(pattern, text). Python's re does not know \\p{L}."
)


def warm() -> None:
    """Build the reference tokenizers the checks use (seconds), before any check runs.

    A grading worker's trusted-runner zygote calls this once, so that the runner of
    every student is forked with them built (``gptcore.course.classroom.zygote``).
    """
    gpt2()
    gpt2_encoding()


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


@check()
def bpe_pair_counts(
    get_stats: Callable[[list[int]], dict[Pair, int]],
    *,
    seed: int = 0,
    cases: int = 50,
) -> None:
    """Check ``get_stats(ids) -> {(left, right): count}``; overlapping pairs all count."""
    inputs = [[1, 2, 3, 1, 2], [5, 5, 5]]
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
            hint_text="return {pair: count}, e.g. {(1, 2): 2, (2, 3): 1, (3, 1): 1} for [1, 2, 3, 1, 2].",
        )  # fmt: skip
        expected = known.stats(ids)
        if got != expected:
            bad = next(p for p in [*expected, *got] if got.get(p) != expected.get(p))
            wrong(
                where,
                expected,
                got,
                f"  first wrong pair: {bad}: expected count {expected.get(bad, 0)}, got {got.get(bad, 'no key')}",
                hint_text=diagnose(got, known.stats_mistakes(ids, got, expected)),
            )
    passed("get_stats", len(inputs))


# --------------------------------------------------------------------- merge
def _merge_inputs(seed: int, cases: int) -> list[tuple[list[int], Pair, int]]:
    inputs = [([1, 2, 3, 1, 2], (1, 2), 256), ([5, 5, 5], (5, 5), 256), ([5, 5, 5, 5], (5, 5), 257)]
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
    return inputs


@check()
def bpe_merge(
    merge: Callable[[list[int], Pair, int], list[int]],
    *,
    seed: int = 0,
    cases: int = 50,
) -> None:
    """Check ``merge(ids, pair, idx)``: every non-overlapping occurrence, left to right."""
    inputs = _merge_inputs(seed, cases)
    for ids, pair, idx in inputs:
        where = describe_call("merge", ids, pair, idx)
        got = check_int_list(call(merge, ids, pair, idx, name="merge"), f"the result of {where}")
        expected = merge_pair(ids, pair[0], pair[1], idx)
        if got != expected:
            _wrong_ids(
                where,
                expected,
                got,
                diagnose(got, known.merge_mistakes(ids, pair, idx, expected))
                or known.overlap_hint(ids, pair),
            )
    passed("merge", len(inputs))


def _wrong_ids(where: str, expected: list[int], got: list[int], hint_text: str) -> NoReturn:
    """Fail on a wrong list of ids, pointing at the first position that differs."""
    i = first_difference(got, expected)
    wrong(where, expected, got, f"  first difference at position {i}", hint_text=hint_text)


# ----------------------------------------------------------------- train_bpe
def _show_merges(pairs: list[Pair], limit: int = 12) -> Shown:
    body = ", ".join(f"{256 + i}: {p}" for i, p in enumerate(pairs[:limit]))
    return Shown("{" + body + (f", … ({len(pairs)} merges)" if len(pairs) > limit else "") + "}")


def _train_inputs(seed: int, cases: int) -> list[tuple[str, int, Any]]:
    inputs: list[tuple[str, int, Any]] = [
        ("aaabdaaabac", 259, None),  # {(97, 97): 256, (97, 98): 257, (256, 257): 258}; 257 is a tie
        ("the cat ate the hat", 262, _DEFAULT),  # across chunks, (101, 32) 'e ' would win a tie
        ("low lower lowest, slow slower slowest", 266, GPT2_SPLIT_PATTERN),
    ]
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
        available = len(known.train(text, 256 + 40, pattern))  # never ask for more than the text has
        inputs.append((text, 256 + rng.randint(1, min(30, available)), pattern))
    return inputs


def _check_train_ids(got: Merges, where: str) -> None:
    ids = sorted(got.values())
    if ids != list(range(256, 256 + len(ids))):
        first = (
            " The first merge gets id 256: ids 0..255 are the bytes." if ids and ids[0] != 256 else ""
        )
        fail(
            f"{where}: the new ids must be 256, 257, 258, ... with no gaps or repeats, but they are {show(ids)}.{first}"
        )


@check(uses={"get_stats": bpe_pair_counts, "merge": bpe_merge})
def bpe_train(
    train_bpe: Callable[..., Merges],
    *,
    seed: int = 0,
    cases: int = 15,
) -> None:
    """Check ``train_bpe(text, vocab_size, pattern)`` against ``BPETokenizer.train(...).merges``."""
    inputs = _train_inputs(seed, cases)
    for text, vocab_size, pattern in inputs:
        args = (text, vocab_size) if pattern is _DEFAULT else (text, vocab_size, pattern)
        pattern = GPT4_SPLIT_PATTERN if pattern is _DEFAULT else pattern
        where = f"train_bpe({show(text, 60)}, vocab_size={vocab_size}, pattern={pattern_name(pattern)})"
        expected = known.train(text, vocab_size, pattern)
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
        _check_train_ids(got, where)
        got_pairs = sorted(got, key=got.__getitem__)
        exp_pairs = list(expected)
        wrong(
            where,
            _show_merges(exp_pairs),
            _show_merges(got_pairs),
            hint_text=diagnose(got, known.train_mistakes(text, vocab_size, pattern))
            or known.train_hint(text, vocab_size, pattern, got_pairs, exp_pairs),
        )
    passed("train_bpe", len(inputs))


# -------------------------------------------------------------------- encode
def _encode_inputs(seed: int, cases: int) -> list[tuple[str, Merges, Any]]:
    toy = known.train("aaabdaaabac", 259, None)
    hello = known.train("hello hello world, hello there", 264, GPT4_SPLIT_PATTERN)
    inputs: list[tuple[str, Merges, Any]] = [
        ("aaabdaaabac", toy, None),  # [258, 100, 258, 97, 99]
        # [97, 256]: the pair with the lower id wins, not the leftmost pair
        ("abc", {(98, 99): 256, (97, 98): 257}, None),
        ("hello world! hello", hello, _DEFAULT),
    ]
    runs = known.train("a" * 64, 262, None)
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
        merges = known.train(_random_text(rng, 50), 256 + rng.randint(0, 40), pattern)
        inputs.append((_random_text(rng, rng.randint(5, 25)), merges, pattern))
    return inputs


@check(uses={"get_stats": bpe_pair_counts, "merge": bpe_merge})
def bpe_encode(
    encode: Callable[..., list[int]],
    *,
    seed: int = 0,
    cases: int = 20,
) -> None:
    """Check ``encode(text, merges, pattern)`` against ``BPETokenizer(merges, pattern).encode``."""
    inputs = _encode_inputs(seed, cases)
    hints = {
        re.error: _REGEX_HINT,
        UnicodeEncodeError: "encode each chunk as UTF-8: chunk.encode('utf-8').",
    }
    for text, merges, pattern in inputs:
        args = (text, merges) if pattern is _DEFAULT else (text, merges, pattern)
        pattern = GPT4_SPLIT_PATTERN if pattern is _DEFAULT else pattern
        where = f"encode({show(text, 60)}, merges={show(merges, 60)}, pattern={pattern_name(pattern)})"
        got = check_int_list(
            call(encode, *args, name="encode", where=where, error_hints=hints),
            f"the result of {where}",
        )
        expected = known.encode(text, merges, pattern)
        if got != expected:
            _wrong_ids(where, expected, got, diagnose(got, known.encode_mistakes(text, merges, pattern)))
    passed("encode", len(inputs))


# -------------------------------------------------------------------- decode
def _decode_inputs(seed: int, cases: int) -> list[tuple[list[int], Merges]]:
    toy = known.train("aaabdaaabac", 259, None)
    inputs: list[tuple[list[int], Merges]] = [
        ([258, 100, 258, 97, 99], toy),  # "aaabdaaabac"
        ([104, 105, 32, 0xC3, 0xA9], {}),  # "hi é": é's two bytes are two tokens
        ([104, 105, 32, 0xE2, 0x82], {}),  # "hi \ufffd": a character cut short
    ]
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
        merges = known.train(_random_text(rng, 50), 256 + rng.randint(0, 40), pattern)
        ids = known.encode(_random_text(rng, rng.randint(3, 15)), merges, pattern)
        r = rng.random()
        if r < 0.4 and len(ids) > 2:  # a slice can cut a character in half
            a = rng.randrange(len(ids))
            ids = ids[a : rng.randint(a + 1, len(ids))]
        elif r < 0.7:  # any ids at all, valid UTF-8 or not
            ids = [rng.randrange(256 + len(merges)) for _ in range(rng.randint(1, 12))]
        inputs.append((ids, merges))
    return inputs


@check()
def bpe_decode(
    decode: Callable[[list[int], Merges], str],
    *,
    seed: int = 0,
    cases: int = 30,
) -> None:
    """Check ``decode(ids, merges)`` against ``BPETokenizer(merges).decode(ids)``."""
    inputs = _decode_inputs(seed, cases)
    for ids, merges in inputs:
        where = describe_call("decode", ids, merges)
        got = call(
            decode, ids, merges, name="decode", error_hints={UnicodeDecodeError: known.STRICT_HINT}
        )
        got = check_str(
            got,
            f"the result of {where}",
            hint_text="join the bytes, then .decode('utf-8', errors='replace') them into a str."
            if isinstance(got, bytes)
            else "",
        )
        expected = BPETokenizer(merges, pattern=None).decode(ids)
        if got != expected:
            wrong(where, expected, got, hint_text=diagnose(got, known.decode_mistakes(ids, merges)))
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


@check(uses={"get_stats": bpe_pair_counts, "merge": bpe_merge})
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
        _parity_failure(encode, text, where, expected, mapped)
    passed("GPT-2 parity", len(texts))


def _parity_failure(
    encode: Callable[..., list[int]], text: str, where: str, expected: list[int], mapped: list[int]
) -> None:
    """Fail on the first chunk of ``text`` that ``encode`` gets wrong, or on the whole text."""
    tok, enc = gpt2(), gpt2_encoding()
    merges = dict(tok.merges)
    for chunk in regex.findall(GPT2_SPLIT_PATTERN, text):  # the first chunk that goes wrong
        ids = call(encode, chunk, merges, GPT2_SPLIT_PATTERN, name="encode",
                   where=f"encode({chunk!r}, gpt2().merges, GPT2_SPLIT_PATTERN)")  # fmt: skip
        ids = check_int_list(ids, f"the result of encode({chunk!r}, ...)")
        mine = [tok.byte_ids[i] if i < 256 else i for i in ids]
        theirs = enc.encode_ordinary(chunk)
        if mine != theirs:
            pieces = [tok.decode_bytes([i]) for i in theirs]
            fail(
                f"{where} differs from tiktoken's GPT-2 tokens.\n"
                f"  first chunk that differs: {chunk!r}\n"
                f"  tiktoken: {theirs} = {pieces}\n"
                f"  yours:    {mine} (byte ids mapped through gpt2().byte_ids)",
                "run checks.bpe_encode(encode) first. If it passes, look at this chunk: "
                "with 50,000 merges, applying a merge out of order (lowest id first) or "
                "starting from anything but the chunk's UTF-8 bytes shows up here.",
            )
    wrong(
        where,
        expected,
        mapped,
        hint_text="every chunk encodes correctly on its own; check that you encode the chunks in order and concatenate all of them.",
    )
