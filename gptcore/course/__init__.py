"""The course machinery: checks, self-grading, release, class grading and its sandbox.

This package builds on the library (``gptcore.tokenizer``, ``gptcore.model``, ...);
the library never imports it. See ``gptcore/course/README.md`` for the map.

The grading side, from the bottom up (each imports only those above it):

- ``cells``: what nbgrader writes into a notebook and what grading reads back
  (markers, cell metadata, grade cells, failure reasons, loading a submission);
- ``workspace``: the course on disk, and nbgrader run in a throwaway course
  (building a lesson, reading grades, the gradebook's environment);
- ``sandbox``: the sandbox a grading kernel runs in;
- ``grade`` (self-grading), ``release`` (lessons/ from solutions/) and
  ``classroom/`` (grading a class);
- ``cli``: the ``grade``, ``release`` and ``class`` commands.
"""

from .workspace import Course, NbgraderError, find_course

__all__ = ["Course", "NbgraderError", "find_course"]
