"""A grading worker: ``python -I -m gptcore.course.classroom --worker CONFIG``.

Started by :class:`.pool.Pool`. It builds its own copy of the released lesson
with a throwaway gradebook, says ``{"ready": true}`` on stdout, then reads one
student a line from stdin and answers one JSON line each. Grading a student
is three steps:

1. **validate**: which notebooks are there and readable; review flags and
   edited test cells, before any student code runs;
2. **run**: nbgrader's autograde in a throwaway course folder, the kernel in
   the sandbox, through :class:`.execute.GradingExecute`;
3. **read**: the grades from the throwaway gradebook, why test cells failed,
   the autograded notebooks, and what the run log says (guard, output cap,
   dead kernel).

Only the parent writes the class's gradebook (:mod:`.merge`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)

from ..cells import failure_reasons, load_submission, read_regular, structure_problems
from ..sandbox import Limits, Sandbox, kill_user_processes, runtime_dir, write_kernelspec
from ..workspace import (
    Course,
    build_lesson,
    fast_alembic_version,
    nbgrader_api,
    read_grades,
)
from .collect import copy_submission
from .execute import GradingExecute, RunLog, guard_code
from .report import cut, inert
from .review import edited_cells, failure_cause, nbgrader_warnings, suspicious_code
from .scratch import bounded_runtime_dir, private_mounts, remove_runtime_dir, remove_tree

__all__ = ["grade_one", "worker_main"]


def worker_main(config_path: str) -> int:
    """Grade the students read from stdin, one JSON line each; see the module docstring."""
    # First, while single-threaded: kernels' tmpfs mounts will be ours alone.
    bounded = private_mounts()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints (nbgrader, kernels) go to the log, not the protocol
    setup = json.loads(Path(config_path).read_text())
    setup["bounded"] = bounded
    box = Sandbox(**setup["sandbox"])
    # As in `gptcore grade`: lessons that train for minutes shorten their run when graded.
    os.environ.setdefault("GPTCORE_LESSON_SECONDS", "10")
    kernels = Path(tempfile.mkdtemp(prefix="gptcore-kernels-"))
    kernel = write_kernelspec(
        kernels,
        box,
        Limits(**setup["limits"]),
        uid=setup["uid"],
        threads=setup["threads"],
        seed=Path(setup["seed"]) if setup.get("seed") else None,
        private=[setup["course_root"]],
    )
    os.environ["JUPYTER_PATH"] = str(kernels) + os.pathsep + os.environ.get("JUPYTER_PATH", "")
    fast_alembic_version()
    work = Path(tempfile.mkdtemp(prefix="gptcore-worker-"))
    # This worker's own copy of the released lesson and its throwaway gradebook.
    setup["template"] = str(_build_template(setup, work / "template"))
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        t0 = time.perf_counter()
        try:
            result = grade_one(setup, task, kernel)
        except Exception as e:
            traceback.print_exc()
            result = {"status": "error", "message": f"grading failed: {type(e).__name__}: {e}"}
        finally:
            if box.user:
                kill_user_processes(setup["uid"])
        result["seconds"] = time.perf_counter() - t0
        proto.write(json.dumps(result) + "\n")
    remove_tree(kernels)
    remove_tree(work)
    return 0


def _build_template(setup: dict[str, Any], dest: Path) -> Path:
    """A released lesson with its own throwaway gradebook, copied for every student."""
    course = Course(Path(setup["course_root"]))
    with nbgrader_api(**{"CourseDirectory.course_id": setup["course_id"]}) as (api, course_dir):
        build_lesson(api, course, setup["lesson"], course_dir)
        shutil.copytree(course_dir, dest)
    return dest


def grade_one(setup: dict[str, Any], task: dict[str, Any], kernel: str) -> dict[str, Any]:
    """Grade one student in a throwaway course folder; return what the parent needs."""
    result: dict[str, Any] = {"status": "graded", "message": "", "warnings": [], "flags": []}
    invalid = validate(setup, Path(task["submission"]), result)
    if invalid is None:
        return result
    log = RunLog()
    rt = _runtime(setup, result)
    try:
        config = _autograde_config(setup, kernel, rt, log)
        with nbgrader_api(cell_timeout=setup["cell_timeout"], **config) as (api, course_dir):
            if not run(api, course_dir, setup, task, invalid, result):
                return result
            read(api, course_dir, setup, task, result)
    finally:
        if log.stopped or log.setup_errors:
            _log_kernel_output(rt)
        remove_runtime_dir(rt)
    _add_run_log(log, result)
    return result


def _log_kernel_output(rt: Path, tail: int = 4096) -> None:
    """The end of what a kernel that died printed, into this worker's log (escaped:
    it is the student's text), before its runtime folder goes."""
    try:
        fd = os.open(rt / "kernel-output.log", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    with os.fdopen(fd, "rb") as fh:
        fh.seek(max(0, os.fstat(fd).st_size - tail))
        text = fh.read(tail).decode("utf-8", errors="replace")
    print("kernel output (last lines):\n" + inert(text, keep="\n"), file=sys.stderr)


def _runtime(setup: dict[str, Any], result: dict[str, Any]) -> Path:
    """The kernel's runtime folder: a bounded tmpfs of its own when this worker can mount."""
    if setup.get("bounded"):
        try:
            return bounded_runtime_dir(setup["run"], Limits(**setup["limits"]))
        except OSError as e:
            result["warnings"].append(f"the kernel's scratch space is not a tmpfs of its own: {e}")
    return runtime_dir(setup["run"])


def validate(setup: dict[str, Any], sub: Path, result: dict[str, Any]) -> dict[str, str] | None:
    """Look at the submission before any of its code runs.

    Returns the lesson's notebooks that cannot be graded (name -> why), or
    None when none can (``result`` then says why). Adds review flags, and
    warnings for missing notebooks and edited test cells, to ``result``.
    """
    lesson, template = setup["lesson"], Path(setup["template"])
    if sub.is_symlink() or sub.parent.is_symlink():
        result["status"], result["message"] = "invalid", "the submission folder is a link"
        return None
    # Every entry named like a notebook: a link, a FIFO or a folder is invalid, not missing.
    present = {p.stem for p in sub.glob("*.ipynb")} if sub.is_dir() else set()
    expected = setup["notebooks"]
    absent = [n for n in expected if n not in present]
    if len(absent) == len(expected):
        others = sorted(p.name for p in sub.glob("*.ipynb")) if sub.is_dir() else []
        result["status"] = "missing"
        result["message"] = f"no {lesson}/{expected[0]}.ipynb in the submission" + (
            f" (found {', '.join(others)}; collect renames a lone notebook)" if others else ""
        )
        return None
    result["warnings"] += [f"{n}.ipynb is missing: it scores 0" for n in absent]
    invalid: dict[str, str] = {}
    for name in expected:
        if name in absent:
            continue
        nb, problem = load_submission(sub / f"{name}.ipynb", max_bytes=setup["max_notebook_bytes"])
        if nb is None:
            invalid[name] = problem
            continue
        source = json.loads((template / "source" / lesson / f"{name}.ipynb").read_text())
        released = json.loads((template / "release" / lesson / f"{name}.ipynb").read_text())
        problems = structure_problems(nb, released)
        if problems:
            invalid[name] = f"{name}.ipynb cannot be matched to the lesson: " + "; ".join(
                problems[:3]
            )
            continue
        result["flags"] += suspicious_code(nb, source)
        result["warnings"] += [
            f"locked test cell {gid} was edited; grading used the original"
            for gid in edited_cells(nb, released)
        ]
    if len(invalid) + len(absent) == len(expected):
        result["status"] = "invalid"
        result["message"] = "; ".join(invalid.values())
        return None
    result["warnings"] += [f"{n}.ipynb cannot be graded: {p}" for n, p in invalid.items()]
    return invalid


def _autograde_config(setup: dict[str, Any], kernel: str, rt: Path, log: RunLog) -> dict[str, Any]:
    """nbgrader settings for one student: the sandbox kernel, the guard, the run log."""
    setup_code, guard_call = guard_code(setup["guard"], f"_g{os.urandom(6).hex()}")
    return {
        "CourseDirectory.course_id": setup["course_id"],
        "Execute.kernel_name": kernel,
        "Execute.extra_arguments": [
            "--IPKernelApp.log_level=ERROR",
            "--HistoryManager.hist_file=:memory:",
            # (Python 3.10 has no safe_path: keep IPython from adding the folder to sys.path.)
            "--IPKernelApp.ignore_cwd=True",
        ],
        "KernelManager.transport": "ipc",
        "KernelManager.connection_file": str(rt / "kernel.json"),
        "OverwriteCells.add_missing_cells": True,
        "Autograde.autograde_preprocessors": [
            GradingExecute,
            IgnorePattern,
            ClearMetadataPreprocessor,
            LimitOutput,
            SaveAutoGrades,
            AssignLatePenalties,
            CheckCellMetadata,
        ],
        "GradingExecute.setup_code": setup_code,
        "GradingExecute.guard_call": guard_call,
        "GradingExecute.max_output_bytes": setup["max_output_bytes"],
        "GradingExecute.max_notebook_output_bytes": 4 * setup["max_output_bytes"],
        "GradingExecute.run_log": log,
        "GradingExecute.trusted_socket": str(rt / "tests.sock") if setup["guard"]["trusted"] else "",
        "GradingExecute.trusted_imports": setup["guard"]["imports"],
    }


def run(
    api: Any,
    course_dir: Path,
    setup: dict[str, Any],
    task: dict[str, Any],
    invalid: dict[str, str],
    result: dict[str, Any],
) -> bool:
    """Autograde the submission in ``course_dir``; False (and ``result`` says why) on failure."""
    lesson, student, template = setup["lesson"], task["student"], Path(setup["template"])
    for part in ("source", "release"):
        shutil.copytree(template / part, course_dir / part, dirs_exist_ok=True)
    shutil.copyfile(template / "gradebook.db", course_dir / "gradebook.db")
    dest = course_dir / "submitted" / student / lesson
    copy_submission(Path(task["submission"]), dest)
    for name in invalid:
        (dest / f"{name}.ipynb").unlink(missing_ok=True)
    answer = api.autograde(lesson, student, force=True, create=True)
    log = (answer.get("log") or "") + (answer.get("error") or "")
    result["warnings"] += nbgrader_warnings(log)
    if not answer.get("success"):
        print(log, file=sys.stderr)  # the worker's log
        result["status"] = "error"
        result["message"] = "nbgrader could not grade the notebook: " + failure_cause(log)
        return False
    return True


def read(
    api: Any, course_dir: Path, setup: dict[str, Any], task: dict[str, Any], result: dict[str, Any]
) -> None:
    """Grades and failure reasons into ``result``; autograded notebooks to the result folder."""
    lesson, student, expected = setup["lesson"], task["student"], setup["notebooks"]
    grades = read_grades(api.coursedir.db_url, lesson, student, expected)
    reasons: dict[str, str] = {}
    out = Path(task["result_dir"]) / "autograded"
    out.mkdir(parents=True, exist_ok=True)
    for name in expected:
        path = course_dir / "autograded" / student / lesson / f"{name}.ipynb"
        if not path.is_file():
            continue
        # Outputs are capped while the notebook runs; this is the last line of defence:
        # the worker runs as root and never parses an oversized notebook.
        try:
            raw = read_regular(path, setup["max_notebook_bytes"])
        except OSError as e:
            result["warnings"].append(f"the autograded {name}.ipynb is not kept: {e}")
            continue
        reasons.update(failure_reasons(json.loads(raw)))
        (out / path.name).write_bytes(raw)
    result["grades"], result["reasons"] = grades, reasons


def _add_run_log(log: RunLog, result: dict[str, Any]) -> None:
    """What the run log says, as the result's status, warnings and review flags."""
    if log.stopped:
        result["status"], result["message"] = log.stopped
    if log.restored:
        what = ", ".join(sorted(log.restored))
        result["warnings"].append(
            f"the notebook changed grading code; restored before tests: {what}"
        )
        result["flags"].append(f"monkeypatched grading code: {cut(what, 100)}")
    if log.output_limited:
        cells = ", ".join(str(i) for i in sorted(set(log.output_limited)))
        result["warnings"].append(f"output limit exceeded in cell(s) {cells}; the rest was dropped")
    if log.setup_errors or log.guard_errors:
        errs = log.setup_errors + log.guard_errors
        result["flags"].append(f"the test guard failed: {cut(errs[0], 100)}")
    result["flags"] = list(dict.fromkeys(result["flags"]))
