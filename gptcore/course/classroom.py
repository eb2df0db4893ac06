"""Grading a class: ``gptcore class collect | autograde | feedback | export``.

The instructor side of the course, on top of nbgrader (0.9). The course folder
(the checkout, or ``--course DIR``) is an nbgrader course: submissions live in
``submitted/<student>/<lesson>/``, autograded copies in ``autograded/``,
feedback in ``feedback/``, and the gradebook is nbgrader's own (``db_url`` in
``nbgrader_config.py``; SQLite ``gradebook.db`` in the course folder by default,
or PostgreSQL for a large class). nbgrader's formgrader, ``nbgrader export`` and
the exchange keep working on everything written here.

What ``autograde`` adds to ``nbgrader autograde``:

- **Parallel and isolated.** Worker processes (``--workers``, default: one per
  core) each grade one student at a time in a throwaway course folder with a
  throwaway gradebook, built by each worker from ``solutions/<lesson>``. The
  parent merges each result into the real gradebook through nbgrader's
  ``Gradebook`` API and writes ``autograded/<student>/<lesson>/``.
- **Sandboxed.** Each kernel runs in :mod:`gptcore.course.sandbox` (bubblewrap, a
  dedicated user, resource limits). Without a sandbox, grading still works and
  the report says so plainly.
- **Robust.** A per-cell timeout (nbgrader's, with an interrupt) and a
  per-notebook timeout (the worker is killed). A dead kernel keeps the points
  of the test cells that ran before it; invalid or missing notebooks, kernels
  that die and workers that hang each give that student a clear outcome, and
  the rest of the class is still graded. Output is capped per cell, so an
  output bomb cannot exhaust the grader's memory.
- **Hardened tests.** nbgrader already restores locked test cells, their
  points and (with ``add_missing_cells``) deleted test cells. Before each test
  cell, a guard undoes monkeypatches of gptcore, PyTorch, NumPy, ``regex`` and
  builtins made since the kernel started, re-binds the lesson's ``checks``
  alias and resets IPython's input and AST transformers. The checks compare
  plain builtins, so an answer whose ``__eq__`` always returns True fails.
  Suspicious code (monkeypatching, ``__eq__``, exits, network, reading grading
  files) is listed in the report and the submission is flagged in the
  gradebook for a human to review.

Limits: the student's code runs in the same interpreter as the tests, so a
determined student can still subvert the grading of their *own* notebook (for
example by finding and disabling the guard); the sandbox keeps them from
reading the hidden tests or touching anyone else's grade, and the flags point
a reviewer at such code.

``feedback`` renders nbgrader's HTML feedback from autograded notebooks whose
hidden tests are replaced by a placeholder (and scrubbed from outputs and
tracebacks), then checks that no hidden-test line appears in any file.

``GPTCORE_CLASS_DEBUG=1`` keeps a run's temporary folder (worker logs) for
inspection; ``GPTCORE_SANDBOX=off`` grades without a sandbox.
"""

from __future__ import annotations

import contextlib
import csv
import html
import json
import os
import queue
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .cells import HIDDEN_BEGIN, HIDDEN_END, HIDDEN_PLACEHOLDER
from .grade import QuestionResult, _load_submission, _reasons
from .sandbox import (
    RUNTIME_BASE,
    Limits,
    Sandbox,
    kill_user_processes,
    probe,
    runtime_dir,
    sandbox_uid,
)
from .workspace import Course, NbgraderError, check_success, copy_lesson_source, nbgrader_api

__all__ = [
    "ClassConfig",
    "ClassReport",
    "StudentResult",
    "autograde",
    "class_config",
    "collect",
    "export",
    "feedback",
    "hidden_lines",
    "leaked_lines",
]

MiB = 1 << 20
_STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
_SKIP_NAMES = {".ipynb_checkpoints", "__pycache__", ".DS_Store"}
_OK_STATUSES = ("graded",)


# ------------------------------------------------------------------ the course
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


def class_config(course: Course) -> ClassConfig:
    """Read ``nbgrader_config.py`` of ``course`` (course id, gradebook URL, folders)."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    from .workspace import COURSE_ID

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


# ------------------------------------------------------------------ reports
@dataclass
class StudentResult:
    """One student's outcome for one lesson (or one step: collect, feedback, export)."""

    student: str
    lesson: str
    status: str  # graded | kernel died | timed out | invalid | missing | error | ok | skipped
    questions: list[QuestionResult] = field(default_factory=list)
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # for a human to review
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(q.points for q in self.questions)

    @property
    def max_total(self) -> float:
        return sum(q.max_points for q in self.questions)

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
        lines = [f"{self.action} {self.lesson}".rstrip() + ":"]
        width = max([len(r.student) for r in self.results] + [7])
        for r in self.results:
            pts = f"{r.total:g} / {r.max_total:g}" if r.questions else ""
            note = r.message
            if r.status in _OK_STATUSES and r.questions:
                lost = [q for q in r.questions if q.points < q.max_points]
                note = "; ".join(f"{q.grade_id}: {q.reason}" for q in lost[:2])
                if len(lost) > 2:
                    note += f"; and {len(lost) - 2} more"
            lines.append(f"  {r.student:<{width}}  {r.status:<11} {pts:>11}  {_cut(note, 110)}")
            lines += [f"  {'':<{width}}  warning: {_cut(w, 120)}" for w in r.warnings]
            lines += [f"  {'':<{width}}  REVIEW: {_cut(f, 120)}" for f in r.flags]
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
            lines.append(f"  {status}: {len(who)}")
            lines += [f"    {s}: {_cut(why[s], 120)}" for s in who]
        flagged = [r.student for r in self.results if r.flags]
        if flagged:
            lines.append(f"  flagged for review: {', '.join(flagged)}")
        if self.sandbox:
            lines.append(f"  {self.sandbox}")
        lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


def _cut(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{seconds:.1f} s"


def _regular(path: Path) -> bool:
    """A plain file, not a link, a FIFO or a device (which a copy would follow or block on)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _safe_ignore(folder: str, names: list[str]) -> set[str]:
    """For copytree: keep only plain files and folders of a student's submission."""
    skip = set()
    for name in names:
        try:
            mode = os.lstat(os.path.join(folder, name)).st_mode
        except OSError:
            mode = 0
        if name in _SKIP_NAMES or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            skip.add(name)
    return skip


def _copy_submission(src: Path, dest: Path) -> None:
    if src.is_symlink():
        raise ValueError(f"{src} is a link, not a folder")
    shutil.copytree(src, dest, ignore=_safe_ignore, symlinks=True, dirs_exist_ok=True)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="student", disable=not enabled, file=sys.stderr)


