"""``gptcore class collect``: submissions into ``submitted/<student>/<lesson>/``.

Also how grading copies a student's folder anywhere (:func:`copy_submission`):
plain files and folders only, never a link, a FIFO or a device. Every path
in a student's folder is opened without following links (``O_NOFOLLOW``,
relative to an open folder, ``dir_fd``) and checked once open, so a link
swapped in between a check and a copy is refused too: a notebook that is a
link to ``solutions/`` is never read.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
import time
import unicodedata
from pathlib import Path

from ..workspace import Course
from .report import ClassReport, StudentResult, class_config, progress_bar

__all__ = ["collect", "copy_submission", "is_regular", "normalize_student_id"]

# The whole string (fullmatch): "alice\n" is not "alice".
_STUDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
_SKIP_NAMES = {".ipynb_checkpoints", "__pycache__", ".DS_Store"}
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Non-blocking: opening a FIFO must not wait for a writer (it is refused once open).
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# A submission is a lesson's notebooks and a few files; beyond these it is a trap.
MAX_DEPTH = 24
MAX_ENTRIES = 20_000


def is_regular(path: Path) -> bool:
    """A plain file, not a link, a FIFO or a device."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def normalize_student_id(name: str) -> tuple[str | None, str]:
    """``(id, "")`` for a valid student id (NFKC-normalised), or ``(None, why)``."""
    sid = unicodedata.normalize("NFKC", name)
    if not _STUDENT_ID.fullmatch(sid):
        return None, "not a valid student id (letters, digits, ._@+-)"
    return sid, ""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a link"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a special file (FIFO, socket or device)"


class _Copy:
    """Copies a student's tree through open folders; remembers what it refused."""

    def __init__(self) -> None:
        self.refused: dict[str, str] = {}  # relative path -> why
        self.entries = 0

    def file(self, dfd: int | None, name: str, dest: Path, rel: str) -> bool:
        """Copy the plain file ``name`` (in the folder ``dfd``) to ``dest``."""
        try:
            fd = os.open(name, _O_FILE, dir_fd=dfd)
        except OSError as e:
            self.refused[rel] = "a link" if e.errno == errno.ELOOP else f"unreadable ({e.strerror})"
            return False
        with os.fdopen(fd, "rb") as src:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                self.refused[rel] = _kind(mode)
                return False
            with open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
        return True

    def tree(self, dfd: int, dest: Path, rel: str = "", depth: int = 0) -> None:
        """Copy the plain files and folders under the open folder ``dfd`` into ``dest``."""
        dest.mkdir(parents=True, exist_ok=True)
        try:
            names = sorted(os.listdir(dfd))
        except OSError as e:
            self.refused[rel or "."] = f"unreadable ({e.strerror})"
            return
        for name in names:
            path = f"{rel}{name}"
            if name in _SKIP_NAMES:
                continue
            self.entries += 1
            if self.entries > MAX_ENTRIES:
                self.refused[path] = f"past the first {MAX_ENTRIES} files"
                return
            try:
                mode = os.lstat(name, dir_fd=dfd).st_mode
            except OSError as e:
                self.refused[path] = f"unreadable ({e.strerror})"
                continue
            if stat.S_ISREG(mode):
                self.file(dfd, name, dest / name, path)
            elif not stat.S_ISDIR(mode):
                self.refused[path] = _kind(mode)
            elif depth >= MAX_DEPTH:
                self.refused[path] = f"nested deeper than {MAX_DEPTH} folders"
            else:
                try:
                    sub = os.open(name, _O_DIR, dir_fd=dfd)
                except OSError as e:
                    self.refused[path] = "a link" if e.errno == errno.ELOOP else f"unreadable ({e.strerror})"
                    continue
                try:
                    self.tree(sub, dest / name, f"{path}/", depth + 1)
                finally:
                    os.close(sub)


def _open_dir(path: Path) -> int:
    """An open folder, never through a link (``OSError`` otherwise)."""
    return os.open(path, _O_DIR)


def copy_submission(src: Path, dest: Path) -> dict[str, str]:
    """Copy a student's folder: plain files and folders only; return what was refused."""
    try:
        dfd = _open_dir(src)
    except OSError as e:
        raise ValueError(f"{src} is not a folder (a link?): {e.strerror}") from None
    copy = _Copy()
    try:
        copy.tree(dfd, dest)
    finally:
        os.close(dfd)
    return copy.refused


