"""Tests for gptcore.tokenizer: byte-level BPE (trained and GPT-2) and characters.

Reference points:
* tiktoken, through ``gpt2_encoding()`` (built offline; ``tiktoken.get_encoding``
  would download) and ``BPETokenizer.to_tiktoken()``;
* a naive minbpe-style trainer written below, which recounts every pair after
  every merge, to check the incremental trainer's merges one for one.

Lone surrogates (``"\\ud800"``) cannot be UTF-8 encoded. gptcore does what
tiktoken does: a surrogate pair spelt as two code points becomes its character
and a lone surrogate becomes U+FFFD, so ``decode(encode(s))`` is ``s`` for every
str without surrogates and ``_tiktoken_text(s)`` otherwise.

Tiny Shakespeare comes from ``gptcore.data.load_text`` (the ``shakespeare``
fixture of conftest.py; ``GPTCORE_DATA_DIR`` names the offline copy).
"""

from __future__ import annotations

import json
import operator
import os
from collections import Counter
from functools import cache
from itertools import pairwise

import numpy as np
import pytest
import regex
import tiktoken
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gptcore.data import load_text
from gptcore.tokenizer import (
    ENDOFTEXT,
    GPT2_SPLIT_PATTERN,
    GPT4_SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    gpt2,
    gpt2_encoding,
    merge_pair,
)
from gptcore.tokenizer import bpe as bpe_module

# deadline=None: the first example of a test may build a tokenizer (~1 s).
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PATTERNS = {"gpt2": GPT2_SPLIT_PATTERN, "gpt4": GPT4_SPLIT_PATTERN, "none": None}

# --------------------------------------------------------------------------- data

SAMPLE_PIECES = {
    "ascii": "The quick brown fox jumps over the lazy dog. Hello, World! It's 3:45pm; isn't it?",
    "contractions": "DON'T we'll I'M You're THEY'VE she'd it'S O'Neil rock'n'roll 'quoted' '' 's",
    "chinese": "机器学习是人工智能的一个分支。我们今天学习分词器！",
    "japanese": "東京都は日本の首都です。ひらがなとカタカナ、そして漢字。ｶﾀｶﾅ",
    "arabic": "مرحبا بالعالم، كيف حالك؟ ١٢٣٤",
    "hindi": "नमस्ते दुनिया। क्या हाल है? १२३",
    "russian": "Привет, мир! Ёжик в тумане. ПРИВЕТ",
    "korean": "안녕하세요 세계! 한국어 토큰화 테스트입니다.",
    "others": "Γειά σου Κόσμε · שלום עולם · สวัสดีชาวโลก · 𐍈 𝒜 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "emoji": "😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷🇯🇵 👩🏿‍💻 🤷🏻‍♀️!!",
    "whitespace": "a  b   c\t\td\n\n\ne\r\nf \r\n\r\n  \t \n   g\u00a0h\u3000i\u2028j\x0b\x0ck\x85l   ",
    "python": 'def f(x):\n    """Doc."""\n    return {"a": [1, 2.5]}  # comment\n\n\tif x != 0:\n\t\tpass\n',
    "json": '{"name": "gpt", "ids": [15496, 995], "nested": {"ok": true, "v": null}, "s": "a\\nb"}',
    "digits": "0 7 42 1234567890 3.14159 1e-10 -273.15 12,345,678 0x1F 99999999999999999999 2024-01-31",
    "combining": "e\u0301 a\u0308 n\u0303o Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "numerals": "Ⅻ ⅻ ½ ¾ ² ³ ① ⑴ 〇 𝟘 Ⅳ. chapter ²³",
    "zero_width": "a\u200bb\u200cc\u200dd\ufeffe\u2060f\u200fg\u00adh\ue000i",
    "control": "\x00\x01\x1b[31mred\x1b[0m\x7f",
    "math": "∑∫√∞ ≠ ≤ ≥ ±∓ x² + y² = z²",
    "trailing": "the end   \n\n  ",
}
SAMPLE = "\n".join(SAMPLE_PIECES.values())


@cache
def small_shakespeare() -> str:
    return load_text("tinyshakespeare")[:60_000]


@cache
def trained(pattern_name: str, vocab_size: int = 512) -> BPETokenizer:
    """A small tokenizer trained on the start of Tiny Shakespeare (cached)."""
    return BPETokenizer.train(
        small_shakespeare(),
        vocab_size,
        pattern=PATTERNS[pattern_name],
        special_tokens=[ENDOFTEXT],
    )


@cache
def tiktoken_gpt2() -> tiktoken.Encoding:
    return gpt2_encoding()


def _tiktoken_text(s: str) -> str:
    """What tiktoken encodes for ``s``: lone surrogates become U+FFFD."""
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


