"""The course machinery: checks, self-grading, release, class grading and its sandbox.

This package builds on the library (``gptcore.tokenizer``, ``gptcore.model``, ...);
the library never imports it. See ``gptcore/course/README.md`` for the map.
"""

from .workspace import Course, NbgraderError, find_course

__all__ = ["Course", "NbgraderError", "find_course"]
