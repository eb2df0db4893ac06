"""``gptcore class export``: grades as CSV, with the columns of ``nbgrader export``."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..cells import QuestionResult
from ..workspace import Course, quiet_gradebook
from .report import ClassReport, StudentResult, class_config, progress_bar

__all__ = ["EXPORT_COLUMNS", "export"]

EXPORT_COLUMNS = [
    "assignment",
    "duedate",
    "timestamp",
    "student_id",
    "last_name",
    "first_name",
    "email",
    "raw_score",
    "late_submission_penalty",
    "score",
    "max_score",
]


def export(
    course: Course,
    output: str | Path = "grades.csv",
    *,
    lessons: Iterable[str] | None = None,
    progress: bool = True,
) -> ClassReport:
    """Grades as CSV, with the columns of ``nbgrader export``; one row per lesson and student."""
    from nbgrader.api import Gradebook, MissingEntry

    start = time.perf_counter()
    cfg = class_config(course)
    wanted = set(lessons or [])
    report = ClassReport("export", ", ".join(sorted(wanted)) or "all lessons")
    output = Path(output)
    rows: list[dict[str, Any]] = []
    with quiet_gradebook(), Gradebook(cfg.db_url, cfg.course_id) as gb:
        assignments = [a for a in gb.assignments if not wanted or a.name in wanted]
        order = {a.name: i for i, a in enumerate(assignments)}
        missing = wanted - {a.name for a in assignments}
        if missing:
            raise ValueError(
                f"no lesson {', '.join(sorted(missing))} in the gradebook {cfg.db_url}"
            )
        students = sorted(gb.students, key=lambda st: st.id)
        bar = progress_bar(len(students), "export", progress)
        for student in students:
            result = StudentResult(student.id, "", "ok")
            for a in assignments:
                row = {
                    "assignment": a.name,
                    "duedate": a.duedate,
                    "student_id": student.id,
                    "last_name": student.last_name,
                    "first_name": student.first_name,
                    "email": student.email,
                    "max_score": a.max_score,
                }
                try:
                    sub = gb.find_submission(a.name, student.id)
                except MissingEntry:
                    row.update(timestamp="", raw_score=0.0, late_submission_penalty=0.0, score=0.0)
                else:
                    penalty = sub.late_submission_penalty or 0.0
                    row.update(
                        timestamp=sub.timestamp,
                        raw_score=sub.score,
                        late_submission_penalty=penalty,
                        score=max(0.0, sub.score - penalty),
                    )
                rows.append({k: "" if v is None else v for k, v in row.items()})
                result.questions.append(QuestionResult(a.name, float(row["score"]), a.max_score))
            report.results.append(result)
            bar.update(1)
        bar.close()
    rows.sort(key=lambda r: (order[r["assignment"]], r["student_id"]))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: str(row[k]) for k in EXPORT_COLUMNS})
    tmp.replace(output)
    report.seconds = time.perf_counter() - start
    report.notes.append(f"{len(rows)} rows written to {output}")
    return report