# Broad text: any code point hypothesis knows (no surrogates), with extra weight on
# whitespace, apostrophes and contraction letters, digits and combining marks,
# which is where split patterns differ.
TRICKY = list(" \t\n\r\x0b\x0c\u00a0\u2028\u3000'sdmtlvreSDMTLVRE0123456789½²Ⅻ\u0301\u200d.,!")
broad_text = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(TRICKY)),
    max_size=80,
)
surrogate_text = st.text(
    alphabet=st.one_of(
        st.characters(),
        st.characters(categories=["Cs"]),
        st.sampled_from(["\ud83d", "\ude00", "a", " "]),
    ),
    max_size=40,
)

# ------------------------------------------------------------ reference trainer


def _naive_merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def naive_train(text: str, vocab_size: int, pattern: str | None) -> list[tuple[int, int]]:
    """minbpe-style training: recount every pair after every merge.
    Most frequent pair wins; ties go to the smallest pair."""
    chunks = regex.findall(pattern, text) if pattern else ([text] if text else [])
    words = [list(c.encode("utf-8")) for c in chunks]
    merges: list[tuple[int, int]] = []
    for new_id in range(256, vocab_size):
        stats: Counter[tuple[int, int]] = Counter()
        for w in words:
            stats.update(pairwise(w))
        if not stats:
            break
        pair = min(stats, key=lambda p: (-stats[p], p))
        words = [_naive_merge(w, pair, new_id) for w in words]
        merges.append(pair)
    return merges


def merge_list(tok: BPETokenizer) -> list[tuple[int, int]]:
    items = sorted(tok.merges.items(), key=operator.itemgetter(1))
    assert [i for _, i in items] == list(range(256, 256 + len(items)))
    return [p for p, _ in items]


# ------------------------------------------------------------ hand-checked cases


