"""Checks that the lessons' test cells call, and the framework they share.

A check runs the learner's function on a hand-checkable example and on seeded
random inputs, compares each result with gptcore's reference, and raises
``AssertionError`` with a message that names the input, the expected and the
actual result, and the likely mistake.

The framework, imported by every lesson's checks:

- ``report``: failing with a message and one ``Hint:`` line, showing values,
  recognising known mistakes from a table, calling the learner's function
  (``call``: its warnings held off stderr, where nbgrader would count them as a
  failure; an unwritten exercise one line, ``NotWritten``), and ``@check``, the
  decorator of a lesson's public checks (warnings reported as notes; a failure
  caused by a wrong earlier exercise names it: ``@check(uses={"merge": bpe_merge})``);
- ``values``: plain Python results (int, float, str, list of ints, dict);
- ``tensors``: tensor results (type, dtype, shape, values against a reference
  and a table of known mistakes) and seeded inputs.

Each lesson's checks live in a submodule named after the lesson
(``from gptcore.course.checks import tokenization as checks``) and hold only
its checks and its tables of known mistakes. The names below are re-exported
so that ``from gptcore.course.checks import fail, show`` keeps working.
"""

from __future__ import annotations

from . import report, values
from .report import *  # noqa: F403  (the names in report.__all__)
from .values import *  # noqa: F403  (the names in values.__all__)

__all__ = [*report.__all__, *values.__all__]