# ------------------------------------------------------------------ collect
def collect(course: Course, src: str | Path, lesson: str, *, progress: bool = True) -> ClassReport:
    """Copy submissions into ``submitted/<student>/<lesson>/<notebook>.ipynb``.

    ``src`` holds one entry per student, named by the student id: a folder
    (nbgrader's ``<student>/<lesson>/<nb>.ipynb``, or the notebook and any
    files anywhere inside it: an LMS download or a JupyterHub home), or a
    single ``<student>.ipynb``. A lone notebook with another name is renamed
    to the lesson's. A student collected again is replaced.
    """
    start = time.perf_counter()
    cfg = class_config(course)
    names = cfg.lesson_notebooks(lesson)
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"{src} is not a folder of submissions")
    entries = sorted(
        p
        for p in src.iterdir()
        if not p.name.startswith(".")
        and not p.is_symlink()
        and (p.is_dir() or (p.suffix == ".ipynb" and _regular(p)))
    )
    report = ClassReport("collect", lesson)
    bar = _progress(len(entries), f"collect {lesson}", progress)
    for entry in entries:
        student = entry.stem if entry.is_file() else entry.name
        t0 = time.perf_counter()
        result = StudentResult(student, lesson, "ok")
        if not _STUDENT_ID.match(student):
            result.status, result.message = (
                "skipped",
                "not a valid student id (letters, digits, ._@+-)",
            )
        else:
            result.message = _collect_one(entry, cfg.submitted / student / lesson, names)
            if result.message.startswith("no notebook"):
                result.status = "missing"
        result.seconds = time.perf_counter() - t0
        report.results.append(result)
        bar.update(1)
    bar.close()
    report.seconds = time.perf_counter() - start
    report.notes.append(f"submissions are in {cfg.submitted}")
    return report


def _collect_one(entry: Path, dest: Path, names: list[str]) -> str:
    """Copy one student's entry to ``dest``; return a note ('' when unremarkable)."""
    tmp = dest.with_name(f".{dest.name}.collecting")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    note = ""
    if entry.is_file():
        shutil.copyfile(entry, tmp / f"{names[0]}.ipynb")
        note = f"{entry.name} -> {names[0]}.ipynb" if entry.stem != names[0] else ""
    else:
        base = entry / dest.name if (entry / dest.name).is_dir() else entry
        notebooks = sorted(p for p in base.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        found = {p.stem: p for p in notebooks}
        home = found[names[0]].parent if names[0] in found else base
        _copy_submission(home, tmp)
        for name in names:
            if name in found:
                if found[name].parent != home:
                    shutil.copyfile(found[name], tmp / f"{name}.ipynb")
            elif len(names) == 1 and len(notebooks) == 1:
                shutil.copyfile(notebooks[0], tmp / f"{name}.ipynb")
                note = f"{notebooks[0].name} -> {name}.ipynb"
                # Renamed, not duplicated: a second copy would be an unknown notebook.
                if home in notebooks[0].parents:
                    (tmp / notebooks[0].relative_to(home)).unlink(missing_ok=True)
        if not any((tmp / f"{n}.ipynb").exists() for n in names):
            note = (
                "no notebook "
                + ", ".join(f"{n}.ipynb" for n in names)
                + (f" (found {', '.join(p.name for p in notebooks)})" if notebooks else " (empty)")
            )
    if entry.is_dir() and _regular(entry / "timestamp.txt"):
        shutil.copyfile(entry / "timestamp.txt", tmp / "timestamp.txt")
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)
    return note


# ------------------------------------------------------------------ autograde
@dataclass
class _Task:
    student: str
    submission: Path
    result_dir: Path


def _student_dirs(cfg: ClassConfig, lesson: str) -> list[str]:
    return sorted(
        p.parent.name
        for p in cfg.submitted.glob(f"*/{lesson}")
        if p.is_dir() and not p.parent.name.startswith(".")
    )


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
    progress: bool = True,
) -> ClassReport:
    """Autograde every submission of ``lesson`` (or ``students``), in parallel and sandboxed."""
    start = time.perf_counter()
    cfg = class_config(course)
    notebooks = cfg.lesson_notebooks(lesson)
    if students:
        known = _student_dirs(cfg, lesson)
        unknown = [s for s in students if s not in known]
        if unknown:
            raise ValueError(
                f"no submission of {lesson} for {', '.join(unknown)} in {cfg.submitted}"
            )
        names = list(dict.fromkeys(students))
    else:
        names = _student_dirs(cfg, lesson)
    if not names:
        raise ValueError(
            f"no submissions of {lesson} in {cfg.submitted}: expected "
            f"submitted/<student>/{lesson}/; collect them with `gptcore class collect`"
        )
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
    )
    report = ClassReport("autograde", lesson, sandbox=box.describe())
    report.notes.append(
        f"{workers} worker(s), {threads} thread(s) per kernel; timeouts: {cell_timeout} s per "
        f"cell, {notebook_timeout} s per notebook; limits: {limits.describe()}"
    )
    with tempfile.TemporaryDirectory(prefix="gptcore-class-") as tmp_name:
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
            "guard": _guard_settings(cfg.course, lesson, notebooks),
            "seed": str(_matplotlib_seed(tmp / "mplseed")),
        }
        tasks = [
            _Task(s, cfg.submitted / s / lesson, tmp / "results" / f"{i:04d}")
            for i, s in enumerate(names)
        ]
        pool = _Pool(workers, setup, tmp, notebook_timeout * len(notebooks), grace=20)
        bar = _progress(len(tasks), f"autograde {lesson}", progress)
        results: dict[str, StudentResult] = {}
        try:
            # Workers start grading as soon as they are ready; meanwhile the lesson is
            # recorded in the real gradebook, which merging the first result needs.
            pool.start(tasks)
            _register_assignment(cfg, lesson)
            max_scores = _max_scores(cfg, lesson)
            for task, raw in pool.results():
                try:
                    result = _finish(cfg, lesson, max_scores, task, raw)
                except Exception as e:  # one student's merge must not stop the class
                    result = StudentResult(task.student, lesson, "error")
                    result.message = f"could not record the grades: {type(e).__name__}: {e}"
                results[task.student] = result
                bar.update(1)
                bar.set_postfix_str(f"{task.student}: {result.status}", refresh=False)
        finally:
            bar.close()
            pool.close()
            for leftover in Path(RUNTIME_BASE or tempfile.gettempdir()).glob(f"gptk-{run}-*"):
                shutil.rmtree(leftover, ignore_errors=True)  # from killed workers
    report.results = [results[s] for s in names]
    report.seconds = time.perf_counter() - start
    return report


