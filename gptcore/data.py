"""Text corpora: find, download (with a checksum) and split them.

``load_text(name)`` looks for a registered corpus in this order:

1. the directory named by ``$GPTCORE_DATA_DIR`` (tests and CI point it at a
   read-only copy, so they never touch the network);
2. the user cache, ``$GPTCORE_CACHE_DIR`` or ``$XDG_CACHE_HOME/gptcore``
   (default ``~/.cache/gptcore``);
3. a download from the registered URL into that cache. The sha256 is checked
   before the file is moved into place, so a failed or tampered download never
   leaves a bad file behind.

A file found in 1 or 2 is also checked: a wrong checksum is an error, never a
silent re-download. Offline with nothing cached, the error says where to put
the file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = [
    "DATA_DIR_ENV",
    "REGISTRY",
    "Corpus",
    "cache_dir",
    "fetch",
    "load_text",
    "train_val_split",
]

DATA_DIR_ENV = "GPTCORE_DATA_DIR"
CACHE_DIR_ENV = "GPTCORE_CACHE_DIR"


@dataclass(frozen=True)
class Corpus:
    name: str
    filename: str
    url: str
    sha256: str
    size: int  # bytes
    description: str


REGISTRY: dict[str, Corpus] = {
    c.name: c
    for c in [
        Corpus(
            name="tinyshakespeare",
            filename="tinyshakespeare.txt",
            url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            size=1_115_394,
            description="40,000 lines of Shakespeare's plays, from karpathy/char-rnn",
        ),
    ]
}


def cache_dir() -> Path:
    """Where downloaded corpora are kept."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "gptcore"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(path: Path, corpus: Corpus) -> Path:
    digest = _sha256(path)
    if digest != corpus.sha256:
        raise ValueError(
            f"{path} has sha256 {digest}, but {corpus.name} should have {corpus.sha256}. "
            f"Delete the file; gptcore will then download a fresh copy from {corpus.url}"
        )
    return path


def _download(corpus: Corpus, dest: Path, timeout: float = 30.0) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(corpus.url, timeout=timeout) as resp,
        ):
            while block := resp.read(1 << 20):
                out.write(block)
        _verified(tmp, corpus)
        os.replace(tmp, dest)  # atomic: readers see the old state or the whole new file
    except (urllib.error.URLError, OSError) as e:
        raise ValueError(
            f"could not download {corpus.name} from {corpus.url} ({e}). If this machine is "
            f"offline, copy {corpus.filename} (sha256 {corpus.sha256}) into {dest.parent} "
            f"or into a directory named by ${DATA_DIR_ENV}."
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch(name: str, *, download: bool = True) -> Path:
    """The local path of the registered corpus ``name``, downloading it if needed."""
    if name not in REGISTRY:
        raise ValueError(f"unknown corpus {name!r}; known corpora are {sorted(REGISTRY)}")
    corpus = REGISTRY[name]
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        candidate = Path(data_dir).expanduser() / corpus.filename
        if candidate.is_file():
            return _verified(candidate, corpus)
    cached = cache_dir() / corpus.filename
    if cached.is_file():
        return _verified(cached, corpus)
    if not download:
        raise ValueError(
            f"{corpus.name} is not available locally. Put {corpus.filename} into {cached.parent} "
            f"or set ${DATA_DIR_ENV}, or allow the download from {corpus.url}"
        )
    return _download(corpus, cached)


def load_text(name_or_path: str | os.PathLike[str]) -> str:
    """The text of a registered corpus (``"tinyshakespeare"``) or of a local UTF-8 file."""
    key = os.fspath(name_or_path)
    if key in REGISTRY:
        path = fetch(key)
    else:
        path = Path(key).expanduser()
        if not path.is_file():
            raise ValueError(
                f"{key!r} is neither a registered corpus ({', '.join(sorted(REGISTRY))}) "
                "nor an existing file"
            )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e}); convert it to UTF-8 first") from None


S = TypeVar("S", bound=Sequence)


def train_val_split(data: S, val_fraction: float = 0.1) -> tuple[S, S]:
    """Split a sequence (text, token list, array or tensor) into train and validation.

    The split is contiguous, not shuffled: the first ``1 - val_fraction`` is for
    training, the rest for validation. Shuffling would leak: neighbouring text
    overlaps in content, so a random split would let the model see validation
    sentences' context while training. Every lesson uses this same split, so
    n-gram and GPT losses are measured on the same held-out text.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r}: it must be strictly between 0 and 1")
    n = len(data)
    n_train = int(n * (1.0 - val_fraction))
    if n_train == 0 or n_train == n:
        raise ValueError(
            f"a sequence of length {n} is too short to split with val_fraction={val_fraction}; "
            "use more data"
        )
    return data[:n_train], data[n_train:]
