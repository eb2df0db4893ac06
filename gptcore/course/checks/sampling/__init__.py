"""Checks for lesson 7 (decoding): temperature, top-k, top-p, one sampling step, the KV cache.

Each check compares the learner's function with gptcore's reference
(``gptcore.sample`` and ``gptcore.model.attention.KVCache``) on hand-checkable
inputs, then on ``cases`` random ones drawn from seeded generators.
Every run, the visible one too, tries the edges of each contract that the
docstrings state; the hidden tests only add random cases and seeds:

- ``softmax_with_temperature``: logits of ±1000 and tiny temperatures (a
  softmax that does not subtract the max overflows), -inf logits, float64,
  3-D batches;
- ``top_k_filter``: ties with the k-th largest (all kept), k larger than the
  vocabulary, logits already filtered to -inf, batches (..., V);
- ``top_p_filter``: batches (..., V), -inf logits, float64, very small and
  very large p, and a token whose mass before is exactly p (dropped);
- ``sample_token``: temperature, top-k and top-p together (the order matters);
- ``kv_cache_update``: filling the cache to the last position, and
  overflowing it.

Results must be tensors of the documented type, dtype and shape (or a plain
``int`` token id) before their values are compared, as plain tensors, so an
object whose ``__eq__`` always answers True cannot pass. Filters must return
the kept logits unchanged and -inf elsewhere, exactly. ``sample_token`` is
checked statistically first, then token for token with equal seeds (see
``step``).

On a wrong answer the message names the input, shows what was expected and
what came back, and, where a known mistake reproduces the wrong answer, says
which mistake it is.

Every check that builds a model runs inside ``torch.random.fork_rng``, so it
leaves the notebook's random state as it found it.

One submodule per exercise or pair of exercises (the checks and their tables
of known mistakes), plus ``common`` for how logits are shown and drawn. The
notebook imports the package: ``from gptcore.course.checks import sampling as
checks``.
"""

from __future__ import annotations

from .cache import cached_generation, kv_cache_update
from .filters import top_k_filter, top_p_filter
from .softmax import softmax_with_temperature
from .step import sample_token

__all__ = [
    "cached_generation",
    "kv_cache_update",
    "sample_token",
    "softmax_with_temperature",
    "top_k_filter",
    "top_p_filter",
]