def _register_assignment(cfg: ClassConfig, lesson: str) -> None:
    """Record the lesson (cells, points, hidden tests) in the real gradebook, as
    ``nbgrader generate_assignment`` does, from a throwaway copy of solutions/."""
    _fast_alembic_version()
    extra = {"CourseDirectory.db_url": cfg.db_url, "CourseDirectory.course_id": cfg.course_id}
    with nbgrader_api(**extra) as (api, course_dir):
        copy_lesson_source(cfg.course, lesson, course_dir)
        try:
            check_success(api.generate_assignment(lesson, force=True), "generate_assignment")
        except NbgraderError as e:
            raise RuntimeError(f"could not record lesson {lesson} in {cfg.db_url}: {e}") from None


def _build_template(course: Course, course_id: str, lesson: str, dest: Path) -> Path:
    """A released lesson with its own throwaway gradebook, copied for every student."""
    with nbgrader_api(**{"CourseDirectory.course_id": course_id}) as (api, course_dir):
        copy_lesson_source(course, lesson, course_dir)
        try:
            check_success(api.generate_assignment(lesson, force=True), "generate_assignment")
        except NbgraderError as e:
            raise RuntimeError(
                f"could not build lesson {lesson} from {course.solutions}: {e}"
            ) from None
        shutil.copytree(course_dir, dest)
    return dest


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


