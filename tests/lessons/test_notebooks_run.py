"""Every solution notebook runs top to bottom without an error, as a learner's Run All does.

Grading (nbgrader) and the checks tests run only the graded cells, so a cell that
crashes between them (a preset changed under a lesson, a shape that no longer fits)
once went unnoticed while every lesson still graded full marks. Here each source
notebook in solutions/ is executed whole in a real kernel, errors not allowed (its
hidden tests are plain code there and run too), twice:

- at the grading budget, ``GPTCORE_LESSON_SECONDS=10``, as ``gptcore grade`` runs it;
- at the lesson's own default budget (the variable unset), as a learner runs it:
  marked ``slow`` (minutes), but part of ``make test`` and CI.

The lessons come from tests/registry.py, in course order. They run in one copy of
solutions/ so that a lesson finds what an earlier one saved beside it.

The grading-budget run also holds the prose to the notebook's own output: each entry
of ``QUOTED`` is a claim the markdown makes and the pattern the outputs must match
for it to be true (the prose refers to printed numbers where it can; where it quotes
one, it is listed here).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ..conftest import ROOT
from ..registry import lesson_names

GRADING_SECONDS = "10"  # what gptcore grade and gptcore class set (gptcore/course/workspace.py)
CELL_TIMEOUT = 900  # seconds: the longest cell at the default budget trains for a few minutes


@pytest.fixture(scope="module")
def course_copy(tmp_path_factory) -> Path:
    """One copy of solutions/, shared by the lessons in order (hand-offs between them)."""
    copy = tmp_path_factory.mktemp("solutions")
    shutil.copytree(ROOT / "solutions", copy, dirs_exist_ok=True)
    return copy


# lesson -> [(text the markdown says, regex the printed output must match)]
QUOTED: dict[str, list[tuple[str, str]]] = {
    "01_tokenization": [
        ("`1999` is one token while `2024` is two", r"1999 +GPT-2 tokens \['1999'\]"),
        ("`1999` is one token while `2024` is two", r"2024 +GPT-2 tokens \['20', '24'\]"),
    ],
    "02_ngram": [
        ("multiplies: 0.2%, 1.4%, 4%, 10%", r"validation 2-grams never seen in training: +0\.2%"),
        ("multiplies: 0.2%, 1.4%, 4%, 10%", r"validation 3-grams never seen in training: +1\.4%"),
        ("multiplies: 0.2%, 1.4%, 4%, 10%", r"validation 4-grams never seen in training: +4\.\d%"),
        ("multiplies: 0.2%, 1.4%, 4%, 10%", r"validation 5-grams never seen in training: +(9\.[5-9]|10\.\d)%"),
        ("to about 340,000 tokens", r"3[34]\d,\d{3} GPT-2 tokens"),
        ("much below 1.8 nats per character", r"characters +nats per character .*: [\d. ]* 1\.7\d\n"),
    ],
    "03_embeddings": [
        ("(2,145 instead of 4,225)", r"16-dim embeddings: 2,145 parameters"),
        ("`3` is the rarest character printed", r"'3' +\( +27 times"),
        ("how far it moved compared with the median", r"'3' moved [\d.]+, more than the median"),
        ("as phrase-ending punctuation usually is", r"'3' .*nearest: '[?;.:!,]'"),
        ("what the last line prints", r"what follows '3' in the text: \[' '\]"),
    ],
    "06_training": [
        ("$\\ln 65 \\approx 4.17$", r"ln 65 = 4\.17"),
        ("lesson 2's best n-gram model paid about 1.9", r"best n-gram: \d-gram, 1\.9\d"),
        (
            "Tiny Shakespeare's 1.1 million characters",
            r"1,003,854 training tokens, 111,540 validation tokens",
        ),
    ],
}

# Lesson 6 trains for GPTCORE_LESSON_SECONDS and prints how long it really took: a budget is
# never overrun by more than 10% (the first step always runs, so a tiny budget may be one
# step over).
BUDGET_LINE = re.compile(r"stopped after (\d+) steps and (\d+) s of the (\d+) s budget")


def check_budget(nb: nbformat.NotebookNode) -> None:
    printed = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    for steps, spent, budget in BUDGET_LINE.findall(printed):
        if int(steps) > 1:
            assert int(spent) <= 1.1 * int(budget) + 1, (
                f"trained {spent} s on a {budget} s budget (more than 10% over)"
            )


def check_quoted(lesson: str, nb: nbformat.NotebookNode) -> None:
    """Every claim of ``QUOTED[lesson]`` is still in the prose and true of the output."""
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    printed = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    for claim, pattern in QUOTED.get(lesson, []):
        assert claim in prose, f"{lesson}: the prose no longer says {claim!r}: update QUOTED"
        assert re.search(pattern, printed), (
            f"{lesson}: the prose says {claim!r}, but no output matches {pattern!r}: "
            "correct the prose (or print the number and refer to it)"
        )


def run_all(notebook: Path) -> float:
    """Execute ``notebook`` top to bottom in a fresh kernel; raise on the first error."""
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(notebook.parent)}},
    )
    start = time.perf_counter()
    client.execute()  # CellExecutionError names the cell and shows its traceback
    seconds = time.perf_counter() - start
    check_quoted(notebook.stem, nb)
    check_budget(nb)
    return seconds


@pytest.mark.parametrize("lesson", lesson_names())
def test_runs_at_the_grading_budget(lesson, course_copy, monkeypatch, capsys):
    monkeypatch.setenv("GPTCORE_LESSON_SECONDS", GRADING_SECONDS)  # the kernel inherits it
    seconds = run_all(course_copy / lesson / f"{lesson}.ipynb")
    with capsys.disabled():
        print(f"\n{lesson}: Run All in {seconds:.0f} s at GPTCORE_LESSON_SECONDS={GRADING_SECONDS}")


@pytest.mark.slow
@pytest.mark.parametrize("lesson", lesson_names())
def test_runs_at_the_default_budget(lesson, course_copy, monkeypatch, capsys):
    monkeypatch.delenv("GPTCORE_LESSON_SECONDS", raising=False)  # the lesson's own default
    seconds = run_all(course_copy / lesson / f"{lesson}.ipynb")
    with capsys.disabled():
        print(f"\n{lesson}: Run All in {seconds:.0f} s at the default budget")
