"""Release and self-grading machinery, on a tiny synthetic course (fast)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from gptcore.course import NbgraderError, find_course, workspace
from gptcore.course.cells import grade_cells
from gptcore.course.grade import format_report, grade_notebook
from gptcore.course.release import diff_release, release
from gptcore.course.workspace import (
    COURSE_ENV,
    copy_lesson_source,
    locate_lesson,
    nbgrader_api,
)

from ..conftest import DEMO_CELLS, ROOT, write_notebook


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


# ------------------------------------------------ which course and lesson a notebook is graded in
def _no_course_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != COURSE_ENV}


def _copy_out(course, dest: Path, meta: dict | None = None) -> Path:
    """The released demo lesson saved as ``dest``; ``meta`` replaces ``metadata.gptcore``
    (``{}``: removed)."""
    nb = json.loads((course.lessons / "00_demo" / "00_demo.ipynb").read_text())
    if meta is not None:
        nb["metadata"].pop("gptcore")
        if meta:
            nb["metadata"]["gptcore"] = meta
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(nb))
    return dest


def test_release_is_nbgrader_output_plus_the_lesson(demo_course):
    with nbgrader_api() as (api, course_dir):
        copy_lesson_source(demo_course, "00_demo", course_dir)
        assert api.generate_assignment("00_demo", force=True)["success"]
        raw = (course_dir / "release" / "00_demo" / "00_demo.ipynb").read_text()
    released = (demo_course.lessons / "00_demo" / "00_demo.ipynb").read_text()
    nb = json.loads(released)
    assert nb["metadata"]["gptcore"] == {"course": "how-gpt-works", "lesson": "00_demo"}

    def text(d):  # how nbformat (and so nbgrader) writes a notebook
        return json.dumps(d, indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    assert text(nb) == released
    del nb["metadata"]["gptcore"]
    assert text(nb) == raw, "a released notebook is nbgrader's output plus metadata.gptcore"


def test_copied_renamed_lesson_grades_from_anywhere(demo_course, tmp_path, monkeypatch):
    """Folder and file renamed, outside any course, cwd elsewhere: gptcore's checkout is used."""
    sub = _submission(demo_course, tmp_path, {"add": ADD})
    copy = tmp_path / "Downloads" / "my lesson" / "demo (1).ipynb"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(sub.read_bytes())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.delenv(COURSE_ENV, raising=False)
    monkeypatch.setattr(workspace, "installed_course", lambda: demo_course)
    report = grade_notebook(copy.parent)
    assert (report.status, report.lesson, report.notebook) == ("graded", "00_demo", copy)
    assert {q.grade_id: q.points for q in report.questions} == {"add_test": 2, "mul_test": 0}


def test_course_search_order(demo_course, tmp_path, monkeypatch):
    monkeypatch.delenv(COURSE_ENV, raising=False)
    loose = _copy_out(demo_course, tmp_path / "loose" / "00_demo.ipynb")
    inside = demo_course.lessons / "00_demo" / "00_demo.ipynb"
    source = demo_course.solutions / "00_demo" / "00_demo.ipynb"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setattr(workspace, "installed_course", lambda: None)
    # above the notebook
    assert locate_lesson(inside) == (demo_course, "00_demo", source)
    # nowhere: one line saying where it looked and what to do
    with pytest.raises(ValueError) as e:
        locate_lesson(loose)
    msg = str(e.value)
    assert "\n" not in msg and "above the notebook: no course" in msg
    assert "above the working folder" in msg and "gptcore's own checkout: no course" in msg
    assert "--course DIR" in msg and f"{COURSE_ENV}=DIR" in msg
    # above the working folder
    monkeypatch.chdir(demo_course.lessons)
    assert locate_lesson(loose) == (demo_course, "00_demo", source)
    # gptcore's checkout: the real one is a course, without this lesson
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setattr(workspace, "installed_course", lambda: workspace.Course(ROOT))
    with pytest.raises(ValueError, match=r"gptcore's own checkout .*: no lesson 00_demo \(lessons"):
        locate_lesson(loose)
    monkeypatch.setattr(workspace, "installed_course", lambda: demo_course)
    assert locate_lesson(loose) == (demo_course, "00_demo", source)


