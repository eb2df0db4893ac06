"""Known facts about lesson 5 (the GPT stack), for the tests that check and grade it.

- ``LESSON05_SOLUTION_IDS``: grade ids of the solution cells, in notebook order;
- ``LESSON05_POINTS``: grade id of each autograded test cell -> its points;
- no wrong answer passes the visible tests and fails only the hidden ones: the
  visible test cells try every rule the hidden ones grade (see tests/registry.py)
- ``LESSON05_WRONG_CAUGHT_VISIBLE``: solution grade id -> the full source of a
  replacement cell with a plausible mistake that only the hidden tests used to
  catch and the visible test cell catches now. Grading a notebook with it loses
  exactly the points of that exercise's test cell: nothing later in the notebook
  calls ``count_params`` from a test cell.
"""

from __future__ import annotations

LESSON05_SOLUTION_IDS: list[str] = [
    "layer_norm",
    "mlp",
    "block",
    "gpt",
    "count_params",
    "load_hf_weights",
]

LESSON05_POINTS: dict[str, int] = {
    "layer_norm_tests": 2,
    "mlp_tests": 2,
    "block_tests": 2,
    "gpt_tests": 4,
    "overfit_one_batch": 1,
    "count_params_tests": 2,
    "load_hf_weights_tests": 2,
    "hf_parity": 2,
}

# None: the visible test cells grade every rule the hidden ones do.

# A count that is right for every GPT-2 (all have biases) but ignores config.bias:
# with bias=False it still counts the biases of the Linear layers and LayerNorms.
# The visible tests once used only configurations with biases.
LESSON05_WRONG_CAUGHT_VISIBLE: dict[str, str] = {
    "count_params": '''\
def count_params(config: GPTConfig) -> int:
    """GPT-2's parameter count (forgets that bias=False removes every bias)."""
    c, v, t, n_layer = config.n_embd, config.vocab_size, config.block_size, config.n_layer
    block = 12 * c * c + 13 * c  # weights and biases of ln_1, attn, ln_2, mlp
    return v * c + t * c + n_layer * block + 2 * c
''',
}
