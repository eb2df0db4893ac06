"""Grading a class: ``gptcore class collect | autograde | feedback | export``.

The instructor side of the course, on top of nbgrader (0.9). The course folder
(the checkout, or ``--course DIR``) is an nbgrader course: submissions live in
``submitted/<student>/<lesson>/``, autograded copies in ``autograded/``,
feedback in ``feedback/``, and the gradebook is nbgrader's own (``db_url`` in
``nbgrader_config.py``; SQLite ``gradebook.db`` in the course folder by default,
or PostgreSQL for a large class). nbgrader's formgrader, ``nbgrader export`` and
the exchange keep working on everything written here.

What ``autograde`` adds to ``nbgrader autograde``:

- **Parallel and isolated.** Worker processes (``--workers``, default: one per
  core) each grade one student at a time in a throwaway course folder with a
  throwaway gradebook, built by each worker from ``solutions/<lesson>``. The
  parent merges each result into the real gradebook through nbgrader's
  ``Gradebook`` API and writes ``autograded/<student>/<lesson>/``.
- **Sandboxed.** Each kernel runs in :mod:`gptcore.course.sandbox` (bubblewrap, a
  dedicated user, resource limits). Without a sandbox, grading still works and
  the report says so plainly.
- **Robust.** A per-cell timeout (nbgrader's, with an interrupt) and a
  per-notebook timeout (the worker is killed). A dead kernel keeps the points
  of the test cells that ran before it; invalid, malformed (deep JSON,
  duplicated or invented grade ids, changed cell types, over 16 MiB) or missing
  notebooks, kernels that die and workers that hang each give that student a
  clear outcome, and the rest of the class is still graded (the exit status is
  0 whenever every student got one). Every output (stream, display, result,
  error; each at least 256 bytes) counts toward a cap per cell and per
  notebook, so an output bomb cannot exhaust the grader's memory.
- **Bounded scratch.** Everything a kernel can write (its /tmp, HOME,
  /dev/shm, runtime folder) is one tmpfs of the worker's own, capped in size
  and in files, off the host's disk and dropped at once after each student
  (:mod:`.scratch`). Kernels inherit no descriptor of the grader.
- **Tests outside the kernel.** Test cells run in a trusted runner
  (:mod:`.trusted`) that runs no student code and reaches the student's
  functions through a plain-data channel into the kernel (:mod:`.channel`):
  hidden tests never enter the kernel, and the checks compare in the runner.
  The student's ``nn.Module``s arrive there as mirrors (:mod:`.mirror`): real
  modules kept in step with the kernel's, whose forward runs in the kernel and
  whose backward asks it for the gradients. Watchers of *how* the student's
  code works (``checks.report.watching``: a forbidden lookup, the modes of a
  training step) run beside that code and report back as plain data. The
  guard (:mod:`.guard`) stays for lessons put in ``grading.KERNEL_TESTS``
  (none now; the attack tests use it for contrast). nbgrader restores locked
  test cells, their points and deleted test cells.
- **Review flags.** Code that matches a known trick is listed in the report
  (``REVIEW``) and the submission is flagged in the gradebook for a human:
  monkeypatching, ``__eq__``, IPython's hooks (transformers, events),
  ``__code__`` and other function internals, ``sys.settrace``/``setprofile``/
  ``addaudithook``, frames, ``gc`` scans, ``ctypes``, the guard's names,
  exits, network, processes, reading grading files, and calling gptcore's own
  implementation of the exercise (:mod:`.delegation`). The flags read the
  source: code that builds these names at run time (``getattr(sys,
  "set" + "trace")``) is not recognised.

Limits: a watcher runs in the student's process, so a student who tampers with
it can break the rule it enforces about *how* their code works (never a value
the checks compare); the sandbox keeps them from touching anyone else's grade.

``feedback`` renders nbgrader's HTML feedback from autograded notebooks whose
hidden tests are replaced by a placeholder (and scrubbed from outputs and
tracebacks), shows rich outputs as text, sanitises every page with nh3 (static:
no script, event handler or ``javascript:`` URL), then checks that no
hidden-test line appears in any file. Everything printed to a terminal has its
control characters escaped.

``GPTCORE_CLASS_DEBUG=1`` keeps a run's temporary folder (worker logs) for
inspection; ``GPTCORE_SANDBOX=off`` grades without a sandbox.

Where each part lives (imports run down this list, never up):

- ``report``: where the class's grades live (``nbgrader_config.py``) and the reports;
- ``collect``: submissions in, student ids, and the safe copy of a student's
  folder (never through a link);
- ``grading``: ``autograde``, a run over the class; ``pool``: the worker processes;
  ``merge``: each answer into the real gradebook and ``autograded/``;
- ``worker`` (``python -m gptcore.course.classroom --worker``): one student at a
  time in three steps, validate / run / read; ``execute``: nbgrader's Execute
  with the trusted runner, the guard and caps; ``trusted``: the runner of test
  cells; ``zygote``: the fork server each worker starts runners from;
  ``channel``: its plain-data link into the kernel (also run there);
  ``guard``: the code that runs inside the kernel;
  ``review`` and ``delegation``: the flags for a human; ``scratch``: the
  kernel's bounded, disposable writable space;
- ``feedback`` and ``export``.

The nbgrader plumbing shared with ``gptcore grade`` (building a lesson, reading
grades, cell metadata, hidden-test markers, failure reasons) is in
:mod:`gptcore.course.workspace` and :mod:`gptcore.course.cells`.
"""

from __future__ import annotations

from ..cells import QuestionResult
from .collect import collect
from .export import EXPORT_COLUMNS, export
from .feedback import feedback, hidden_lines, leaked_lines
from .grading import autograde
from .report import ClassConfig, ClassReport, StudentResult, class_config
from .review import suspicious_code

__all__ = [
    "EXPORT_COLUMNS",
    "ClassConfig",
    "ClassReport",
    "QuestionResult",
    "StudentResult",
    "autograde",
    "class_config",
    "collect",
    "export",
    "feedback",
    "hidden_lines",
    "leaked_lines",
    "suspicious_code",
]
