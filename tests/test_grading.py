"""Release and self-grading machinery, on a tiny synthetic course (fast)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from gptcore.course import NbgraderError, find_course
from gptcore.course.grade import format_report, grade_notebook
from gptcore.course.release import diff_release, release

from .conftest import DEMO_CELLS, ROOT, write_notebook


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _submission(course, tmp_path, replace: dict[str, str]) -> Path:
    """The released lesson with some solution cells' source replaced (by grade_id)."""
    nb = nbformat.read(course.lessons / "00_demo" / "00_demo.ipynb", as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in replace:
            cell.source = replace[gid]
    out = tmp_path / "work" / "00_demo" / "00_demo.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return out


ADD = "def add(a, b):\n    return a + b"
MUL = "def mul(a, b):\n    return a * b"


def test_release_strips_solutions_and_hidden_tests(demo_course):
    text = (demo_course.lessons / "00_demo" / "00_demo.ipynb").read_text()
    assert "raise NotImplementedError()" in text
    assert "return a + b" not in text and "negatives" not in text


def test_release_check_and_regenerate(demo_course, tmp_path):
    assert diff_release(demo_course, None, tmp_path / "a") == {}
    released = demo_course.lessons / "00_demo" / "00_demo.ipynb"
    released.write_text(released.read_text().replace("Demo lesson", "Edited by hand"))
    assert diff_release(demo_course, None, tmp_path / "b") == {"00_demo": ["00_demo.ipynb"]}
    release(demo_course)
    assert diff_release(demo_course, None, tmp_path / "c") == {}


def test_failed_release_keeps_the_previous_lessons(demo_course):
    before = _snapshot(demo_course.lessons)
    src = demo_course.solutions / "00_demo" / "00_demo.ipynb"
    nb = json.loads(src.read_text())
    nb["cells"][4]["metadata"]["nbgrader"]["grade_id"] = "add_test"  # duplicate grade id
    src.write_text(json.dumps(nb))
    with pytest.raises(NbgraderError, match="generate_assignment"):
        release(demo_course)
    assert _snapshot(demo_course.lessons) == before
    assert not [p for p in demo_course.lessons.iterdir() if p.name.startswith(".")]


def test_solution_full_marks_and_blank_lesson_zero(demo_course):
    full = grade_notebook(demo_course.solutions / "00_demo", course=demo_course)
    assert (full.status, full.total, full.max_total) == ("graded", 5, 5)
    blank = grade_notebook(demo_course.lessons / "00_demo", course=demo_course)
    assert (blank.status, blank.total, blank.max_total) == ("graded", 0, 5)
    assert all("NotImplementedError" in q.reason for q in blank.questions)
    table = format_report(blank)
    assert "add_test" in table and "0 / 5" in table


def test_partial_credit_and_hidden_tests(demo_course, tmp_path):
    # add only passes the visible test: a - b gives 3 for (1, 2)? no: use abs.
    sub = _submission(
        demo_course, tmp_path, {"add": "def add(a, b):\n    return abs(a) + abs(b)", "mul": MUL}
    )
    report = grade_notebook(sub, course=demo_course)
    scores = {q.grade_id: q.points for q in report.questions}
    assert scores == {"add_test": 0, "mul_test": 3}
    assert "negatives" in report.questions[0].reason, (
        "the hidden test's message reaches the learner"
    )


def test_grading_writes_nothing_into_the_course(demo_course, tmp_path):
    before = _snapshot(demo_course.root)
    sub = _submission(demo_course, tmp_path, {"add": ADD})
    work_before = _snapshot(sub.parent)
    grade_notebook(sub, course=demo_course)
    grade_notebook(demo_course.lessons / "00_demo", course=demo_course)
    assert _snapshot(demo_course.root) == before
    assert _snapshot(sub.parent) == work_before


def test_invalid_json_is_reported_not_raised(demo_course, tmp_path):
    bad = tmp_path / "x" / "00_demo" / "00_demo.ipynb"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"cells": [')
    report = grade_notebook(bad, course=demo_course)
    assert report.status == "invalid" and "not valid JSON" in report.message
    assert report.total == 0 and report.max_total == 5
    assert "NOT GRADED" in format_report(report)


def test_wrong_nbformat_is_reported(demo_course, tmp_path):
    bad = tmp_path / "y" / "00_demo" / "00_demo.ipynb"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": []}))
    report = grade_notebook(bad, course=demo_course)
    assert report.status == "invalid" and "nbformat 4" in report.message


def test_infinite_loop_is_reported_within_the_timeout(demo_course, tmp_path):
    sub = _submission(
        demo_course, tmp_path, {"add": "def add(a, b):\n    while True:\n        pass", "mul": MUL}
    )
    report = grade_notebook(sub, course=demo_course, cell_timeout=5)
    scores = {q.grade_id: q for q in report.questions}
    assert scores["add_test"].points == 0 and "CellTimeoutError" in scores["add_test"].reason
    assert scores["mul_test"].points == 3, "cells after the timeout still run"
    assert report.seconds < 60


def test_edited_test_cells_are_restored_and_flagged(demo_course, tmp_path):
    sub = _submission(demo_course, tmp_path, {"add_test": "pass", "mul_test": "pass"})
    report = grade_notebook(sub, course=demo_course)
    assert report.total == 0, "grading uses the original test cells"
    assert any("edited" in w for w in report.warnings)


def test_bad_paths_are_value_errors(demo_course, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        grade_notebook(tmp_path / "nope.ipynb", course=demo_course)
    stray = write_notebook(tmp_path / "99_other" / "99_other.ipynb", DEMO_CELLS)
    with pytest.raises(ValueError, match="does not belong to a lesson"):
        grade_notebook(stray, course=demo_course)
    with pytest.raises(ValueError, match="no course found"):
        find_course(tmp_path)


def test_cli_grades_without_an_activated_venv(demo_course):
    """nbgrader's gradebook shells out to `alembic`; it must be found with a bare PATH."""
    exe = Path(sys.executable).parent / "gptcore"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PATH")}
    env["PATH"] = "/usr/bin:/bin"
    out = subprocess.run(
        [str(exe), "grade", str(demo_course.lessons / "00_demo"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=demo_course.root,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["status"] == "graded" and report["total"] == 0 and report["max_total"] == 5


def test_cli_user_errors_are_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "gptcore.cli", "grade", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "does not exist" in out.stderr
