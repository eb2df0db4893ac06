"""Grading a class: collect, autograde, feedback, export, and hostile submissions.

A tiny synthetic course (lesson 00_demo: add 2 points with a hidden test,
merge 2 points checked by gptcore.course.checks, mul 1 point) keeps this fast. The
hostile suite needs the sandbox (root and bubblewrap, as in CI); the other
tests run with whatever sandbox the machine has, or none.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from gptcore.cli import main
from gptcore.course import Course, classroom
from gptcore.course.release import release
from gptcore.course.sandbox import Limits, probe, sandbox_uid
from gptcore.course.workspace import quiet_gradebook

from ..conftest import solution_cell, test_cell

LESSON = "00_demo"
NB = f"{LESSON}.ipynb"
PROVIDED = "from gptcore.course.checks import tokenization as checks"
HIDDEN = 'assert checks.check_int(add(-1, 1), "add(-1, 1)") == 0, "negatives"'
ADD = "def add(a, b):\n    return a + b"
MERGE = (
    "def merge(ids, pair, idx):\n"
    "    out, i = [], 0\n"
    "    while i < len(ids):\n"
    "        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:\n"
    "            out.append(idx)\n"
    "            i += 2\n"
    "        else:\n"
    "            out.append(ids[i])\n"
    "            i += 1\n"
    "    return out"
)
MUL = "def mul(a, b):\n    return a * b"
FULL = {"add": ADD, "merge": MERGE, "mul": MUL}
POINTS = {"add_test": 2, "merge_test": 2, "mul_test": 1}

# CI sets GPTCORE_REQUIRE_SANDBOX=1: there the hostile suite must run (and fails if
# the sandbox cannot), never skip quietly.
SANDBOXED = pytest.mark.skipif(
    os.environ.get("GPTCORE_REQUIRE_SANDBOX") != "1"
    and not (hasattr(os, "geteuid") and os.geteuid() == 0 and probe("auto").on),
    reason="the hostile suite needs root and a working bubblewrap (CI has both)",
)


def _solution(body: str) -> str:
    head, rest = body.split("\n", 1)
    return f"{head}\n    ### BEGIN SOLUTION\n{rest}\n    ### END SOLUTION"


def make_course(root: Path) -> Course:
    """A released one-lesson course in ``root``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Demo lesson"),
        nbformat.v4.new_code_cell(PROVIDED),
        solution_cell(_solution(ADD), "add"),
        test_cell(
            'assert checks.check_int(add(1, 2), "add(1, 2)") == 3\n'
            f"### BEGIN HIDDEN TESTS\n{HIDDEN}\n### END HIDDEN TESTS",
            "add_test",
            2,
        ),
        solution_cell(_solution(MERGE), "merge"),
        test_cell(
            "checks.bpe_merge(merge)\nassert merge([5, 5, 5], (5, 5), 256) == [256, 5]",
            "merge_test",
            2,
        ),
        solution_cell(_solution(MUL), "mul"),
        test_cell('assert checks.check_int(mul(2, 3), "mul(2, 3)") == 6', "mul_test", 1),
    ]
    (root / "solutions" / LESSON).mkdir(parents=True)
    nbformat.write(nb, root / "solutions" / LESSON / NB)
    config = Path(__file__).resolve().parents[2] / "nbgrader_config.py"
    (root / "nbgrader_config.py").write_text(config.read_text())
    course = Course(root)
    release(course)
    return course


def submit(course: Course, student: str, replace: dict[str, str], edit=None) -> Path:
    """The released lesson with solution cells replaced (by grade id), as ``student``'s."""
    nb = nbformat.read(course.lessons / LESSON / NB, as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in replace:
            cell.source = replace[gid]
    if edit:
        edit(nb)
    path = course.root / "submitted" / student / LESSON / NB
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def scores(report: classroom.ClassReport) -> dict[str, dict[str, float]]:
    return {r.student: {q.grade_id: q.points for q in r.questions} for r in report.results}


@contextlib.contextmanager
def gradebook(course: Course, db: Path | None = None):
    from nbgrader.api import Gradebook

    url = f"sqlite:///{db or course.root / 'gradebook.db'}"
    with quiet_gradebook(), Gradebook(url) as gb:
        yield gb


def gradebook_scores(course: Course, db: Path | None = None) -> dict[str, float]:
    with gradebook(course, db) as gb:
        return {s.student.id: s.score for s in gb.find_assignment(LESSON).submissions}


def hidden_tests_in_gradebook(course: Course) -> list[tuple[str, str]]:
    with gradebook(course) as gb:
        cells = gb.find_notebook(LESSON, LESSON).source_cells
        return sorted((c.name, c.source) for c in cells)


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not str(p.relative_to(root)).startswith(skip)
    }


