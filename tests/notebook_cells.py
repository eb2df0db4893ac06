"""Reading a lesson's source notebook in tests: its graded cells, run as the notebook would."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch

# HIDDEN_BEGIN is also imported from here by the checks tests.
from gptcore.course.cells import HIDDEN_BEGIN, HIDDEN_END

from .registry import lesson as registry_lesson


def grade_cells(path: Path) -> dict[str, str]:
    """grade_id -> source of every nbgrader cell (setup, solutions, tests)."""
    nb = nbformat.read(path, as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in nb.cells
        if "nbgrader" in c.metadata and "grade_id" in c.metadata["nbgrader"]
    }


def nbgrader_meta(cell) -> dict:
    """A cell's nbgrader metadata; {} for a cell nbgrader does not know."""
    return cell.metadata.get("nbgrader", {})


def graders_of(nb) -> dict[str, str]:
    """solution grade id -> the grade id of the test cell that follows it (its grader)."""
    out, pending = {}, None
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if meta.get("solution") and not meta.get("grade"):
            pending = meta["grade_id"]
        elif meta.get("grade") and pending:
            out[pending], pending = meta["grade_id"], None
    return out


def split_hidden(source: str) -> tuple[str, str]:
    """A test cell's (visible part, hidden part): what learners see, and what grading adds.

    The hidden part keeps its markers, which are comments, so each part runs as it is.
    """
    assert source.count(HIDDEN_BEGIN) == 1 and source.count(HIDDEN_END) == 1, source
    visible, hidden = source.split(HIDDEN_BEGIN)
    return visible, HIDDEN_BEGIN + hidden


def check_calls(source: str) -> list[ast.Call]:
    """Every call of the form ``checks.<name>(...)`` in ``source``, in order."""
    return [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "checks"
    ]


def hidden_arguments(path: Path) -> dict[str, dict[str, Any]]:
    """check name -> the keyword arguments its hidden call gets in the notebook's test cells.

    The notebook is the one place the hidden seeds are written; tests that run a check
    as the hidden tests do read them from here (test_contract.py holds that every test
    cell has one hidden call, with literal arguments).
    """
    nb = nbformat.read(path, as_version=4)
    out: dict[str, dict[str, Any]] = {}
    for cell in nb.cells:
        if nbgrader_meta(cell).get("grade"):
            for call in check_calls(split_hidden(cell.source)[1]):
                out[call.func.attr] = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    return out


def run_solutions(
    cells: dict[str, str], solution_ids: list[str], replace: dict[str, str] | None = None
) -> dict:
    """Run the setup cell, then the solution cells (some replaced), in one namespace."""
    ns: dict = {}
    threads = torch.get_num_threads()
    try:
        exec(cells["setup"], ns)
    finally:
        torch.set_num_threads(threads)  # setup cells may pin one thread; keep pytest's setting
    for gid in solution_ids:
        exec((replace or {}).get(gid, cells[gid]), ns)
    return ns


def assert_metadata_matches(path: Path, solution_ids: list[str], points: dict[str, int]) -> None:
    """The lesson fixtures agree with the notebook, which is committed as nbgrader expects."""
    nb = nbformat.read(path, as_version=4)
    meta = [c.metadata["nbgrader"] for c in nb.cells if "nbgrader" in c.metadata]
    assert [m["grade_id"] for m in meta if m["solution"]] == solution_ids
    assert {m["grade_id"]: m["points"] for m in meta if m["grade"]} == points
    assert len({m["grade_id"] for m in meta}) == len(meta), "grade ids must be unique"
    assert 10 <= sum(points.values()) <= 20, "each lesson is worth about 10-20 points"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for c in nb.cells:
        assert c.cell_type == "markdown" or (c.outputs == [] and c.execution_count is None)


class LessonNotebook:
    """One lesson's source notebook as the checks tests use it; one instance per test module:

    nb = LessonNotebook(NOTEBOOK, SOLUTION_IDS, POINTS)
    cells, solution = nb.fixtures()  # module-scoped pytest fixtures
    """

    def __init__(self, path: Path, solution_ids: list[str], points: dict[str, int]):
        self.path, self.solution_ids, self.points = path, list(solution_ids), dict(points)

    @classmethod
    def for_lesson(cls, name: str) -> LessonNotebook:
        """The source notebook of lesson ``name``, with what tests/registry.py knows of it."""
        entry = registry_lesson(name)
        return cls(entry.source, list(entry.solution_ids), dict(entry.points))

    def cells(self) -> dict[str, str]:
        return grade_cells(self.path)

    def namespace(self, cells: dict[str, str], replace: dict[str, str] | None = None) -> dict:
        """Run the setup cell and the solution cells (some replaced) as the notebook would."""
        return run_solutions(cells, self.solution_ids, replace)

    def hidden_arguments(self) -> dict[str, dict[str, Any]]:
        """check name -> the keyword arguments of its hidden call in the notebook."""
        return hidden_arguments(self.path)

    def assert_metadata(self) -> None:
        assert_metadata_matches(self.path, self.solution_ids, self.points)

    def fixtures(self):
        """(cells, solution): the graded cells, and the namespace the solutions make."""

        @pytest.fixture(scope="module", name="cells")
        def cells() -> dict[str, str]:
            return self.cells()

        @pytest.fixture(scope="module", name="solution")
        def solution(cells) -> dict:
            return self.namespace(cells)

        return cells, solution


def one_thread_fixture():
    """A module-wide autouse fixture that runs torch on one thread, then restores it."""

    @pytest.fixture(autouse=True, scope="module")
    def _one_thread():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)

    return _one_thread
