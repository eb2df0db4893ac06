"""Checks for lesson 4 (attention): scores, the causal mask, softmax, the weighted sum, heads.

Each check compares the learner's function with gptcore's reference
(``gptcore.model.attention``, and torch's own softmax) on a hand-checkable example,
then on ``cases`` random tensors drawn from a ``torch.Generator`` seeded with
``seed``. Every call also runs the edge cases of the contract (float64, a single
position, queries and keys of different lengths, no mask, another softmax dim,
one head, a non-contiguous input): the visible test cells grade every rule the
hidden ones do, and the hidden calls only add random cases and another seed.

When a check fails and the learner's function calls an earlier exercise that is
itself wrong (``scaled_dot_product_attention`` calling ``stable_softmax``), the
message starts by naming that exercise (``report.check``'s ``uses``).

A result must be exactly a ``torch.Tensor`` (or a tuple of them, where the
docstring says so), with the expected shape and dtype, before its values are
compared, so an object that claims to equal everything cannot pass. Values
must match within float tolerance: 1e-5 + 1e-4 x |expected| in float32, and
1e-10 + 1e-8 x |expected| in float64. On a wrong answer the message names the
input, the first entry that differs, and, where a known mistake reproduces the
wrong answer, which mistake it is.

None of the checks changes torch's global random state.

Submodules: ``scores`` (attention_scores, causal_mask, stable_softmax), ``heads``
(scaled_dot_product_attention, split_heads, merge_heads, causal_self_attention),
and ``common`` for what they share. The notebook imports the package:
``from gptcore.course.checks import attention as checks``.
"""

from __future__ import annotations

from .heads import causal_self_attention, merge_heads, scaled_dot_product_attention, split_heads
from .scores import attention_scores, causal_mask, stable_softmax

__all__ = [
    "attention_scores",
    "causal_mask",
    "causal_self_attention",
    "merge_heads",
    "scaled_dot_product_attention",
    "split_heads",
    "stable_softmax",
]