def test_hand_checked_example():
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=259, pattern=None)
    assert dict(tok.merges) == {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"
    assert tok.vocab[258] == b"aaab"
    assert tok.n_vocab == 259


def test_tie_break_is_smallest_pair():
    # Every pair occurs once: (a,b) < (b,c) < (c,d); then (c,d) < (256,c) ...
    tok = BPETokenizer.train("abcd", vocab_size=300, pattern=None)
    assert merge_list(tok) == [(97, 98), (99, 100), (256, 257)]


def test_gpt2_known_ids():
    tok = gpt2()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode("hello world") == [31373, 995]
    assert tok.encode(ENDOFTEXT, allowed_special="all") == [50256]
    assert tok.encode(ENDOFTEXT, disallowed_special=()) == [27, 91, 437, 1659, 5239, 91, 29]
    assert len(tok.merges) == 50_000
    assert tok.n_vocab == 50_257 == tiktoken_gpt2().n_vocab
    assert tok.special_tokens == {ENDOFTEXT: 50256}
    assert gpt2() is gpt2()


def test_vocab_size_256_gives_no_merges():
    tok = BPETokenizer.train("hello hello hello", vocab_size=256)
    assert len(tok.merges) == 0
    assert tok.encode("héllo") == list("héllo".encode())
    assert tok.n_vocab == 256


def test_training_stops_when_pairs_run_out():
    tok = BPETokenizer.train("ab", vocab_size=1000, pattern=None)
    assert merge_list(tok) == [(97, 98)]
    # "a" and " b" are separate chunks: only (" ", "b") can merge.
    tok = BPETokenizer.train("a b", vocab_size=1000, pattern=GPT2_SPLIT_PATTERN)
    assert merge_list(tok) == [(32, 98)]
    # "aaaa" -> (a,a) -> (aa,aa): then one token is left.
    tok = BPETokenizer.train("aaaa", vocab_size=1000, pattern=None)
    assert merge_list(tok) == [(97, 97), (256, 256)]
    assert tok.encode("aaaa") == [257]
    assert len(BPETokenizer.train("", vocab_size=1000).merges) == 0


def test_training_is_deterministic():
    text = small_shakespeare()[:20_000]
    a = BPETokenizer.train(text, 400)
    b = BPETokenizer.train(text, 400)
    assert merge_list(a) == merge_list(b)


# ----------------------------------------------------- incremental == naive


@pytest.mark.parametrize("pattern_name", ["gpt2", "gpt4", "none"])
@pytest.mark.parametrize(
    "text",
    [
        "aaabdaaabac",
        "aaaaaaaaaa bbbbbbbb aaaa abab abab",
        SAMPLE,
        "slice",
    ],
    ids=["hand", "runs", "sample", "shakespeare"],
)
def test_incremental_training_matches_naive(text, pattern_name):
    if text == "slice":
        text = small_shakespeare()[:3_000]
    pattern = PATTERNS[pattern_name]
    vocab_size = 256 + 60
    tok = BPETokenizer.train(text, vocab_size, pattern=pattern)
    assert merge_list(tok) == naive_train(text, vocab_size, pattern)


@SLOW
@given(
    text=st.text(alphabet="aaab c\n", max_size=60),
    extra=st.integers(0, 25),
    pattern_name=st.sampled_from(sorted(PATTERNS)),
)
def test_incremental_training_matches_naive_property(text, extra, pattern_name):
    pattern = PATTERNS[pattern_name]
    tok = BPETokenizer.train(text, 256 + extra, pattern=pattern)
    assert merge_list(tok) == naive_train(text, 256 + extra, pattern)
    assert tok.decode(tok.encode(text)) == text


# ------------------------------------------------------------------ round trips


@FAST
@given(s=st.text())
@example(s="")
@example(s=SAMPLE)
@example(s=" \n\t  ")
@example(s=f"a{ENDOFTEXT}b")
def test_gpt2_round_trip(s):
    # Hypothesis also draws string constants of the code under test, such as
    # "<|endoftext|>", so the properties pass the special-token arguments explicitly.
    tok = gpt2()
    ids = tok.encode(s, disallowed_special=())
    assert tok.decode(ids) == s
    assert tok.decode_bytes(ids) == s.encode("utf-8")
    assert tok.decode(tok.encode(s, allowed_special="all")) == s


@FAST
@given(s=st.text(), pattern_name=st.sampled_from(sorted(PATTERNS)))
@example(s=SAMPLE, pattern_name="gpt4")
@example(s=SAMPLE, pattern_name="none")
@example(s=f"{ENDOFTEXT}x{ENDOFTEXT}", pattern_name="gpt2")
def test_trained_round_trip(s, pattern_name):
    tok = trained(pattern_name)
    ids = tok.encode(s, disallowed_special=())
    assert tok.decode(ids) == s
    assert all(0 <= i < tok.n_vocab for i in ids)
    assert tok.decode(tok.encode(s, allowed_special="all")) == s


@FAST
@given(s=surrogate_text)
@example(s="\ud800")
@example(s="a\udfffb")
@example(s="\ud83d\ude00")  # a surrogate pair spelt as two code points
def test_lone_surrogates_become_replacement_char_like_tiktoken(s):
    tok, enc = gpt2(), tiktoken_gpt2()
    ids = tok.encode(s, allowed_special="all")
    assert ids == enc.encode(s, allowed_special="all")
    assert tok.encode_ordinary(s) == enc.encode_ordinary(s)
    assert tok.decode(ids) == _tiktoken_text(s)
    small = trained("gpt4")
    assert small.decode(small.encode_ordinary(s)) == _tiktoken_text(s)


def test_surrogate_documented_examples():
    tok = gpt2()
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"
    assert tok.encode("\ud83d\ude00") == tok.encode("😀")
    # Training accepts such text too, and sees what encode() sees.
    t = BPETokenizer.train("x\ud800x\ud800", 260, pattern=None)
    assert t.decode(t.encode("x\ud800x\ud800")) == "x\ufffdx\ufffd"


# ---------------------------------------------------------- parity with tiktoken


def test_gpt2_matches_tiktoken_on_tiny_shakespeare(shakespeare):
    assert len(shakespeare) == 1_115_394
    ids = gpt2().encode(shakespeare)
    assert ids == tiktoken_gpt2().encode(shakespeare)
    assert len(ids) == 338_025
    assert gpt2().decode(ids) == shakespeare


@pytest.mark.parametrize("name", sorted(SAMPLE_PIECES))
def test_gpt2_matches_tiktoken_on_sample_piece(name):
    s = SAMPLE_PIECES[name]
    tok, enc = gpt2(), tiktoken_gpt2()
    assert tok.encode(s) == enc.encode(s)
    assert tok.encode(s.upper()) == enc.encode(s.upper())
    assert tok.encode(s + "  ") == enc.encode(s + "  ")


def test_gpt2_matches_tiktoken_on_whole_sample():
    tok, enc = gpt2(), tiktoken_gpt2()
    assert tok.encode(SAMPLE) == enc.encode(SAMPLE)
    assert tok.encode_ordinary(SAMPLE) == enc.encode_ordinary(SAMPLE)


@FAST
@given(s=broad_text)
@example(s="DON'T we'll")
@example(s="x  \n\n  ")
@example(s="\r\n\r\n")
def test_gpt2_encode_ordinary_matches_tiktoken_property(s):
    assert gpt2().encode_ordinary(s) == tiktoken_gpt2().encode_ordinary(s)


def _utf8_splitting_ids() -> st.SearchStrategy[list[int]]:
    """Id lists that often cut a multi-byte character: lone UTF-8 lead and
    continuation bytes, and slices of the ids of multi-byte text."""
    tok = gpt2()
    high_bytes = [tok.byte_ids[b] for b in range(0x80, 0x100)]
    multibyte_ids = tok.encode(SAMPLE_PIECES["emoji"] + SAMPLE_PIECES["chinese"])
    slices = st.tuples(st.integers(0, len(multibyte_ids)), st.integers(0, len(multibyte_ids))).map(
        lambda ab: multibyte_ids[min(ab) : max(ab)]
    )
    return st.one_of(
        st.lists(st.integers(0, 50256), max_size=30),
        st.lists(st.one_of(st.sampled_from(high_bytes), st.integers(0, 50256)), max_size=30),
        slices,
    )


@FAST
@given(ids=st.deferred(_utf8_splitting_ids))
@example(ids=[47249])  # the first half of "😀" = [47249, 222]
@example(ids=[50256, 15496])
def test_gpt2_decode_matches_tiktoken(ids):
    tok, enc = gpt2(), tiktoken_gpt2()
    assert tok.decode(ids) == enc.decode(ids)
    assert tok.decode_bytes(ids) == enc.decode_bytes(ids)


def test_decode_replaces_split_characters():
    tok = gpt2()
    ids = tok.encode("😀")
    assert len(ids) == 2
    assert "\ufffd" in tok.decode(ids[:1])
    assert tok.decode_bytes(ids[:1]) + tok.decode_bytes(ids[1:]) == "😀".encode()


@pytest.mark.parametrize("pattern_name", ["gpt2", "gpt4"])
def test_trained_to_tiktoken_matches_on_shakespeare_and_sample(shakespeare, pattern_name):
    tok = BPETokenizer.train(shakespeare, 1024, pattern=PATTERNS[pattern_name])
    assert len(tok.merges) == 768
    enc = tok.to_tiktoken()
    assert isinstance(enc, tiktoken.Encoding)
    assert enc.n_vocab == tok.n_vocab
    assert tok.encode(shakespeare) == enc.encode(shakespeare)
    assert tok.encode(SAMPLE) == enc.encode(SAMPLE)
    for s in SAMPLE_PIECES.values():
        assert tok.encode(s) == enc.encode(s)
    ids = tok.encode(SAMPLE)
    assert tok.decode(ids) == enc.decode(ids) == SAMPLE


@SLOW
@given(
    train_text=st.text(alphabet="aab c'\n", min_size=1, max_size=80),
    extra=st.integers(1, 30),
    s=st.text(alphabet="aab c'\nd", max_size=40),
    pattern_name=st.sampled_from(["gpt2", "gpt4"]),
)
def test_to_tiktoken_matches_property(train_text, extra, s, pattern_name):
    tok = BPETokenizer.train(train_text, 256 + extra, pattern=PATTERNS[pattern_name])
    enc = tok.to_tiktoken()
    assert tok.encode(s) == enc.encode(s)
    assert tok.encode(train_text) == enc.encode(train_text)


def test_gpt2_to_tiktoken_matches():
    enc = gpt2().to_tiktoken()
    assert enc.encode(SAMPLE) == tiktoken_gpt2().encode(SAMPLE)
    assert enc.encode(ENDOFTEXT, allowed_special="all") == [50256]


def test_to_tiktoken_needs_a_pattern():
    with pytest.raises(ValueError, match="pattern"):
        trained("none").to_tiktoken()


# --------------------------------------------------------------- special tokens

SPECIAL_TEXTS = [
    f"hello {ENDOFTEXT} world",
    f"{ENDOFTEXT}{ENDOFTEXT}x",
    f"a{ENDOFTEXT}",
    "<|endoftext|",  # not the special token: a prefix of it
    "<|endoftext|<|endoftext|>>",
    "no special token at all",
]


def test_disallowed_special_raises_by_default():
    tok = gpt2()
    with pytest.raises(ValueError, match="allowed_special") as info:
        tok.encode(f"hello {ENDOFTEXT}")
    assert "disallowed_special=()" in str(info.value)
    with pytest.raises(ValueError):
        tiktoken_gpt2().encode(f"hello {ENDOFTEXT}")


@pytest.mark.parametrize("text", SPECIAL_TEXTS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"allowed_special": "all"},
        {"allowed_special": {ENDOFTEXT}},
        {"allowed_special": frozenset({ENDOFTEXT}), "disallowed_special": ()},
        {"disallowed_special": ()},
        {"allowed_special": set(), "disallowed_special": ()},
        {},
        {"disallowed_special": {"world"}},
        {"disallowed_special": "all"},
    ],
)
def test_special_tokens_like_tiktoken(text, kwargs):
    tok, enc = gpt2(), tiktoken_gpt2()
    try:
        expected = enc.encode(text, **kwargs)
    except ValueError:
        with pytest.raises(ValueError):
            tok.encode(text, **kwargs)
    else:
        assert tok.encode(text, **kwargs) == expected
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)


