"""Grading a class: wall time of ``gptcore class autograde`` against the ideal.

    python benchmarks/bench_grading.py                        # 30 students x every lesson
    python benchmarks/bench_grading.py --students 6 --lessons 01_tokenization

For each lesson, a throwaway course gets ``--students`` submissions (the
lesson's solution notebook with its hidden tests removed: a complete,
realistic submission) and is graded with :func:`gptcore.course.classroom.autograde`
(parallel workers, the sandbox when this machine has one, the real nbgrader
pipeline, the gradebook merge included).

The ideal is the notebooks' own execution time x students / cores: each
lesson's solution notebook is run alone with nbclient in a plain kernel
(kernel start included, the same threads per kernel as grading uses), once
before and once after grading that lesson (the mean: the load of a shared
machine drifts), and that time is multiplied by the number of students and
divided by the number of cores. The target is a measured / ideal ratio of at
most 1.3 on a 2-core machine. Everything runs offline: set
``GPTCORE_DATA_DIR`` to a folder with ``tinyshakespeare.txt`` (or have it in
gptcore's cache). Training lessons run for ``GPTCORE_LESSON_SECONDS`` (10
unless set), in the reference run as in grading, each with an empty cache.
Exits 1 if a submission is not fully graded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gptcore.course import classroom  # noqa: E402
from gptcore.course.workspace import Course, kernel_dir  # noqa: E402
from gptcore.data import CACHE_DIR_ENV, DATA_DIR_ENV, cache_dir  # noqa: E402


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def notebook_seconds(notebook: Path, threads: int, timeout: int) -> float:
    """Wall time of one plain run of ``notebook`` (kernel start included)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        work = Path(tmp) / notebook.parent.name
        shutil.copytree(notebook.parent, work)
        saved = dict(os.environ)
        os.environ["JUPYTER_PATH"] = str(kernel_dir(Path(tmp) / "jupyter"))
        os.environ["MPLBACKEND"] = "Agg"
        os.environ.setdefault("GPTCORE_LESSON_SECONDS", "10")  # as grading does
        # As in grading: corpora from the data folder, an empty cache of its own (a
        # lesson that reuses a model saved by an earlier lesson trains it here).
        if not os.environ.get(DATA_DIR_ENV):
            os.environ[DATA_DIR_ENV] = str(cache_dir())
        os.environ[CACHE_DIR_ENV] = str(Path(tmp) / "cache")
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)
        try:
            t0 = time.perf_counter()
            NotebookClient(
                nb,
                kernel_name="python3",
                timeout=timeout,
                allow_errors=True,
                resources={"metadata": {"path": str(work)}},
            ).execute()
            return time.perf_counter() - t0
        finally:
            os.environ.clear()
            os.environ.update(saved)


def completed(solution: Path) -> str:
    """What a student who solved everything submits: the solution, hidden tests removed."""
    nb = json.loads(solution.read_text())
    hidden = re.compile(
        r"^[ \t]*### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS[ \t]*\n?", re.M | re.S
    )
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            cell["source"] = hidden.sub("", "".join(cell["source"])).rstrip("\n")
    return json.dumps(nb)


def make_class(root: Path, lessons: list[str], students: int) -> Course:
    (root / "solutions").mkdir(parents=True)
    shutil.copyfile(ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    for lesson in lessons:
        src = ROOT / "solutions" / lesson
        shutil.copytree(src, root / "solutions" / lesson)
        for i in range(students):
            dest = root / "submitted" / f"student{i:02d}" / lesson
            shutil.copytree(src, dest)
            for nb in dest.glob("*.ipynb"):
                nb.write_text(completed(nb))
    return Course(root)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--lessons", default="", help="comma-separated (default: every lesson)")
    p.add_argument("--workers", type=int, default=None, help="default: one per core")
    p.add_argument("--sandbox", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--cell-timeout", type=int, default=600)
    p.add_argument("--notebook-timeout", type=int, default=1800)
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args()

    lessons = args.lessons.split(",") if args.lessons else Course(ROOT).lesson_names()
    n_cores = cores()
    workers = args.workers or n_cores
    threads = max(1, n_cores // workers)
    print(
        f"{args.students} students x {len(lessons)} lesson(s), {n_cores} cores, "
        f"{workers} workers, {threads} thread(s) per kernel"
    )
    rows, failures = [], 0
    with tempfile.TemporaryDirectory(prefix="bench-grading-class-") as tmp:
        course = make_class(Path(tmp) / "course", lessons, args.students)
        for lesson in lessons:
            nb = next((ROOT / "solutions" / lesson).glob("*.ipynb"))
            before = notebook_seconds(nb, threads, args.cell_timeout)
            t0 = time.perf_counter()
            report = classroom.autograde(
                course,
                lesson,
                workers=workers,
                sandbox=args.sandbox,
                cell_timeout=args.cell_timeout,
                notebook_timeout=args.notebook_timeout,
                progress=False,
            )
            measured = time.perf_counter() - t0
            # Measured again afterwards: on a shared machine the load drifts.
            own = (before + notebook_seconds(nb, threads, args.cell_timeout)) / 2
            bad = [
                f"{r.student}: {r.status} {r.total:g}/{r.max_total:g} {r.message}"
                for r in report.results
                if r.status != "graded" or r.total < r.max_total
            ]
            failures += len(bad)
            for line in bad[:3]:
                print(f"  not fully graded: {line}")
            ideal = own * args.students / n_cores
            rows.append((lesson, own, ideal, measured))
            print(
                f"{lesson:<18} notebook {own:6.1f} s   ideal {ideal:7.1f} s   "
                f"measured {measured:7.1f} s   ratio {measured / ideal:.2f}"
            )
        sandbox = report.sandbox
    own = sum(r[1] for r in rows)
    ideal = sum(r[2] for r in rows)
    measured = sum(r[3] for r in rows)
    print(
        f"{'total':<18} notebook {own:6.1f} s   ideal {ideal:7.1f} s   "
        f"measured {measured:7.1f} s   ratio {measured / ideal:.2f} (target <= 1.30)"
    )
    print(sandbox)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "students": args.students,
                    "cores": n_cores,
                    "workers": workers,
                    "lessons": [
                        {"lesson": name, "notebook_s": o, "ideal_s": i, "measured_s": m}
                        for name, o, i, m in rows
                    ],
                    "ideal_s": ideal,
                    "measured_s": measured,
                    "ratio": measured / ideal,
                    "sandbox": sandbox,
                },
                indent=2,
            )
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
