"""Merging a worker's answer into the real gradebook and ``autograded/``.

Only the parent process writes the class's gradebook (through nbgrader's
``Gradebook`` API), one student at a time; workers grade into throwaway ones.
"""

from __future__ import annotations

import shutil
from typing import Any

from ..cells import QuestionResult
from ..workspace import build_lesson, fast_alembic_version, nbgrader_api, quiet_gradebook
from .collect import copy_submission
from .pool import Task
from .report import OK_STATUSES, ClassConfig, StudentResult

__all__ = ["max_scores", "merge_result", "register_assignment"]


def register_assignment(cfg: ClassConfig, lesson: str) -> None:
    """Record the lesson (cells, points, hidden tests) in the real gradebook, as
    ``nbgrader generate_assignment`` does, from a throwaway copy of solutions/."""
    fast_alembic_version()
    with nbgrader_api(**cfg.gradebook) as (api, course_dir):
        build_lesson(api, cfg.course, lesson, course_dir, into=cfg.db_url)


def max_scores(cfg: ClassConfig, lesson: str) -> dict[str, dict[str, float]]:
    """notebook -> grade cell -> max points, from the real gradebook."""
    from nbgrader.api import Gradebook

    with quiet_gradebook(), Gradebook(cfg.db_url, cfg.course_id) as gb:
        a = gb.find_assignment(lesson)
        return {nb.name: {c.name: float(c.max_score) for c in nb.grade_cells} for nb in a.notebooks}


def merge_result(
    cfg: ClassConfig,
    lesson: str,
    maxima: dict[str, dict[str, float]],
    task: Task,
    raw: dict[str, Any],
) -> StudentResult:
    """Turn a worker's answer into a result, the gradebook and autograded/ files."""
    result = StudentResult(
        task.student,
        lesson,
        raw.get("status", "error"),
        message=raw.get("message", ""),
        warnings=raw.get("warnings", []),
        flags=raw.get("flags", []),
        seconds=raw.get("seconds", 0.0),
    )
    grades: dict[str, dict[str, dict[str, Any]]] = raw.get("grades", {})
    reasons: dict[str, str] = raw.get("reasons", {})
    for nb, cells in sorted(maxima.items()):
        for gid, max_score in cells.items():
            g = grades.get(nb, {}).get(gid)
            points = float((g or {}).get("auto_score") or 0.0)
            reason = ""
            if points < max_score:
                reason = reasons.get(gid) or (
                    result.message
                    if result.status not in OK_STATUSES
                    else "the test failed"
                    if g
                    else "the test cell did not run"
                )
            result.questions.append(QuestionResult(gid, points, max_score, reason))
    _record(cfg, lesson, task.student, result, grades)
    _keep_autograded(cfg, lesson, task)
    return result


def _keep_autograded(cfg: ClassConfig, lesson: str, task: Task) -> None:
    """``autograded/<student>/<lesson>/``: the submission with the graded notebooks."""
    dest = cfg.autograded / task.student / lesson
    produced = task.result_dir / "autograded"
    if produced.is_dir():
        tmp = dest.with_name(f".{dest.name}.writing")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        copy_submission(task.submission, tmp)
        for nb in produced.glob("*.ipynb"):
            shutil.copyfile(nb, tmp / nb.name)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    else:  # no autograded copy: stale feedback must not be regenerated from an old one
        shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(task.result_dir, ignore_errors=True)


def _record(
    cfg: ClassConfig,
    lesson: str,
    student: str,
    result: StudentResult,
    grades: dict[str, dict[str, dict[str, Any]]],
) -> None:
    """Merge one student's grades into the real gradebook (nbgrader's API).

    Manual scores an instructor already gave are kept, as nbgrader does. A
    student who could not be graded gets zeros and a flag.
    """
    from nbgrader.api import Gradebook
    from nbgrader.coursedir import CourseDirectory

    timestamp = CourseDirectory().get_existing_timestamp(str(cfg.submitted / student / lesson))
    with quiet_gradebook(), Gradebook(cfg.db_url, cfg.course_id) as gb:
        gb.update_or_create_student(student)
        kwargs = {"timestamp": timestamp} if timestamp else {}
        submission = gb.update_or_create_submission(lesson, student, **kwargs)
        for snb in submission.notebooks:
            mine = grades.get(snb.name, {})
            for g in snb.grades:
                new = mine.get(g.name)
                g.auto_score = (
                    float(new["auto_score"])
                    if new and new["auto_score"] is not None
                    else (None if new else 0.0)
                )
                g.needs_manual_grade = bool(new and new["needs_manual_grade"]) or (
                    g.manual_score is not None
                )
            snb.flagged = bool(result.flags) or result.status not in OK_STATUSES
        gb.db.commit()