def test_special_token_ids_and_decode():
    tok = gpt2()
    ids = tok.encode(f"hello {ENDOFTEXT} world", allowed_special="all")
    assert ids == [31373, 220, 50256, 995]
    assert tok.decode(ids) == f"hello {ENDOFTEXT} world"
    # encode_ordinary never produces special ids
    assert 50256 not in tok.encode_ordinary(ENDOFTEXT)


def test_unknown_allowed_special_is_an_error():
    # Stricter than tiktoken, which ignores names it does not know.
    with pytest.raises(ValueError, match="does not have"):
        gpt2().encode("x", allowed_special={"<|pad|>"})


def test_train_with_special_token_names():
    text = small_shakespeare()[:5_000]
    tok = BPETokenizer.train(text, 300, special_tokens=["<|eot|>", "<|pad|>"])
    assert len(tok.merges) == 44
    assert tok.special_tokens == {"<|eot|>": 300, "<|pad|>": 301}
    assert tok.n_vocab == 302
    ids = tok.encode("hi<|pad|> there<|eot|>", allowed_special="all")
    assert ids[-1] == 300 and 301 in ids
    assert tok.decode(ids) == "hi<|pad|> there<|eot|>"
    with pytest.raises(ValueError, match="disallowed"):
        tok.encode("<|eot|>")
    # Special tokens do not count towards vocab_size and survive to_tiktoken.
    enc = tok.to_tiktoken()
    s = "a<|eot|>b<|pad|>"
    assert enc.encode(s, allowed_special="all") == tok.encode(s, allowed_special="all")


