"""What nbgrader writes into a lesson notebook, and what grading reads back out of it.

Markers and cell metadata, grade cells and their points, why a test cell
failed, and loading a submitted notebook. Shared by release, self-grading
(``gptcore grade``), class grading (``gptcore class``) and the tests, so that
each is spelled once. Notebooks are plain JSON dicts here (as ``json.loads``
gives them): grading must read notebooks that nbformat would refuse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "HIDDEN_BEGIN",
    "HIDDEN_END",
    "HIDDEN_PLACEHOLDER",
    "MAX_NOTEBOOK_BYTES",
    "QuestionResult",
    "Scored",
    "failure_reasons",
    "grade_cells",
    "graded_test_sources",
    "load_submission",
    "nbgrader_meta",
    "read_regular",
    "structure_problems",
]

HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"
# What feedback shows instead of the hidden tests.
HIDDEN_PLACEHOLDER = "# (hidden tests: not shown in feedback)"

_REASON_LIMIT = 400
# Errors that say more than the one before them: a timeout shows up as the
# KeyboardInterrupt of the interrupted code followed by nbgrader's CellTimeoutError.
_SEVERE = ("CellTimeoutError", "DeadKernelError")


@dataclass
class QuestionResult:
    """One grade cell's outcome."""

    grade_id: str
    points: float
    max_points: float
    reason: str = ""  # why points were lost; empty at full marks


class Scored:
    """Totals over ``questions``, for the report types of ``grade`` and ``class``."""

    questions: list[QuestionResult]

    @property
    def total(self) -> float:
        return sum(q.points for q in self.questions)

    @property
    def max_total(self) -> float:
        return sum(q.max_points for q in self.questions)


def nbgrader_meta(cell: dict[str, Any]) -> dict[str, Any]:
    """The cell's ``metadata.nbgrader`` (empty for a cell nbgrader does not know)."""
    return cell.get("metadata", {}).get("nbgrader", {})


def grade_cells(nb: dict[str, Any]) -> list[tuple[str, float]]:
    """``(grade_id, points)`` of every graded cell, in notebook order."""
    out = []
    for cell in nb.get("cells", []):
        meta = nbgrader_meta(cell)
        if meta.get("grade"):
            out.append((meta["grade_id"], float(meta.get("points", 0))))
    return out


def graded_test_sources(nb: dict[str, Any]) -> dict[str, str]:
    """grade_id -> source of each autograded test cell (graded, not a solution)."""
    out = {}
    for cell in nb.get("cells", []):
        meta = nbgrader_meta(cell)
        if meta.get("grade") and not meta.get("solution") and meta.get("grade_id"):
            out[meta["grade_id"]] = "".join(cell.get("source", "")).strip()
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


def _errors(cell: dict[str, Any]) -> list[str]:
    """The cell's errors, the most telling first."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    errors.sort(key=lambda o: o.get("ename") not in _SEVERE)
    return [_first_line_error(o) for o in errors]


def failure_reasons(autograded: dict[str, Any]) -> dict[str, str]:
    """grade_id -> why the test cell failed, naming a failure in the exercise cell above."""
    reasons: dict[str, str] = {}
    last_solution_error = ""
    for cell in autograded.get("cells", []):
        meta = nbgrader_meta(cell)
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


# A submitted notebook larger than this is not parsed (its outputs are cleared
# before grading anyway; a lesson notebook with outputs is a few MiB at most).
MAX_NOTEBOOK_BYTES = 16 << 20


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, a plain file of at most ``max_bytes``, never through a link.

    Raises ``OSError`` (with a message for the student's report) otherwise: the
    file is opened first (``O_NOFOLLOW``, non-blocking so a FIFO cannot hang
    us), then checked, so that what is checked is what is read.
    """
    import os
    import stat

    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if os.path.islink(path):
            raise OSError(f"{path.name} is a link, not a notebook") from e
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(f"{path.name} is a folder, not a notebook")
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path.name} is a special file (a FIFO or a device), not a notebook")
        if st.st_size > max_bytes:
            raise OSError(
                f"{path.name} is {st.st_size / (1 << 20):.1f} MiB, more than the "
                f"{max_bytes >> 20} MiB a notebook may be; clear its outputs and save it again"
            )
        data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise OSError(f"{path.name} grew past {max_bytes >> 20} MiB while being read")
        return data


def load_submission(
    path: Path, *, max_bytes: int = MAX_NOTEBOOK_BYTES
) -> tuple[dict[str, Any] | None, str]:
    """The notebook as JSON, or None and a reason it cannot be graded.

    Never follows a link, never blocks on a FIFO, never parses more than
    ``max_bytes``; JSON nested too deeply for Python is a reason, not a crash.
    """
    import nbformat

    try:
        raw = read_regular(path, max_bytes).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return None, f"cannot read the notebook: {why}"
    try:
        nb = json.loads(raw)
    except json.JSONDecodeError as e:
        return None, (
            f"the notebook is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}). "
            "It was probably edited outside Jupyter; restore it from a checkpoint or a fresh copy."
        )
    except RecursionError:
        return None, "the notebook's JSON is nested too deeply to be a notebook"
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
    except RecursionError:
        return None, "the notebook's JSON is nested too deeply to be a notebook"
    return nb, ""


def structure_problems(submission: dict[str, Any], released: dict[str, Any]) -> list[str]:
    """Why the submission's graded cells cannot be matched to the released lesson's.

    nbgrader matches cells by grade id: a grade id used twice, one the lesson
    does not have, or a cell whose type changed (a test turned into Markdown)
    would otherwise crash the run or be graded against the wrong cell.
    """
    ours = {}
    for cell in released.get("cells", []):
        gid = nbgrader_meta(cell).get("grade_id")
        if gid:
            ours[gid] = cell.get("cell_type")
    seen: set[str] = set()
    problems: list[str] = []
    for cell in submission.get("cells", []):
        meta = nbgrader_meta(cell)
        if not isinstance(meta, dict):
            problems.append("a cell's nbgrader metadata is not a mapping")
            continue
        gid = meta.get("grade_id")
        if gid is None:
            if meta.get("grade") or meta.get("solution") or meta.get("locked"):
                problems.append("a cell has nbgrader metadata but no grade id")
            continue
        if not isinstance(gid, str):
            problems.append(f"grade id {gid!r} is not a string")
        elif gid in seen:
            problems.append(f"grade id {gid} appears twice (a duplicated cell?)")
        elif gid not in ours:
            problems.append(f"grade id {gid} is not in the lesson (an invented cell?)")
        elif cell.get("cell_type") != ours[gid]:
            problems.append(
                f"cell {gid} was changed from {ours[gid]} to {cell.get('cell_type')}"
            )
        if isinstance(gid, str):
            seen.add(gid)
    return list(dict.fromkeys(problems))
