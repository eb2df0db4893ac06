"""Attacks on class grading (issue 13, items 2-8), each against the defence that stops it.

Written independently of tests/grading/test_classroom.py's hostile suite: collect and links,
the kernel's writable space, output caps, inert student text, descriptors, student ids,
malformed notebooks, and the review flags (tampering, delegation to gptcore's own
implementation). The end-to-end case needs the sandbox (root and bubblewrap, as in CI).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from gptcore.course import classroom
from gptcore.course.cells import load_submission, structure_problems
from gptcore.course.classroom.collect import copy_submission
from gptcore.course.classroom.delegation import REFERENCES
from gptcore.course.classroom.feedback import sanitize_page
from gptcore.course.classroom.report import ClassReport, StudentResult
from gptcore.course.classroom.scratch import remove_tree
from gptcore.course.sandbox import Limits

from .test_classroom import FULL, LESSON, NB, SANDBOXED, make_course, submit

ESC = "\x1b"


@pytest.fixture
def klass(tmp_path):
    return make_course(tmp_path / "course")


def _released(klass) -> dict:
    return json.loads((klass.lessons / LESSON / NB).read_text())


# ------------------------------------------------------------------ 3. collect and links
def test_collect_never_follows_a_link(klass, tmp_path):
    solutions = klass.solutions / LESSON / NB
    good = (klass.lessons / LESSON / NB).read_text()
    src = tmp_path / "download"
    (src / "alice" / LESSON).mkdir(parents=True)
    (src / "alice" / LESSON / NB).write_text(good)
    (src / "alice" / LESSON / "secret.txt").symlink_to(solutions)  # not copied
    (src / "mallory.ipynb").symlink_to(solutions)  # one file per student, a link
    (src / "trudy" / LESSON).mkdir(parents=True)
    (src / "trudy" / LESSON / NB).symlink_to(solutions)  # nbgrader's layout, a link
    (src / "eve" / "work").mkdir(parents=True)
    (src / "eve" / "work" / "my copy.ipynb").symlink_to(solutions)  # a lone one, renamed
    (src / "oscar").mkdir()
    os.mkfifo(src / "oscar" / NB)  # a copy that opens it would wait forever
    (src / "peggy" / NB).mkdir(parents=True)  # a folder where the notebook should be
    (src / "walter.ipynb").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / NB).write_text(good)
    (src / "victor").symlink_to(tmp_path / "elsewhere")  # the student's folder is a link
    report = classroom.collect(klass, src, LESSON, progress=False)
    got = {r.student: (r.status, r.message) for r in report.results}
    assert got["alice"][0] == "ok" and "secret.txt" in got["alice"][1]
    for student, why in [
        ("mallory", "link"),
        ("trudy", "link"),
        ("eve", "link"),
        ("oscar", "special file"),
        ("peggy", "folder"),
        ("walter", "folder"),
        ("victor", "link"),
    ]:
        status, message = got[student]
        assert status == "invalid" and why in message, (student, got[student])
    sub = klass.root / "submitted"
    assert sorted(p.name for p in sub.iterdir()) == ["alice"], "nothing else, no temporary folder"
    assert not (sub / "alice" / LESSON / "secret.txt").exists()
    secret = solutions.read_text()
    assert all(p.read_text() != secret for p in sub.rglob("*") if p.is_file())
    text = report.summary()
    assert "Summary: 1 of 8 done" in text and "invalid: 7" in text


def test_student_ids_are_whole_normalised_and_distinct(klass, tmp_path):
    good = (klass.lessons / LESSON / NB).read_text()
    src = tmp_path / "download"
    src.mkdir()
    for name in ("alice", "Alice", "bob\n", "ｃａｒｏｌ", "dave\x1b[2K"):
        (src / f"{name}.ipynb").write_text(good)
    report = classroom.collect(klass, src, LESSON, progress=False)
    got = {r.student: (r.status, r.message) for r in report.results}
    assert got["carol"][0] == "ok", "NFKC: fullwidth letters are the same id"
    assert got["carol"][1].endswith("-> 00_demo.ipynb")
    assert got["bob\n"][0] == "skipped", "a trailing newline is not a valid id ($ accepts it)"
    assert got["dave\x1b[2K"][0] == "skipped"
    folded = [got["Alice"], got["alice"]]
    assert sorted(s for s, _ in folded) == ["ok", "skipped"]
    assert any("same student id" in m for _, m in folded)
    assert sorted(p.name for p in (klass.root / "submitted").iterdir()) == ["Alice", "carol"]
    assert ESC not in report.summary() and "dave\\x1b[2K" in report.summary()


def test_autograde_gives_hand_made_bad_ids_an_outcome(klass):
    """Folders put in submitted/ by hand are checked too, and get an outcome."""
    for name in ("bob\n", "Bob"):
        submit(klass, name, FULL)
    submit(klass, "bob", FULL)
    report = classroom.autograde(klass, LESSON, students=["bob\n"], progress=False)
    assert [(r.student, r.status) for r in report.results] == [("bob\n", "invalid")]
    assert "not a valid student id" in report.results[0].message


def test_copy_submission_refuses_links_fifos_and_depth(tmp_path):
    src = tmp_path / "src"
    deep = src
    for _ in range(40):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (src / "ok.txt").write_text("mine")
    (src / "link").symlink_to("/etc/passwd")
    (src / "dirlink").symlink_to("/etc")
    os.mkfifo(src / "fifo")
    refused = copy_submission(src, tmp_path / "dest")
    assert (tmp_path / "dest" / "ok.txt").read_text() == "mine"
    assert {"link", "dirlink", "fifo"} <= set(refused)
    assert any("nested deeper" in why for why in refused.values())
    with pytest.raises(ValueError, match="link"):
        copy_submission(src / "dirlink", tmp_path / "dest2")


# ------------------------------------------------------------------ 7. malformed notebooks
def test_malformed_notebooks_are_reasons_not_crashes(klass, tmp_path):
    deep = tmp_path / "deep.ipynb"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    nb, why = load_submission(deep)
    assert nb is None and "nested too deeply" in why
    big = tmp_path / "big.ipynb"
    big.write_bytes(b" " * (2 << 20))
    assert "more than the 1 MiB" in load_submission(big, max_bytes=1 << 20)[1]
    (tmp_path / "link.ipynb").symlink_to(big)
    assert "link" in load_submission(tmp_path / "link.ipynb")[1]
    os.mkfifo(tmp_path / "fifo.ipynb")
    assert "special file" in load_submission(tmp_path / "fifo.ipynb")[1]

    released = _released(klass)
    assert structure_problems(released, released) == []
    nb = _released(klass)
    nb["cells"].append(json.loads(json.dumps(nb["cells"][2])))  # a duplicated cell
    assert any("appears twice" in p for p in structure_problems(nb, released))
    nb = _released(klass)
    extra = json.loads(json.dumps(nb["cells"][3]))
    extra["metadata"]["nbgrader"].update(grade_id="bonus", points=100)
    nb["cells"].append(extra)
    assert any("bonus is not in the lesson" in p for p in structure_problems(nb, released))
    nb = _released(klass)
    test = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade"))
    test["cell_type"] = "markdown"
    test.pop("outputs", None)
    test.pop("execution_count", None)
    assert any("changed from code to markdown" in p for p in structure_problems(nb, released))


# ------------------------------------------------------------------ 6. inert text
class _Live(HTMLParser):
    """What in a page a browser would run or load: script/iframe/object/embed/form
    elements, event-handler attributes, and javascript: or non-image data: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        ours = tag == "meta" and ("charset" in a or a.get("http-equiv") == "Content-Security-Policy")
        if tag in ("script", "iframe", "object", "embed", "form", "base", "link", "meta") and not ours:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            v = (value or "").strip().lower()
            if name.startswith("on") or v.startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value}>")
            if v.startswith("data:") and not v.startswith("data:image/png"):
                self.found.append(f"<{tag} {name}={value[:30]}>")