def test_train_with_special_token_mapping():
    tok = BPETokenizer.train("abcabc", 258, pattern=None, special_tokens={"<|x|>": 1000})
    assert tok.special_tokens == {"<|x|>": 1000}
    assert tok.n_vocab == 1001
    assert tok.encode("<|x|>ab", allowed_special="all") == [1000, 256]
    with pytest.raises(ValueError, match=">= 258"):
        BPETokenizer.train("abcabc", 258, pattern=None, special_tokens={"<|x|>": 5})


def test_train_special_tokens_rejects_a_bare_string():
    with pytest.raises(ValueError, match="list of names"):
        BPETokenizer.train("abc", 257, special_tokens="<|eot|>")


def test_longest_special_token_wins():
    tok = BPETokenizer([], pattern=None, special_tokens={"<a>": 300, "<a><b>": 301})
    assert tok.encode("<a><b><a>", allowed_special="all") == [301, 300]
    assert tok.encode("<a><b>", allowed_special={"<a>"}, disallowed_special=()) == [
        300,
        *b"<b>",
    ]


# --------------------------------------------------------------------- save/load


def _same(a: BPETokenizer, b: BPETokenizer) -> None:
    assert dict(a.merges) == dict(b.merges)
    assert a.byte_ids == b.byte_ids
    assert dict(a.special_tokens) == dict(b.special_tokens)
    assert a.pattern == b.pattern
    assert a.encode(SAMPLE) == b.encode(SAMPLE)


def test_save_load_gpt2(tmp_path):
    path = gpt2().save(tmp_path / "gpt2.bpe")
    assert path == tmp_path / "gpt2.bpe"
    loaded = BPETokenizer.load(path)
    _same(gpt2(), loaded)
    assert loaded.encode("Hello world") == [15496, 995]
    assert loaded.byte_ids != tuple(range(256))
    assert loaded.name == "gpt2"
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "gptcore-bpe 1"
    assert lines[1].startswith('pattern "')
    assert lines[2].startswith("bytes ") and len(lines[2].split()) == 257
    assert lines[3:5] == ["special 1", '"<|endoftext|>" 50256']
    assert lines[5] == "merges 50000"
    assert lines[6] == "32 116"  # GPT-2's first merge: " t", in raw byte values
    assert len(lines) == 6 + 50_000 + 1 and lines[-1] == ""


@pytest.mark.parametrize("pattern_name", sorted(PATTERNS))
def test_save_load_trained(tmp_path, pattern_name):
    tok = trained(pattern_name)
    path = tok.save(tmp_path / "sub" / "dir" / "tok.bpe")  # creates parents
    loaded = BPETokenizer.load(str(path))
    _same(tok, loaded)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("gptcore-bpe 1\npattern ")
    assert "\nbytes identity\nspecial 1\n" in text
    if pattern_name == "none":
        assert "\npattern null\n" in text


