"""Where a class's grades live (``nbgrader_config.py``), and what a class command reports."""

from __future__ import annotations

import sys
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cells import QuestionResult, Scored
from ..workspace import COURSE_ID, Course

__all__ = [
    "OK_STATUSES",
    "ClassConfig",
    "ClassReport",
    "StudentResult",
    "class_config",
    "cut",
    "inert",
    "progress_bar",
]

# The statuses of a student whose notebook ran: their points are their own.
OK_STATUSES = ("graded",)


@dataclass(frozen=True)
class ClassConfig:
    """Where nbgrader keeps a course's submissions and grades (``nbgrader_config.py``)."""

    course: Course
    course_id: str
    db_url: str
    submitted: Path
    autograded: Path
    feedback: Path
    cell_timeout: int

    def lesson_notebooks(self, lesson: str) -> list[str]:
        src = self.course.solutions / lesson
        if not src.is_dir():
            raise ValueError(
                f"no lesson {lesson!r} in {self.course.solutions}; "
                f"lessons are {self.course.lesson_names()}"
            )
        names = sorted(p.stem for p in src.glob("*.ipynb") if not p.name.startswith("."))
        if not names:
            raise ValueError(f"{src} holds no notebook")
        return names

    @property
    def gradebook(self) -> dict[str, str]:
        """This course's gradebook, as ``nbgrader_api`` settings."""
        return {"CourseDirectory.db_url": self.db_url, "CourseDirectory.course_id": self.course_id}


def class_config(course: Course) -> ClassConfig:
    """Read ``nbgrader_config.py`` of ``course`` (course id, gradebook URL, folders)."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    cfg = Config()
    if (course.root / "nbgrader_config.py").is_file():
        cfg = PyFileConfigLoader("nbgrader_config.py", path=str(course.root)).load_config()
    cd = cfg.get("CourseDirectory", {})
    root = Path(cd.get("root", course.root))
    db_url = cd.get("db_url") or f"sqlite:///{root / 'gradebook.db'}"
    timeout = cfg.get("Execute", {}).get("timeout", 120)
    return ClassConfig(
        course=course,
        course_id=cd.get("course_id") or COURSE_ID,
        db_url=str(db_url),
        submitted=root / cd.get("submitted_directory", "submitted"),
        autograded=root / cd.get("autograded_directory", "autograded"),
        feedback=root / cd.get("feedback_directory", "feedback"),
        cell_timeout=int(timeout or 120),
    )


@dataclass
class StudentResult(Scored):
    """One student's outcome for one lesson (or one step: collect, feedback, export)."""

    student: str
    lesson: str
    status: str  # graded | kernel died | timed out | invalid | missing | error | ok | skipped
    questions: list[QuestionResult] = field(default_factory=list)
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # for a human to review
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(total=self.total, max_total=self.max_total, seconds=round(self.seconds, 2))
        return d


@dataclass
class ClassReport:
    """What a class command did: per-student outcomes and a summary."""

    action: str
    lesson: str
    results: list[StudentResult] = field(default_factory=list)
    sandbox: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def by_student(self) -> dict[str, StudentResult]:
        return {r.student: r for r in self.results}

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "lesson": self.lesson,
            "sandbox": self.sandbox,
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
            "results": [r.to_dict() for r in self.results],
        }

    def summary(self) -> str:
        """The per-student table and the summary: done, failed and why, time taken."""
        lines = [inert(f"{self.action} {self.lesson}".rstrip()) + ":"]
        width = max([len(inert(r.student)) for r in self.results] + [7])
        for r in self.results:
            lines += _student_lines(r, width)
        counts: dict[str, list[str]] = {}
        for r in self.results:
            counts.setdefault(r.status, []).append(r.student)
        done = sum(len(v) for k, v in counts.items() if k in ("graded", "ok"))
        lines.append("")
        lines.append(f"Summary: {done} of {len(self.results)} done in {_duration(self.seconds)}")
        for status, who in counts.items():
            if status in ("graded", "ok"):
                continue
            why = {r.student: r.message for r in self.results if r.status == status}
            lines.append(f"  {inert(status)}: {len(who)}")
            lines += [f"    {inert(s)}: {cut(why[s], 120)}" for s in who]
        flagged = [r.student for r in self.results if r.flags]
        if flagged:
            lines.append(f"  flagged for review: {inert(', '.join(flagged))}")
        if self.sandbox:
            lines.append(f"  {inert(self.sandbox)}")
        lines += [f"  {inert(n)}" for n in self.notes]
        return "\n".join(lines)


def _student_lines(r: StudentResult, width: int) -> list[str]:
    """A student's row of the summary: status, points, the first reasons, warnings, flags."""
    pts = f"{r.total:g} / {r.max_total:g}" if r.questions else ""
    note = r.message
    if r.status in OK_STATUSES and r.questions:
        lost = [q for q in r.questions if q.points < q.max_points]
        note = "; ".join(f"{q.grade_id}: {q.reason}" for q in lost[:2])
        if len(lost) > 2:
            note += f"; and {len(lost) - 2} more"
    lines = [f"  {inert(r.student):<{width}}  {inert(r.status):<11} {pts:>11}  {cut(note, 110)}"]
    lines += [f"  {'':<{width}}  warning: {cut(w, 120)}" for w in r.warnings]
    lines += [f"  {'':<{width}}  REVIEW: {cut(f, 120)}" for f in r.flags]
    return lines


def inert(text: str, keep: str = "") -> str:
    """``text`` safe to print on a terminal: control and format characters (ESC, CR,
    bidi overrides, ...) escaped as ``\\x1b``, ``\\u202e``; those in ``keep`` kept.

    Student ids, messages, exception names and flagged code are student-controlled:
    an escape sequence in one could rewrite or hide a REVIEW line.
    """
    out = []
    for ch in str(text):
        if ch in keep or (ch.isprintable() and unicodedata.category(ch) not in _HIDDEN):
            out.append(ch)
        elif ch == " ":
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])
    return "".join(out)


# Unicode categories that print as nothing (or move text): escaped by inert().
_HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def cut(text: str, n: int) -> str:
    """``text`` on one line, at most ``n`` characters, safe to print (:func:`inert`)."""
    text = inert(" ".join(str(text).split()))
    return text if len(text) <= n else text[: n - 3] + "..."


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{seconds:.1f} s"


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr (stdout carries the report)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="student", disable=not enabled, file=sys.stderr)