def test_a_course_with_another_id_is_passed_over(demo_course, tmp_path, monkeypatch):
    """A folder above the notebook that is a course with the same lesson name, but another
    course id, is not the notebook's course: the search goes on, or, given, it is an error."""
    monkeypatch.delenv(COURSE_ENV, raising=False)
    other = tmp_path / "other"
    (other / "solutions" / "00_demo").mkdir(parents=True)
    (other / "solutions" / "00_demo" / "00_demo.ipynb").write_text("{}")
    (other / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'another-course'\n"
    )
    nb = _copy_out(demo_course, other / "work" / "00_demo" / "00_demo.ipynb")
    monkeypatch.setattr(workspace, "installed_course", lambda: demo_course)
    assert locate_lesson(nb)[0] == demo_course
    with pytest.raises(ValueError, match="the notebook is from course 'how-gpt-works'"):
        locate_lesson(nb, workspace.Course(other))
    theirs = _copy_out(
        demo_course, tmp_path / "00_demo.ipynb", {"course": "another-course", "lesson": "00_demo"}
    )
    with pytest.raises(
        ValueError, match="course 'how-gpt-works', the notebook is from course 'another-course'"
    ):
        locate_lesson(theirs, demo_course)
    assert locate_lesson(theirs, workspace.Course(other))[0] == workspace.Course(other)


def test_lesson_from_metadata_then_folder_then_file_name(demo_course, tmp_path):
    source = demo_course.solutions / "00_demo" / "00_demo.ipynb"

    def lesson_of(path: Path, meta: dict | None) -> tuple[str, Path]:
        _, lesson, src = locate_lesson(_copy_out(demo_course, tmp_path / path, meta), demo_course)
        return lesson, src

    meta = {"course": "how-gpt-works", "lesson": "00_demo"}
    assert lesson_of(Path("a/99_other/99_other.ipynb"), meta) == ("00_demo", source)
    assert lesson_of(Path("b/00_demo/mine.ipynb"), {}) == ("00_demo", source)
    assert lesson_of(Path("c/renamed/00_demo.ipynb"), {}) == ("00_demo", source)
    # a lesson that is a path is not trusted: the folder name is used instead
    assert lesson_of(Path("d/00_demo/x.ipynb"), {"lesson": "../00_demo"}) == ("00_demo", source)
    with pytest.raises(ValueError, match=r"does not belong to a lesson.*no lesson 99_other or x"):
        lesson_of(Path("e/99_other/x.ipynb"), {})


def test_wrong_course_env_is_a_one_line_error(demo_course, tmp_path):
    """GPTCORE_COURSE is what the learner asked for: a wrong one is an error, even where a
    search would have found the course."""
    env = _no_course_env()
    env[COURSE_ENV] = str(tmp_path / "nowhere")
    out = subprocess.run(
        [sys.executable, "-m", "gptcore.cli", "grade", str(demo_course.lessons / "00_demo")],
        capture_output=True,
        text=True,
        env=env,
        cwd=demo_course.root,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert f"{COURSE_ENV}={tmp_path / 'nowhere'}" in out.stderr and "not a course" in out.stderr
    assert "--course DIR" in out.stderr


def test_course_option_beats_the_env(demo_course, tmp_path, monkeypatch):
    nb = _copy_out(demo_course, tmp_path / "work" / "00_demo.ipynb")
    monkeypatch.setenv(COURSE_ENV, str(ROOT))
    with pytest.raises(ValueError, match=rf"{COURSE_ENV}=.*: no lesson 00_demo"):
        locate_lesson(nb)
    assert locate_lesson(nb, demo_course)[0] == demo_course
    monkeypatch.setenv(COURSE_ENV, str(demo_course.root))
    assert locate_lesson(nb)[0] == demo_course
    env = _no_course_env()
    env[COURSE_ENV] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-m", "gptcore.cli", "grade", str(nb), "--json",
         "--course", str(demo_course.root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["status"], report["lesson"], report["max_total"]) == ("graded", "00_demo", 5)


def test_copied_real_lesson_grades_from_outside_the_checkout(course, tmp_path):
    """A learner's lesson 1, its folder renamed, outside the checkout, graded with the
    command alone from another folder: the course is the checkout gptcore is installed from."""
    lesson = "01_tokenization"
    copy = tmp_path / "Downloads" / "lesson one" / f"{lesson}.ipynb"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(course.lessons / lesson / f"{lesson}.ipynb", copy)
    (tmp_path / "elsewhere").mkdir()
    out = subprocess.run(
        [str(Path(sys.executable).parent / "gptcore"), "grade", str(copy.parent), "--json"],
        capture_output=True,
        text=True,
        env=_no_course_env(),
        cwd=tmp_path / "elsewhere",
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    source = json.loads((course.solutions / lesson / f"{lesson}.ipynb").read_text())
    assert (report["status"], report["lesson"], report["total"]) == ("graded", lesson, 0)
    assert report["max_total"] == sum(p for _, p in grade_cells(source)) > 0
