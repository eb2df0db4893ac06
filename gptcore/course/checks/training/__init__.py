"""Checks for lesson 6 (training): batches, the learning-rate schedule, one step, evaluation.

Each check runs the learner's function and gptcore's reference
(``gptcore.train``) on the same seeded inputs: the same data and generator
seed for ``get_batch``, the same steps for ``lr_at``, and for
``optimization_step`` and ``estimate_loss`` two copies of one small seeded
GPT under the same torch random state (so dropout draws the same masks).
Results are compared for type, dtype, shape and value. ``cases`` adds random
inputs drawn from ``random.Random(seed)``. Every run, the visible one too, also
tries the edges of the contract that the docstrings state (a single window,
narrow integer dtypes, no warmup, no decay phase, clipping disabled, batches
given as a generator, a model that starts in eval mode): the hidden tests only
add random cases and seeds, never a rule the visible test cell does not try.

On a wrong answer the message names the call, shows what was expected and
what came back, and, where a known mistake reproduces the wrong answer (the
mistake is replayed on a fresh copy of the same model), says which mistake it
is. Spies record how the function drives the model: which mode it is in, and
whether gradients, ``autocast`` and ``no_sync`` are on, at every forward and
backward.

Every check runs inside ``torch.random.fork_rng``, so it leaves the notebook's
random state as it found it.

One submodule per exercise (the check and its table of known mistakes), plus
``models`` for the seeded model and the spies they share. The notebook imports
the package: ``from gptcore.course.checks import training as checks``.
"""

from __future__ import annotations

from .batches import get_batch
from .evaluation import estimate_loss
from .schedule import lr_at
from .step import optimization_step

__all__ = ["estimate_loss", "get_batch", "lr_at", "optimization_step"]