def collect(course: Course, src: str | Path, lesson: str, *, progress: bool = True) -> ClassReport:
    """Copy submissions into ``submitted/<student>/<lesson>/<notebook>.ipynb``.

    ``src`` holds one entry per student, named by the student id: a folder
    (nbgrader's ``<student>/<lesson>/<nb>.ipynb``, or the notebook and any
    files anywhere inside it: an LMS download or a JupyterHub home), or a
    single ``<student>.ipynb``. A lone notebook with another name is renamed
    to the lesson's. A student collected again is replaced. A link, a FIFO, a
    folder or an unreadable file where the notebook should be makes that
    student ``invalid`` (their earlier submission, if any, is kept).
    """
    start = time.perf_counter()
    cfg = class_config(course)
    names = cfg.lesson_notebooks(lesson)
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"{src} is not a folder of submissions")
    entries = []
    for name in sorted(os.listdir(src)):
        path = src / name
        try:
            mode = path.lstat().st_mode
        except OSError:
            continue
        if name.startswith(".") or not (
            stat.S_ISDIR(mode) or stat.S_ISLNK(mode) or name.endswith(".ipynb")
        ):
            continue  # stray files beside the students' entries
        entries.append((path, name.removesuffix(".ipynb") if name.endswith(".ipynb") else name))
    report = ClassReport("collect", lesson)
    bar = progress_bar(len(entries), f"collect {lesson}", progress)
    seen: dict[str, str] = {}  # casefolded id -> the entry that claimed it
    for entry, raw_id in entries:
        t0 = time.perf_counter()
        student, why = normalize_student_id(raw_id)
        result = StudentResult(student or raw_id, lesson, "ok")
        if student is None:
            result.status, result.message = "skipped", why
        elif student.casefold() in seen:
            result.status = "skipped"
            result.message = (
                f"{entry.name} is the same student id as {seen[student.casefold()]} once "
                "normalised (case, Unicode forms); rename one of them"
            )
        else:
            seen[student.casefold()] = entry.name
            try:
                result.status, result.message = _collect_one(
                    entry, cfg.submitted, student, lesson, names
                )
            except OSError as e:  # one student's folder must not stop the class
                result.status, result.message = "invalid", f"cannot be collected: {e}"
        result.seconds = time.perf_counter() - t0
        report.results.append(result)
        bar.update(1)
    bar.close()
    report.seconds = time.perf_counter() - start
    report.notes.append(f"submissions are in {cfg.submitted}")
    return report


def _collect_one(
    entry: Path, submitted: Path, student: str, lesson: str, names: list[str]
) -> tuple[str, str]:
    """Copy one student's entry to ``submitted/<student>/<lesson>``; (status, note)."""
    submitted.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".collect-", dir=submitted))
    try:
        copy, staged = _Copy(), work / "all"
        staged.mkdir()
        mode = entry.lstat().st_mode
        if entry.name.endswith(".ipynb"):
            if stat.S_ISDIR(mode):
                return "invalid", f"{entry.name} is a folder, not a notebook"
            copy.file(None, str(entry), staged / entry.name, entry.name)
        elif stat.S_ISLNK(mode):
            return "invalid", f"{entry.name} is a link, not a folder"
        else:
            dfd = _open_dir(entry)
            try:
                copy.tree(dfd, staged)
            finally:
                os.close(dfd)
        status, note = _arrange(staged, work / "final", copy.refused, lesson, names)
        if status == "ok":
            dest = submitted / student / lesson
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(dest, ignore_errors=True)
            (work / "final").rename(dest)
        return status, note
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _arrange(
    staged: Path, final: Path, refused: dict[str, str], lesson: str, names: list[str]
) -> tuple[str, str]:
    """From the staged copy (plain files only), the lesson's folder: (status, note)."""
    base = staged / lesson if (staged / lesson).is_dir() else staged
    prefix = f"{lesson}/" if base != staged else ""
    # Refused entries named like a notebook (a link to solutions/, a FIFO, a folder).
    bad = {
        Path(rel).stem: f"{rel} is {why}, not a notebook"
        for rel, why in refused.items()
        if rel.endswith(".ipynb") and rel.startswith(prefix) and ".ipynb_checkpoints" not in rel
    }
    for p in base.rglob("*.ipynb"):
        if p.is_dir() and ".ipynb_checkpoints" not in p.parts:
            bad[p.stem] = f"{p.relative_to(staged)} is a folder, not a notebook"
    if lesson in refused:
        return "invalid", f"{lesson} is {refused[lesson]}, not a folder"
    for name in names:
        if name in bad:
            return "invalid", bad[name]
    notebooks = sorted(
        p for p in base.rglob("*.ipynb") if p.is_file() and ".ipynb_checkpoints" not in p.parts
    )
    found = {p.stem: p for p in notebooks}
    home = found[names[0]].parent if names[0] in found else base
    home.rename(final)
    # (paths below now live in final/ when they were under home/)
    moved = {n: final / p.relative_to(home) if home in p.parents else p for n, p in found.items()}
    note = ""
    for name in names:
        if name in moved:
            if moved[name].parent != final:
                shutil.copyfile(moved[name], final / f"{name}.ipynb")
        elif len(names) == 1 and len(notebooks) == 1 and not bad:
            lone = next(iter(moved.values()))
            # Renamed, not duplicated: a second copy would be an unknown notebook.
            lone.rename(final / f"{name}.ipynb")
            note = f"{notebooks[0].name} -> {name}.ipynb"
    if not any((final / f"{n}.ipynb").is_file() for n in names):
        if bad:
            return "invalid", "; ".join(bad.values())
        return "missing", (
            "no notebook "
            + ", ".join(f"{n}.ipynb" for n in names)
            + (f" (found {', '.join(p.name for p in notebooks)})" if notebooks else " (empty)")
        )
    timestamp = staged / "timestamp.txt"
    if timestamp.is_file() and not (final / "timestamp.txt").exists():
        shutil.copyfile(timestamp, final / "timestamp.txt")
    if refused:
        skipped = ", ".join(sorted(refused)[:3]) + (", ..." if len(refused) > 3 else "")
        note = "; ".join(x for x in (note, f"not copied: {skipped}") if x)
    return "ok", note
