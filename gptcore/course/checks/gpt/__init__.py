"""Checks for lesson 5 (the GPT stack): LayerNorm, MLP, Block, GPT, parameter count, GPT-2 weights.

Each module check builds the learner's module and gptcore's reference
(``gptcore.model.gpt``) with the same configuration, copies the reference's
seeded random weights into the learner's module with ``load_state_dict`` (so
the learner's module must use GPT-2's parameter names), runs both on the same
seeded inputs, and compares types, dtypes, shapes and values. ``cases`` adds
random configurations drawn from ``random.Random(seed)``. Every call also runs
the edges of the contract (no biases, dropout, a single position, a single
layer, targets that are a non-contiguous slice): the visible test cells grade
every rule the hidden ones do, and the hidden calls only add cases and a seed.

A check of a module built from earlier exercises (Block from LayerNorm and MLP,
GPT from Block) that fails while one of those is wrong says so by name first.

On a wrong answer the message names the input, the size of the difference and,
where a known mistake reproduces the wrong output, which mistake it is (the
mistake is replayed with the reference's own sub-modules and weights).

Every check runs inside ``tensors.seeded``, so it leaves the notebook's random
state as it found it.

Submodules: ``blocks`` (layer_norm, mlp, block), ``model`` (gpt,
overfit_one_batch), ``weights`` (count_params, load_hf_weights, hf_parity), and
``common`` for what they share. The notebook imports the package:
``from gptcore.course.checks import gpt as checks``.
"""

from __future__ import annotations

from .blocks import block, layer_norm, mlp
from .model import gpt, overfit_one_batch
from .weights import CONV1D_WEIGHTS, count_params, hf_parity, load_hf_weights, reference_count

__all__ = [
    "CONV1D_WEIGHTS",
    "block",
    "count_params",
    "gpt",
    "hf_parity",
    "layer_norm",
    "load_hf_weights",
    "mlp",
    "overfit_one_batch",
    "reference_count",
]
