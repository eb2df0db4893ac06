"""Every lesson, released and graded end to end, as learners and instructors use it.

- lessons/ is exactly a fresh nbgrader release of solutions/;
- notebooks are committed without outputs;
- each solution earns full marks, each blank lesson earns 0 (NotImplementedError);
- one exercise done earns that exercise's points only;
- an answer that passes the visible tests but not the hidden ones loses points.
"""

from __future__ import annotations

import json

import nbformat
import pytest

from gptcore.course import Course
from gptcore.course.grade import format_report, grade_notebook
from gptcore.course.release import diff_release

from ..conftest import ROOT
from ..notebook_cells import graders_of, nbgrader_meta
from ..registry import LESSONS as REGISTRY
from ..registry import lesson_names

# tests/checks/test_contract.py holds that the registry lists every lesson of the course.
LESSONS = lesson_names()
WRONG = {e.name: e.wrong_caught_visible for e in REGISTRY if e.wrong_caught_visible}


def _submission(course, lesson, tmp_path, done: set[str], override: dict[str, str] | None = None):
    """The released lesson with the solutions of ``done`` filled in from solutions/."""
    name = f"{lesson}.ipynb"
    source = nbformat.read(course.solutions / lesson / name, as_version=4)
    answers = {
        nbgrader_meta(c)["grade_id"]: c.source
        for c in source.cells
        if nbgrader_meta(c).get("solution")
    }
    answers.update(override or {})
    nb = nbformat.read(course.lessons / lesson / name, as_version=4)
    for cell in nb.cells:
        gid = nbgrader_meta(cell).get("grade_id")
        if gid in done or gid in (override or {}):
            cell.source = answers[gid]
    path = tmp_path / lesson / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_there_are_lessons():
    assert "01_tokenization" in LESSONS


def test_lessons_match_a_fresh_release(course, tmp_path):
    assert diff_release(course, None, tmp_path) == {}, "run `gptcore release` (make lessons)"


@pytest.mark.parametrize("folder", ["solutions", "lessons"])
def test_notebooks_are_committed_without_outputs(folder):
    for path in sorted((ROOT / folder).glob("*/*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path


@pytest.mark.parametrize("lesson", LESSONS)
def test_solution_earns_full_marks(course, lesson):
    report = grade_notebook(course.solutions / lesson, course=course)
    assert report.status == "graded", report.message
    assert report.max_total >= 10, "each lesson is worth about 10-20 points"
    assert report.total == report.max_total, format_report(report)
    assert not report.warnings


@pytest.mark.parametrize("lesson", LESSONS)
def test_blank_lesson_earns_zero(course, lesson):
    report = grade_notebook(course.lessons / lesson, course=course)
    assert report.status == "graded" and report.total == 0, format_report(report)
    for q in report.questions:
        assert "NotImplementedError" in q.reason, (q.grade_id, q.reason)


@pytest.mark.parametrize("lesson", LESSONS)
def test_one_exercise_right_earns_only_its_points(course, lesson, tmp_path):
    source = nbformat.read(course.solutions / lesson / f"{lesson}.ipynb", as_version=4)
    first, its_test = next(iter(graders_of(source).items()))
    report = grade_notebook(_submission(course, lesson, tmp_path, {first}), course=course)
    got = {q.grade_id: q.points for q in report.questions}
    want = {q.grade_id: (q.max_points if q.grade_id == its_test else 0) for q in report.questions}
    assert got == want, format_report(report)


@pytest.mark.parametrize("lesson", sorted(WRONG))
def test_a_wrong_answer_loses_only_its_points(course, lesson, tmp_path):
    source = nbformat.read(course.solutions / lesson / f"{lesson}.ipynb", as_version=4)
    graders = graders_of(source)
    all_ids = set(graders)
    # One notebook run per lesson keeps CI short; test_contract.py shows every
    # table entry failing the visible checks and no other exercise's.
    for wrong_id, wrong_source in list(WRONG[lesson].items())[:1]:
        sub = _submission(course, lesson, tmp_path / wrong_id, all_ids, {wrong_id: wrong_source})
        report = grade_notebook(sub, course=course)
        lost = {q.grade_id for q in report.questions if q.points < q.max_points}
        assert lost == {graders[wrong_id]}, format_report(report)
        assert report.total < report.max_total


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS)
def test_a_class_grades_the_lesson(course, lesson, tmp_path):
    """`gptcore class` on the real lesson: sandboxed (where the machine allows), the
    test guard in place, a complete and a blank submission; feedback hides the hidden tests."""
    import shutil

    from gptcore.course import classroom

    klass = Course(tmp_path / "class")
    shutil.copytree(course.solutions / lesson, klass.solutions / lesson)
    shutil.copyfile(ROOT / "nbgrader_config.py", klass.root / "nbgrader_config.py")
    source = nbformat.read(course.solutions / lesson / f"{lesson}.ipynb", as_version=4)
    every = {nbgrader_meta(c)["grade_id"] for c in source.cells if nbgrader_meta(c).get("solution")}
    for student, done in (("complete", every), ("blank", set())):
        _submission(course, lesson, klass.root / "submitted" / student, done)
    # One worker: pytest already runs two tests at a time on the two cores.
    report = classroom.autograde(klass, lesson, workers=1, progress=False)
    got = report.by_student()
    assert got["complete"].status == "graded", report.summary()
    assert got["complete"].total == got["complete"].max_total >= 10, report.summary()
    assert (got["blank"].status, got["blank"].total) == ("graded", 0), report.summary()
    for r in report.results:
        assert not r.flags and not r.warnings, report.summary()
    fb = classroom.feedback(klass, lesson, progress=False)
    assert [r.status for r in fb.results] == ["ok", "ok"], fb.summary()
    secret = classroom.hidden_lines(klass, lesson)
    assert secret, "every lesson has hidden tests"
    for page in (klass.root / "feedback").rglob("*.html"):
        assert classroom.leaked_lines(page.read_text(), secret) == [], page
