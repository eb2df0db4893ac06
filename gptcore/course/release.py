"""Regenerate ``lessons/`` from ``solutions/`` with nbgrader.

``gptcore release`` runs ``generate_assignment`` in a temporary course
directory and, only when every lesson succeeded, swaps each result into
``lessons/``. ``gptcore release --check`` regenerates and compares without
writing: CI uses it to fail when someone edited a lesson by hand or forgot to
regenerate.

A released notebook is exactly nbgrader's output plus ``metadata.gptcore``
(``{"course": ..., "lesson": ...}``): a learner's copy, renamed or moved out of
the checkout, still tells ``gptcore grade`` which lesson of which course it is.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .workspace import (
    METADATA_KEY,
    Course,
    check_success,
    copy_lesson_source,
    lesson_metadata,
    nbgrader_api,
)

__all__ = ["diff_release", "generate", "release"]


def generate(course: Course, lessons: Sequence[str] | None, out: Path) -> list[str]:
    """Generate the release of ``lessons`` (default: all) into ``out/<lesson>``."""
    names = list(lessons) if lessons else course.lesson_names()
    if not names:
        raise ValueError(f"no lessons found in {course.solutions}")
    with nbgrader_api() as (api, course_dir):
        for name in names:
            copy_lesson_source(course, name, course_dir)
            check_success(api.generate_assignment(name, force=True), f"generate_assignment {name}")
            shutil.copytree(course_dir / "release" / name, out / name)
            _label(out / name, lesson_metadata(course, name))
    return names


def _label(folder: Path, meta: dict[str, str]) -> None:
    """Write ``meta`` into ``metadata.gptcore`` of each released notebook in ``folder``."""
    import nbformat

    for path in sorted(folder.glob("*.ipynb")):
        # nbformat is the writer nbgrader used: the file changes by this key only.
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        nb.metadata[METADATA_KEY] = meta
        nbformat.write(nb, path)


def _tree_diff(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two folders (missing on either side included)."""

    def files(root: Path) -> set[str]:
        return (
            {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
            if root.is_dir()
            else set()
        )

    fa, fb = files(a), files(b)
    out = sorted(fa ^ fb)
    out += sorted(f for f in fa & fb if not filecmp.cmp(a / f, b / f, shallow=False))
    return out


def diff_release(
    course: Course, lessons: Sequence[str] | None, scratch: Path
) -> dict[str, list[str]]:
    """Per lesson, the files of ``lessons/`` that differ from a fresh release."""
    names = generate(course, lessons, scratch)
    return {n: d for n in names if (d := _tree_diff(scratch / n, course.lessons / n))}


def release(course: Course, lessons: Sequence[str] | None = None) -> list[str]:
    """Regenerate ``lessons/<lesson>`` for each lesson; nothing is written on failure."""
    import tempfile

    course.lessons.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=course.lessons, prefix=".release-") as tmp:
        staged = Path(tmp)
        names = generate(course, lessons, staged)
        for name in names:
            target = course.lessons / name
            old = staged / (name + ".old")
            if target.exists():
                os.replace(target, old)  # same filesystem: rename, never a partial copy
            os.replace(staged / name, target)
    return names
