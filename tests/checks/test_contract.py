"""The contract every lesson notebook keeps, read from the notebooks themselves.

For every lesson of tests/registry.py and every graded test cell of its source notebook:

- the registry's grade ids and points are the notebook's nbgrader metadata;
- solution cells carry the solution markers, test cells one hidden-tests block;
- a test cell's visible part calls its check on the learner's functions, and its
  hidden part calls the same check on the same functions with a seed of its own (the
  arguments are parsed from the cell, so no seed is written twice);
- the solution passes: setup cell, solution cells, then the visible and hidden parts
  of the test cell, in one namespace, as the notebook runs them;
- an unfinished exercise (its cell as released in lessons/) makes the visible part of
  every test cell that checks it raise NotImplementedError, which grading reports;
- each wrong answer of the registry passes the visible part of its test cell, fails the
  hidden part, and leaves every other test cell passing.

Exercise names are never written here: they come from the notebooks, which change.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import linecache
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from gptcore.course import Course

from ..conftest import ROOT
from ..notebook_cells import (
    assert_metadata_matches,
    check_calls,
    grade_cells,
    graders_of,
    nbgrader_meta,
    one_thread_fixture,
    run_solutions,
    split_hidden,
)
from ..registry import LESSONS, Lesson, lesson_names
from ..registry import lesson as registry_lesson

# The checks run many tiny tensor operations: one thread is much faster, as in the notebooks.
_one_thread = one_thread_fixture()


# --------------------------------------------------------- reading a notebook
@dataclass(frozen=True)
class Notebook:
    """The graded cells of one source notebook, in notebook order."""

    cells: dict[str, str]  # grade id -> source, for every nbgrader cell
    solution_ids: list[str]
    test_ids: list[str]
    graders: dict[str, str]  # solution grade id -> the test cell right after it


@functools.cache
def read(path: Path) -> Notebook:
    nb = nbformat.read(path, as_version=4)
    meta = [nbgrader_meta(c) for c in nb.cells]
    return Notebook(
        cells=grade_cells(path),
        solution_ids=[m["grade_id"] for m in meta if m.get("solution") and not m.get("grade")],
        test_ids=[m["grade_id"] for m in meta if m.get("grade")],
        graders=graders_of(nb),
    )


def defined_names(source: str) -> set[str]:
    """The names a cell defines at its top level (functions, classes, assignments)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def checked_exercises(nb: Notebook, test_id: str) -> list[str]:
    """The solution cells that define a function the visible part of ``test_id`` checks."""
    visible, _ = split_hidden(nb.cells[test_id])
    given = {a.id for call in check_calls(visible) for a in call.args if isinstance(a, ast.Name)}
    return [s for s in nb.solution_ids if defined_names(nb.cells[s]) & given]


def run(source: str, ns: dict, where: str) -> None:
    """exec ``source`` in ``ns``; tracebacks name it ``where`` and show its lines."""
    filename = f"<{where}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), ns)


# ----------------------------------------------------------- parametrization
# Read at collection time from the notebooks, so that a renamed exercise is followed.
TEST_CELLS = [(e.name, t) for e in LESSONS for t in read(e.source).test_ids]
UNFINISHED = [
    (e.name, s, t)
    for e in LESSONS
    for t in read(e.source).test_ids
    for s in checked_exercises(read(e.source), t)
]
WRONG = [(e.name, s) for e in LESSONS for s in e.wrong_caught_visible]
NAMES = lesson_names()


@pytest.fixture(scope="module")
def lesson(request) -> Lesson:
    """The registry entry; tests name it by lesson name (indirect parametrization)."""
    return registry_lesson(request.param)


@pytest.fixture(scope="module")
def notebook(lesson) -> Notebook:
    return read(lesson.source)


@pytest.fixture(scope="module")
def lesson_data(lesson, request) -> dict:
    """What the test cells use beyond the setup and solution cells."""
    if lesson.test_data is None:
        return {}
    return lesson.test_data(request.getfixturevalue("shakespeare"))


def namespace(notebook: Notebook, data: dict, replace: dict[str, str] | None = None) -> dict:
    """The setup cell and the solution cells (some replaced) run, plus the lesson's data."""
    ns = run_solutions(notebook.cells, notebook.solution_ids, replace)
    assert not set(ns) & set(data), "the registry's test_data hides a notebook name"
    return {**ns, **data}


@pytest.fixture(scope="module")
def solution(notebook, lesson_data) -> dict:
    """The namespace the solution cells make, built once per lesson."""
    return namespace(notebook, lesson_data)


# ------------------------------------------------------------------ the lessons
def test_the_registry_lists_every_lesson():
    assert lesson_names() == Course(ROOT).lesson_names(), "add the lesson to tests/registry.py"
    for entry in LESSONS:
        assert entry.source.is_file() and entry.released.is_file(), entry.name
        importlib.import_module(entry.checks_module)


@pytest.mark.parametrize("lesson", NAMES, indirect=True)
def test_fixture_ids_and_points_match_the_notebook(lesson, notebook):
    assert_metadata_matches(lesson.source, list(lesson.solution_ids), dict(lesson.points))
    # Every exercise is graded by the test cell right after it, named after it.
    assert notebook.graders == {s: f"{s}_tests" for s in notebook.solution_ids}
    released = read(lesson.released)
    assert released.solution_ids == notebook.solution_ids, "run `gptcore release`"