def outputs(path: Path) -> str:
    """Everything a notebook's cells printed or raised."""
    nb = nbformat.read(path, as_version=4)
    return json.dumps([c.get("outputs", []) for c in nb.cells])


def leaked(folder: Path, line: str) -> list[str]:
    return [
        str(p)
        for p in folder.rglob("*")
        if p.is_file() and classroom.leaked_lines(p.read_text(errors="replace"), [line])
    ]


@pytest.fixture
def klass(tmp_path) -> Course:
    return make_course(tmp_path / "course")


# ------------------------------------------------------------------ collect
def test_collect_accepts_the_usual_layouts(klass, tmp_path):
    src = tmp_path / "download"
    good = nbformat.read(klass.lessons / LESSON / NB, as_version=4)
    (src / "alice" / LESSON).mkdir(parents=True)
    nbformat.write(good, src / "alice" / LESSON / NB)  # nbgrader's own layout
    (src / "alice" / LESSON / "notes.txt").write_text("mine")
    (src / "bob" / "work").mkdir(parents=True)
    nbformat.write(good, src / "bob" / "work" / "my copy.ipynb")  # an LMS download
    nbformat.write(good, src / "carol.ipynb")  # one file per student
    (src / "dave").mkdir()  # nothing in it
    (src / "not a student!").mkdir()
    report = classroom.collect(klass, src, LESSON, progress=False)
    status = {r.student: r.status for r in report.results}
    assert status == {
        "alice": "ok",
        "bob": "ok",
        "carol": "ok",
        "dave": "missing",
        "not a student!": "skipped",
    }
    sub = klass.root / "submitted"
    for student in ("alice", "bob", "carol"):
        assert (sub / student / LESSON / NB).is_file()
    assert (sub / "alice" / LESSON / "notes.txt").read_text() == "mine"
    assert "Summary: 3 of 5 done" in report.summary()
    assert "dave: no notebook 00_demo.ipynb (empty)" in report.summary()
    bobs = [p.name for p in (sub / "bob" / LESSON).rglob("*.ipynb")]
    assert bobs == [NB], "renamed, not copied"


def test_solutions_raise_no_review_flags(course):
    """The review flags must not fire on honest code: every lesson's solutions."""
    for lesson in course.lesson_names():
        for path in (course.solutions / lesson).glob("*.ipynb"):
            nb = json.loads(path.read_text())
            assert classroom.suspicious_code(nb, nb) == [], path
            answers = {"cells": [c for c in nb["cells"] if c["metadata"].get("nbgrader")]}
            assert classroom.suspicious_code(answers, {"cells": []}) == [], path


def test_leak_check_sees_escaped_hidden_lines():
    secret = ['assert f("a") < 3, "hidden"']
    assert classroom.leaked_lines(
        "<pre>assert f(&quot;a&quot;) &lt; 3, &quot;hidden&quot;</pre>", secret
    )
    assert classroom.leaked_lines('<pre>assert f("a") &lt; 3, "hidden"</pre>', secret)
    assert classroom.leaked_lines("<pre>assert f(&quot;a&quot;) &lt; 4</pre>", secret) == []


_GUARD_PROBE = """
import IPython, json, types
from gptcore.course import cells
from gptcore.course.classroom.execute import guard_code
shell = types.SimpleNamespace(user_ns={}, ast_transformers=[])
IPython.get_ipython = lambda: shell
settings = {"aliases": {"checks": ["gptcore.course", "cells"]}, "protected": ["gptcore"]}
setup, call = guard_code(settings, "_g")
exec(setup, shell.user_ns)
shell.user_ns["checks"] = object()
cells.nbgrader_meta = lambda cell: {}
shell.ast_transformers.append("mine")
restored = eval(call, shell.user_ns)
print(json.dumps([restored, shell.user_ns["checks"] is cells, shell.ast_transformers,
                  cells.nbgrader_meta.__module__, sorted(shell.user_ns)]))
"""


