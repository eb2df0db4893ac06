"""Reading a lesson's source notebook in tests: its graded cells, run as the notebook would."""

from __future__ import annotations

from pathlib import Path

import nbformat
import torch


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