def test_save_overwrites_and_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "tok.bpe"
    trained("gpt2").save(path)
    trained("gpt4").save(path)  # overwrite
    assert BPETokenizer.load(path).pattern == GPT4_SPLIT_PATTERN
    assert sorted(os.listdir(tmp_path)) == ["tok.bpe"]
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(bpe_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        trained("none").save(path)
    assert sorted(os.listdir(tmp_path)) == ["tok.bpe"]  # no temp file left behind
    assert path.read_bytes() == before  # old file intact


def _tiny_file_lines() -> list[str]:
    tok = BPETokenizer.train("aaabdaaabac", 259, pattern=GPT2_SPLIT_PATTERN, special_tokens=["<s>"])
    # 1 header, 2 pattern, 3 bytes, 4 special 1, 5 "<s>" 259, 6 merges 3, 7-9 merges
    return [
        "gptcore-bpe 1",
        "pattern " + json.dumps(GPT2_SPLIT_PATTERN),
        "bytes identity",
        "special 1",
        f'"<s>" {tok.special_tokens["<s>"]}',
        "merges 3",
        "97 97",
        "97 98",
        "256 257",
    ]


def test_tiny_file_is_what_save_writes(tmp_path):
    tok = BPETokenizer.train("aaabdaaabac", 259, pattern=GPT2_SPLIT_PATTERN, special_tokens=["<s>"])
    path = tok.save(tmp_path / "t.bpe")
    assert path.read_text(encoding="utf-8") == "\n".join(_tiny_file_lines()) + "\n"


def _replace(lines: list[str], lineno: int, new: str | None) -> list[str]:
    out = list(lines)
    if new is None:
        del out[lineno - 1]
    else:
        out[lineno - 1] = new
    return out


CORRUPTIONS = {
    # name: (function of the good lines -> bad text, line number named in the error)
    "bad_header": (lambda ls: _replace(ls, 1, "gptcore-bpe 2"), 1),
    "empty_file": (lambda ls: [], 1),
    "no_pattern_keyword": (lambda ls: _replace(ls, 2, 'regex "x"'), 2),
    "bad_pattern_json": (lambda ls: _replace(ls, 2, 'pattern "unterminated'), 2),
    "pattern_not_a_string": (lambda ls: _replace(ls, 2, "pattern 42"), 2),
    "pattern_not_a_regex": (lambda ls: _replace(ls, 2, 'pattern "(("'), 2),
    "bad_bytes_line": (lambda ls: _replace(ls, 3, "bytes 1 2 3"), 3),
    "bytes_not_permutation": (lambda ls: _replace(ls, 3, "bytes " + " ".join(["0"] * 256)), 3),
    "bad_special_count": (lambda ls: _replace(ls, 4, "special x"), 4),
    "unicode_digit_count": (lambda ls: _replace(ls, 4, "special ²"), 4),
    "bad_special_line": (lambda ls: _replace(ls, 5, "<s> 259"), 5),
    "special_id_out_of_range": (lambda ls: _replace(ls, 5, '"<s>" 12'), 5),
    "special_empty_name": (lambda ls: _replace(ls, 5, '"" 300'), 5),
    "bad_merge_count": (lambda ls: _replace(ls, 6, "merges -3"), 6),
    "bad_merge_line": (lambda ls: _replace(ls, 8, "97 x"), 8),
    "merge_three_ids": (lambda ls: _replace(ls, 8, "97 98 99"), 8),
    "merge_id_out_of_range": (lambda ls: _replace(ls, 8, "97 257"), 8),
    "merge_id_far_out_of_range": (lambda ls: _replace(ls, 7, "99999 1"), 7),
    "duplicate_merge": (lambda ls: _replace(ls, 8, "97 97"), 8),
    "truncated_last_merge": (lambda ls: ls[:-1], 9),
    "truncated_after_bytes": (lambda ls: ls[:3], 4),
    "trailing_garbage": (lambda ls: [*ls, "hello"], 10),
    "trailing_merge": (lambda ls: [*ls, "97 99"], 10),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupted_files_name_the_line(tmp_path, name):
    make, lineno = CORRUPTIONS[name]
    path = tmp_path / "bad.bpe"
    lines = make(_tiny_file_lines())
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8", newline="")
    with pytest.raises(ValueError, match=f":{lineno}:") as info:
        BPETokenizer.load(path)
    assert str(path) in str(info.value)


def test_good_tiny_file_loads(tmp_path):
    path = tmp_path / "ok.bpe"
    path.write_text("\n".join(_tiny_file_lines()) + "\n", encoding="utf-8")
    tok = BPETokenizer.load(path)
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    # The final newline is optional.
    path.write_text("\n".join(_tiny_file_lines()), encoding="utf-8")
    assert BPETokenizer.load(path).encode("aaab") == [258]
    # Windows line endings (a CRLF checkout) load too, like any text file.
    path.write_bytes(("\r\n".join(_tiny_file_lines()) + "\r\n").encode())
    assert BPETokenizer.load(path).encode("aaab") == [258]


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "bad.bpe"
    lines = _tiny_file_lines()
    data = "\n".join(lines[:4]).encode() + b'\n"\xff\xfe" 259\n' + "\n".join(lines[5:]).encode()
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r":5:.*UTF-8"):
        BPETokenizer.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        BPETokenizer.load(tmp_path / "nope.bpe")


# -------------------------------------------------------------- bad input errors


@pytest.mark.parametrize("method", ["encode", "encode_ordinary"])
def test_encode_bytes_is_an_error(method):
    with pytest.raises(ValueError, match=r"str.*decode"):
        getattr(gpt2(), method)(b"hello")


@pytest.mark.parametrize("vocab_size", [255, 0, -1, 300.0, "300", None])
def test_train_bad_vocab_size(vocab_size):
    with pytest.raises(ValueError, match=r"vocab_size.*int >= 256"):
        BPETokenizer.train("hello", vocab_size)


def test_train_bad_text():
    with pytest.raises(ValueError, match="str"):
        BPETokenizer.train(b"hello", 300)


def test_bad_pattern_is_a_value_error():
    with pytest.raises(ValueError, match="not a valid regex"):
        BPETokenizer([], pattern="((")
    with pytest.raises(ValueError, match="not a valid regex"):
        BPETokenizer.train("abc", 300, pattern="[")


@pytest.mark.parametrize("bad_id", [50257, 99999, -1])
def test_decode_unknown_id(bad_id):
    with pytest.raises(ValueError, match=rf"token id {bad_id} .*0\.\.50256"):
        gpt2().decode([15496, bad_id])
    if bad_id >= 0:  # tiktoken raises KeyError here; gptcore a ValueError
        with pytest.raises(KeyError):
            tiktoken_gpt2().decode([bad_id])


@pytest.mark.parametrize("bad_id", [1.0, "5", None, 2.5])
def test_decode_non_int_id(bad_id):
    with pytest.raises(ValueError, match="must be ints"):
        gpt2().decode([bad_id])


def test_decode_accepts_numpy_and_torch_integers():
    tok = gpt2()
    assert tok.decode(np.array([15496, 995])) == "Hello world"
    assert tok.decode(np.array([50256], dtype=np.int32)) == ENDOFTEXT
    torch = pytest.importorskip("torch")
    assert tok.decode(torch.tensor([15496, 995])) == "Hello world"


@pytest.mark.parametrize(
    ("merges", "message"),
    [
        ({(97, 98): 257}, "no gaps"),
        ({(97, 98): 256, (98, 99): 258}, "no gaps"),
        ([(97, 300)], "already exist"),
        ([(97, 256)], "already exist"),
        ([(-1, 5)], "already exist"),
        ([(1, 2, 3)], "two ids"),
        ([(97, 98), (97, 98)], "listed twice"),
        ([("a", "b")], "already exist"),
    ],
)
def test_constructor_bad_merges(merges, message):
    with pytest.raises(ValueError, match=message):
        BPETokenizer(merges)


@pytest.mark.parametrize(
    "byte_ids", [list(range(255)), [0] * 256, list(range(1, 257)), list(range(257))]
)
def test_constructor_byte_ids_must_be_a_permutation(byte_ids):
    with pytest.raises(ValueError, match="permutation"):
        BPETokenizer([], byte_ids=byte_ids)


@pytest.mark.parametrize(
    ("special", "message"),
    [
        ({"<s>": 10}, ">= 256"),
        ({"": 300}, "non-empty"),
        ({"<s>": 300, "</s>": 300}, "share one id"),
        ({"<s>": "300"}, ">= 256"),
    ],
)
def test_constructor_bad_special_tokens(special, message):
    with pytest.raises(ValueError, match=message):
        BPETokenizer([], special_tokens=special)


def test_constructor_accepts_mapping_or_pairs():
    a = BPETokenizer({(97, 98): 256, (256, 99): 257}, pattern=None)
    b = BPETokenizer([(97, 98), (256, 99)], pattern=None)
    assert dict(a.merges) == dict(b.merges)
    assert a.encode("abcab") == [257, 256]
    with pytest.raises(TypeError):
        a.merges[(1, 2)] = 258  # read-only


# ------------------------------------------------------------------------ types


def test_encode_returns_plain_ints():
    tok = gpt2()
    for ids in (
        tok.encode(SAMPLE),
        tok.encode_ordinary(SAMPLE),
        tok.encode(f"x{ENDOFTEXT}", allowed_special="all"),
        trained("gpt4").encode(SAMPLE),
        trained("none").encode("hello there"),
        trained("gpt2").encode(SAMPLE),
        CharTokenizer.from_text(SAMPLE).encode(SAMPLE),
    ):
        assert type(ids) is list
        assert all(type(i) is int for i in ids)
    assert type(tok.decode([15496])) is str
    assert type(tok.decode_bytes([15496])) is bytes


def test_encode_is_stable_with_warm_cache():
    # The chunk cache must not change results (first call fills it, second reads it).
    tok = BPETokenizer(gpt2().merges, pattern=GPT2_SPLIT_PATTERN, byte_ids=gpt2().byte_ids)
    first = tok.encode_ordinary(SAMPLE)
    assert tok.encode_ordinary(SAMPLE) == first == tiktoken_gpt2().encode_ordinary(SAMPLE)


# ---------------------------------------------------------------- CharTokenizer


def test_char_round_trip(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    assert tok.vocab_size == tok.n_vocab == 65
    ids = tok.encode(shakespeare[:10_000])
    assert all(type(i) is int for i in ids)
    assert tok.decode(ids) == shakespeare[:10_000]
    assert tok.decode(np.array(ids[:50])) == shakespeare[:50]


@FAST
@given(s=st.text(min_size=1))
def test_char_round_trip_property(s):
    tok = CharTokenizer.from_text(s)
    assert tok.decode(tok.encode(s)) == s
    assert tok.chars == "".join(sorted(set(s)))
    assert tok.encode(tok.chars) == list(range(tok.vocab_size))


def test_char_docstring_example():
    tok = CharTokenizer.from_text("hello")
    assert (tok.chars, tok.encode("hell"), tok.decode([1, 0, 2, 2, 3])) == (
        "ehlo",
        [1, 0, 2, 2],
        "hello",
    )
    assert CharTokenizer("olleh").chars == "ehlo"


def test_char_unknown_char_names_position():
    tok = CharTokenizer.from_text("hello")
    with pytest.raises(ValueError, match=r"'z' at position 3"):
        tok.encode("helzo")


@pytest.mark.parametrize("bad_id", [4, -1, 100])
def test_char_bad_id(bad_id):
    with pytest.raises(ValueError, match=rf"token id {bad_id} .*0\.\.3"):
        CharTokenizer.from_text("hello").decode([0, bad_id])


def test_char_bad_construction():
    with pytest.raises(ValueError, match="at least one"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(["ab", "c"])
    with pytest.raises(ValueError, match="str"):
        CharTokenizer.from_text(b"hello")
    with pytest.raises(ValueError, match="str"):
        CharTokenizer.from_text("abc").encode(b"abc")


def test_char_save_load_round_trip_and_run_file_format(tmp_path):
    tok = CharTokenizer.from_text('hello\n "wörld" \u2603')
    path = tok.save(tmp_path / "sub" / "chars.json")
    assert path == tmp_path / "sub" / "chars.json"
    # the same bytes as a training run's tokenizer-chars.json, so old runs still load
    assert path.read_text(encoding="utf-8") == json.dumps(list(tok.chars))
    back = CharTokenizer.load(path)
    assert back.chars == tok.chars and back.vocab_size == tok.vocab_size
    assert [p.name for p in path.parent.iterdir()] == ["chars.json"]  # no temporary left


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "not a CharTokenizer file"),
        ("{}", "JSON list"),
        ("[]", "JSON list"),
        ('[1, "a"]', "JSON list"),
        ('["b", "a"]', "sorted"),
        ('["a", "a"]', "distinct"),
        ('["ab"]', "single characters"),
    ],
)
def test_char_load_rejects_damaged_files(tmp_path, content, match):
    path = tmp_path / "chars.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        CharTokenizer.load(path)
    with pytest.raises(ValueError, match="does not exist"):
        CharTokenizer.load(tmp_path / "missing.json")


