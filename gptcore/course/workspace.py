"""The course on disk, and nbgrader run in a throwaway course directory.

The repository is an nbgrader course: ``solutions/`` is nbgrader's source
directory and ``lessons/`` its release directory (see ``nbgrader_config.py``).
Release and grading never run nbgrader on the repository itself: they copy what
they need into a temporary course directory, run there, and copy results back
only on success. A failed ``nbgrader generate_assignment --force`` deletes its
target, and a grading run writes a gradebook and autograded copies; neither
should touch a learner's ``lessons/`` or the instructor's ``solutions/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Course", "NbgraderError", "find_course", "nbgrader_api"]

COURSE_ID = "how-gpt-works"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


class NbgraderError(RuntimeError):
    """nbgrader reported failure; the message carries its log."""


@dataclass(frozen=True)
class Course:
    """A checkout of the course: the folder that holds solutions/ and lessons/."""

    root: Path

    @property
    def solutions(self) -> Path:
        return self.root / "solutions"

    @property
    def lessons(self) -> Path:
        return self.root / "lessons"

    def lesson_names(self) -> list[str]:
        """Lessons that have a source folder (``NN_topic``), in order."""
        if not self.solutions.is_dir():
            return []
        return sorted(
            p.name for p in self.solutions.iterdir() if p.is_dir() and any(p.glob("*.ipynb"))
        )

    def source_notebook(self, lesson: str, notebook: str) -> Path:
        return self.solutions / lesson / notebook


def find_course(start: str | os.PathLike[str] | None = None) -> Course:
    """The course that contains ``start`` (or the working directory)."""
    here = Path(start or os.getcwd()).resolve()
    for d in [here, *here.parents]:
        if (d / "solutions").is_dir() and (d / "nbgrader_config.py").is_file():
            return Course(d)
    raise ValueError(
        f"no course found at or above {here}: expected a folder with solutions/ and "
        "nbgrader_config.py. Run from inside the course checkout or pass --course DIR."
    )


def _kernel_dir(base: Path) -> Path:
    """A Jupyter data dir whose ``python3`` kernel is this very interpreter.

    A learner may have an old user-level ``python3`` kernelspec pointing at a
    Python without gptcore; JUPYTER_PATH entries take precedence over it.
    """
    spec = base / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (gptcore grading)",
                "language": "python",
            }
        )
    )
    return base


@contextlib.contextmanager
def _grading_environment(tmp: Path) -> Iterator[None]:
    """Environment for nbgrader: alembic and the kernel found without an activated venv."""
    saved = {
        k: os.environ.get(k)
        for k in ("PATH", "JUPYTER_PATH", "MPLBACKEND", "GPTCORE_LESSON_SECONDS")
    }
    # nbgrader's Gradebook shells out to `alembic`, which lives next to this
    # interpreter; a venv used without `activate` does not have it on PATH.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    jupyter_path = str(_kernel_dir(tmp / "jupyter"))
    old_jp = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = jupyter_path + (os.pathsep + old_jp if old_jp else "")
    os.environ["MPLBACKEND"] = "Agg"  # grading is headless
    # Lessons that train for minutes shorten their run when graded; no graded
    # answer depends on it. A learner or instructor may still set it.
    os.environ.setdefault("GPTCORE_LESSON_SECONDS", "10")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def nbgrader_api(cell_timeout: int = 120, **extra: Any) -> Iterator[tuple[Any, Path]]:
    """An ``NbGraderAPI`` over a fresh temporary course directory, removed afterwards.

    Yields ``(api, course_dir)``; ``course_dir/source/<lesson>`` is where to put
    sources. ``extra`` sets further config as ``{"Class.trait": value}``.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="gptcore-nbgrader-") as tmp_name:
        tmp = Path(tmp_name)
        course_dir = tmp / "course"
        (course_dir / "source").mkdir(parents=True)
        c = Config()
        c.CourseDirectory.root = str(course_dir)
        c.CourseDirectory.course_id = COURSE_ID
        c.CourseDirectory.db_url = f"sqlite:///{course_dir / 'gradebook.db'}"
        c.Exchange.root = str(tmp / "exchange")
        c.ClearSolutions.code_stub = {"python": CODE_STUB}
        c.Execute.timeout = cell_timeout
        # ipykernel warns on stderr that TCP is unencrypted; it is loopback only.
        c.Execute.extra_arguments = ["--IPKernelApp.log_level=ERROR"]
        for key, value in extra.items():
            section, trait = key.rsplit(".", 1)
            setattr(c[section], trait, value)
        with _grading_environment(tmp), warnings.catch_warnings():
            # nbgrader 0.9 trips SQLAlchemy 2's autoflush warnings; they are harmless.
            warnings.filterwarnings("ignore", module="nbgrader")
            warnings.filterwarnings("ignore", message=".*not in session.*")
            api = NbGraderAPI(coursedir=CourseDirectory(config=c), config=c)
            yield api, course_dir


def check_success(result: dict[str, Any], what: str) -> None:
    """nbgrader's API never raises: it returns ``success``; turn failure into an error."""
    if not result.get("success"):
        detail = (result.get("error") or "") + "\n" + (result.get("log") or "")
        raise NbgraderError(f"nbgrader {what} failed:\n{detail.strip()}")


def copy_lesson_source(course: Course, lesson: str, course_dir: Path) -> Path:
    """Copy ``solutions/<lesson>`` into a temporary course's ``source/``."""
    src = course.solutions / lesson
    if not src.is_dir():
        raise ValueError(
            f"no lesson {lesson!r} in {course.solutions}; lessons are {course.lesson_names()}"
        )
    dest = course_dir / "source" / lesson
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return dest
