"""Reading the plain-text file ``BPETokenizer.save`` writes (the format is in gptcore.tokenizer.bpe).

Every damage, a truncated file included, raises ValueError naming the file and
the line, so a hand-edited or half-copied tokenizer never loads as a different one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

__all__ = ["MAGIC", "read_bpe_file"]

MAGIC = "gptcore-bpe 1"  # the first line: magic and format version


def read_bpe_file(
    path: Path, check_pattern: Callable[[str | None], object]
) -> tuple[str | None, list[int] | None, dict[str, int], list[tuple[int, int]]]:
    """(pattern, byte_ids or None for the identity, special tokens, merges) from ``path``.

    ``check_pattern`` raises ValueError for a pattern the tokenizer cannot use.
    """
    r = _Lines(path)
    if r.take("the header line") != MAGIC:
        raise r.bad(f"the header {MAGIC!r} (is this a gptcore BPE file?)")
    pattern = _read_pattern(r, check_pattern)
    byte_ids = _read_byte_ids(r)
    special, special_line = _read_special(r)
    pairs = _read_merges(r)
    if r.pos != len(r.lines):
        r.pos += 1
        raise r.bad("the end of the file")
    n = 256 + len(pairs)
    for name, tid in special.items():
        if tid < n:
            raise r.bad(f"a special token id >= {n}, after every merged token", special_line[name])
    return pattern, byte_ids, special, pairs


def _is_uint(s: str) -> bool:
    """ASCII digits only: str.isdigit() alone also accepts "²", which int() rejects."""
    return s.isascii() and s.isdigit()


class _Lines:
    """A saved file's lines, taken one at a time; errors name the file and the line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = path.read_bytes()
        try:
            # Universal newlines, as read_text() would: a CRLF copy still loads.
            text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        except UnicodeDecodeError as e:
            line_no = data.count(b"\n", 0, e.start) + 1
            raise ValueError(
                f"{path}:{line_no}: not UTF-8 text ({e.reason} at byte {e.start}); "
                "is this a gptcore BPE file?"
            ) from None
        self.lines = text.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.pos = 0  # lines taken so far: the 1-based number of the last one

    def take(self, what: str) -> str:
        if self.pos >= len(self.lines):
            raise ValueError(
                f"{self.path}:{self.pos + 1}: file ends early; expected {what}. "
                "The file is truncated: save the tokenizer again."
            )
        self.pos += 1
        return self.lines[self.pos - 1]

    def bad(self, what: str, line_no: int | None = None) -> ValueError:
        n = self.pos if line_no is None else line_no
        return ValueError(f"{self.path}:{n}: expected {what}, got {self.lines[n - 1][:80]!r}")

    def count(self, keyword: str) -> int:
        line = self.take(f"'{keyword} <count>'")
        head, _, num = line.partition(" ")
        if head != keyword or not _is_uint(num):
            raise self.bad(f"'{keyword} <count>'")
        return int(num)


def _read_pattern(r: _Lines, check_pattern: Callable[[str | None], object]) -> str | None:
    line = r.take("the pattern line")
    if not line.startswith("pattern "):
        raise r.bad('pattern "<JSON string>"')
    try:
        pattern = json.loads(line[len("pattern ") :])
    except json.JSONDecodeError:
        raise r.bad('pattern "<JSON string>"') from None
    if pattern is not None and not isinstance(pattern, str):
        raise r.bad("a JSON string or null for the pattern")
    try:
        check_pattern(pattern)
    except ValueError:
        raise r.bad("a valid regex as the pattern") from None
    return pattern


def _read_byte_ids(r: _Lines) -> list[int] | None:
    fields = r.take("the bytes line").split(" ")
    if fields[0] != "bytes":
        raise r.bad("'bytes identity' or 'bytes' and 256 ids")
    if fields[1:] == ["identity"]:
        return None
    try:
        byte_ids = [int(x) for x in fields[1:]]
    except ValueError:
        raise r.bad("'bytes identity' or 'bytes' and 256 ids") from None
    if sorted(byte_ids) != list(range(256)):
        raise r.bad("256 ids forming a permutation of 0..255")
    return byte_ids


def _read_special(r: _Lines) -> tuple[dict[str, int], dict[str, int]]:
    """Special tokens (name -> id), and the line each was read from."""
    special: dict[str, int] = {}
    special_line: dict[str, int] = {}
    for _ in range(r.count("special")):
        line = r.take("a special token line")
        tok, _, tid = line.rpartition(" ")
        try:
            name = json.loads(tok)
            if not isinstance(name, str) or not name or not _is_uint(tid):
                raise ValueError
        except ValueError:
            raise r.bad('"<special token as JSON>" <id>') from None
        if name in special or int(tid) in special.values():
            raise r.bad("a special token whose name and id are not listed before")
        special[name], special_line[name] = int(tid), r.pos
    return special, special_line


def _read_merges(r: _Lines) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    for i in range(r.count("merges")):
        line = r.take(f"merge #{i}")
        a, _, b = line.partition(" ")
        if not (_is_uint(a) and _is_uint(b)) or int(a) >= 256 + i or int(b) >= 256 + i:
            raise r.bad(f"two ids below {256 + i} separated by a space")
        pairs.append((int(a), int(b)))
    if len(set(pairs)) != len(pairs):
        seen: set[tuple[int, int]] = set()
        for i, pair in enumerate(pairs):
            if pair in seen:
                raise r.bad("a pair that is not merged already", r.pos - len(pairs) + i + 1)
            seen.add(pair)
    return pairs
