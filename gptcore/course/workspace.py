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

__all__ = [
    "COURSE_ENV",
    "METADATA_KEY",
    "Course",
    "NbgraderError",
    "build_lesson",
    "check_success",
    "choose_course",
    "copy_lesson_source",
    "fast_alembic_version",
    "find_course",
    "installed_course",
    "kernel_dir",
    "lesson_metadata",
    "locate_lesson",
    "nbgrader_api",
    "quiet_gradebook",
    "read_grades",
    "read_lesson_metadata",
]

COURSE_ID = "how-gpt-works"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
# The course folder, for a learner whose lesson lives outside the checkout.
COURSE_ENV = "GPTCORE_COURSE"
# ``metadata.gptcore`` of a released notebook: {"course": <course id>, "lesson": <lesson>}.
# A copied or renamed lesson still says which lesson it is, and of which course.
METADATA_KEY = "gptcore"


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

    def is_course(self) -> bool:
        """Whether ``root`` is a course: it holds solutions/ and nbgrader_config.py."""
        return self.solutions.is_dir() and (self.root / "nbgrader_config.py").is_file()

    @property
    def course_id(self) -> str:
        """``CourseDirectory.course_id`` of nbgrader_config.py (``COURSE_ID`` if it sets none)."""
        from traitlets.config import Config
        from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

        try:
            cfg = PyFileConfigLoader("nbgrader_config.py", path=str(self.root)).load_config()
        except ConfigFileNotFound:
            cfg = Config()
        except Exception as e:  # the config is Python: any error in it is the course's
            raise ValueError(
                f"{self.root / 'nbgrader_config.py'} does not load ({type(e).__name__}: {e}); "
                "fix it or point --course at another course"
            ) from None
        return str(cfg.get("CourseDirectory", {}).get("course_id") or COURSE_ID)


def find_course(start: str | os.PathLike[str] | None = None) -> Course:
    """The course that contains ``start`` (or the working directory)."""
    here = Path(start or os.getcwd()).resolve()
    found = _course_above(here)
    if found is None:
        raise ValueError(
            f"no course found at or above {here}: expected a folder with solutions/ and "
            f"nbgrader_config.py. Run from inside the course checkout, pass --course DIR or set "
            f"{COURSE_ENV}=DIR."
        )
    return found


def _course_above(here: Path) -> Course | None:
    for d in [here, *here.parents]:
        if Course(d).is_course():
            return Course(d)
    return None


def choose_course(given: str | os.PathLike[str] | None = None) -> Course:
    """The course a command works on: ``given`` (``--course``), else ``$GPTCORE_COURSE``,
    else the course at or above the working directory."""
    chosen = given or os.environ.get(COURSE_ENV)
    return Course(Path(chosen).resolve()) if chosen else find_course()


def installed_course() -> Course | None:
    """The checkout this gptcore is imported from, if it is a course.

    ``make setup`` installs gptcore editable, so for every learner set up by make this
    is their checkout; from a wheel it is site-packages, which holds no course.
    """
    import gptcore

    course = Course(Path(gptcore.__file__).resolve().parents[1])
    return course if course.is_course() else None


def lesson_metadata(course: Course, lesson: str) -> dict[str, str]:
    """What ``gptcore release`` writes into ``metadata.gptcore`` of each released notebook."""
    return {"course": course.course_id, "lesson": lesson}


def read_lesson_metadata(notebook: Path) -> dict[str, str]:
    """``metadata.gptcore`` of a notebook, keeping only well-formed names; empty when the
    notebook has none or is not readable JSON (grading reports that later, as a grade)."""
    try:
        meta = json.loads(notebook.read_text(encoding="utf-8"))["metadata"][METADATA_KEY]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(meta, dict):
        return {}
    # The lesson becomes a folder name under solutions/: never a path.
    return {k: meta[k] for k in ("course", "lesson") if _plain_name(meta.get(k))}


def _plain_name(v: object) -> bool:
    return isinstance(v, str) and bool(v) and not v.startswith(".") and Path(v).name == v


def _lesson_source(
    course: Course, lessons: list[str], notebook: Path, course_id: str | None
) -> Path | str:
    """The source notebook ``notebook`` is graded against in ``course``, or why there is none."""
    if not course.is_course():
        return "not a course (no solutions/ and nbgrader_config.py)"
    if course_id and course.course_id != course_id:
        return f"course {course.course_id!r}, the notebook is from course {course_id!r}"
    for lesson in lessons:
        folder = course.solutions / lesson
        if not folder.is_dir():
            continue
        if (folder / notebook.name).is_file():
            return folder / notebook.name
        sources = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
        if len(sources) == 1:  # a renamed copy of a one-notebook lesson
            return sources[0]
        return f"lesson {lesson} has no notebook {notebook.name}"
    return f"no lesson {' or '.join(lessons)} (lessons are {', '.join(course.lesson_names())})"


def _course_candidates(notebook: Path, given: Course | None) -> Iterator[tuple[str, Course | None]]:
    """Where a notebook's course may be, in the order searched: (where, course or None)."""
    if given is not None:
        yield "the given course", given
        return
    env = os.environ.get(COURSE_ENV)
    if env:
        yield f"{COURSE_ENV}={env}", Course(Path(env).resolve())
        return
    yield "above the notebook", _course_above(notebook.resolve().parent)
    yield f"above the working folder {Path.cwd()}", _course_above(Path.cwd().resolve())
    yield "gptcore's own checkout", installed_course()