# ------------------------------------------------------------------ worker pool
class _Pool:
    """``workers`` long-lived grading processes; each grades one student at a time.

    A worker that runs past ``deadline`` seconds on one student is killed with
    its process group and every process of its sandbox user, and replaced.
    """

    def __init__(self, workers: int, setup: dict[str, Any], tmp: Path, limit: int, grace: int):
        self.workers, self.setup, self.tmp = workers, setup, tmp
        self.limit, self.deadline = limit, limit + grace
        self.procs: dict[int, subprocess.Popen[bytes] | None] = {}
        self.ready: dict[int, bool] = {}

    def start(self, tasks: list[_Task]) -> None:
        """Start every worker and hand out ``tasks``; collect them with :meth:`results`."""
        self.todo: queue.Queue[_Task | None] = queue.Queue()
        self.done: queue.Queue[tuple[_Task, dict[str, Any]]] = queue.Queue()
        self.count = len(tasks)
        for t in tasks:
            self.todo.put(t)
        for _ in range(self.workers):
            self.todo.put(None)
        for k in range(self.workers):
            self.procs[k] = self._spawn(k)
        self.threads = [
            threading.Thread(target=self._slot, args=(k, self.todo, self.done), daemon=True)
            for k in range(self.workers)
        ]
        for th in self.threads:
            th.start()

    def results(self) -> Iterator[tuple[_Task, dict[str, Any]]]:
        for _ in range(self.count):
            yield self.done.get()
        for th in self.threads:
            th.join()

    def _slot(self, k: int, todo: queue.Queue, done: queue.Queue) -> None:
        while True:
            task = todo.get()
            if task is None:
                self._stop(k)
                return
            try:
                done.put((task, self._grade(k, task)))
            except Exception as e:  # the pool itself must never lose a student
                done.put((task, {"status": "error", "message": f"grader failure: {e!r}"}))

    def _spawn(self, k: int) -> subprocess.Popen[bytes]:
        self.ready[k] = False
        cfg = dict(self.setup, slot=k, uid=sandbox_uid(k))
        path = self.tmp / f"worker-{k}.json"
        path.write_text(json.dumps(cfg))
        log = open(self.tmp / f"worker-{k}.log", "ab")
        # The worker's temporary files live in the run's folder: a killed worker
        # leaves nothing behind once the run is over.
        scratch = Path(tempfile.mkdtemp(prefix=f"w{k}-", dir=self.tmp))
        proc = subprocess.Popen(
            # -I: the same gptcore as this process, never one in the current folder.
            [sys.executable, "-I", "-m", "gptcore.course.classroom", "--worker", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
            env={**os.environ, "TMPDIR": str(scratch)},
        )
        log.close()
        return proc

    def _wait_ready(self, k: int, proc: subprocess.Popen[bytes]) -> None:
        line = _read_line(proc, time.monotonic() + 600)
        if line is None or json.loads(line).get("ready") is not True:
            self._kill(k, proc)
            self.procs[k] = None
            log = (self.tmp / f"worker-{k}.log").read_text(errors="replace").strip()
            last = log.splitlines()[-1] if log else "no log"
            raise RuntimeError(f"grading worker {k} did not start: {last}")
        self.ready[k] = True

    def _grade(self, k: int, task: _Task) -> dict[str, Any]:
        proc = self.procs.get(k)
        if proc is None or proc.poll() is not None:
            proc = self.procs[k] = self._spawn(k)
        if not self.ready[k]:
            self._wait_ready(k, proc)
        assert proc.stdin is not None
        t0 = time.monotonic()
        proc.stdin.write(
            (
                json.dumps(
                    {
                        "student": task.student,
                        "submission": str(task.submission),
                        "result_dir": str(task.result_dir),
                    }
                )
                + "\n"
            ).encode()
        )
        proc.stdin.flush()
        line = _read_line(proc, t0 + self.deadline)
        if line is not None:
            return json.loads(line)
        seconds = time.monotonic() - t0
        alive = proc.poll() is None
        code = proc.returncode
        self._kill(k, proc)
        self.procs[k] = None
        if alive:
            return {
                "status": "timed out",
                "message": f"the notebook ran past its time limit ({self.limit} s); "
                "the grading worker and its kernel were killed (far too slow, or stuck)",
                "seconds": seconds,
            }
        return {
            "status": "error",
            "message": f"the grading worker died (exit code {code}); "
            f"see its log in {self.tmp}/worker-{k}.log",
            "seconds": seconds,
        }

    def _kill(self, k: int, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        if self.setup["sandbox"]["user"]:
            kill_user_processes(sandbox_uid(k))

    def _stop(self, k: int) -> None:
        proc = self.procs.pop(k, None)
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._kill(k, proc)
        if self.setup["sandbox"]["user"]:
            kill_user_processes(sandbox_uid(k))

    def close(self) -> None:
        for k, proc in list(self.procs.items()):
            if proc is not None and proc.poll() is None:
                self._kill(k, proc)


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> str | None:
    """One line from the worker before ``deadline``, or None (timed out or it died)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            if proc.poll() is not None:
                return None
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None
        buf += chunk
        if b"\n" in buf:
            return buf.split(b"\n", 1)[0].decode()


# ------------------------------------------------------------------ merging results
def _finish(
    cfg: ClassConfig,
    lesson: str,
    max_scores: dict[str, dict[str, float]],
    task: _Task,
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
    for nb, cells in sorted(max_scores.items()):
        for gid, max_score in cells.items():
            g = grades.get(nb, {}).get(gid)
            points = float((g or {}).get("auto_score") or 0.0)
            reason = ""
            if points < max_score:
                reason = reasons.get(gid) or (
                    result.message
                    if result.status not in _OK_STATUSES
                    else "the test failed"
                    if g
                    else "the test cell did not run"
                )
            result.questions.append(QuestionResult(gid, points, max_score, reason))
    _record(cfg, lesson, task.student, result, grades)
    dest = cfg.autograded / task.student / lesson
    produced = task.result_dir / "autograded"
    if produced.is_dir():
        tmp = dest.with_name(f".{dest.name}.writing")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        _copy_submission(task.submission, tmp)
        for nb in produced.glob("*.ipynb"):
            shutil.copyfile(nb, tmp / nb.name)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    else:  # no autograded copy: stale feedback must not be regenerated from an old one
        shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(task.result_dir, ignore_errors=True)
    return result


def _max_scores(cfg: ClassConfig, lesson: str) -> dict[str, dict[str, float]]:
    """notebook -> grade cell -> max points, from the real gradebook."""
    from nbgrader.api import Gradebook

    with _quiet_gradebook(), Gradebook(cfg.db_url, cfg.course_id) as gb:
        a = gb.find_assignment(lesson)
        return {nb.name: {c.name: float(c.max_score) for c in nb.grade_cells} for nb in a.notebooks}


@contextlib.contextmanager
def _quiet_gradebook() -> Iterator[None]:
    import warnings

    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + saved  # alembic
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="nbgrader")
            warnings.filterwarnings("ignore", message=".*not in session.*")
            yield
    finally:
        os.environ["PATH"] = saved


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
    with _quiet_gradebook(), Gradebook(cfg.db_url, cfg.course_id) as gb:
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
            snb.flagged = bool(result.flags) or result.status not in _OK_STATUSES
        gb.db.commit()


# ------------------------------------------------------------------ the worker
# Protected modules: the guard restores functions and classes in these, as
# they were when the kernel started, before every test cell.
_PROTECTED = [
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


def _guard_settings(course: Course, lesson: str, notebooks: list[str]) -> dict[str, Any]:
    """The check modules the lesson's provided cells bind (``checks`` -> module)."""
    aliases: dict[str, list[str | None]] = {}
    for name in notebooks:
        nb = json.loads(course.source_notebook(lesson, f"{name}.ipynb").read_text())
        for cell in nb.get("cells", []):
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell.get("cell_type") != "code" or meta.get("solution"):
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
    return {"aliases": aliases, "protected": _PROTECTED}


_GUARD_SETUP = r"""
def _gptcore_guard_factory(aliases, protected):
    import builtins, importlib, sys
    for module, attr in aliases.values():
        for candidate in ([module + "." + attr] if attr else []) + [module]:
            try:
                importlib.import_module(candidate)
            except Exception:
                pass
    missing = object()
    modules = sys.modules
    _getattr, _type, _isinstance = getattr, type, isinstance
    def plain(v):
        return callable(v) or _type(v) is _type(sys) or _isinstance(v, (staticmethod, classmethod, property))
    def strict(name):
        # Any change here is tampering; elsewhere (PyTorch rebinds torch.manual_seed
        # when it loads dynamo, for one) only a replacement written in the notebook.
        return name == "builtins" or name.startswith("gptcore")
    def made_here(v):
        for x in (v, _type(v), _getattr(v, "func", None), _getattr(v, "__func__", None)):
            try:
                if x is not None and _getattr(x, "__module__", None) == "__main__":
                    return True
            except Exception:
                return True
        return False
    # ipykernel and IPython rebind these in builtins as they run cells.
    volatile = {"input", "raw_input", "getpass", "_", "__", "___", "display", "get_ipython",
                "exit", "quit", "help", "__IPYTHON__"}
    snap = {}
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (looking at deprecated attributes warns)
        for n, m in list(modules.items()):
            if m is not None and n.split(".")[0] in protected:
                try:
                    snap[n] = (m, strict(n), {k: v for k, v in vars(m).items() if plain(v)
                                              and not (n == "builtins" and k in volatile)})
                except TypeError:
                    pass
    classes = {}
    extra = [(_getattr(modules.get("torch"), "Tensor", None), False)]
    extra.append((_getattr(_getattr(modules.get("torch"), "nn", None), "Module", None), False))
    for n, (m, _, d) in snap.items():
        for v in list(d.values()):
            if _isinstance(v, type) and (v.__module__ or "").startswith("gptcore"):
                extra.append((v, True))
    for cls, exact in extra:
        if _isinstance(cls, type) and cls not in classes:
            classes[cls] = (exact, {k: v for k, v in vars(cls).items() if plain(v)})
    targets = {}
    for alias, (module, attr) in aliases.items():
        m = modules.get(module + "." + attr) if attr else None
        if m is None and module in modules:
            m = _getattr(modules[module], attr) if attr else modules[module]
        if m is not None:
            targets[alias] = m
    ip = get_ipython()
    hooks = ("input_transformers_cleanup", "input_transformers_post", "ast_transformers")
    saved = {k: list(_getattr(ip, k)) for k in hooks if _isinstance(_getattr(ip, k, None), list)}
    _setattr, _vars, _sorted, _list = setattr, vars, sorted, list
    _type_setattr, _settrace, _setprofile = type.__setattr__, sys.settrace, sys.setprofile
    def guard():
        restored = []
        for n, (m, exact, d) in snap.items():
            now = modules.get(n, m)
            if now is not m and (exact or made_here(now) or _type(now) is not _type(m)):
                modules[n] = m
                restored.append("sys.modules[%r]" % n)
            cur = _vars(m)
            for k, v in d.items():
                new = cur.get(k, missing)
                if new is not v and (exact or made_here(new)):
                    try:
                        _setattr(m, k, v)
                        restored.append(n + "." + k)
                    except Exception:
                        pass
        for cls, (exact, d) in classes.items():
            cur = _vars(cls)
            for k, v in d.items():
                new = cur.get(k, missing)
                if new is not v and (exact or made_here(new)):
                    try:
                        _type_setattr(cls, k, v)
                        restored.append(cls.__module__ + "." + cls.__qualname__ + "." + k)
                    except Exception:
                        pass
        ns = ip.user_ns
        for alias, obj in targets.items():
            if ns.get(alias, missing) is not obj:
                ns[alias] = obj
                restored.append(alias)
        for k, v in saved.items():
            cur = _getattr(ip, k, None)
            if _isinstance(cur, list) and _list(cur) != v:
                cur[:] = v
                restored.append("IPython " + k)
        _settrace(None)
        _setprofile(None)
        return ", ".join(_sorted(set(restored)))
    return guard
"""


def _guard_code(settings: dict[str, Any], name: str) -> tuple[str, str]:
    """(setup code, per-test-cell expression) for the kernel; ``name`` is a per-run secret.

    Both run silently (no history, no output), the expression as a
    ``user_expressions`` entry of an empty execute request: one round trip.
    """
    setup = (
        _GUARD_SETUP
        + f"{name} = _gptcore_guard_factory({settings['aliases']!r}, "
        + f"{tuple(settings['protected'])!r})\n"
        + "del _gptcore_guard_factory\n"
    )
    return setup, f"{name}()"


def _make_execute_class() -> type:
    """nbgrader's Execute with capped output, the guard, and partial credit on a dead kernel."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbformat.v4 import new_output
    from nbgrader.preprocessors import Execute
    from traitlets import Integer, Unicode

    def error(ename: str, evalue: str) -> Any:
        return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])

    class GradingExecute(Execute):
        setup_code = Unicode("").tag(config=True)
        guard_call = Unicode("").tag(config=True)
        max_output_bytes = Integer(1 * MiB).tag(config=True)

        def preprocess(self, nb, resources=None, km=None):  # type: ignore[override]
            self._used: dict[int, int] = {}
            self._stopped = ""  # why the kernel can run no more cells
            self._started = False
            return super().preprocess(nb, resources, km)

        def _silent(self, code: str, expression: str = "") -> None:
            """Run ``code`` (and evaluate ``expression``) silently; note what the guard says."""
            assert self.kc is not None
            exprs = {"guard": expression} if expression else {}
            msg_id = self.kc.execute(
                code, silent=True, store_history=False, user_expressions=exprs, stop_on_error=False
            )
            reply = self.wait_for_reply(msg_id)
            key = "guard_errors" if expression else "setup_errors"
            if reply is None:
                RUN_LOG.setdefault(key, []).append("no reply from the kernel")
                return
            content = reply.get("content", {})
            results = [content, *(content.get("user_expressions") or {}).values()]
            for r in results:
                if r.get("status") == "error":
                    RUN_LOG.setdefault(key, []).append(f"{r.get('ename')}: {r.get('evalue')}")
            value = (content.get("user_expressions") or {}).get("guard", {})
            text = str(value.get("data", {}).get("text/plain", "")).strip("'\"")
            if value.get("status") == "ok" and text:
                RUN_LOG.setdefault("restored", set()).update(x.strip() for x in text.split(","))

        def preprocess_cell(self, cell, resources, index):  # type: ignore[override]
            if self._stopped:
                if cell.cell_type == "code" and cell.source.strip():
                    cell.outputs = [error("NotRun", f"this cell was not run: {self._stopped}")]
                return cell, self.resources
            try:
                if not self._started and self.setup_code:
                    self._started = True
                    self._silent(self.setup_code)
                meta = cell.metadata.get("nbgrader", {})
                if meta.get("grade") and cell.cell_type == "code" and self.guard_call:
                    self._silent("", self.guard_call)
                self._used[index] = 0
                return super().preprocess_cell(cell, resources, index)
            except DeadKernelError:
                self._stopped = f"the kernel died in cell {index}"
                RUN_LOG["stopped"] = (
                    "kernel died",
                    f"the kernel died while running cell {index} (the notebook called "
                    "os._exit or exit(), crashed, or ran out of memory or CPU time); "
                    "later cells were not run",
                )
                out = error("DeadKernelError", RUN_LOG["stopped"][1])
            except CellTimeoutError:
                self._stopped = f"the kernel stopped responding in cell {index}"
                RUN_LOG["stopped"] = (
                    "timed out",
                    f"cell {index} ran past the time limit and the kernel ignored the "
                    "interrupt; later cells were not run",
                )
                out = error("CellTimeoutError", RUN_LOG["stopped"][1])
            cell.outputs = [*cell.get("outputs", []), out]
            self.nb.cells[index] = cell
            return cell, self.resources

        def output(self, outs, msg, display_id, cell_index):  # type: ignore[override]
            content = msg.get("content", {})
            if msg.get("msg_type") == "error":
                content["evalue"] = _clip(str(content.get("evalue", "")), 4000)
                tb = [_clip(str(t), 4000) for t in content.get("traceback", [])]
                content["traceback"] = tb if len(tb) <= 60 else [*tb[:30], "...", *tb[-29:]]
                return super().output(outs, msg, display_id, cell_index)
            size = _content_size(content)
            used = self._used.get(cell_index, 0) + size
            self._used[cell_index] = used
            if used > self.max_output_bytes:
                if used - size <= self.max_output_bytes:
                    RUN_LOG.setdefault("output_limited", []).append(cell_index)
                    outs.append(
                        new_output(
                            "stream",
                            name="stderr",
                            text=f"\n[output limit exceeded: more than "
                            f"{self.max_output_bytes // 1024} KiB; the rest was dropped]\n",
                        )
                    )
                return None
            return super().output(outs, msg, display_id, cell_index)

        def _update_display_id(self, display_id, msg):  # type: ignore[override]
            if _content_size(msg.get("content", {})) > self.max_output_bytes:
                return
            return super()._update_display_id(display_id, msg)

    return GradingExecute


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 20] + " ...[truncated]"


def _content_size(content: dict[str, Any]) -> int:
    size = len(str(content.get("text", "")))
    for v in (content.get("data") or {}).values():
        size += len(v) if isinstance(v, str) else len(json.dumps(v))
    return size


RUN_LOG: dict[str, Any] = {}


_SUSPICIOUS = [
    (
        "replaces a gptcore check or helper",
        r"\bchecks\s*\.\s*\w+\s*=(?!=)|\bgptcore(?:\.\w+)*\s*\.\s*\w+\s*=(?!=)|setattr\(\s*(?:checks|gptcore)",
    ),
    ("defines __eq__ (an answer that equals anything?)", r"\b__eq__\b|\b__ne__\b"),
    (
        "changes how IPython runs cells",
        r"input_transformers|ast_transformers|events\.register|run_cell|showtraceback|sys\.settrace|sys\.setprofile|excepthook",
    ),
    (
        "ends or signals the kernel",
        r"\bos\._exit\b|\bsys\.exit\b|(?<![\w.])(?:exit|quit)\(|\bos\.kill|\bsignal\.\w+\(",
    ),
    (
        "touches builtins or the import machinery",
        r"\bbuiltins\b|__builtins__|\bimportlib\b|\bsys\.modules\b|\bgc\.get_|__import__",
    ),
    (
        "reads grading files or the call stack",
        r"gradebook|solutions/|nbgrader|\blinecache\b|inspect\.(?:stack|currentframe|getsource|getouterframes)|sys\._getframe",
    ),
    ("opens a network connection", r"\bsocket\b|\burllib\b|\brequests\.|http\.client|\bhttpx\b"),
    (
        "starts processes",
        r"\bos\.fork\b|\bsubprocess\b|\bmultiprocessing\b|\bos\.system\b|\bos\.exec|\bos\.spawn|\bos\.popen",
    ),
]


def suspicious_code(submission: dict[str, Any], source: dict[str, Any]) -> list[str]:
    """What a reviewer should look at: student-written code that matches a known trick."""
    provided = {
        "".join(c.get("source", "")).strip()
        for c in source.get("cells", [])
        if not c.get("metadata", {}).get("nbgrader", {}).get("solution")
    }
    found: list[str] = []
    for i, cell in enumerate(submission.get("cells", [])):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.get("cell_type") != "code" or (meta.get("grade") and not meta.get("solution")):
            continue  # test cells are restored from the gradebook anyway
        src = "".join(cell.get("source", ""))
        if src.strip() in provided:
            continue
        code = "\n".join(line.split("#", 1)[0] for line in src.splitlines())
        for what, pattern in _SUSPICIOUS:
            m = re.search(pattern, code)
            if m:
                line = code[: m.start()].count("\n")
                snippet = code.splitlines()[line].strip()
                found.append(f"cell {i} {what}: `{_cut(snippet, 80)}`")
    return found


_CHANGED = re.compile(
    r"Attribute '(\w+)' for cell (\S+) has changed! \(should be: (.*?), got: (.*?)\)"
)
_ADDED = re.compile(r"Missing grade cell (\S+) encountered, adding to notebook")


def _nbgrader_warnings(log: str) -> list[str]:
    """What nbgrader's autograde undid, from its log."""
    out: list[str] = []
    for attr, cell, should, got in _CHANGED.findall(log):
        # (a "checksum" change is every cell with hidden tests: see _edited_cells)
        if attr == "points":
            out.append(f"points of {cell} were changed to {got}; grading used {should}")
        elif attr == "cell_type":
            out.append(f"cell {cell} was changed to {got}; grading used the original {should}")
        elif attr == "locked":
            out.append(f"cell {cell} was unlocked; grading used the original")
    for cell in _ADDED.findall(log):
        out.append(f"test cell {cell} was deleted; it was put back and run")
    return list(dict.fromkeys(out))


def _cause(log: str) -> str:
    """The most telling line of a failed nbgrader run's log."""
    lines = [x.strip() for x in log.strip().splitlines() if x.strip()]
    errors = [
        x
        for x in lines
        if re.match(r"^[\w.]*(Error|Exception)\b", x) and "NbGraderException" not in x
    ]
    return (errors or lines or ["no log"])[-1]


def _edited_cells(submission: dict[str, Any], released: dict[str, Any]) -> list[str]:
    """Test cells whose source differs from the released lesson's."""

    def tests(nb: dict[str, Any]) -> dict[str, str]:
        out = {}
        for cell in nb.get("cells", []):
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade") and not meta.get("solution") and meta.get("grade_id"):
                out[meta["grade_id"]] = "".join(cell.get("source", "")).strip()
        return out

    mine = tests(submission)
    return [gid for gid, src in tests(released).items() if gid in mine and mine[gid] != src]


def _fast_alembic_version() -> None:
    """nbgrader runs the ``alembic heads`` command (seconds) for every new gradebook
    (a worker makes one per run): ask alembic in-process instead, the same answer."""
    import nbgrader
    import nbgrader.api

    try:
        from alembic.script import ScriptDirectory

        folder = os.path.join(os.path.dirname(nbgrader.__file__), "alembic")
        head = ScriptDirectory(folder).get_current_head()
    except Exception:
        return
    if head:
        nbgrader.api.get_alembic_version = lambda: head


def _worker_main(config_path: str) -> int:
    """``python -m gptcore.course.classroom --worker CONFIG``: grade students read from stdin."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints (nbgrader, kernels) go to the log, not the protocol
    setup = json.loads(Path(config_path).read_text())
    from .sandbox import write_kernelspec

    box = Sandbox(**setup["sandbox"])
    limits = Limits(**setup["limits"])
    # As in `gptcore grade`: lessons that train for minutes shorten their run when graded.
    os.environ.setdefault("GPTCORE_LESSON_SECONDS", "10")
    kernels = Path(tempfile.mkdtemp(prefix="gptcore-kernels-"))
    kernel = write_kernelspec(
        kernels,
        box,
        limits,
        uid=setup["uid"],
        threads=setup["threads"],
        seed=Path(setup["seed"]) if setup.get("seed") else None,
        private=[setup["course_root"]],
    )
    os.environ["JUPYTER_PATH"] = str(kernels) + os.pathsep + os.environ.get("JUPYTER_PATH", "")
    execute_class = _make_execute_class()
    _fast_alembic_version()
    work = Path(tempfile.mkdtemp(prefix="gptcore-worker-"))
    # This worker's own copy of the released lesson and its throwaway gradebook.
    setup["template"] = str(
        _build_template(
            Course(Path(setup["course_root"])),
            setup["course_id"],
            setup["lesson"],
            work / "template",
        )
    )
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        t0 = time.perf_counter()
        try:
            result = _grade_one(setup, task, box, kernel, execute_class)
        except Exception as e:
            import traceback

            traceback.print_exc()
            result = {"status": "error", "message": f"grading failed: {type(e).__name__}: {e}"}
        finally:
            if box.user:
                kill_user_processes(setup["uid"])
        result["seconds"] = time.perf_counter() - t0
        proto.write(json.dumps(result) + "\n")
    shutil.rmtree(kernels, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _grade_one(
    setup: dict[str, Any], task: dict[str, Any], box: Sandbox, kernel: str, execute_class: type
) -> dict[str, Any]:
    """Grade one student in a throwaway course folder; return what the parent needs."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.api import Gradebook, MissingEntry
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )

    lesson, student = setup["lesson"], task["student"]
    sub = Path(task["submission"])
    out = Path(task["result_dir"])
    template = Path(setup["template"])
    result: dict[str, Any] = {"status": "graded", "message": "", "warnings": [], "flags": []}
    if sub.is_symlink() or sub.parent.is_symlink():
        result["status"], result["message"] = "invalid", "the submission folder is a link"
        return result
    present = {p.stem for p in sub.glob("*.ipynb") if _regular(p)} if sub.is_dir() else set()
    expected = setup["notebooks"]
    absent = [n for n in expected if n not in present]
    if len(absent) == len(expected):
        others = sorted(p.name for p in sub.glob("*.ipynb")) if sub.is_dir() else []
        result["status"] = "missing"
        result["message"] = f"no {lesson}/{expected[0]}.ipynb in the submission" + (
            f" (found {', '.join(others)}; collect renames a lone notebook)" if others else ""
        )
        return result
    result["warnings"] += [f"{n}.ipynb is missing: it scores 0" for n in absent]
    invalid: dict[str, str] = {}
    for name in expected:
        if name in absent:
            continue
        nb, problem = _load_submission(sub / f"{name}.ipynb")
        if nb is None:
            invalid[name] = problem
            continue
        source = json.loads((template / "source" / lesson / f"{name}.ipynb").read_text())
        released = json.loads((template / "release" / lesson / f"{name}.ipynb").read_text())
        result["flags"] += suspicious_code(nb, source)
        result["warnings"] += [
            f"locked test cell {gid} was edited; grading used the original"
            for gid in _edited_cells(nb, released)
        ]
    if len(invalid) + len(absent) == len(expected):
        result["status"] = "invalid"
        result["message"] = "; ".join(invalid.values())
        return result
    result["warnings"] += [f"{n}.ipynb cannot be graded: {p}" for n, p in invalid.items()]

    rt = runtime_dir(setup["run"])
    setup_code, guard_call = _guard_code(setup["guard"], f"_g{os.urandom(6).hex()}")
    extra = {
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
            execute_class,
            IgnorePattern,
            ClearMetadataPreprocessor,
            LimitOutput,
            SaveAutoGrades,
            AssignLatePenalties,
            CheckCellMetadata,
        ],
        f"{execute_class.__name__}.setup_code": setup_code,
        f"{execute_class.__name__}.guard_call": guard_call,
        f"{execute_class.__name__}.max_output_bytes": setup["max_output_bytes"],
    }
    RUN_LOG.clear()
    try:
        with nbgrader_api(cell_timeout=setup["cell_timeout"], **extra) as (api, course_dir):
            for part in ("source", "release"):
                shutil.copytree(template / part, course_dir / part, dirs_exist_ok=True)
            shutil.copyfile(template / "gradebook.db", course_dir / "gradebook.db")
            dest = course_dir / "submitted" / student / lesson
            _copy_submission(sub, dest)
            for name in invalid:
                (dest / f"{name}.ipynb").unlink()
            answer = api.autograde(lesson, student, force=True, create=True)
            log = (answer.get("log") or "") + (answer.get("error") or "")
            result["warnings"] += _nbgrader_warnings(log)
            if not answer.get("success"):
                print(log, file=sys.stderr)  # the worker's log
                result["status"] = "error"
                result["message"] = "nbgrader could not grade the notebook: " + _cause(log)
                return result
            grades: dict[str, dict[str, Any]] = {}
            reasons: dict[str, str] = {}
            with _quiet_gradebook(), Gradebook(api.coursedir.db_url) as gb:
                for name in expected:
                    try:
                        snb = gb.find_submission_notebook(name, lesson, student)
                    except MissingEntry:
                        continue
                    grades[name] = {
                        g.name: {
                            "auto_score": g.auto_score,
                            "needs_manual_grade": bool(g.needs_manual_grade),
                        }
                        for g in snb.grades
                    }
            (out / "autograded").mkdir(parents=True, exist_ok=True)
            for name in expected:
                path = course_dir / "autograded" / student / lesson / f"{name}.ipynb"
                if path.is_file():
                    reasons.update(_reasons(json.loads(path.read_text(encoding="utf-8"))))
                    shutil.copyfile(path, out / "autograded" / path.name)
            result["grades"], result["reasons"] = grades, reasons
    finally:
        shutil.rmtree(rt, ignore_errors=True)
    if RUN_LOG.get("stopped"):
        result["status"], result["message"] = RUN_LOG["stopped"]
    if RUN_LOG.get("restored"):
        what = ", ".join(sorted(RUN_LOG["restored"]))
        result["warnings"].append(
            f"the notebook changed grading code; restored before tests: {what}"
        )
        result["flags"].append(f"monkeypatched grading code: {_cut(what, 100)}")
    if RUN_LOG.get("output_limited"):
        cells = ", ".join(str(i) for i in sorted(set(RUN_LOG["output_limited"])))
        result["warnings"].append(f"output limit exceeded in cell(s) {cells}; the rest was dropped")
    if RUN_LOG.get("setup_errors") or RUN_LOG.get("guard_errors"):
        errs = RUN_LOG.get("setup_errors", []) + RUN_LOG.get("guard_errors", [])
        result["flags"].append(f"the test guard failed: {_cut(errs[0], 100)}")
    result["flags"] = list(dict.fromkeys(result["flags"]))
    return result