def test_the_guard_is_a_module_the_kernel_runs():
    """The guard's source runs in a namespace of its own (as in the kernel, which never
    imports gptcore.course) and undoes a replaced function, a rebound alias and a hook."""
    out = subprocess.run(
        [sys.executable, "-I", "-c", _GUARD_PROBE], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    restored, rebound, hooks, module, names = json.loads(out.stdout.splitlines()[-1])
    assert restored.split(", ") == [
        "IPython ast_transformers",
        "checks",
        "gptcore.course.cells.nbgrader_meta",
    ]
    assert (rebound, hooks, module) == (True, [], "gptcore.course.cells")
    assert names == ["__builtins__", "_g", "checks"], "the setup leaves only the guard behind"


# ------------------------------------------------------------------ a whole class
def test_a_class_end_to_end(klass, tmp_path):
    submit(klass, "alice", FULL)
    submit(klass, "bob", {"add": "def add(a, b):\n    return abs(a) + abs(b)", "mul": MUL})
    report = classroom.autograde(klass, LESSON, cell_timeout=30, progress=False)
    assert scores(report) == {
        "alice": POINTS,
        "bob": {"add_test": 0, "merge_test": 0, "mul_test": 1},
    }
    bob = report.by_student()["bob"]
    assert "negatives" in bob.questions[0].reason, "the hidden test's message is kept"
    assert "NotImplementedError" in bob.questions[1].reason
    text = report.summary()
    assert "Summary: 2 of 2 done in" in text and ("sandbox on" in text or "SANDBOX OFF" in text)

    # nbgrader's own gradebook and folders, usable by formgrader and nbgrader export
    assert gradebook_scores(klass) == {"alice": 5.0, "bob": 1.0}
    autograded = klass.root / "autograded" / "bob" / LESSON / NB
    sources = [c.source for c in nbformat.read(autograded, as_version=4).cells]
    assert any(HIDDEN in src for src in sources), "autograde restores the hidden tests"

    (klass.root / "autograded" / "bob" / LESSON / "scratch.ipynb").write_text(sources[0])
    fb = classroom.feedback(klass, LESSON, progress=False)
    assert [r.status for r in fb.results] == ["ok", "ok"], "a stray notebook is left alone"
    page = (klass.root / "feedback" / "bob" / LESSON / "00_demo.html").read_text()
    assert "Score: 1.0 / 5.0" in page and "hidden tests: not shown" in page
    assert leaked(klass.root / "feedback", HIDDEN) == []

    out = tmp_path / "grades.csv"
    ex = classroom.export(klass, out, progress=False)
    rows = list(csv.DictReader(out.open()))
    assert [(r["student_id"], float(r["score"]), float(r["max_score"])) for r in rows] == [
        ("alice", 5.0, 5.0),
        ("bob", 1.0, 5.0),
    ]
    assert list(rows[0]) == classroom.EXPORT_COLUMNS
    assert "2 rows written" in ex.summary()

    # Regrading one student changes nobody else; an instructor's manual score survives.
    with gradebook(klass) as gb:
        gb.find_grade("add_test", LESSON, LESSON, "bob").manual_score = 2
        gb.db.commit()
    submit(klass, "bob", {"add": ADD, "mul": MUL})
    again = classroom.autograde(klass, LESSON, students=["bob"], progress=False)
    assert scores(again) == {"bob": {"add_test": 2, "merge_test": 0, "mul_test": 1}}
    assert gradebook_scores(klass) == {"alice": 5.0, "bob": 3.0}


def test_without_a_sandbox_grading_works_and_says_so(klass, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPTCORE_SANDBOX", "off")
    # A gradebook elsewhere, through nbgrader's db_url (PostgreSQL works the same way).
    db = tmp_path / "shared" / "class.db"
    db.parent.mkdir()
    with (klass.root / "nbgrader_config.py").open("a") as f:
        f.write(f"\nc.CourseDirectory.db_url = 'sqlite:///{db}'\n")
    submit(klass, "alice", FULL)
    submit(klass, "carol", {"add": ADD})
    code = main(["class", "autograde", LESSON, "--course", str(klass.root), "--workers", "1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "SANDBOX OFF: turned off with GPTCORE_SANDBOX=off" in out.out
    assert "it could read solutions/ and the gradebook" in out.out
    assert gradebook_scores(klass, db) == {"alice": 5.0, "carol": 2.0}
    assert not (klass.root / "gradebook.db").exists()


def _class_cli(python: str, *args: str) -> list[str]:
    return [python, "-m", "gptcore.cli", "class", *args]


def _as_nobody() -> list[str]:
    """The command prefix that runs a process as ``nobody`` (we are root)."""
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def _shared_dir(prefix: str) -> Path:
    """A fresh folder that ``nobody`` owns, outside pytest's private (0700) tmp_path."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    os.chown(path, 65534, 65534)
    return path


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on a Unix socket; yields its SQLAlchemy URL.

    Uses Debian's ``postgresql`` package (CI installs it). PostgreSQL refuses
    to run as root, so the server runs as ``nobody``.
    """
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    missing = not bins or os.geteuid() != 0 or not shutil.which("setpriv")
    if missing or importlib.util.find_spec("psycopg2") is None:
        why = "needs root, Debian's postgresql package and psycopg2-binary (CI has all three)"
        if os.environ.get("GPTCORE_REQUIRE_POSTGRES") == "1":  # CI: never skip quietly
            pytest.fail(why)
        pytest.skip(why)
    bindir = bins[-1].parent
    base = _shared_dir("gptcore-pg-")
    data, sock = base / "data", base / "sock"
    run = lambda *cmd: subprocess.run(  # noqa: E731
        [*_as_nobody(), *cmd], check=True, capture_output=True, text=True, timeout=120
    )
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "grader", "--auth=trust", "-E", "UTF8")
        run("mkdir", "-m", "700", str(sock))
        opts = f"-k {sock} -c listen_addresses='' -c fsync=off"
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(base / "log"),
            "-w",
            "start",
        )
        try:
            run(str(bindir / "createdb"), "-h", str(sock), "-U", "grader", "gradebook")
            yield f"postgresql+psycopg2://grader@/gradebook?host={sock}"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_postgresql_gradebook(klass, tmp_path):
    """nbgrader's db_url: the same commands with the gradebook in PostgreSQL."""
    with _postgres() as url:
        with (klass.root / "nbgrader_config.py").open("a") as f:
            f.write(f"\nc.CourseDirectory.db_url = {url!r}\n")
        submit(klass, "alice", FULL)
        submit(klass, "bob", {"add": ADD, "mul": "def mul(a, b):\n    return a + b"})
        report = classroom.autograde(klass, LESSON, cell_timeout=30, progress=False)
        assert scores(report) == {
            "alice": POINTS,
            "bob": {"add_test": 2, "merge_test": 0, "mul_test": 0},
        }
        from nbgrader.api import Gradebook

        with quiet_gradebook(), Gradebook(url) as gb:
            got = {s.student.id: s.score for s in gb.find_assignment(LESSON).submissions}
        assert got == {"alice": 5.0, "bob": 2.0}
        assert not (klass.root / "gradebook.db").exists(), "nothing went to SQLite"
        assert classroom.feedback(klass, LESSON, progress=False).results[1].status == "ok"
        classroom.export(klass, tmp_path / "g.csv", progress=False)
        rows = list(csv.DictReader((tmp_path / "g.csv").open()))
        assert [(r["student_id"], float(r["score"])) for r in rows] == [
            ("alice", 5.0),
            ("bob", 2.0),
        ]


def _python_for_nobody(base: Path) -> str | None:
    """A Python that ``nobody`` can run with this environment's packages, or None.

    This interpreter may live where only root can reach (pyenv under /root): build
    a venv in ``base`` on the system's same-version Python whose .pth file adds
    our site-packages, and check that it can start itself again (workers do).
    """
    import sysconfig

    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.is_file():
        return None
    venv = base / "venv"
    subprocess.run([str(system), "-m", "venv", "--without-pip", str(venv)], check=True)
    site = sysconfig.get_paths()["purelib"]
    purelib = next(venv.glob("lib/python*/site-packages"))
    (purelib / "gptcore-test.pth").write_text(f"import site; site.addsitedir({site!r})\n")
    subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    probe_code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import gptcore.course.classroom'], check=True)"
    ok = subprocess.run([*_as_nobody(), python, "-c", probe_code], capture_output=True)
    return python if ok.returncode == 0 else None


def test_grading_as_a_normal_user(klass):
    """Not root: no dedicated user, but bubblewrap (where the kernel allows user
    namespaces) still hides the course; otherwise the report says the sandbox is off."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("runs the grader as nobody, which needs root")
    submit(klass, "alice", FULL)
    snoop = (
        f"import os\nfound = os.path.exists({str(klass.solutions)!r})\n"
        "def add(a, b):\n    return a + b if found else 0"
    )
    submit(klass, "mallory", {**FULL, "add": snoop})
    base = _shared_dir("gptcore-nonroot-")
    try:
        python = _python_for_nobody(base)
        if python is None:
            pytest.skip("no Python here that nobody can run with these packages")
        course = base / "course"
        shutil.copytree(klass.root, course)
        subprocess.run(["chown", "-R", "65534:65534", str(course)], check=True)
        out = subprocess.run(
            [
                *_as_nobody(),
                *_class_cli(python, "autograde", LESSON, "--course", str(course)),
                "--json",
                "--quiet",
                "--cell-timeout",
                "30",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "HOME": str(base), "GPTCORE_SANDBOX": ""},
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        report = json.loads(out.stdout)
        got = {r["student"]: r["total"] for r in report["results"]}
        if report["sandbox"].startswith("sandbox on"):
            assert "kernel runs as the grader's own user" in report["sandbox"]
            assert "the process limit is not enforced" in report["sandbox"]
            assert got == {"alice": 5, "mallory": 3}, "the snoop did not see solutions/"
        else:
            assert report["sandbox"].startswith("SANDBOX OFF: bubblewrap cannot")
            assert got["alice"] == 5
        assert (course / "autograded" / "mallory" / LESSON / NB).is_file()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_sandbox_fallback_when_bubblewrap_is_missing(monkeypatch):
    from gptcore.course import sandbox

    monkeypatch.delenv("GPTCORE_SANDBOX", raising=False)
    monkeypatch.setattr(sandbox, "_bwrap", lambda: None)
    box = probe("auto")
    assert (box.on, box.mode) == (False, "off") and "not installed" in box.reason
    assert "SANDBOX OFF: bubblewrap (bwrap) is not installed" in box.describe()
    with pytest.raises(ValueError, match="--sandbox on, but bubblewrap"):
        probe("on")
    with pytest.raises(ValueError, match="must be auto, on or off"):
        probe("sometimes")


def test_cli_walks_through_a_class(klass, tmp_path, capsys):
    src = tmp_path / "inbox"
    src.mkdir()
    nb = nbformat.read(klass.lessons / LESSON / NB, as_version=4)
    nbformat.write(nb, src / "erin.ipynb")
    root = ["--course", str(klass.root)]
    assert main(["class", "collect", str(src), "--lesson", LESSON, *root]) == 0
    assert "Summary: 1 of 1 done" in capsys.readouterr().out
    assert main(["class", "autograde", LESSON, "--cell-timeout", "30", *root]) == 0
    assert "erin" in capsys.readouterr().out
    assert main(["class", "feedback", LESSON, *root]) == 0
    assert (klass.root / "feedback" / "erin" / LESSON / "00_demo.html").is_file()
    capsys.readouterr()
    assert main(["class", "export", "-o", str(tmp_path / "g.csv"), *root]) == 0
    assert "1 rows written" in capsys.readouterr().out
    assert (tmp_path / "g.csv").read_text().count("\n") == 2
    assert main(["class", "autograde", "99_nope", *root]) == 2
    assert "no lesson '99_nope'" in capsys.readouterr().err


def test_cli_class_errors_are_one_line(tmp_path):
    out = subprocess.run(
        _class_cli(sys.executable, "autograde", LESSON, "--course", str(tmp_path)),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "no lesson" in out.stderr


# ------------------------------------------------------------------ hostile submissions
def _listener() -> tuple[int, list[bytes]]:
    """A TCP server on the grader's loopback that records whatever reaches it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    got: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            got.append(conn.recv(100) or b"connected")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], got


def _hostile(course: Course, port: int, nonce: str) -> dict[str, Path]:
    """Every hostile submission, by student id."""
    root = course.root
    secrets = [root / "gradebook.db", root / "solutions" / LESSON / NB]
    targets = [
        root / f"pwned-{nonce}.txt",
        root / "submitted" / "alice" / LESSON / NB,
        root / "gradebook.db",
        Path(f"/tmp/gptcore-pwned-{nonce}"),
        Path.home() / f"gptcore-pwned-{nonce}",
    ]
    made: dict[str, Path] = {}

    def nb_file(student: str, text: str) -> None:
        path = root / "submitted" / student / LESSON / NB
        path.parent.mkdir(parents=True)
        path.write_text(text)
        made[student] = path

    def sub(student: str, replace: dict[str, str], edit=None) -> None:
        made[student] = submit(course, student, {**FULL, **replace}, edit)

    nb_file("h_invalid_json", '{"cells": [')
    nb_file("h_nbformat3", json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": []}))
    (root / "submitted" / "h_missing" / LESSON).mkdir(parents=True)
    (root / "submitted" / "h_missing" / LESSON / "renamed.ipynb").write_text("{}")
    sub("h_loop", {"add": "def add(a, b):\n    while True:\n        pass"})
    sub(
        "h_no_interrupt",
        {
            "add": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
        },
    )

    def slow(nb):
        nb.cells += [nbformat.v4.new_code_cell("import time\ntime.sleep(4)") for _ in range(15)]

    sub("h_slow", {}, slow)
    sub(
        "h_memory",
        {"add": "blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))\n" + ADD},
    )
    sub("h_fork_bomb", {"add": "import os\nwhile True:\n    os.fork()\n" + ADD})
    sub("h_os_exit", {"mul": "import os\nos._exit(3)\n" + MUL})
    sub("h_sys_exit", {"add": "import sys\nsys.exit(0)\n" + ADD})

    def delete(nb):
        nb.cells = [
            c
            for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade_id") not in ("add_test", "merge")
        ]

    sub("h_deleted", {"add": "def add(a, b):\n    return 0"}, delete)
    sub("h_edited", {"add": "def add(a, b):\n    return 0", "add_test": "pass"})

    def points(nb):
        for c in nb.cells:
            if c.metadata.get("nbgrader", {}).get("grade_id") == "mul_test":
                c.metadata["nbgrader"]["points"] = 100

    sub("h_points", {}, points)
    sub(
        "h_always_equal",
        {
            "add": "class Equal(int):\n    def __eq__(self, other):\n        return True\n"
            "def add(a, b):\n    return Equal(0)",
            "merge": "class Same(list):\n    def __eq__(self, other):\n        return True\n"
            "def merge(ids, pair, idx):\n    return Same()",
        },
    )
    sub(
        "h_reader",
        {
            "add": "import glob\nfound = []\n"
            f"for p in {[str(p) for p in secrets]!r} + ['../../../gradebook.db']"
            " + glob.glob('/tmp/**/gradebook.db', recursive=True):\n"
            "    try:\n        found.append(open(p, 'rb').read(64))\n"
            "    except OSError:\n        pass\n"
            "if found:\n    print('LEAK' + 'ED:', found)\n"
            "    def add(a, b):\n        return a + b\n"
            "else:\n    def add(a, b):\n        return 0"
        },
    )
    sub(
        "h_writer",
        {
            "add": f"for p in {[str(p) for p in targets]!r}:\n"
            "    try:\n        open(p, 'ab').write(b'pwned')\n        print('WROTE', p)\n"
            "    except OSError:\n        pass\n" + ADD
        },
    )
    sub(
        "h_links",
        {"add": "text = open('secret.txt').read()\nprint('LEAK' + 'ED:', text[:80])\n" + ADD},
    )
    folder = root / "submitted" / "h_links" / LESSON
    (folder / "secret.txt").symlink_to(root / "solutions" / LESSON / NB)
    (folder / "shadow").symlink_to("/etc/shadow")
    os.mkfifo(folder / "data.txt")  # a copy that opens it would wait forever
    sub(
        "h_output",
        {
            "add": "import sys\nsys.stdout.write('x' * 3_000_000)\nsys.stdout.flush()\n"
            "while True:\n    print('y' * 100_000)"
        },
    )
    sub(
        "h_monkeypatch",
        {
            "merge": "import gptcore.course.checks.tokenization as c\n"
            "c.bpe_merge = lambda f, **k: None\n"
            "def merge(ids, pair, idx):\n    return [256, 5]",
            "mul": "class Fake:\n    check_int = staticmethod(lambda value, what: 6)\n"
            "checks = Fake()\ndef mul(a, b):\n    return 0",
        },
    )
    sub(
        "h_network",
        {
            "add": "import socket\nok = False\n"
            f"for host in [('127.0.0.1', {port}), ('1.1.1.1', 53)]:\n"
            "    try:\n        socket.create_connection(host, timeout=3).sendall(b'pwned')\n"
            "        ok = True\n    except OSError as e:\n        print('blocked', e)\n"
            "def add(a, b):\n    return a + b if ok else 0"
        },
    )
    # A gptcore/ package beside the notebook, with checks that pass anything: neither
    # the root launcher nor the kernel may import it.
    sub("h_shadow", {"add": "def add(a, b):\n    return 0"})
    shadow = root / "submitted" / "h_shadow" / LESSON / "gptcore"
    (shadow / "checks").mkdir(parents=True)
    plant = f"open({str(Path(f'/tmp/gptcore-shadow-{nonce}'))!r}, 'a').write(__name__)\n"
    for name in ("__init__", "sandbox", "classroom", "checks/__init__"):
        (shadow / f"{name}.py").write_text(plant)
    (shadow / "checks" / "tokenization.py").write_text(
        plant
        + "def check_int(value, what):\n"
        + "    return {'add(1, 2)': 3, 'add(-1, 1)': 0, 'mul(2, 3)': 6}[what]\n"
        + "def bpe_merge(f, **k):\n    pass\n"
    )
    sub(
        "h_exfiltrate",
        {
            "add": "import linecache, sys\n"
            "def add(a, b):\n"
            "    f = sys._getframe(1)\n"
            "    print(''.join(linecache.getlines(f.f_code.co_filename)))\n"
            "    return a + b"
        },
    )
    return made


@SANDBOXED
@pytest.mark.slow
def test_hostile_submissions(klass, tmp_path):
    root = klass.root
    submit(klass, "alice", FULL)
    submit(klass, "bob", {"add": "def add(a, b):\n    return abs(a) + abs(b)", "mul": MUL})
    opts = dict(
        cell_timeout=5,
        notebook_timeout=30,
        limits=Limits(memory_bytes=1 << 30, processes=32),
        sandbox="on",
        progress=False,
    )
    baseline = classroom.autograde(klass, LESSON, **opts)
    good = scores(baseline)
    cells_before = hidden_tests_in_gradebook(klass)
    assert any(HIDDEN in source for _, source in cells_before)
    port, knocks = _listener()
    nonce = os.urandom(4).hex()
    made = _hostile(klass, port, nonce)
    grader_output = ("autograded", "feedback", "gradebook.db", "grades.csv")
    before = snapshot(root, skip=grader_output)

    report = classroom.autograde(klass, LESSON, **opts)
    got = report.by_student()
    pts = scores(report)

    def outcome(student: str) -> tuple[str, float]:
        return got[student].status, got[student].total

    # Notebooks that cannot be graded: a clear outcome, zero points.
    assert outcome("h_invalid_json") == ("invalid", 0)
    assert "not valid JSON" in got["h_invalid_json"].message
    assert outcome("h_nbformat3") == ("invalid", 0)
    assert "nbformat 4" in got["h_nbformat3"].message
    assert outcome("h_missing") == ("missing", 0)
    assert "renamed.ipynb" in got["h_missing"].message
    # Runaway code: the cell times out, the rest of the notebook is graded.
    assert pts["h_loop"] == {"add_test": 0, "merge_test": 2, "mul_test": 1}
    assert "CellTimeoutError" in got["h_loop"].questions[0].reason
    assert outcome("h_no_interrupt") == ("timed out", 0)
    assert "ignored the interrupt" in got["h_no_interrupt"].message
    assert outcome("h_slow") == ("timed out", 0), "the notebook limit kills the worker"
    assert "its time limit (30 s)" in got["h_slow"].message
    assert pts["h_memory"] == {"add_test": 0, "merge_test": 2, "mul_test": 1}
    assert "MemoryError" in got["h_memory"].questions[0].reason
    assert got["h_fork_bomb"].status in ("graded", "kernel died", "timed out")
    assert pts["h_fork_bomb"]["add_test"] == 0
    # Exits: os._exit kills the kernel (earlier tests keep their points); sys.exit does not.
    assert outcome("h_os_exit") == ("kernel died", 4)
    assert "DeadKernelError" in got["h_os_exit"].questions[2].reason
    assert outcome("h_sys_exit") == ("graded", 3)
    # Tampering with the tests: nbgrader's originals are used, and the report says so.
    assert pts["h_deleted"] == {"add_test": 0, "merge_test": 0, "mul_test": 1}
    assert any("add_test was deleted; it was put back" in w for w in got["h_deleted"].warnings)
    assert outcome("h_edited") == ("graded", 3)
    assert any("add_test was edited" in w for w in got["h_edited"].warnings)
    assert (outcome("h_points"), got["h_points"].max_total) == (("graded", 5), 5)
    assert any("points of mul_test were changed" in w for w in got["h_points"].warnings)
    assert pts["h_always_equal"] == {"add_test": 0, "merge_test": 0, "mul_test": 1}
    assert any("__eq__" in f for f in got["h_always_equal"].flags)
    assert pts["h_monkeypatch"] == {"add_test": 2, "merge_test": 0, "mul_test": 0}
    restored = " ".join(got["h_monkeypatch"].warnings)
    assert "gptcore.course.checks.tokenization.bpe_merge" in restored and "checks" in restored
    # The sandbox: no hidden tests, no writes outside, no network.
    assert pts["h_reader"]["add_test"] == 0
    assert outcome("h_writer") == ("graded", 5), "writes fail quietly inside the sandbox"
    assert pts["h_network"]["add_test"] == 0 and knocks == []
    assert pts["h_links"]["add_test"] == 0, "links and FIFOs are not copied"
    for student in ("h_reader", "h_links"):
        assert "LEAKED:" not in outputs(root / "autograded" / student / LESSON / NB), student
    wrote = re.findall(r"WROTE (\S+?)\\n", outputs(root / "autograded" / "h_writer" / LESSON / NB))
    assert wrote == [f"/tmp/gptcore-pwned-{nonce}"], "only the sandbox's own /tmp is writable"
    assert pts["h_shadow"] == {"add_test": 0, "merge_test": 2, "mul_test": 1}
    assert not Path(f"/tmp/gptcore-shadow-{nonce}").exists(), "the root launcher imported it"
    # An output bomb is cut off; the grader's memory and the notebook stay small.
    assert pts["h_output"]["add_test"] == 0
    assert any("output limit exceeded" in w for w in got["h_output"].warnings)
    assert (root / "autograded" / "h_output" / LESSON / NB).stat().st_size < 3 << 20
    # Review flags point a human at the tricks.
    for student in ("h_monkeypatch", "h_os_exit", "h_reader", "h_network", "h_exfiltrate"):
        assert got[student].flags, student
    assert not got["alice"].flags and not got["bob"].flags

    # After the suite: other students unchanged, gradebook intact, nothing outside changed.
    assert {s: pts[s] for s in good} == good
    assert outcome("h_exfiltrate") == ("graded", 5)
    with sqlite3.connect(root / "gradebook.db") as con:
        assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    assert hidden_tests_in_gradebook(klass) == cells_before, "the hidden tests are untouched"
    db = gradebook_scores(klass)
    assert {s: db[s] for s in good} == {"alice": 5.0, "bob": 1.0}
    assert db["h_invalid_json"] == 0 and db["h_no_interrupt"] == 0
    assert snapshot(root, skip=grader_output) == before
    assert not any(p.exists() for p in (Path(f"/tmp/gptcore-pwned-{nonce}"),))
    assert not (Path.home() / f"gptcore-pwned-{nonce}").exists()
    assert not list(root.glob("pwned-*"))
    assert _sandbox_processes() == [], "no student process outlives grading"
    assert not list(Path(tempfile.gettempdir()).glob("*/course/submitted/h_*")), "no leftovers"

    # The hidden tests never reach the kernel (test cells run in the trusted runner), so a
    # notebook that prints its caller's source finds none; and feedback never shows them.
    assert "negatives" not in outputs(root / "autograded" / "h_exfiltrate" / LESSON / NB)
    fb = classroom.feedback(klass, LESSON, progress=False)
    assert all(r.status in ("ok", "missing") for r in fb.results), fb.summary()
    assert leaked(root / "feedback", HIDDEN) == []
    assert made  # (every case above was submitted)


def _sandbox_processes() -> list[int]:
    """Processes of this run's sandbox users (other tests may be grading concurrently)."""
    mine = range(sandbox_uid(0), sandbox_uid(63) + 1)
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                uid = int((entry / "status").read_text().split("Uid:")[1].split()[0])
            except (OSError, IndexError, ValueError):
                continue
            if uid in mine:
                out.append(int(entry.name))
    return out
