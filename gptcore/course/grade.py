"""Self-grading: ``gptcore grade lessons/01_tokenization``.

The learner's notebook is graded exactly as an instructor's nbgrader would
grade it, hidden tests included, in a fresh kernel:

1. the lesson's source is copied from ``solutions/`` into a throwaway course
   directory and released there (this records every test cell, hidden tests
   included, in a throwaway gradebook);
2. the learner's notebook is checked (valid JSON, nbformat 4, edited test
   cells) with nbgrader's ``Validator``, then copied in as a submission;
3. ``NbGraderAPI.autograde`` restores the original test cells and runs the
   notebook top to bottom; each test cell that raises scores zero.

Nothing is written next to the learner's notebook or into ``solutions/``.
A notebook that cannot be graded (invalid JSON, wrong format) gets a report
that says why, never a traceback.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .cells import QuestionResult, Scored, failure_reasons, grade_cells, load_submission
from .workspace import Course, build_lesson, locate_lesson, nbgrader_api, read_grades

__all__ = ["GradeReport", "QuestionResult", "format_report", "grade_notebook", "resolve_notebook"]

STUDENT = "learner"


@dataclass
class GradeReport(Scored):
    notebook: Path
    lesson: str
    status: Literal["graded", "invalid", "error"]
    questions: list[QuestionResult] = field(default_factory=list)
    message: str = ""  # for "invalid" / "error": what went wrong
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "notebook": str(self.notebook),
            "lesson": self.lesson,
            "status": self.status,
            "message": self.message,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 2),
            "total": self.total,
            "max_total": self.max_total,
            "questions": [q.__dict__ for q in self.questions],
        }


def resolve_notebook(path: str | Path) -> Path:
    """A notebook path, or the one notebook inside a lesson folder."""
    p = Path(path)
    if p.is_dir():
        found = sorted(q for q in p.glob("*.ipynb") if not q.name.startswith("."))
        if len(found) != 1:
            raise ValueError(
                f"{p} holds {len(found)} notebooks ({', '.join(q.name for q in found) or 'none'}); "
                "pass the notebook's path instead"
            )
        return found[0]
    if not p.is_file():
        raise ValueError(f"{p} does not exist; pass a lesson folder or a notebook path")
    if p.suffix != ".ipynb":
        raise ValueError(f"{p} is not a notebook (.ipynb)")
    return p


def _validator_warnings(path: Path) -> list[str]:
    """Edited test cells and changed cell types, found by nbgrader's Validator
    (without executing: grading runs the notebook once, below)."""
    from nbgrader.preprocessors import CheckCellMetadata
    from nbgrader.validator import Validator

    validator = Validator()
    validator.preprocessors = [CheckCellMetadata]
    try:
        result = validator.validate(str(path))
    except Exception as e:  # a tampered notebook can break nbgrader's metadata checks
        return [f"nbgrader could not check the notebook's cell metadata: {type(e).__name__}: {e}"]
    warnings = []
    for cell in result.get("type_changed", []):
        warnings.append(
            f"a cell changed type from {cell['new_type']} to {cell['old_type']}; "
            "grading uses the original cell"
        )
    if result.get("changed"):
        warnings.append(
            f"{len(result['changed'])} locked test cell(s) were edited; grading restores the originals"
        )
    return warnings


def grade_notebook(
    path: str | Path,
    *,
    course: Course | None = None,
    cell_timeout: int = 120,
) -> GradeReport:
    """Grade one learner notebook against its lesson's source, hidden tests included.

    ``course`` is the course to grade against; by default it is found as
    ``locate_lesson`` says (``$GPTCORE_COURSE``, above the notebook, above the working
    folder, gptcore's checkout), so a copied or renamed lesson still grades.
    """
    start = time.perf_counter()
    nb_path = resolve_notebook(path)
    course, lesson, source_path = locate_lesson(nb_path, course)
    questions = [
        QuestionResult(gid, 0.0, pts)
        for gid, pts in grade_cells(json.loads(source_path.read_text(encoding="utf-8")))
    ]
    report = GradeReport(nb_path, lesson, "graded", questions)

    def done(status: Literal["graded", "invalid", "error"], message: str = "") -> GradeReport:
        report.status, report.message = status, message
        if status != "graded":
            for q in report.questions:
                q.points, q.reason = 0.0, message
        report.seconds = time.perf_counter() - start
        return report

    nb, problem = load_submission(nb_path)
    if nb is None:
        return done("invalid", problem)

    with nbgrader_api(cell_timeout=cell_timeout) as (api, course_dir):
        build_lesson(api, course, lesson, course_dir)
        # Under the source's name: nbgrader pairs a submission with its source by name.
        submitted = course_dir / "submitted" / STUDENT / lesson / source_path.name
        submitted.parent.mkdir(parents=True)
        shutil.copyfile(nb_path, submitted)
        report.warnings += _validator_warnings(submitted)
        result = api.autograde(lesson, STUDENT, force=True, create=True)
        if not result.get("success"):
            log = (result.get("error") or result.get("log") or "").strip().splitlines()
            return done(
                "error", "nbgrader could not grade the notebook: " + (log[-1] if log else "no log")
            )
        autograded_path = course_dir / "autograded" / STUDENT / lesson / source_path.name
        reasons = failure_reasons(json.loads(autograded_path.read_text(encoding="utf-8")))
        grades = read_grades(api.coursedir.db_url, lesson, STUDENT, [source_path.stem])
    scores = {gid: g["score"] for gid, g in grades.get(source_path.stem, {}).items()}
    for q in report.questions:
        score = scores.get(q.grade_id)
        q.points = float(score or 0.0)
        if q.points < q.max_points:
            q.reason = reasons.get(q.grade_id) or (
                "the test cell is missing from the notebook" if score is None else "the test failed"
            )
    return done("graded")


def format_report(report: GradeReport) -> str:
    """The table a learner reads: each question's points and why any were lost."""
    lines = [f"Lesson {report.lesson}: {report.notebook}"]
    if report.status != "graded":
        lines.append(f"NOT GRADED ({report.status}): {report.message}")
    width = max([len(q.grade_id) for q in report.questions] + [8])
    lines.append(f"  {'question':<{width}}  {'points':>9}  why points were lost")
    for q in report.questions:
        reason = "ok" if q.points >= q.max_points else q.reason
        lines.append(
            f"  {q.grade_id:<{width}}  {_pts(q.points):>4} / {_pts(q.max_points):<4}  {reason}"
        )
    lines.append(f"  {'total':<{width}}  {_pts(report.total):>4} / {_pts(report.max_total):<4}")
    lines += [f"warning: {w}" for w in report.warnings]
    lines.append(f"graded in {report.seconds:.1f} s, hidden tests included")
    return "\n".join(lines)


def _pts(x: float) -> str:
    return f"{x:g}"