# ------------------------------------------------------------------ feedback
def hidden_lines(course: Course, lesson: str) -> list[str]:
    """Lines of the lesson's hidden tests that must never reach a student."""
    lines: list[str] = []
    for nb_path in sorted((course.solutions / lesson).glob("*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        for cell in nb.get("cells", []):
            inside = False
            for line in "".join(cell.get("source", "")).splitlines():
                if line.strip() == HIDDEN_BEGIN:
                    inside = True
                elif line.strip() == HIDDEN_END:
                    inside = False
                elif inside and len(line.strip()) >= 8:
                    lines.append(line.strip())
    return list(dict.fromkeys(lines))


def _strip_hidden(nb: dict[str, Any], secret: list[str]) -> dict[str, Any]:
    """The notebook without hidden tests: sources, outputs and tracebacks."""

    def scrub(text: str) -> str:
        for line in secret:
            text = text.replace(line, "[hidden test]")
        return text

    pattern = re.compile(
        rf"^[ \t]*{re.escape(HIDDEN_BEGIN)}.*?^[ \t]*{re.escape(HIDDEN_END)}[ \t]*$", re.M | re.S
    )
    for cell in nb.get("cells", []):
        src = "".join(cell.get("source", ""))
        had_hidden = HIDDEN_BEGIN in src
        cell["source"] = scrub(pattern.sub(HIDDEN_PLACEHOLDER, src))
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out["text"] = scrub("".join(out.get("text", "")))
            elif out.get("output_type") == "error":
                out["evalue"] = scrub(str(out.get("evalue", "")))
                if had_hidden:  # a traceback quotes the hidden line that failed
                    out["traceback"] = [f"{out.get('ename')}: {out['evalue']}"]
                else:
                    out["traceback"] = [scrub(t) for t in out.get("traceback", [])]
            for mime, value in (out.get("data") or {}).items():
                if isinstance(value, str) or isinstance(value, list):
                    text = "".join(value) if isinstance(value, list) else value
                    if mime.startswith("text/") or mime.endswith("json"):
                        out["data"][mime] = scrub(text)
    return nb


def leaked_lines(text: str, secret: list[str]) -> list[str]:
    """The ``secret`` lines that appear in ``text``, as they are or HTML-escaped."""
    variants = lambda s: {s, html.escape(s), html.escape(s, quote=False)}  # noqa: E731
    return [s for s in secret if any(v in text for v in variants(s))]


def feedback(
    course: Course, lesson: str, *, students: Iterable[str] | None = None, progress: bool = True
) -> ClassReport:
    """nbgrader's HTML feedback in ``feedback/<student>/<lesson>/``, hidden tests removed."""
    start = time.perf_counter()
    cfg = class_config(course)
    cfg.lesson_notebooks(lesson)
    secret = hidden_lines(course, lesson)
    found = sorted(p.parent.name for p in cfg.autograded.glob(f"*/{lesson}") if p.is_dir())
    names = list(dict.fromkeys(students)) if students else found
    report = ClassReport("feedback", lesson)
    if not names:
        raise ValueError(
            f"no autograded submissions of {lesson} in {cfg.autograded}; "
            "run `gptcore class autograde` first"
        )
    bar = _progress(len(names), f"feedback {lesson}", progress)
    extra = {"CourseDirectory.db_url": cfg.db_url, "CourseDirectory.course_id": cfg.course_id}
    with nbgrader_api(**extra) as (api, course_dir):
        for student in names:
            t0 = time.perf_counter()
            result = StudentResult(student, lesson, "ok")
            report.results.append(result)
            try:
                _feedback_one(api, course_dir, cfg, lesson, student, secret, result)
            except Exception as e:
                result.status, result.message = "error", f"{type(e).__name__}: {e}"
            result.seconds = time.perf_counter() - t0
            bar.update(1)
    bar.close()
    report.seconds = time.perf_counter() - start
    report.notes.append(f"feedback is in {cfg.feedback}; hidden tests are not shown")
    return report


def _feedback_one(
    api: Any,
    course_dir: Path,
    cfg: ClassConfig,
    lesson: str,
    student: str,
    secret: list[str],
    result: StudentResult,
) -> None:
    src = cfg.autograded / student / lesson
    # Only the lesson's notebooks: others a student left in the folder were not graded.
    expected = set(cfg.lesson_notebooks(lesson))
    found = sorted(src.glob("*.ipynb")) if src.is_dir() else []
    notebooks = [p for p in found if p.stem in expected and _regular(p)]
    if not notebooks:
        result.status, result.message = "missing", "no autograded notebook (not graded?)"
        return
    work = course_dir / "autograded" / student / lesson
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if _regular(src / "timestamp.txt"):
        shutil.copyfile(src / "timestamp.txt", work / "timestamp.txt")
    for nb in notebooks:
        data = _strip_hidden(json.loads(nb.read_text(encoding="utf-8")), secret)
        (work / nb.name).write_text(json.dumps(data), encoding="utf-8")
    answer = api.generate_feedback(lesson, student, force=True)
    if not answer.get("success"):
        log = (answer.get("error") or answer.get("log") or "").strip().splitlines()
        result.status = "error"
        result.message = "nbgrader could not render feedback: " + (log[-1] if log else "no log")
        return
    made = course_dir / "feedback" / student / lesson
    leaked = {
        p.name: leaked_lines(p.read_text(encoding="utf-8", errors="replace"), secret)
        for p in made.rglob("*")
        if p.is_file()
    }
    if any(leaked.values()):
        result.status = "error"
        result.message = "feedback withheld: hidden test text would have been shown"
        return
    dest = cfg.feedback / student / lesson
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(made, dest)
    result.message = ", ".join(sorted(p.name for p in dest.glob("*.html")))


# ------------------------------------------------------------------ export
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
    with _quiet_gradebook(), Gradebook(cfg.db_url, cfg.course_id) as gb:
        assignments = [a for a in gb.assignments if not wanted or a.name in wanted]
        order = {a.name: i for i, a in enumerate(assignments)}
        missing = wanted - {a.name for a in assignments}
        if missing:
            raise ValueError(
                f"no lesson {', '.join(sorted(missing))} in the gradebook {cfg.db_url}"
            )
        students = sorted(gb.students, key=lambda st: st.id)
        bar = _progress(len(students), "export", progress)
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


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2]))
    sys.exit("usage: python -m gptcore.course.classroom --worker CONFIG (internal)")