def live(page: str) -> list[str]:
    parser = _Live()
    parser.feed(page)
    return parser.found


def test_feedback_pages_are_sanitised_and_static():
    page = (
        "<html><head><title>x</title><style>.a{color:red}</style>"
        "<script>var template = 1;</script></head><body class='x'>"
        "<div class=a onclick='steal()'>Score: 1.0 / 5.0</div>"
        "<script>alert('student')</script><img src=x onerror=alert(1)>"
        "<a href='javascript:alert(1)'>link</a><a href='data:text/html,<script>'>d</a>"
        "<iframe src='https://evil.example'></iframe><form action=/x><input></form>"
        "<style>body{display:none}</style><svg><script>1</script></svg>"
        "<img src='data:image/png;base64,AAAA'></body></html>"
    )
    assert len(live(page)) >= 8, "the checker sees the attacks"
    out = sanitize_page(page)
    assert live(out) == []
    low = out.lower()
    for bad in ("<script", "onclick", "onerror", "javascript:", "<iframe", "<form", "data:text"):
        assert bad not in low, bad
    assert "display:none" not in out, "a student's <style> is dropped"
    assert ".a{color:red}" in out, "the template's own style is kept"
    assert "Score: 1.0 / 5.0" in out and "data:image/png;base64,AAAA" in out
    assert "Content-Security-Policy" in out and "default-src 'none'" in out


