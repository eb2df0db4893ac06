"""What nbgrader writes into a lesson notebook: markers and cell metadata.

Shared by release, self-grading, class grading and the tests, so that each
marker is spelled once.
"""

from __future__ import annotations

__all__ = ["HIDDEN_BEGIN", "HIDDEN_END", "HIDDEN_PLACEHOLDER"]

HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"
# What feedback shows instead of the hidden tests.
HIDDEN_PLACEHOLDER = "# (hidden tests: not shown in feedback)"
