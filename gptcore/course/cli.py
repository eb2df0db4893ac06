"""The course's commands of the ``gptcore`` command line.

gptcore grade lessons/01_tokenization     self-grade a lesson, hidden tests included
gptcore release [--check] [LESSON ...]     regenerate lessons/ from solutions/
gptcore class collect|autograde|feedback|export   instructors: grade a whole class

``register`` is the ``gptcore.commands`` entry point (pyproject.toml): the library's
``gptcore.cli`` calls it to add these sub-commands, without importing the course side.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ..cli import OneLineParser


def _course(args: argparse.Namespace):
    from .workspace import choose_course

    return choose_course(args.course)


def cmd_grade(args: argparse.Namespace) -> int:
    from .grade import format_report, grade_notebook
    from .workspace import Course

    # No --course: grade_notebook looks for the notebook's course (see locate_lesson).
    course = Course(Path(args.course).resolve()) if args.course else None
    report = grade_notebook(args.path, course=course, cell_timeout=args.timeout)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0 if report.status == "graded" else 1


def cmd_release(args: argparse.Namespace) -> int:
    from .release import diff_release, release

    course = _course(args)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            diffs = diff_release(course, args.lessons, Path(tmp))
        if diffs:
            for lesson, files in diffs.items():
                print(f"lessons/{lesson} is out of date: {', '.join(files)}")
            print("Regenerate it with: gptcore release (or make lessons)")
            return 1
        print("lessons/ matches a fresh release of solutions/")
        return 0
    for name in release(course, args.lessons):
        print(f"released lessons/{name}")
    return 0


def cmd_class(args: argparse.Namespace) -> int:
    from . import classroom

    course = _course(args)
    progress = not args.quiet  # tqdm, on stderr
    if args.class_command == "collect":
        report = classroom.collect(course, args.src, args.lesson, progress=progress)
    elif args.class_command == "autograde":
        from .sandbox import Limits

        limits = Limits(memory_bytes=args.memory << 20) if args.memory else None
        report = classroom.autograde(
            course,
            args.lesson,
            students=args.students.split(",") if args.students else None,
            workers=args.workers,
            sandbox=args.sandbox,
            cell_timeout=args.cell_timeout,
            notebook_timeout=args.notebook_timeout,
            limits=limits,
            progress=progress,
        )
    elif args.class_command == "feedback":
        students = args.students.split(",") if args.students else None
        report = classroom.feedback(course, args.lesson, students=students, progress=progress)
    else:
        lessons = args.lesson.split(",") if args.lesson else None
        report = classroom.export(course, args.output, lessons=lessons, progress=progress)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 1 if any(r.status == "error" for r in report.results) else 0


def _add_class_parser(sub) -> None:
    c = sub.add_parser(
        "class",
        help="instructors: collect, autograde (parallel, sandboxed), feedback, export",
        description="Grade a whole class with nbgrader: collect -> autograde -> feedback -> "
        "export. The course is the checkout (or --course DIR); the gradebook is nbgrader's "
        "(db_url in nbgrader_config.py).",
    )
    cs = c.add_subparsers(dest="class_command", required=True, parser_class=OneLineParser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--course",
            help="the course folder (default: $GPTCORE_COURSE, else found above the cwd)",
        )
        p.add_argument("--json", action="store_true", help="print the report as JSON")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    co = cs.add_parser("collect", help="copy submissions into submitted/<student>/<lesson>/")
    co.add_argument("src", help="a folder with one entry per student (folder or .ipynb)")
    co.add_argument("--lesson", required=True, help="the lesson, e.g. 01_tokenization")
    common(co)

    a = cs.add_parser("autograde", help="grade every submission of a lesson")
    a.add_argument("lesson", help="the lesson, e.g. 01_tokenization")
    a.add_argument("--students", help="comma-separated student ids (default: all)")
    a.add_argument("--workers", type=int, default=None, help="parallel workers (default: cores)")
    a.add_argument(
        "--sandbox",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto (default): bubblewrap when it works here, else off with a warning",
    )
    a.add_argument(
        "--cell-timeout",
        type=int,
        default=None,
        metavar="S",
        help="seconds per cell (default: Execute.timeout in nbgrader_config.py)",
    )
    a.add_argument(
        "--notebook-timeout",
        type=int,
        default=1200,
        metavar="S",
        help="seconds per notebook, kernel start included (default 1200)",
    )
    a.add_argument("--memory", type=int, default=None, metavar="MiB", help="memory per kernel")
    common(a)

    f = cs.add_parser("feedback", help="HTML feedback for students, hidden tests removed")
    f.add_argument("lesson")
    f.add_argument("--students", help="comma-separated student ids (default: all graded)")
    common(f)

    e = cs.add_parser("export", help="grades as CSV (the columns of nbgrader export)")
    e.add_argument("-o", "--output", default="grades.csv", help="the CSV file (grades.csv)")
    e.add_argument("--lesson", help="comma-separated lessons (default: all)")
    common(e)
    c.set_defaults(func=cmd_class)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``grade``, ``release`` and ``class`` to the ``gptcore`` parser."""
    g = sub.add_parser(
        "grade", help="grade a lesson notebook with every test, hidden ones included"
    )
    g.add_argument("path", help="a lesson folder (lessons/01_tokenization) or a notebook path")
    g.add_argument(
        "--course",
        help="the course checkout (default: $GPTCORE_COURSE, else the course above PATH, above "
        "the working folder, or the checkout gptcore is installed from)",
    )
    g.add_argument(
        "--timeout", type=int, default=120, help="seconds allowed per cell (default 120)"
    )
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    g.set_defaults(func=cmd_grade)

    r = sub.add_parser("release", help="regenerate lessons/ from solutions/ with nbgrader")
    r.add_argument("lessons", nargs="*", help="lesson names (default: all)")
    r.add_argument(
        "--check", action="store_true", help="only report whether lessons/ is up to date"
    )
    r.add_argument(
        "--course",
        help="the course checkout (default: $GPTCORE_COURSE, else found above the working folder)",
    )
    r.set_defaults(func=cmd_release)

    _add_class_parser(sub)