def test_terminal_output_escapes_control_characters():
    r = StudentResult("mallory", LESSON, "graded")
    r.message = f"ok{ESC}[2K\rREVIEW cleared"
    r.warnings.append(f"warn{ESC}]0;title\x07")
    r.flags.append(f"cell 3 uses ctypes: `x = '{ESC}[8m'`\u202e")
    bad = StudentResult(f"eve{ESC}[1A", LESSON, f"error{ESC}[2J", message=f"{ESC}[31mboom")
    report = ClassReport("autograde", LESSON, [r, bad], sandbox=f"sb{ESC}", notes=[f"n{ESC}"])
    text = report.summary()
    assert ESC not in text and "\r" not in text and "\u202e" not in text and "\x07" not in text
    assert "REVIEW: cell 3 uses ctypes" in text and "\\x1b" in text


# ------------------------------------------------------------------ 2 and 8. review flags
TAMPERING = {
    "input_transformers": "get_ipython().input_transformers_post.append(lambda l: l)",
    "ast_transformers": "ip = get_ipython()\nip.ast_transformers[:] = [T()]",
    "events": "ip.events.register('pre_run_cell', f)",
    "code object": "checks.check_int.__code__ = (lambda v, w: 6).__code__",
    "settrace": "import sys\nsys.settrace(tracer)",
    "setprofile": "from sys import setprofile\nsetprofile(p)",
    "audit hook": "sys.addaudithook(hook)",
    "gc scan": "import gc\nfor o in gc.get_objects():\n    pass",
    "gc referrers": "from gc import get_referrers as r\nr(x)",
    "ctypes": "import ctypes\nctypes.pythonapi.PyFrame_LocalsToFast",
    "guard name": "del globals()['_g0123456789ab']",
    "guard module": "sys.modules['gptcore_guard']",
    "frames": "e.__traceback__.tb_frame.f_back.f_globals['checks'] = fake",
    # A check's training loop runs in the kernel (report.drives): replacing it there, under
    # any name the module is imported as, is flagged.
    "a check's loop, by alias": (
        "import gptcore.course.checks.training.schedule as s\n"
        "s._curve = lambda f, steps, kw: [0.0 for _ in steps]"
    ),
    "a check's loop, from its package": "checks.bigram._train = fake",
    "a check's loop, by setattr": (
        "from gptcore.course.checks.training import schedule\nsetattr(schedule, '_curve', fake)"
    ),
    "a check's loop, augmented": "from gptcore.course import checks as c\nc.report.WATCHING += [x]",
}


def _notebook(*sources: str) -> dict:
    cells = [
        {"cell_type": "code", "source": s, "metadata": {}, "outputs": [], "execution_count": None}
        for s in sources
    ]
    return {"cells": cells}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_tampering_is_flagged_for_review(name):
    flags = classroom.suspicious_code(_notebook(TAMPERING[name]), {"cells": []})
    assert flags, name


