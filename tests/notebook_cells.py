"""Reading a lesson's source notebook in tests: its graded cells, run as the notebook would."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

from gptcore.course.cells import HIDDEN_BEGIN  # noqa: F401  (re-exported for the checks tests)


def grade_cells(path: Path) -> dict[str, str]:
    """grade_id -> source of every nbgrader cell (setup, solutions, tests)."""
    nb = nbformat.read(path, as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in nb.cells
        if "nbgrader" in c.metadata and "grade_id" in c.metadata["nbgrader"]
    }


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
        self.path, self.solution_ids, self.points = path, solution_ids, points

    def cells(self) -> dict[str, str]:
        return grade_cells(self.path)

    def namespace(self, cells: dict[str, str], replace: dict[str, str] | None = None) -> dict:
        """Run the setup cell and the solution cells (some replaced) as the notebook would."""
        return run_solutions(cells, self.solution_ids, replace)

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
