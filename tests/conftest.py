"""Shared test set-up: offline data, the course checkout, and a tiny synthetic course."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests never download: point gptcore.data at the read-only copy beside the checkout.
if "GPTCORE_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["GPTCORE_DATA_DIR"] = str(SHARED_DATA)
os.environ.setdefault("MPLBACKEND", "Agg")
# Lessons that train read their time budget from here; the graded parts do not depend on it.
os.environ.setdefault("GPTCORE_LESSON_SECONDS", "10")
# Lessons hand models on through gptcore's cache (lesson 6 saves, lessons 7 and 8 load): the
# tests use a cache of their own, one per run (shared by its xdist workers), never ~/.cache.
if "GPTCORE_CACHE_DIR" not in os.environ:
    _run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
    os.environ["GPTCORE_CACHE_DIR"] = os.path.join(
        tempfile.gettempdir(), f"gptcore-test-cache-{os.getuid()}-{_run}"
    )


@pytest.fixture(scope="session")
def course():
    from gptcore.course import Course

    return Course(ROOT)


@pytest.fixture(scope="session")
def shakespeare() -> str:
    from gptcore.data import load_text

    return load_text("tinyshakespeare")


# ----------------------------------------------------------------- a tiny course
def _cell(kind: str, source: str, **nbgrader):
    import nbformat

    cell = (
        nbformat.v4.new_code_cell(source)
        if kind == "code"
        else nbformat.v4.new_markdown_cell(source)
    )
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, "task": False, **nbgrader}
    return cell


def solution_cell(source: str, grade_id: str):
    return _cell("code", source, grade=False, grade_id=grade_id, locked=False, solution=True)


def test_cell(source: str, grade_id: str, points: int):
    return _cell(
        "code", source, grade=True, grade_id=grade_id, locked=True, points=points, solution=False
    )


test_cell.__test__ = False  # a helper, not a pytest test


DEMO_CELLS = [
    ("md", "# Demo lesson"),
    (
        "sol",
        "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION",
        "add",
    ),
    (
        "test",
        "assert add(1, 2) == 3\n### BEGIN HIDDEN TESTS\nassert add(-1, 1) == 0, 'negatives'\n### END HIDDEN TESTS",
        "add_test",
        2,
    ),
    (
        "sol",
        "def mul(a, b):\n    ### BEGIN SOLUTION\n    return a * b\n    ### END SOLUTION",
        "mul",
    ),
    ("test", "assert mul(2, 3) == 6", "mul_test", 3),
]


def write_notebook(path: Path, cells) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for spec in cells:
        if spec[0] == "md":
            nb.cells.append(_cell("markdown", spec[1]))
        elif spec[0] == "sol":
            nb.cells.append(solution_cell(spec[1], spec[2]))
        else:
            nb.cells.append(test_cell(spec[1], spec[2], spec[3]))
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def demo_course(tmp_path):
    """A one-lesson course (00_demo: add 2 points, mul 3 points), released."""
    from gptcore.course import Course
    from gptcore.course.release import release

    root = tmp_path / "course"
    (root / "solutions").mkdir(parents=True)
    (root / "nbgrader_config.py").write_text((ROOT / "nbgrader_config.py").read_text())
    write_notebook(root / "solutions" / "00_demo" / "00_demo.ipynb", DEMO_CELLS)
    course = Course(root)
    release(course)
    return course
