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

from .workspace import (
    Course,
    NbgraderError,
    check_success,
    copy_lesson_source,
    find_course,
    nbgrader_api,
)

__all__ = ["GradeReport", "QuestionResult", "format_report", "grade_notebook", "resolve_notebook"]

STUDENT = "learner"
_REASON_LIMIT = 400


@dataclass
class QuestionResult:
    grade_id: str
    points: float
    max_points: float
    reason: str = ""  # why points were lost; empty at full marks


@dataclass
class GradeReport:
    notebook: Path
    lesson: str
    status: Literal["graded", "invalid", "error"]
    questions: list[QuestionResult] = field(default_factory=list)
    message: str = ""  # for "invalid" / "error": what went wrong
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(q.points for q in self.questions)

    @property
    def max_total(self) -> float:
        return sum(q.max_points for q in self.questions)

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


def _grade_cells(nb: dict[str, Any]) -> list[tuple[str, float]]:
    out = []
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            out.append((meta["grade_id"], float(meta.get("points", 0))))
    return out


def _first_line_error(output: dict[str, Any]) -> str:
    ename, evalue = output.get("ename", "Error"), str(output.get("evalue", "")).strip()
    if ename == "NotImplementedError" and not evalue:
        return "NotImplementedError: this exercise is not done yet (its function still raises NotImplementedError)"
    if ename == "CellTimeoutError":
        return (
            "CellTimeoutError: the cell ran past the time limit (an infinite loop, or far too slow)"
        )
    if ename == "DeadKernelError":
        return "DeadKernelError: the kernel died while running this cell (out of memory, or the process exited)"
    text = f"{ename}: {evalue}" if evalue else ename
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 3] + "..."


_SEVERE = ("CellTimeoutError", "DeadKernelError")


def _errors(cell: dict[str, Any]) -> list[str]:
    """The cell's errors, the most telling first: a timeout shows up as the
    KeyboardInterrupt of the interrupted code followed by nbgrader's CellTimeoutError."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    errors.sort(key=lambda o: o.get("ename") not in _SEVERE)
    return [_first_line_error(o) for o in errors]


def _reasons(autograded: dict[str, Any]) -> dict[str, str]:
    """grade_id -> why the test cell failed, naming a failure in the exercise cell above."""
    reasons: dict[str, str] = {}
    last_solution_error = ""
    for cell in autograded.get("cells", []):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        errs = _errors(cell) if cell.get("cell_type") == "code" else []
        if meta.get("solution") and not meta.get("grade"):
            last_solution_error = errs[0] if errs else ""
        if meta.get("grade"):
            if errs:
                reason = errs[0]
                if last_solution_error and last_solution_error != reason:
                    reason += f" (the exercise cell above failed first: {last_solution_error})"
                reasons[meta["grade_id"]] = reason
            last_solution_error = ""
    return reasons


def _load_submission(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The notebook as JSON, or None and a reason it cannot be graded."""
    import nbformat

    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot read the notebook: {e}"
    try:
        nb = json.loads(raw)
    except json.JSONDecodeError as e:
        return None, (
            f"the notebook is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}). "
            "It was probably edited outside Jupyter; restore it from a checkpoint or a fresh copy."
        )
    if not isinstance(nb, dict) or nb.get("nbformat") != 4:
        version = nb.get("nbformat") if isinstance(nb, dict) else None
        return (
            None,
            f"the file is not an nbformat 4 notebook (nbformat={version!r}); save it from JupyterLab",
        )
    try:
        nbformat.validate(nbformat.from_dict(nb))
    except nbformat.ValidationError as e:
        return None, f"the notebook does not follow the nbformat schema: {e.message}"
    return nb, ""


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
    """Grade one learner notebook against its lesson's source, hidden tests included."""
    start = time.perf_counter()
    nb_path = resolve_notebook(path)
    course = course or find_course(nb_path.parent)
    lesson = nb_path.parent.name
    source_path = course.solutions / lesson / nb_path.name
    if not source_path.is_file():
        raise ValueError(
            f"{nb_path} does not belong to a lesson: {source_path} does not exist. Lesson notebooks "
            f"live in lessons/<lesson>/ with their original names; lessons are {course.lesson_names()}"
        )
    questions = [
        QuestionResult(gid, 0.0, pts)
        for gid, pts in _grade_cells(json.loads(source_path.read_text(encoding="utf-8")))
    ]
    report = GradeReport(nb_path, lesson, "graded", questions)

    def done(status: Literal["graded", "invalid", "error"], message: str = "") -> GradeReport:
        report.status, report.message = status, message
        if status != "graded":
            for q in report.questions:
                q.points, q.reason = 0.0, message
        report.seconds = time.perf_counter() - start
        return report

    nb, problem = _load_submission(nb_path)
    if nb is None:
        return done("invalid", problem)

    with nbgrader_api(cell_timeout=cell_timeout) as (api, course_dir):
        copy_lesson_source(course, lesson, course_dir)
        try:
            check_success(api.generate_assignment(lesson, force=True), "generate_assignment")
        except NbgraderError as e:
            # The course itself is broken, not the learner's notebook.
            raise RuntimeError(
                f"could not build lesson {lesson} from {course.solutions}: {e}"
            ) from None
        submitted = course_dir / "submitted" / STUDENT / lesson / nb_path.name
        submitted.parent.mkdir(parents=True)
        shutil.copyfile(nb_path, submitted)
        report.warnings += _validator_warnings(submitted)
        result = api.autograde(lesson, STUDENT, force=True, create=True)
        if not result.get("success"):
            log = (result.get("error") or result.get("log") or "").strip().splitlines()
            return done(
                "error", "nbgrader could not grade the notebook: " + (log[-1] if log else "no log")
            )
        autograded_path = course_dir / "autograded" / STUDENT / lesson / nb_path.name
        reasons = _reasons(json.loads(autograded_path.read_text(encoding="utf-8")))
        scores = _scores(api, lesson, nb_path.stem)
    for q in report.questions:
        score = scores.get(q.grade_id)
        q.points = float(score or 0.0)
        if q.points < q.max_points:
            q.reason = reasons.get(q.grade_id) or (
                "the test cell is missing from the notebook" if score is None else "the test failed"
            )
    return done("graded")


def _scores(api: Any, lesson: str, notebook_id: str) -> dict[str, float | None]:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(api.coursedir.db_url) as gb:
        try:
            nb = gb.find_submission_notebook(notebook_id, lesson, STUDENT)
        except MissingEntry:
            return {}
        return {g.name: g.score for g in nb.grades}


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
