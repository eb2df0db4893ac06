"""Byte-level byte-pair encoding (BPE), the tokenizer family of GPT-2 and GPT-4.

Ids and merges
--------------
Text is UTF-8 encoded and every byte starts as its own token. Training then
repeats one step: find the most frequent adjacent pair of tokens and give it a
new id. ``merges`` maps each merged pair to the id it became; the i-th merge
makes id ``256 + i``, so a merge's id is also its priority when encoding.

In ``merges`` the ids 0..255 always stand for the raw byte values. GPT-2 numbers
its 256 byte tokens in another order (printable bytes first); ``byte_ids[b]``
holds the token id that byte ``b`` is finally emitted as. For a tokenizer
trained here ``byte_ids`` is the identity, and the two id spaces coincide.

File format (``save`` / ``load``)
---------------------------------
Plain UTF-8 text, one record per line::

    gptcore-bpe 1                       magic and format version
    pattern "<JSON string>"             the split regex
    bytes identity | bytes <256 ints>   byte_ids
    special <N>                         then N lines: "<JSON string>" <id>
    merges <M>                          then M lines: "<left> <right>"; line i makes id 256+i

Anything else, including a truncated file, raises ``ValueError`` naming the line
(the reader is gptcore.tokenizer.bpe_file).
"""

from __future__ import annotations

import heapq
import json
import operator
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import regex

from ..atomic import write_text_atomic
from .bpe_file import MAGIC, read_bpe_file
from .patterns import GPT4_SPLIT_PATTERN

if TYPE_CHECKING:
    import tiktoken

__all__ = ["BPETokenizer", "merge_pair"]

_IDENTITY = tuple(range(256))
# Chunk -> ids memo. Real text repeats the same chunks (" the", ",") over and
# over, so memoising makes encoding mostly a dictionary look-up; the bound keeps
# memory flat on huge, diverse inputs.
_CACHE_LIMIT = 1 << 17


def merge_pair(ids: list[int], left: int, right: int, new_id: int) -> list[int]:
    """One BPE merge step: replace every non-overlapping ``(left, right)`` in ``ids``.

    Scans left to right, so a run like ``a a a`` with the pair ``(a, a)`` becomes
    ``new_id a`` (the first two merge, the third is left alone), the order
    training and encoding both rely on. Returns a new list; ``ids`` is unchanged.

    >>> merge_pair([1, 2, 3, 1, 2], 1, 2, 256)
    [256, 3, 256]
    """
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == left and ids[i + 1] == right:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _splitter(pattern: str | None) -> Callable[[str], list[str]]:
    """The function that cuts text into chunks; no pattern keeps the text whole."""
    if not pattern:
        return lambda s: [s] if s else []
    try:
        return regex.compile(pattern).findall
    except regex.error as e:
        raise ValueError(f"pattern {pattern!r} is not a valid regex: {e}") from None


