"""Every lesson of the course, as the tests see it: one entry per lesson.

The contract test (tests/checks/test_contract.py), the lesson tests (tests/lessons/test_lessons.py) and
the checks tests read their lessons from here; the facts that are not in the notebooks
(the grade ids and points the tests expect, plausible wrong answers that the visible
tests catch) stay in tests/lesson*_fixtures.py and are collected here. A new lesson is one more
``Lesson(...)`` in ``LESSONS``: test_contract.py fails until it is listed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .conftest import ROOT
from .lesson02_fixtures import (
    LESSON02_POINTS,
    LESSON02_SOLUTION_IDS,
    LESSON02_WRONG_CAUGHT_VISIBLE,
)
from .lesson03_fixtures import (
    LESSON03_POINTS,
    LESSON03_SOLUTION_IDS,
    LESSON03_WRONG_CAUGHT_VISIBLE,
)
from .lesson04_fixtures import (
    LESSON04_POINTS,
    LESSON04_SOLUTION_IDS,
    LESSON04_WRONG_CAUGHT_VISIBLE,
)
from .lesson05_fixtures import (
    LESSON05_POINTS,
    LESSON05_SOLUTION_IDS,
    LESSON05_WRONG_CAUGHT_VISIBLE,
)
from .lesson06_fixtures import (
    LESSON06_POINTS,
    LESSON06_SOLUTION_IDS,
    LESSON06_WRONG_CAUGHT_VISIBLE,
)
from .lesson07_fixtures import (
    LESSON07_POINTS,
    LESSON07_SOLUTION_IDS,
    LESSON07_WRONG_CAUGHT_VISIBLE,
)
from .lesson08_fixtures import LESSON08_POINTS, LESSON08_SOLUTION_IDS
from .lesson_fixtures import LESSON01_POINTS, LESSON01_SOLUTION_IDS, LESSON01_WRONG_CAUGHT_VISIBLE

__all__ = ["LESSONS", "Lesson", "lesson", "lesson_names"]


@dataclass(frozen=True)
class Lesson:
    """One lesson: where its notebooks are, and what the tests know about it.

    ``test_data`` builds what the notebook's test cells use beyond the setup cell and
    the solution cells (the notebook makes it in ungraded cells, which the tests do not
    run because some of them train for minutes). It takes Tiny Shakespeare's text, as
    the ``shakespeare`` fixture gives it; None when the test cells need nothing more.
    """

    name: str  # the folder under solutions/ and lessons/, e.g. "03_embeddings"
    checks: str  # the module gptcore.course.checks.<checks> the notebook imports as `checks`
    solution_ids: tuple[str, ...]  # grade ids of the solution cells, in notebook order
    points: Mapping[str, int]  # grade id of each autograded test cell -> its points
    # solution grade id -> a whole replacement cell with a plausible mistake that the
    # visible part of its test cell catches (visible checks try every rule the hidden ones
    # grade; the hidden ones only add inputs and seeds), costing only that exercise's points
    wrong_caught_visible: Mapping[str, str] = field(default_factory=dict)
    test_data: Callable[[str], dict] | None = None

    @property
    def source(self) -> Path:
        """The nbgrader source notebook: solutions and hidden tests."""
        return ROOT / "solutions" / self.name / f"{self.name}.ipynb"

    @property
    def released(self) -> Path:
        """The notebook learners get: stubs instead of solutions, no hidden tests."""
        return ROOT / "lessons" / self.name / f"{self.name}.ipynb"

    @property
    def checks_module(self) -> str:
        return f"gptcore.course.checks.{self.checks}"


def _char_level_shakespeare(text: str) -> dict:
    """Lesson 3's first code cell: a character tokenizer and the training split."""
    import torch

    from gptcore.data import train_val_split
    from gptcore.tokenizer import CharTokenizer

    tok = CharTokenizer.from_text(text)
    train_ids, _ = train_val_split(tok.encode(text))
    return {"V": tok.vocab_size, "train_data": torch.tensor(train_ids)}


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        "01_tokenization",
        "tokenization",
        tuple(LESSON01_SOLUTION_IDS),
        LESSON01_POINTS,
        LESSON01_WRONG_CAUGHT_VISIBLE,
    ),
    Lesson(
        "02_ngram",
        "ngram",
        tuple(LESSON02_SOLUTION_IDS),
        LESSON02_POINTS,
        LESSON02_WRONG_CAUGHT_VISIBLE,
    ),
    Lesson(
        "03_embeddings",
        "embeddings",
        tuple(LESSON03_SOLUTION_IDS),
        LESSON03_POINTS,
        LESSON03_WRONG_CAUGHT_VISIBLE,
        test_data=_char_level_shakespeare,
    ),
    Lesson(
        "04_attention",
        "attention",
        tuple(LESSON04_SOLUTION_IDS),
        LESSON04_POINTS,
        LESSON04_WRONG_CAUGHT_VISIBLE,
    ),
    Lesson(
        "05_gpt", "gpt", tuple(LESSON05_SOLUTION_IDS), LESSON05_POINTS, LESSON05_WRONG_CAUGHT_VISIBLE
    ),
    Lesson(
        "06_training",
        "training",
        tuple(LESSON06_SOLUTION_IDS),
        LESSON06_POINTS,
        LESSON06_WRONG_CAUGHT_VISIBLE,
    ),
    Lesson(
        "07_sampling",
        "sampling",
        tuple(LESSON07_SOLUTION_IDS),
        LESSON07_POINTS,
        LESSON07_WRONG_CAUGHT_VISIBLE,
    ),
    Lesson(
        "08_chatgpt",
        "chatgpt",
        tuple(LESSON08_SOLUTION_IDS),
        LESSON08_POINTS,
        {},  # its checks tests show each mistake failing the visible check
    ),
)

_BY_NAME = {entry.name: entry for entry in LESSONS}


def lesson_names() -> list[str]:
    return [entry.name for entry in LESSONS]


def lesson(name: str) -> Lesson:
    """The registry entry of lesson ``name`` (its folder name, e.g. "03_embeddings")."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"no lesson {name!r} in tests/registry.py (it has {', '.join(_BY_NAME)}): "
            "add a Lesson(...) for it to LESSONS"
        ) from None