def locate_lesson(notebook: Path, course: Course | None = None) -> tuple[Course, str, Path]:
    """``(course, lesson, source notebook)`` that ``notebook`` is graded against.

    The lesson is ``metadata.gptcore.lesson`` (written by ``gptcore release``), else the
    notebook's folder name, else its file name. The course is ``course`` (``--course``),
    else ``$GPTCORE_COURSE``; these are what was asked for, so a mismatch is an error.
    Otherwise the first course holding that lesson (and the notebook's course id) among:
    the one above the notebook, the one above the working folder, and the checkout gptcore
    is imported from. A learner's copy of a lesson is thus graded from anywhere.
    """
    meta = read_lesson_metadata(notebook)
    lessons = [meta["lesson"]] if "lesson" in meta else [notebook.parent.name, notebook.stem]
    lessons = [n for i, n in enumerate(lessons) if _plain_name(n) and n not in lessons[:i]]
    looked, seen = [], set()
    for where, found in _course_candidates(notebook, course):
        if found is None:
            looked.append(f"{where}: no course")
            continue
        if found.root in seen:
            continue
        seen.add(found.root)
        source = _lesson_source(found, lessons, notebook, meta.get("course"))
        if isinstance(source, Path):
            return found, source.parent.name, source
        looked.append(f"{where} {found.root}: {source}")
    raise ValueError(
        f"{notebook} does not belong to a lesson of a course found ({'; '.join(looked)}). "
        f"Pass --course DIR or set {COURSE_ENV}=DIR, DIR being the course checkout "
        "(the folder with solutions/ and nbgrader_config.py)"
    )


def kernel_dir(base: Path) -> Path:
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


def _alembic_on_path() -> None:
    """nbgrader's Gradebook shells out to `alembic`, which lives next to this
    interpreter; a venv used without `activate` does not have it on PATH."""
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


@contextlib.contextmanager
def _quiet_nbgrader() -> Iterator[None]:
    """nbgrader 0.9 trips SQLAlchemy 2's autoflush warnings; they are harmless."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="nbgrader")
        warnings.filterwarnings("ignore", message=".*not in session.*")
        yield


@contextlib.contextmanager
def quiet_gradebook() -> Iterator[None]:
    """Where nbgrader's ``Gradebook`` opens without a warning: alembic found, warnings off."""
    saved = os.environ.get("PATH", "")
    _alembic_on_path()
    try:
        with _quiet_nbgrader():
            yield
    finally:
        os.environ["PATH"] = saved


def fast_alembic_version() -> None:
    """nbgrader runs the ``alembic heads`` command (seconds) for every new gradebook
    (a grading worker makes one per student): ask alembic in-process instead, the same answer."""
    import nbgrader
    import nbgrader.api

    try:
        from alembic.script import ScriptDirectory

        folder = os.path.join(os.path.dirname(nbgrader.__file__), "alembic")
        head = ScriptDirectory(folder).get_current_head()
    except Exception:
        return
    if head:
        nbgrader.api.get_alembic_version = lambda: head


@contextlib.contextmanager
def _grading_environment(tmp: Path) -> Iterator[None]:
    """Environment for nbgrader: alembic and the kernel found without an activated venv."""
    saved = {
        k: os.environ.get(k)
        for k in ("PATH", "JUPYTER_PATH", "MPLBACKEND", "GPTCORE_LESSON_SECONDS")
    }
    _alembic_on_path()
    jupyter_path = str(kernel_dir(tmp / "jupyter"))
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
        with _grading_environment(tmp), _quiet_nbgrader():
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


def build_lesson(api: Any, course: Course, lesson: str, course_dir: Path, *, into: str = "") -> None:
    """Release ``lesson`` from ``course`` in a temporary course, recording it in
    that course's gradebook (``into``: the URL of that gradebook, for the message).

    A lesson that does not build is the course's fault, never a learner's: this
    raises ``RuntimeError`` naming the lesson, not a grading outcome.
    """
    copy_lesson_source(course, lesson, course_dir)
    try:
        check_success(api.generate_assignment(lesson, force=True), "generate_assignment")
    except NbgraderError as e:
        if into:
            raise RuntimeError(f"could not record lesson {lesson} in {into}: {e}") from None
        raise RuntimeError(f"could not build lesson {lesson} from {course.solutions}: {e}") from None


def read_grades(
    db_url: str, lesson: str, student: str, notebooks: list[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """notebook -> grade_id -> ``score``, ``auto_score``, ``needs_manual_grade``, from a
    gradebook; a notebook the student has no submission of is left out."""
    from nbgrader.api import Gradebook, MissingEntry

    grades: dict[str, dict[str, dict[str, Any]]] = {}
    with quiet_gradebook(), Gradebook(db_url) as gb:
        for name in notebooks:
            try:
                snb = gb.find_submission_notebook(name, lesson, student)
            except MissingEntry:
                continue
            grades[name] = {
                g.name: {
                    "score": g.score,
                    "auto_score": g.auto_score,
                    "needs_manual_grade": bool(g.needs_manual_grade),
                }
                for g in snb.grades
            }
    return grades
