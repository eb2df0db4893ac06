"""The kernel's writable space: bounded, off the host's disk, and disposable.

A grading worker (root) calls :func:`private_mounts` first thing: it then has
a mount namespace of its own. For each student it mounts a tmpfs on the
kernel's runtime folder (:func:`bounded_runtime_dir`), capped in size
(``Limits.scratch_bytes``) and in files (``Limits.files``, the tmpfs's
``nr_inodes``). The sandbox binds its ``scratch/`` as the kernel's ``/tmp``
(HOME inside it) and ``shm/`` as ``/dev/shm``; the runtime folder itself (the
connection file, the IPC sockets) is in the same tmpfs. So everything the
kernel can write shares one budget, never reaches the host's disk, and is
freed at once by detaching the mount (:func:`remove_runtime_dir`), whatever
the student left there (deep trees, read-only folders, odd names).

Without root (no mount of our own) the runtime folder is a plain folder in
the host's /tmp and the sandbox's /tmp a size-capped bubblewrap tmpfs with no
file-count cap; :func:`remove_tree` still removes whatever is left.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..sandbox import BOUNDED_MARKER, RUNTIME_BASE, RUNTIME_MARKER, Limits

__all__ = ["bounded_runtime_dir", "private_mounts", "remove_runtime_dir", "remove_tree"]

_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
_MNT_DETACH = 2


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def private_mounts() -> bool:
    """Give this process a mount namespace of its own (root only; False otherwise).

    Call it while the process has a single thread (``unshare`` refuses otherwise).
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    try:
        libc = _libc()
        if libc.unshare(_CLONE_NEWNS) != 0:
            return False
        # Private: our mounts must never propagate back to the host's namespace.
        return libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) == 0
    except (OSError, AttributeError):
        return False


def bounded_runtime_dir(tag: str, limits: Limits) -> Path:
    """A kernel runtime folder that is a tmpfs of its own (see the module docstring).

    Needs :func:`private_mounts`; raises ``OSError`` when the mount fails.
    """
    # (Not runtime_dir(): its marker would sit on the host's disk, under the mount.)
    path = Path(tempfile.mkdtemp(prefix=f"gptk-{tag}-", dir=RUNTIME_BASE))
    options = f"size={limits.scratch_bytes},nr_inodes={limits.files},mode=0755".encode()
    if _libc().mount(b"tmpfs", str(path).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options):
        err = ctypes.get_errno()
        remove_tree(path)
        raise OSError(err, f"cannot mount a tmpfs on {path}: {os.strerror(err)}")
    for sub in ("scratch", "shm"):
        (path / sub).mkdir()
        (path / sub).chmod(0o1777)
    (path / RUNTIME_MARKER).write_text(BOUNDED_MARKER)
    return path


def remove_runtime_dir(path: Path) -> None:
    """Remove a kernel's runtime folder, whatever the kernel left in it.

    A tmpfs is detached (lazily: even with a process still inside), which frees
    everything at once and leaves the empty folder on the host to remove.
    """
    if os.path.ismount(path):
        _libc().umount2(str(path).encode(), _MNT_DETACH)
    remove_tree(path)


def remove_tree(path: Path) -> None:
    """``rm -rf`` that a student's files cannot defeat: depth, modes, odd names.

    ``shutil.rmtree`` recurses in Python (a tree thousands of folders deep
    raises ``RecursionError``) and gives up on read-only folders; ``rm -rf``
    after ``chmod -R u+rwx`` handles both.
    """
    if not os.path.lexists(path):
        return
    try:
        shutil.rmtree(path, onerror=_make_writable_and_retry)
    except (OSError, RecursionError):
        pass
    if os.path.lexists(path):
        subprocess.run(["chmod", "-R", "u+rwx", "--", str(path)], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", "--", str(path)], capture_output=True, check=False)


def _make_writable_and_retry(func: Any, path: str, _exc: Any) -> None:
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
        func(path)
    except OSError:
        pass