def _lesson(course, lesson: str) -> dict:
    return json.loads(next((course.solutions / lesson).glob("*.ipynb")).read_text())


DELEGATIONS = [
    "from gptcore.ngram import smoothed_probs as sp\ndef smoothed_probs(c, k=1.0):\n    return sp(c, k)",
    "import gptcore.ngram\ndef smoothed_probs(c, k=1.0):\n    return gptcore.ngram.smoothed_probs(c, k)",
    "from gptcore import ngram as n\ndef smoothed_probs(c, k=1.0):\n    return n.smoothed_probs(c, k)",
    "import sys\ndef smoothed_probs(c, k=1.0):\n    return getattr(sys.modules['gptcore.ngram'], 'smoothed_probs')(c, k)",
    "import importlib\nm = importlib.import_module('gptcore.ngram')\nsmoothed_probs = vars(m)['smoothed_probs']",
    "from gptcore.ngram import *",
    "def perplexity(p):\n    return checks.ngram.perplexity(p)",
    "def count_bigrams(ids, v):\n    return __import__('gptcore').ngram.count_ngrams(ids, 2)",
]


@pytest.mark.parametrize("code", DELEGATIONS)
def test_delegating_to_gptcore_is_flagged(course, code):
    source = _lesson(course, "02_ngram")
    flags = classroom.suspicious_code(_notebook(code), source)
    assert any("gptcore's own implementation" in f for f in flags), (code, flags)


def test_honest_answers_are_not_flagged_as_delegation(course):
    honest = (
        "import torch\nimport torch.nn.functional as F\n"
        "def smoothed_probs(counts, k=1.0):\n"
        "    counts = counts.float() + k\n"
        "    return counts / counts.sum(dim=-1, keepdim=True)\n"
        "def perplexity(p):\n    return float(torch.exp(-torch.log(torch.tensor(p)).mean()))"
    )
    assert classroom.suspicious_code(_notebook(honest), _lesson(course, "02_ngram")) == []


def test_every_exercise_names_its_reference(course):
    """The delegation table covers every exercise of every lesson, and every name resolves."""
    for lesson in course.lesson_names():
        for cell in _lesson(course, lesson)["cells"]:
            meta = cell["metadata"].get("nbgrader", {})
            if meta.get("solution") and meta.get("grade_id"):
                assert meta["grade_id"] in REFERENCES, (lesson, meta["grade_id"])
    for names in REFERENCES.values():
        for qualname in names:
            parts = qualname.split(".")
            for i in range(len(parts) - 1, 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:i]))
                except ImportError:
                    continue
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
                break
            else:
                pytest.fail(f"{qualname} does not resolve")


# ------------------------------------------------------------------ 4. writable space
def test_clean_up_cannot_be_defeated(tmp_path):
    root = tmp_path / "student"
    deep = root
    for _ in range(1500):  # deeper than shutil.rmtree's recursion allows
        deep.mkdir()
        deep = deep / "d"
    odd = root / "odd"
    odd.mkdir()
    for name in ("new\nline", f"esc{ESC}[2J", "-rf", " lead", "\udcff-not-utf8"):
        (odd / name).write_text("x")
    locked = root / "locked"
    (locked / "inner").mkdir(parents=True)
    (locked / "inner" / "f").write_text("x")
    (locked / "inner").chmod(0o000)
    locked.chmod(0o500)
    (root / "link").symlink_to(tmp_path / "keep")
    (tmp_path / "keep").write_text("not the student's")
    remove_tree(root)
    assert not root.exists()
    assert (tmp_path / "keep").read_text() == "not the student's", "links are not followed"