# ------------------------------------------------------- the Tokenizer protocol


@pytest.mark.parametrize("which", ["char", "bpe", "gpt2"])
def test_every_tokenizer_satisfies_the_protocol(tmp_path, which):
    text = "Hello world! Hello there, world."
    tok = {
        "char": lambda: CharTokenizer.from_text(text),
        "bpe": lambda: BPETokenizer.train(text * 4, 270, GPT4_SPLIT_PATTERN),
        "gpt2": gpt2,
    }[which]()
    assert isinstance(tok, Tokenizer)
    ids = tok.encode(text)
    assert all(type(i) is int and 0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    back = type(tok).load(tok.save(tmp_path / "tok"))
    assert isinstance(back, Tokenizer)
    assert back.vocab_size == tok.vocab_size
    assert back.encode(text) == ids and back.decode(ids) == text
    if which != "char":  # tiktoken's name stays
        assert tok.n_vocab == tok.vocab_size
    assert gpt2().vocab_size == 50257


def test_protocol_rejects_what_lacks_a_member():
    class NoSave:
        vocab_size = 3

        def encode(self, text):
            return []

        def decode(self, ids):
            return ""

    assert not isinstance(NoSave(), Tokenizer)
    assert not isinstance(tiktoken_gpt2(), Tokenizer)  # no vocab_size, save or load


def test_the_bpe_merge_step_is_public_and_scans_left_to_right():
    ids = [1, 2, 3, 1, 2, 2]
    assert merge_pair(ids, 1, 2, 256) == [256, 3, 256, 2]
    assert ids == [1, 2, 3, 1, 2, 2]  # the input is not modified
    assert merge_pair([5, 5, 5], 5, 5, 300) == [300, 5]  # non-overlapping, first pair first
    assert merge_pair([], 1, 2, 256) == []
    assert merge_pair([1], 1, 2, 256) == [1]