def _replace_surrogates(text: str) -> str:
    """Make ``text`` UTF-8-encodable the way tiktoken does: a surrogate pair spelt as
    two code points becomes its character, and a lone surrogate becomes U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _learn_merges(chunk_counts: Mapping[bytes, int], num_merges: int) -> list[tuple[int, int]]:
    """Learn up to ``num_merges`` merges from distinct chunks and their frequencies.

    Pair counts are kept up to date incrementally: a merge only revisits the
    chunks that contain the merged pair (found through ``where``), and a heap
    with lazy deletion finds the next most frequent pair without a full scan.
    Ties go to the smallest pair, so training is deterministic.
    """
    words = [list(chunk) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, word in enumerate(words):
        freq = freqs[wi]
        for pair in pairwise(word):
            counts[pair] += freq
            where[pair].add(wi)
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    while len(merges) < num_merges and heap:
        neg, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg:
            continue  # stale entry: the count changed after it was pushed
        new_id = 256 + len(merges)
        merges.append(pair)
        left, right = pair
        touched: set[tuple[int, int]] = set()
        for wi in where.pop(pair):
            word = words[wi]
            new_word = merge_pair(word, left, right, new_id)
            if len(new_word) == len(word):
                continue  # an earlier merge in this word already consumed the pair
            freq = freqs[wi]
            for p in pairwise(word):
                counts[p] -= freq
                touched.add(p)
            for p in pairwise(new_word):
                counts[p] += freq
                where[p].add(wi)
                touched.add(p)
            words[wi] = new_word
        for p in touched:
            c = counts[p]
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                del counts[p]
                where.pop(p, None)
        assert pair not in counts, "a merged pair cannot survive its own merge"
    return merges


class BPETokenizer:
    """A byte-level BPE tokenizer: train, encode, decode, save, load.

    >>> tok = BPETokenizer.train("aaabdaaabac", vocab_size=259, pattern=None)
    >>> dict(tok.merges)
    {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    >>> tok.encode("aaabdaaabac")
    [258, 100, 258, 97, 99]
    """

    def __init__(
        self,
        merges: Mapping[tuple[int, int], int] | Iterable[tuple[int, int]] = (),
        *,
        pattern: str | None = GPT4_SPLIT_PATTERN,
        special_tokens: Mapping[str, int] | None = None,
        byte_ids: Iterable[int] | None = None,
        name: str = "gptcore-bpe",
    ) -> None:
        """Build a tokenizer from known merges.

        ``merges`` is either a mapping ``(left, right) -> new_id`` whose ids are
        256, 257, ... in order, or just the ordered pairs. ``pattern=None``
        means no pre-splitting: the whole text is one chunk.
        """
        if isinstance(merges, Mapping):
            items = sorted(merges.items(), key=lambda kv: kv[1])
            for i, (pair, new_id) in enumerate(items):
                if new_id != 256 + i:
                    raise ValueError(
                        f"merge {pair} -> {new_id}: merged ids must be 256, 257, ... with no gaps "
                        f"(expected {256 + i}). Pass the merges in the order they were learned."
                    )
            pairs = [pair for pair, _ in items]
        else:
            pairs = [tuple(p) for p in merges]
        table: dict[tuple[int, int], int] = {}
        for i, pair in enumerate(pairs):
            new_id = 256 + i
            if len(pair) != 2 or not all(isinstance(t, int) and 0 <= t < new_id for t in pair):
                raise ValueError(
                    f"merge #{i} {pair!r} must be two ids that already exist (0 <= id < {new_id})"
                )
            if pair in table:
                raise ValueError(f"merge #{i} {pair!r} is listed twice")
            table[pair] = new_id
        self.merges: Mapping[tuple[int, int], int] = MappingProxyType(table)

        ids = tuple(_IDENTITY if byte_ids is None else (int(b) for b in byte_ids))
        if sorted(ids) != list(_IDENTITY):
            raise ValueError("byte_ids must be a permutation of 0..255 (one token id per byte)")
        # Keep the shared identity object so the hot path can skip the remap with `is`.
        self.byte_ids: tuple[int, ...] = _IDENTITY if ids == _IDENTITY else ids

        n = 256 + len(table)
        special = dict(special_tokens or {})
        for tok, tid in special.items():
            if not isinstance(tok, str) or not tok:
                raise ValueError(f"special token {tok!r} must be a non-empty string")
            if not isinstance(tid, int) or tid < n:
                raise ValueError(
                    f"special token {tok!r} has id {tid}; special ids must be >= {n}, "
                    "after every byte and merged token"
                )
        if len(set(special.values())) != len(special):
            raise ValueError("two special tokens share one id")
        self.special_tokens: Mapping[str, int] = MappingProxyType(special)
        self.pattern = pattern
        self.name = name
        self._split = _splitter(pattern)
        self._cache: dict[bytes, list[int]] = {}

    # ---------------------------------------------------------------- training
    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        pattern: str | None = GPT4_SPLIT_PATTERN,
        special_tokens: Mapping[str, int] | Iterable[str] | None = None,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256`` merges from ``text``.

        ``special_tokens`` may be names (they get the ids right after the
        merges) or a mapping name -> id. The special tokens do not count
        towards ``vocab_size``. If the text runs out of pairs early, training
        stops with fewer merges.
        """
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(
                f"vocab_size={vocab_size!r}: it must be an int >= 256 (the 256 byte tokens come first)"
            )
        split = _splitter(pattern)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _replace_surrogates(text)  # as encode() does
        chunk_counts = Counter(split(text))
        byte_counts: Counter[bytes] = Counter()
        for chunk, c in chunk_counts.items():
            byte_counts[chunk.encode("utf-8")] += c
        pairs = _learn_merges(byte_counts, vocab_size - 256)
        n = 256 + len(pairs)
        if isinstance(special_tokens, str):
            raise ValueError(
                f"special_tokens={special_tokens!r}: pass a list of names "
                f"([{special_tokens!r}]) or a dict name -> id, not one str"
            )
        if special_tokens is None:
            special: dict[str, int] = {}
        elif isinstance(special_tokens, Mapping):
            special = dict(special_tokens)
        else:
            special = {tok: n + i for i, tok in enumerate(special_tokens)}
        return cls(pairs, pattern=pattern, special_tokens=special)

    # ------------------------------------------------------------- properties
    @cached_property
    def vocab(self) -> Mapping[int, bytes]:
        """Token id -> the bytes it stands for (special tokens excluded)."""
        raw: dict[int, bytes] = {b: bytes([b]) for b in range(256)}
        for (left, right), new_id in self.merges.items():
            raw[new_id] = raw[left] + raw[right]
        out = {self.byte_ids[b]: raw[b] for b in range(256)}
        out.update((i, raw[i]) for i in range(256, 256 + len(self.merges)))
        return MappingProxyType(out)

    @property
    def vocab_size(self) -> int:
        """One more than the largest id, special tokens included (the ``Tokenizer`` protocol)."""
        return max([255 + len(self.merges) + 1, *(t + 1 for t in self.special_tokens.values())])

    @property
    def n_vocab(self) -> int:
        """``vocab_size`` under tiktoken's name, so code written for tiktoken works."""
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(name={self.name!r}, merges={len(self.merges)}, "
            f"special_tokens={len(self.special_tokens)}, n_vocab={self.n_vocab})"
        )

    # ---------------------------------------------------------------- encoding
    def _encode_chunk(self, chunk: bytes) -> list[int]:
        ids = list(chunk)
        merges = self.merges
        while len(ids) >= 2:
            # The pair learned earliest merges first: that is the order training applied them.
            best, best_id = None, None
            for pair in pairwise(ids):
                new_id = merges.get(pair)
                if new_id is not None and (best_id is None or new_id < best_id):
                    best, best_id = pair, new_id
            if best is None:
                break
            ids = merge_pair(ids, best[0], best[1], best_id)
        if self.byte_ids is not _IDENTITY:
            byte_ids = self.byte_ids
            ids = [byte_ids[i] if i < 256 else i for i in ids]
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` treating special-token strings as plain text.

        Lone surrogates (``"\\ud800"``), which have no UTF-8 form, are encoded as
        U+FFFD, exactly as tiktoken does; so for them ``decode(encode(s)) != s``.
        """
        if not isinstance(text, str):
            raise ValueError(f"encode() takes a str, got {type(text).__name__}; decode bytes first")
        try:
            return self._encode_ordinary(text)
        except UnicodeEncodeError:
            return self._encode_ordinary(_replace_surrogates(text))

    def _encode_ordinary(self, text: str) -> list[int]:
        cache = self._cache
        out: list[int] = []
        for chunk in self._split(text):
            key = chunk.encode("utf-8")
            ids = cache.get(key)
            if ids is None:
                ids = self._encode_chunk(key)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[key] = ids
            out.extend(ids)
        return out

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = frozenset(),
        disallowed_special: Literal["all"] | Collection[str] = "all",
    ) -> list[int]:
        """Encode ``text`` to token ids, with tiktoken's rules for special tokens.

        By default a special token's text (``"<|endoftext|>"``) inside ``text``
        raises ``ValueError``: user input must not be able to inject control
        tokens by accident. Pass ``allowed_special={"<|endoftext|>"}`` (or
        ``"all"``) to encode it as its special id, or
        ``disallowed_special=()`` to encode it as ordinary text.
        """
        if not isinstance(text, str):
            raise ValueError(f"encode() takes a str, got {type(text).__name__}; decode bytes first")
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(
                f"allowed_special names {sorted(unknown)}, which this tokenizer does not have; "
                f"its special tokens are {sorted(self.special_tokens)}"
            )
        disallowed = (
            set(self.special_tokens) - allowed
            if disallowed_special == "all"
            else set(disallowed_special)
        )
        for tok in disallowed:
            if tok in text:
                raise ValueError(
                    f"text contains the special token {tok!r}, which is disallowed. "
                    f"Pass allowed_special={{{tok!r}}} to encode it as a special token, or "
                    f"disallowed_special=() to encode it as plain text."
                )
        if not allowed:
            return self.encode_ordinary(text)
        # Longest first so that a special token that contains another one wins.
        special_re = regex.compile(
            "(" + "|".join(regex.escape(t) for t in sorted(allowed, key=len, reverse=True)) + ")"
        )
        out: list[int] = []
        for i, part in enumerate(special_re.split(text)):
            if i % 2:
                out.append(self.special_tokens[part])
            elif part:
                out.extend(self.encode_ordinary(part))
        return out

    # ---------------------------------------------------------------- decoding
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes behind ``ids``; special tokens become their UTF-8 text."""
        vocab = self.vocab
        inverse_special = {v: k.encode("utf-8") for k, v in self.special_tokens.items()}
        parts: list[bytes] = []
        for i in ids:
            part = vocab.get(i) if type(i) is int else None
            if part is None:
                try:
                    i = operator.index(i)  # also numpy and torch integers
                except TypeError:
                    raise ValueError(
                        f"token ids must be ints, got {i!r} ({type(i).__name__})"
                    ) from None
                part = vocab.get(i) or inverse_special.get(i)
                if part is None:
                    raise ValueError(
                        f"token id {i!r} is not in this tokenizer's vocabulary "
                        f"(valid ids are 0..{self.n_vocab - 1})"
                    )
            parts.append(part)
        return b"".join(parts)

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text. Bytes that are not valid UTF-8 (a token boundary can
        cut a character in half) become U+FFFD, as in tiktoken."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ----------------------------------------------------------------- interop
    def to_tiktoken(self) -> tiktoken.Encoding:
        """The same tokenizer as a ``tiktoken.Encoding``, for tiktoken's speed."""
        import tiktoken

        ranks = {b: i for i, b in self.vocab.items()}
        if len(ranks) != len(self.vocab):
            raise ValueError("two tokens decode to the same bytes, which tiktoken cannot represent")
        if self.pattern is None:
            raise ValueError("tiktoken needs a split pattern; this tokenizer has pattern=None")
        return tiktoken.Encoding(
            name=self.name,
            pat_str=self.pattern,
            mergeable_ranks=ranks,
            special_tokens=dict(self.special_tokens),
        )

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the tokenizer in the plain-text format above, atomically."""
        path = Path(path)
        lines = [MAGIC, "pattern " + json.dumps(self.pattern)]
        if self.byte_ids is _IDENTITY:
            lines.append("bytes identity")
        else:
            lines.append("bytes " + " ".join(map(str, self.byte_ids)))
        lines.append(f"special {len(self.special_tokens)}")
        lines += [f"{json.dumps(t)} {i}" for t, i in self.special_tokens.items()]
        lines.append(f"merges {len(self.merges)}")
        lines += [f"{a} {b}" for (a, b), _ in sorted(self.merges.items(), key=lambda kv: kv[1])]
        return write_text_atomic(path, "\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Read a file written by ``save``. Damage raises ValueError naming the line."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path} does not exist; pass the file written by BPETokenizer.save")
        pattern, byte_ids, special, pairs = read_bpe_file(path, check_pattern=_splitter)
        try:
            return cls(
                pairs, pattern=pattern, special_tokens=special, byte_ids=byte_ids, name=path.stem
            )
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
