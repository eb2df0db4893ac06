"""The ``gptcore`` command line.

gptcore grade lessons/01_tokenization     self-grade a lesson, hidden tests included
gptcore release [--check] [LESSON ...]     regenerate lessons/ from solutions/
gptcore tokenize [--tokenizer gpt2] TEXT   show how a tokenizer splits text
gptcore data [NAME]                        fetch a corpus (checksummed) and print its path
gptcore class collect|autograde|feedback|export   instructors: grade a whole class
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


# TrainConfig fields set by dedicated arguments or not settable from the command line.
_TRAIN_SKIP = {"data", "out_dir", "model"}
_MODEL_FIELDS = {
    "block_size": int,
    "n_layer": int,
    "n_head": int,
    "n_embd": int,
    "dropout": float,
    "bias": bool,
}


def _field_type(f) -> type:
    text = str(f.type)
    for name, typ in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if text.startswith(name):
            return typ
    raise AssertionError(f"unsupported TrainConfig field type {text}")


def _add_train_arguments(t: argparse.ArgumentParser) -> None:
    import dataclasses

    from .train import TrainConfig

    t.add_argument(
        "data", nargs="?", default="tinyshakespeare", help="a corpus name or a text file"
    )
    t.add_argument("--out", "--out_dir", dest="out_dir", default="runs/baby", help="run directory")
    for f in dataclasses.fields(TrainConfig):
        if f.name in _TRAIN_SKIP:
            continue
        typ = _field_type(f)
        default = f.default
        if typ is bool:
            t.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=default)
        else:
            t.add_argument(
                f"--{f.name}",
                type=typ,
                default=default,
                metavar=typ.__name__.upper(),
                help=f"default: {default}",
            )
    for name, typ in _MODEL_FIELDS.items():
        if typ is bool:
            t.add_argument(
                f"--{name}",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="model override",
            )
        else:
            t.add_argument(
                f"--{name}",
                type=typ,
                default=None,
                metavar=typ.__name__.upper(),
                help="model override (default: the preset's)",
            )


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from .train import TrainConfig, TrainingDiverged, train

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}
    kwargs = {k: v for k, v in vars(args).items() if k in fields}
    model = {k: getattr(args, k) for k in _MODEL_FIELDS if getattr(args, k) is not None}
    config = TrainConfig(**kwargs, model=model)
    try:
        result = train(config)
    except TrainingDiverged as e:
        print(f"gptcore train: stopped: {e}", file=sys.stderr)
        return 1
    val = f"{result.val_loss:.4f}" if result.val_loss is not None else "n/a"
    print(f"step {result.step}: validation loss {val}; checkpoints in {result.out_dir}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import codecs

    from .sample import check_sampling_args, stream
    from .train import load_run

    check_sampling_args(args.temperature, args.top_k, args.top_p)
    model, tokenizer, _ = load_run(args.run_dir, device=args.device)
    prompt = args.prompt if args.prompt is not None else "\n"
    ids = tokenizer.encode(prompt)
    # Tokens can split a UTF-8 character; the incremental decoder holds bytes
    # back until the character is complete.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    as_bytes = getattr(tokenizer, "decode_bytes", None)
    sys.stdout.write(prompt)
    for token in stream(
        model,
        ids,
        args.n,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    ):
        piece = decoder.decode(as_bytes([token])) if as_bytes else tokenizer.decode([token])
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write(decoder.decode(b"", final=True) + "\n")
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
    cs = c.add_subparsers(dest="class_command", required=True, parser_class=_OneLineParser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--course", help="the course folder (default: found above the cwd)")
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


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line that says what to change, not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="gptcore", description="How GPT Works: library and course tools")
    p.add_argument("--version", action="version", version=f"gptcore {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

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

    tr = sub.add_parser("train", help="train a GPT (the same command again resumes)")
    _add_train_arguments(tr)
    tr.set_defaults(func=cmd_train)

    sp = sub.add_parser("sample", help="stream text from a trained run")
    sp.add_argument("run_dir", help="a directory written by gptcore train")
    sp.add_argument("--prompt", default=None, help="text to continue (default: a newline)")
    sp.add_argument("-n", "--max-new-tokens", dest="n", type=int, default=500)
    sp.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    sp.add_argument("--top-k", dest="top_k", type=int, default=None)
    sp.add_argument("--top-p", dest="top_p", type=float, default=None)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--device", default="cpu")
    sp.set_defaults(func=cmd_sample)

    d = sub.add_parser("data", help="list corpora, or fetch one and print its local path")
    d.add_argument("name", nargs="?", help="a corpus name, e.g. tinyshakespeare")
    d.set_defaults(func=cmd_data)

    _add_class_parser(sub)
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
