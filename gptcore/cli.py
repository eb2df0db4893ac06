"""The ``gptcore`` command line.

gptcore grade lessons/01_tokenization     self-grade a lesson, hidden tests included
gptcore release [--check] [LESSON ...]     regenerate lessons/ from solutions/
gptcore tokenize [--tokenizer gpt2] TEXT   show how a tokenizer splits text
gptcore data [NAME]                        fetch a corpus (checksummed) and print its path
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from . import __version__


def _course(args: argparse.Namespace, near: Path | None = None):
    from .course import Course, find_course

    if args.course:
        return Course(Path(args.course).resolve())
    return find_course(near)


def cmd_grade(args: argparse.Namespace) -> int:
    from .grade import format_report, grade_notebook, resolve_notebook

    nb = resolve_notebook(args.path)
    report = grade_notebook(nb, course=_course(args, nb.parent), cell_timeout=args.timeout)
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


def cmd_tokenize(args: argparse.Namespace) -> int:
    from .tokenizer import BPETokenizer, gpt2

    tok = gpt2() if args.tokenizer == "gpt2" else BPETokenizer.load(args.tokenizer)
    ids = tok.encode(args.text, allowed_special="all")
    for i in ids:
        print(f"{i:>7}  {tok.decode_bytes([i])!r}")
    print(f"{len(args.text)} characters -> {len(ids)} tokens")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data import REGISTRY, fetch

    if not args.name:
        for c in REGISTRY.values():
            print(f"{c.name:<16} {c.size:>10,} bytes  {c.description}")
        return 0
    print(fetch(args.name))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gptcore", description="How GPT Works: library and course tools"
    )
    p.add_argument("--version", action="version", version=f"gptcore {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser(
        "grade", help="grade a lesson notebook with every test, hidden ones included"
    )
    g.add_argument("path", help="a lesson folder (lessons/01_tokenization) or a notebook path")
    g.add_argument("--course", help="the course checkout (default: found above PATH)")
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
        "--course", help="the course checkout (default: found above the working directory)"
    )
    r.set_defaults(func=cmd_release)

    t = sub.add_parser("tokenize", help="show the tokens of a text")
    t.add_argument("text")
    t.add_argument(
        "--tokenizer", default="gpt2", help="gpt2 (default) or a file saved by BPETokenizer.save"
    )
    t.set_defaults(func=cmd_tokenize)

    d = sub.add_parser("data", help="list corpora, or fetch one and print its local path")
    d.add_argument("name", nargs="?", help="a corpus name, e.g. tinyshakespeare")
    d.set_defaults(func=cmd_data)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:  # user mistakes: one line that says what to change
        print(f"gptcore {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