_TMPFS_PROBE = """
import json, os, sys
from gptcore.course.sandbox import Limits
from gptcore.course.classroom import scratch
assert scratch.private_mounts()
rt = scratch.bounded_runtime_dir("probe", Limits(scratch_bytes=4 << 20, files=200))
made = 0
try:
    for i in range(1000):
        open(rt / "scratch" / f"f{i}", "w").close()
        made += 1
except OSError as e:
    files_error = e.errno
try:
    with open(rt / "scratch" / "big", "wb") as f:
        f.write(b"x" * (8 << 20))
    size_error = None
except OSError as e:
    size_error = e.errno
print(json.dumps([str(rt), made, files_error, size_error]), flush=True)
sys.stdin.readline()
scratch.remove_runtime_dir(rt)
print(json.dumps(os.path.exists(rt)), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_the_kernels_writable_space_is_a_bounded_private_tmpfs():
    proc = subprocess.Popen(
        [sys.executable, "-c", _TMPFS_PROBE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        rt, made, files_error, size_error = json.loads(proc.stdout.readline())
        assert made < 200 and files_error == 28, "the file count is capped (ENOSPC)"
        assert size_error == 28, "the size is capped"
        assert os.listdir(rt) == [], "the host never sees the tmpfs or its files"
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) is False
    finally:
        proc.kill()
        proc.wait()
    assert not Path(rt).exists()


# ------------------------------------------------------------------ end to end, sandboxed
def _tampered(klass, student: str, cells: list[dict]) -> None:
    path = klass.root / "submitted" / student / LESSON / NB
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = _released(klass)
    nb["cells"] = cells
    path.write_text(json.dumps(nb))


FD_PROBE = (
    "import os, json\n"
    "fds = {}\n"
    "for fd in os.listdir('/proc/self/fd'):\n"
    "    try:\n        fds[fd] = os.readlink(f'/proc/self/fd/{fd}')\n"
    "    except OSError:\n        pass\n"
    "print('FDS' + json.dumps(fds))\n"
)
DISK_BOMB = (
    "import os, json\n"
    "from ipykernel.connect import get_connection_file\n"
    "runtime = os.path.dirname(get_connection_file())\n"
    "p = runtime\n"
    "for i in range(300):\n"
    "    p = os.path.join(p, 'd')\n"
    "    os.mkdir(p)\n"
    "os.chmod(os.path.join(runtime, 'd'), 0o500)\n"
    "for name in ('new\\nline', 'esc\\x1b[2J', '-rf'):\n"
    "    open(os.path.join(runtime, name), 'w').close()\n"
    "made = {}\n"
    "for where in ('/tmp', os.environ['HOME'], '/dev/shm', runtime):\n"
    "    n = 0\n"
    "    try:\n"
    "        for i in range(100_000):\n"
    "            open(os.path.join(where, f'bomb{i}'), 'w').close()\n"
    "            n += 1\n"
    "    except OSError:\n        pass\n"
    "    made[where] = n\n"
    "print('MADE' + json.dumps(made))\n"
)
OUTPUT_BOMB = "from IPython.display import display\nfor i in range(6_000):\n    display('')\n"
HTML_BOMB = (
    "from IPython.display import HTML, display\n"
    "display(HTML('<script>alert(1)</script><img src=x onerror=alert(2)>'))\n"
)
ESC_ERROR = (
    "class Boom(Exception):\n    pass\n"
    "Boom.__name__ = Boom.__qualname__ = 'Boom\\x1b[2K\\rall good'\n"
    "raise Boom('\\x1b]0;pwned\\x07')\n"
)


@SANDBOXED
@pytest.mark.slow
def test_attacks_end_to_end(klass, tmp_path):
    root = klass.root
    limits = Limits(files=4000, scratch_bytes=256 << 20)
    submit(klass, "alice", FULL)
    submit(
        klass,
        "h_fds",
        {**FULL, "mul": FD_PROBE + "def mul(a, b):\n    return a * b"},
    )
    submit(klass, "h_disk", {**FULL, "mul": DISK_BOMB + "def mul(a, b):\n    return a * b"})
    submit(klass, "h_outputs", {**FULL, "add": OUTPUT_BOMB + FULL["add"]})

    def markdown(nb):
        nb.cells.insert(
            0,
            nbformat.v4.new_markdown_cell(
                "<script>alert(3)</script><a href='javascript:alert(4)'>x</a>"
                "<img src=y onerror=alert(5)>"
            ),
        )

    submit(
        klass,
        "h_html",
        {"add": HTML_BOMB + FULL["add"], "merge": ESC_ERROR, "mul": "import ctypes  \n" + FULL["mul"]},
        markdown,
    )
    # Malformed notebooks: a per-student outcome, never an error for the run.
    deep = root / "submitted" / "h_deep" / LESSON / NB
    deep.parent.mkdir(parents=True)
    deep.write_text('{"cells": ' + "[" * 100_000 + "]" * 100_000 + "}")
    cells = _released(klass)["cells"]
    _tampered(klass, "h_dup", [*cells, cells[2]])
    bonus = json.loads(json.dumps(cells[3]))
    bonus["metadata"]["nbgrader"].update(grade_id="bonus", points=100)
    bonus["source"] = "pass"
    _tampered(klass, "h_invented", [*cells, bonus])
    retyped = json.loads(json.dumps(cells))
    retyped[3] = {"cell_type": "markdown", "source": "done", "metadata": retyped[3]["metadata"]}
    _tampered(klass, "h_retyped", retyped)

    report = classroom.autograde(
        klass, LESSON, cell_timeout=120, sandbox="on", limits=limits, progress=False
    )
    got = report.by_student()
    assert {r.status for r in report.results} <= {"graded", "invalid"}, report.summary()
    assert got["alice"].total == 5 and not got["alice"].flags
    for student, why in [
        ("h_deep", "nested too deeply"),
        ("h_dup", "appears twice"),
        ("h_invented", "bonus is not in the lesson"),
        ("h_retyped", "changed from code to markdown"),
    ]:
        assert (got[student].status, got[student].total) == ("invalid", 0), student
        assert why in got[student].message, (student, got[student].message)

    def printed(student: str, tag: str) -> dict:
        nb = nbformat.read(root / "autograded" / student / LESSON / NB, as_version=4)
        text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        return json.loads(re.search(tag + r"(\{.*\})", text).group(1))

    # 7. The kernel holds no descriptor of the grader (its log files above all).
    fds = printed("h_fds", "FDS")
    for fd, target in fds.items():
        if not target.endswith("/kernel-output.log"):  # (its own, in its runtime folder)
            assert "gptcore-class-" not in target and not target.endswith(".log"), (fd, target)
        kinds = ("socket:", "pipe:", "anon_inode:", "/dev/", "/tmp/", "/proc/")
        assert target.startswith(kinds), (fd, target)
    assert got["h_fds"].total == 5

    # 4. Every writable place is one bounded tmpfs; nothing is left on the host.
    made = printed("h_disk", "MADE")
    assert 0 < sum(made.values()) < limits.files, made
    assert got["h_disk"].total == 5
    tmp = Path(tempfile.gettempdir())
    assert not [*tmp.glob("gptk-*/bomb0"), *tmp.glob("gptk-*/d")], "nothing left on the host"

    # 5. Every output counts: 6,000 empty outputs (no bytes of their own) are cut off.
    assert any("output limit exceeded" in w for w in got["h_outputs"].warnings)
    nb = json.loads((root / "autograded" / "h_outputs" / LESSON / NB).read_text())
    assert sum(len(c.get("outputs", [])) for c in nb["cells"]) < 5000
    assert got["h_outputs"].total == 5

    # 6. Student text is inert: in the summary and in the feedback.
    text = report.summary()
    assert ESC not in text and "\r" not in text and "\x07" not in text
    assert any("ctypes" in f for f in got["h_html"].flags)
    fb = classroom.feedback(klass, LESSON, students=["h_html"], progress=False)
    assert fb.results[0].status == "ok", fb.summary()
    page = (root / "feedback" / "h_html" / LESSON / "00_demo.html").read_text()
    assert live(page) == []
    assert "&lt;script&gt;alert(1)" in page, "the HTML output is shown as text"
    assert got["h_html"].questions[1].points == 0


# ------------------------------------------------------------------ 1. tests outside the kernel
# Reads every readable page of the kernel's own memory: whatever the process ever held
# (history, frames, freed strings) is there, in any encoding the process used. Each needle
# is looked for as two pieces, so that the scan's own source never holds the whole of it;
# MARKER42 is made at run time by the notebook, to show that the scan finds what is there.
MEMORY_SCAN = (
    "import re as _re\n"
    "_marker = ''.join(['MARK', 'ER', str(6 * 7)])\n"
    "_needles = {'message': (b'\"negat', b'ives\"'), 'call': (b'add(-1', b', 1)'),\n"
    "            'marker': (b'MARK', b'ER42')}\n"
    "_found, _scanned = set(), 0\n"
    "with open('/proc/self/maps') as _maps, open('/proc/self/mem', 'rb', 0) as _mem:\n"
    "    for _line in _maps:\n"
    "        _m = _re.match(r'([0-9a-f]+)-([0-9a-f]+) r', _line)\n"
    "        if not _m or '[vvar' in _line or '[vsyscall' in _line:\n"
    "            continue\n"
    "        _lo, _hi = int(_m.group(1), 16), int(_m.group(2), 16)\n"
    "        try:\n"
    "            _mem.seek(_lo)\n"
    "            _chunk = _mem.read(_hi - _lo)\n"
    "        except (OSError, OverflowError, ValueError):\n"
    "            continue\n"
    "        _scanned += len(_chunk)\n"
    "        for _name, (_head, _tail) in _needles.items():\n"
    "            _i = _chunk.find(_head)\n"
    "            while _i >= 0 and _name not in _found:\n"
    "                if _chunk[_i + len(_head):_i + len(_head) + len(_tail)] == _tail:\n"
    "                    _found.add(_name)\n"
    "                _i = _chunk.find(_head, _i + 1)\n"
    "print('SCAN' + json.dumps({'scanned': _scanned, 'found': sorted(_found)}))\n"
)
# Swaps a check's code object: names built at run time, so no review flag; the in-kernel
# guard compares function identities and never saw it (the second root cause).
CODE_SWAP = (
    "_f = getattr(getattr(checks, 'bpe_' + 'merge'), '__' + 'wrapped__')\n"
    "setattr(_f, '__' + 'code__', getattr(lambda *a, **k: None, '__' + 'code__'))\n"
    "def merge(ids, pair, idx):\n"
    "    return [256, 5]\n"
)


def _scan(root: Path, student: str) -> dict:
    nb = nbformat.read(root / "autograded" / student / LESSON / NB, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    return json.loads(re.search(r"SCAN(\{.*\})", text).group(1))


@SANDBOXED
@pytest.mark.slow
@pytest.mark.parametrize("where", ["trusted runner", "kernel"])
def test_test_cells_never_run_where_student_code_runs(klass, where, monkeypatch):
    """Issue 13, root causes 1 and 2: the hidden tests never enter the kernel, and the
    kernel cannot change a comparison. The "kernel" case (the old design, kept for lessons
    listed in KERNEL_TESTS) shows the attacks are real: both succeed there."""
    from gptcore.course.classroom import grading

    if where == "kernel":
        monkeypatch.setitem(grading.KERNEL_TESTS, LESSON, "the old design, for contrast")
    submit(klass, "h_scan", {**FULL, "mul": "import json\n" + MEMORY_SCAN + FULL["mul"]})
    submit(klass, "h_swap", {**FULL, "merge": CODE_SWAP})
    report = classroom.autograde(klass, LESSON, cell_timeout=120, sandbox="on", progress=False)
    got = report.by_student()
    scan = _scan(klass.root, "h_scan")
    assert scan["scanned"] > 1 << 20 and "marker" in scan["found"], "the scan works"
    assert got["h_scan"].total == 5
    merge_points = {q.grade_id: q.points for q in got["h_swap"].questions}["merge_test"]
    assert not got["h_swap"].flags, "built at run time: no review flag"
    if where == "kernel":
        assert {"message", "call"} <= set(scan["found"]), "the hidden test was there"
        assert merge_points == 2, "the swapped check passed a stub"
    else:
        assert not {"message", "call"} & set(scan["found"]), scan
        assert merge_points == 0, "the check ran in the runner, untouched"
        reason = {q.grade_id: q.reason for q in got["h_swap"].questions}["merge_test"]
        assert "merge([5, 5, 5], (5, 5), 256)" in reason or "merge(" in reason, reason