@pytest.mark.parametrize("lesson", NAMES, indirect=True)
def test_cells_have_their_markers(lesson, notebook):
    for gid in notebook.solution_ids:
        source = notebook.cells[gid]
        assert "### BEGIN SOLUTION" in source and "### END SOLUTION" in source, gid
    for gid in notebook.test_ids:
        split_hidden(notebook.cells[gid])  # exactly one hidden-tests block


@pytest.mark.parametrize("lesson", NAMES, indirect=True)
def test_setup_cell_imports_the_lessons_checks(lesson, notebook):
    imported = [
        node
        for node in ast.parse(notebook.cells["setup"]).body
        if isinstance(node, ast.ImportFrom) and node.module == "gptcore.course.checks"
    ]
    assert [(a.name, a.asname) for node in imported for a in node.names] == [
        (lesson.checks, "checks")
    ], f"the setup cell should say `from gptcore.course.checks import {lesson.checks} as checks`"


# ---------------------------------------------------------------- test cells
@pytest.mark.parametrize(("lesson", "cell"), TEST_CELLS, indirect=["lesson"])
def test_test_cell_calls_its_check_then_again_with_hidden_arguments(lesson, notebook, cell):
    visible, hidden = split_hidden(notebook.cells[cell])
    name = cell.removesuffix("_tests")
    shown, secret = check_calls(visible), check_calls(hidden)
    assert [c.func.attr for c in shown] == [name], f"{cell}: call checks.{name}(...) once"
    assert [c.func.attr for c in secret] == [name], f"{cell}: call checks.{name}(...) once"
    check = getattr(importlib.import_module(lesson.checks_module), name, None)
    assert callable(check), f"{lesson.checks_module} has no check {name}"
    (call,), (again,) = shown, secret

    # The visible call gives the learner's functions and nothing else: the default cases.
    assert not call.keywords, f"{cell}: the visible part runs the check's default cases"
    learner = [a.id if isinstance(a, ast.Name) else ast.unparse(a) for a in call.args]
    exercises = {s: defined_names(notebook.cells[s]) for s in notebook.solution_ids}
    for arg in learner:
        assert any(arg in names for names in exercises.values()), f"{cell}: {arg} is no exercise"
    if name in exercises:
        assert exercises[name] & set(learner), f"{cell}: checks none of {sorted(exercises[name])}"

    # The hidden call: the same functions, literal keywords, a seed of its own, more cases.
    assert [ast.unparse(a) for a in again.args] == [ast.unparse(a) for a in call.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in again.keywords}
    defaults = {k: p.default for k, p in inspect.signature(check).parameters.items()}
    assert set(kwargs) <= set(defaults), f"{cell}: {name} takes no {set(kwargs) - set(defaults)}"
    assert "seed" in kwargs and kwargs["seed"] != defaults["seed"], f"{cell}: give a new seed"
    if "cases" in defaults:
        assert kwargs.get("cases", -1) >= defaults["cases"], f"{cell}: hidden tests add cases"
    if "edge_cases" in defaults:
        assert kwargs.get("edge_cases") is True, f"{cell}: the hidden tests run the edge cases"


@pytest.mark.parametrize(("lesson", "cell"), TEST_CELLS, indirect=["lesson"])
def test_solution_passes_the_test_cell(lesson, notebook, solution, cell):
    visible, hidden = split_hidden(notebook.cells[cell])
    ns = dict(solution)  # each test cell sees only the setup and solution cells
    run(visible, ns, f"{lesson.name}:{cell} (visible)")
    run(hidden, ns, f"{lesson.name}:{cell} (hidden)")


@pytest.mark.parametrize(("lesson", "exercise", "cell"), UNFINISHED, indirect=["lesson"])
def test_unfinished_exercise_raises_not_implemented(lesson, notebook, lesson_data, exercise, cell):
    stub = read(lesson.released).cells.get(exercise, "")
    assert "NotImplementedError" in stub, (
        f"{lesson.released}: no stub {exercise}: run `gptcore release`"
    )
    ns = namespace(notebook, lesson_data, replace={exercise: stub})
    visible, _ = split_hidden(notebook.cells[cell])
    # Grading reports the exception's name: a blank exercise must say it is not done.
    with pytest.raises(NotImplementedError):
        run(visible, ns, f"{lesson.name}:{cell} (visible, {exercise} released)")


@pytest.mark.parametrize(("lesson", "exercise"), WRONG, indirect=["lesson"])
def test_wrong_answer_fails_the_visible_tests(lesson, notebook, lesson_data, exercise):
    """A plausible mistake is caught by the checks the learner runs, not only at grading,
    and costs only its own exercise's points."""
    assert exercise in notebook.solution_ids, f"tests/registry.py: no exercise {exercise}"
    ns = namespace(notebook, lesson_data, replace={exercise: lesson.wrong_caught_visible[exercise]})
    cell = notebook.graders[exercise]
    visible, _ = split_hidden(notebook.cells[cell])
    with pytest.raises(AssertionError):
        run(visible, dict(ns), f"{lesson.name}:{cell} (visible, wrong {exercise})")
    for other in notebook.test_ids:  # the mistake costs only its own exercise's points
        if other != cell:
            theirs = dict(ns)
            for part in split_hidden(notebook.cells[other]):
                run(part, theirs, f"{lesson.name}:{other} (wrong {exercise})")
