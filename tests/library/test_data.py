"""gptcore.data: lookup order, checksums, atomic download, offline errors, the split."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gptcore import data

TS = data.REGISTRY["tinyshakespeare"]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No data dir, an empty cache, and a network that refuses every request."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "cache"))
    calls = []

    def refuse(url, timeout=None):
        calls.append(url)
        raise data.urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    return tmp_path, calls


def test_registry_entry_matches_the_shared_copy(shakespeare):
    raw = shakespeare.encode("utf-8")
    assert len(raw) == TS.size == 1_115_394
    assert hashlib.sha256(raw).hexdigest() == TS.sha256
    assert shakespeare.startswith("First Citizen:\nBefore we proceed any further")


def test_data_dir_comes_first(shakespeare):
    assert os.environ.get(data.DATA_DIR_ENV), "tests run with GPTCORE_DATA_DIR set"
    assert data.fetch("tinyshakespeare") == Path(os.environ[data.DATA_DIR_ENV]) / TS.filename


def test_offline_without_a_copy_says_how_to_get_it(isolated):
    _, calls = isolated
    with pytest.raises(ValueError) as e:
        data.load_text("tinyshakespeare")
    msg = str(e.value)
    assert "could not download" in msg and TS.sha256 in msg and data.DATA_DIR_ENV in msg
    assert calls == [TS.url]
    assert not any((isolated[0] / "cache").glob("*")), "a failed download leaves no file behind"


def test_no_download_flag(isolated):
    with pytest.raises(ValueError, match="not available locally"):
        data.fetch("tinyshakespeare", download=False)
    assert isolated[1] == []


class _Response:
    def __init__(self, payload: bytes):
        self.payload = payload

    def read(self, n=-1):
        chunk, self.payload = self.payload[:n], self.payload[n:]
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_is_checked_and_atomic(isolated, monkeypatch, shakespeare):
    tmp, _ = isolated
    good = shakespeare.encode("utf-8")
    monkeypatch.setattr(
        data.urllib.request, "urlopen", lambda url, timeout=None: _Response(b"corrupt" + good)
    )
    with pytest.raises(ValueError, match="sha256"):
        data.fetch("tinyshakespeare")
    cache = tmp / "cache"
    assert not list(cache.glob("*")), "a download with a bad checksum is never kept"

    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout=None: _Response(good))
    path = data.fetch("tinyshakespeare")
    assert path == cache / TS.filename and path.read_bytes() == good
    assert sorted(p.name for p in cache.iterdir()) == [TS.filename]
    # Second call: served from the cache, no network.
    monkeypatch.setattr(data.urllib.request, "urlopen", None)
    assert data.load_text("tinyshakespeare") == shakespeare


def test_corrupt_cached_file_is_an_error_not_a_silent_redownload(isolated):
    tmp, calls = isolated
    (tmp / "cache").mkdir()
    (tmp / "cache" / TS.filename).write_text("not shakespeare")
    with pytest.raises(ValueError, match="Delete the file"):
        data.fetch("tinyshakespeare")
    assert calls == []


def test_local_paths_and_unknown_names(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("héllo\n", encoding="utf-8")
    assert data.load_text(f) == "héllo\n"
    assert data.load_text(str(f)) == "héllo\n"
    with pytest.raises(ValueError, match="neither a registered corpus"):
        data.load_text(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown corpus"):
        data.fetch("wikipedia")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        data.load_text(bad)


def test_split_is_contiguous_and_deterministic(shakespeare):
    train, val = data.train_val_split(shakespeare)
    assert train + val == shakespeare
    assert len(train) == int(len(shakespeare) * 0.9)
    assert data.train_val_split(shakespeare) == (train, val)
    ids = list(range(10))
    assert data.train_val_split(ids, 0.2) == (list(range(8)), [8, 9])
    torch = pytest.importorskip("torch")
    t_train, t_val = data.train_val_split(torch.arange(10), 0.3)
    assert t_train.tolist() == list(range(7)) and t_val.tolist() == [7, 8, 9]


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fractions(frac):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        data.train_val_split("abcdefghij", frac)


def test_split_rejects_too_short():
    with pytest.raises(ValueError, match="too short"):
        data.train_val_split("a", 0.1)
