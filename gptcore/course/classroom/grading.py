"""``gptcore class autograde``: a run over the class, in parallel and sandboxed.

The parent plans the run (who, with which limits and guard), starts the
:class:`.pool.Pool` of workers, records the lesson in the real gradebook while
they start, and merges each answer as it comes (:mod:`.merge`).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..cells import MAX_NOTEBOOK_BYTES, nbgrader_meta
from ..sandbox import RUNTIME_BASE, Limits, probe
from ..workspace import Course
from .collect import normalize_student_id
from .merge import max_scores, merge_result, register_assignment
from .pool import Pool, Task
from .report import ClassConfig, ClassReport, StudentResult, class_config, progress_bar
from .scratch import remove_tree

__all__ = ["PROTECTED", "autograde", "guard_settings"]

MiB = 1 << 20
# Protected modules: the guard restores functions and classes in these, as
# they were when the kernel started, before every test cell.
PROTECTED = [
    "builtins",
    "gptcore",
    "torch",
    "numpy",
    "regex",
    "re",
    "math",
    "random",
    "itertools",
    "functools",
    "operator",
    "collections",
    "copy",
]
_IMPORT_LINE = re.compile(
    r"^\s*(?:from\s+(gptcore(?:\.\w+)*)\s+import\s+([\w\s,()]+?)\s*$"
    r"|import\s+(gptcore(?:\.\w+)+)\s+as\s+(\w+)\s*$)",
    re.M,
)


# One screen on purpose: its arguments are the CLI's options, passed on as they are.
def autograde(
    course: Course,
    lesson: str,
    *,
    students: Iterable[str] | None = None,
    workers: int | None = None,
    sandbox: str = "auto",
    cell_timeout: int | None = None,
    notebook_timeout: int = 1200,
    limits: Limits | None = None,
    max_output_bytes: int = 1 * MiB,
    max_notebook_bytes: int = MAX_NOTEBOOK_BYTES,
    progress: bool = True,
) -> ClassReport:
    """Autograde every submission of ``lesson`` (or ``students``), in parallel and sandboxed."""
    start = time.perf_counter()
    cfg = class_config(course)
    notebooks = cfg.lesson_notebooks(lesson)
    names, rejected = _valid_ids(lesson, _students(cfg, lesson, students))
    if not names:
        report = ClassReport("autograde", lesson, results=rejected)
        report.seconds = time.perf_counter() - start
        return report
    box = probe(sandbox, kernel=True)
    cell_timeout = cell_timeout or cfg.cell_timeout
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max(1, min(workers or cores or 1, len(names)))
    threads = max(1, (cores or 1) // workers)
    limits = limits or Limits()
    # The kernel's CPU time can never usefully exceed the notebook's wall time.
    limits = Limits(
        cpu_seconds=min(limits.cpu_seconds, notebook_timeout * threads + 30),
        memory_bytes=limits.memory_bytes,
        processes=limits.processes,
        file_bytes=limits.file_bytes,
        scratch_bytes=limits.scratch_bytes,
        files=limits.files,
    )
    report = ClassReport("autograde", lesson, sandbox=box.describe())
    report.notes.append(
        f"{workers} worker(s), {threads} thread(s) per kernel; timeouts: {cell_timeout} s per "
        f"cell, {notebook_timeout} s per notebook; limits: {limits.describe()}"
    )
    report.notes.append(
        f"test cells ran in the student's kernel, with the guard ({KERNEL_TESTS[lesson]})"
        if lesson in KERNEL_TESTS
        else "test cells ran in a trusted runner; the student's kernel only answered its calls"
    )
    with tempfile.TemporaryDirectory(prefix="gptcore-class-", ignore_cleanup_errors=True) as tmp_name:
        tmp = Path(tmp_name)
        if os.environ.get("GPTCORE_CLASS_DEBUG"):
            tmp = Path(tempfile.mkdtemp(prefix="gptcore-class-debug-"))
        run = tmp.name.rsplit("-", 1)[-1]
        setup = {
            "run": run,
            "lesson": lesson,
            "notebooks": notebooks,
            "course_root": str(cfg.course.root),
            "course_id": cfg.course_id,
            "sandbox": asdict(box),
            "limits": asdict(limits),
            "cell_timeout": cell_timeout,
            "threads": threads,
            "max_output_bytes": max_output_bytes,
            "max_notebook_bytes": max_notebook_bytes,
            "guard": guard_settings(cfg.course, lesson, notebooks),
            "seed": str(_matplotlib_seed(tmp / "mplseed")),
        }
        tasks = [
            Task(s, cfg.submitted / s / lesson, tmp / "results" / f"{i:04d}")
            for i, s in enumerate(names)
        ]
        pool = Pool(workers, setup, tmp, notebook_timeout * len(notebooks), grace=20)
        try:
            results = _grade_all(cfg, lesson, pool, tasks, progress)
        finally:
            pool.close()
            # Runtime folders of killed workers: empty where they were a tmpfs (it
            # went with the worker); otherwise whatever the kernel left.
            for leftover in Path(RUNTIME_BASE or tempfile.gettempdir()).glob(f"gptk-{run}-*"):
                remove_tree(leftover)
            if not os.environ.get("GPTCORE_CLASS_DEBUG"):
                remove_tree(tmp)  # (TemporaryDirectory's own clean-up can be defeated)
    report.results = [results[s] for s in names] + rejected
    report.seconds = time.perf_counter() - start
    return report


def _students(cfg: ClassConfig, lesson: str, students: Iterable[str] | None) -> list[str]:
    """The students to grade: ``students`` (each must have a submission), or all."""
    known = sorted(
        p.parent.name
        for p in cfg.submitted.glob(f"*/{lesson}")
        if p.is_dir() and not p.parent.name.startswith(".")
    )
    if students:
        unknown = [s for s in students if s not in known]
        if unknown:
            raise ValueError(
                f"no submission of {lesson} for {', '.join(unknown)} in {cfg.submitted}"
            )
        return list(dict.fromkeys(students))
    if not known:
        raise ValueError(
            f"no submissions of {lesson} in {cfg.submitted}: expected "
            f"submitted/<student>/{lesson}/; collect them with `gptcore class collect`"
        )
    return known


def _valid_ids(lesson: str, names: list[str]) -> tuple[list[str], list[StudentResult]]:
    """The names that are whole, normalised, distinct student ids; an outcome for the rest.

    Folders put in submitted/ by hand (not by collect) may be named anything: an id
    with a trailing newline would be a second row in the gradebook and the CSV.
    """
    ok: list[str] = []
    rejected: list[StudentResult] = []
    folded: dict[str, str] = {}
    for name in names:
        sid, why = normalize_student_id(name)
        if sid != name:
            why = why or "not in normal form (NFKC); collect the submission again"
        elif folded.setdefault(name.casefold(), name) != name:
            why = f"the same student id as {folded[name.casefold()]} but for case; merge or rename"
        if why:
            rejected.append(StudentResult(name, lesson, "invalid", message=f"{why} (not graded)"))
        else:
            ok.append(name)
    return ok, rejected


def _grade_all(
    cfg: ClassConfig, lesson: str, pool: Pool, tasks: list[Task], progress: bool
) -> dict[str, StudentResult]:
    """Hand ``tasks`` to the pool and merge each answer as it comes."""
    bar = progress_bar(len(tasks), f"autograde {lesson}", progress)
    results: dict[str, StudentResult] = {}
    try:
        # Workers start grading as soon as they are ready; meanwhile the lesson is
        # recorded in the real gradebook, which merging the first result needs.
        pool.start(tasks)
        register_assignment(cfg, lesson)
        maxima = max_scores(cfg, lesson)
        for task, raw in pool.results():
            try:
                result = merge_result(cfg, lesson, maxima, task, raw)
            except Exception as e:  # one student's merge must not stop the class
                result = StudentResult(task.student, lesson, "error")
                result.message = f"could not record the grades: {type(e).__name__}: {e}"
            results[task.student] = result
            bar.update(1)
            bar.set_postfix_str(f"{task.student}: {result.status}", refresh=False)
    finally:
        bar.close()
    return results


def guard_settings(course: Course, lesson: str, notebooks: list[str]) -> dict[str, Any]:
    """What the kernel's guard keeps: the check modules the lesson's provided cells
    bind (``checks`` -> ``[module, attribute]``) and the protected modules."""
    aliases: dict[str, list[str | None]] = {}
    for name in notebooks:
        nb = json.loads(course.source_notebook(lesson, f"{name}.ipynb").read_text())
        for cell in nb.get("cells", []):
            if cell.get("cell_type") != "code" or nbgrader_meta(cell).get("solution"):
                continue
            src = "".join(cell.get("source", ""))
            for m in _IMPORT_LINE.finditer(src):
                if m.group(3):
                    if ".checks" in m.group(3):
                        aliases[m.group(4)] = [m.group(3), None]
                    continue
                module, names = m.group(1), m.group(2).strip("() \n")
                for item in names.split(","):
                    parts = item.split()
                    if not parts:
                        continue
                    attr, alias = parts[0], parts[-1]
                    if ".checks" in f"{module}.{attr}":
                        aliases[alias] = [module, attr]
    return {"aliases": aliases, "protected": PROTECTED, **trusted_settings(course, lesson, notebooks)}


# Lessons whose test cells still run in the student's kernel (with the guard), and why.
# None now: the student's nn.Modules are mirrored in the runner (.mirror) and the watchers
# of how their code works run beside it (checks.report.watching). Kept for contrast in
# the attack tests, which put a lesson back here to show the attacks are real.
KERNEL_TESTS: dict[str, str] = {}


def trusted_settings(course: Course, lesson: str, notebooks: list[str]) -> dict[str, Any]:
    """Where the lesson's test cells run, and the imports of its provided cells (the
    names a trusted runner binds itself: ``checks``, ``torch``...)."""
    imports: list[str] = []
    for name in notebooks:
        nb = json.loads(course.source_notebook(lesson, f"{name}.ipynb").read_text())
        for cell in nb.get("cells", []):
            meta = nbgrader_meta(cell)
            if cell.get("cell_type") != "code" or meta.get("solution") or meta.get("grade"):
                continue
            try:
                tree = ast.parse("".join(cell.get("source", "")))
            except SyntaxError:
                continue
            for node in tree.body:
                if isinstance(node, ast.Import | ast.ImportFrom):
                    imports.append(ast.unparse(node))
    return {"imports": list(dict.fromkeys(imports)), "trusted": lesson not in KERNEL_TESTS}


def _matplotlib_seed(dest: Path) -> Path:
    """A Matplotlib font cache for kernels to start from (building one costs seconds)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib
    except ImportError:
        return dest
    for p in Path(matplotlib.get_cachedir()).glob("fontlist-*.json"):
        shutil.copyfile(p, dest / p.name)
    if not any(dest.glob("fontlist-*.json")):
        env = {**os.environ, "MPLCONFIGDIR": str(dest)}
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [sys.executable, "-c", "import matplotlib.font_manager"],
                env=env,
                capture_output=True,
                timeout=120,
            )
    for p in dest.rglob("*"):
        p.chmod(p.stat().st_mode | 0o444 | (0o111 if p.is_dir() else 0))
    return dest
