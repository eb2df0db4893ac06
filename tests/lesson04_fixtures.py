"""Known facts about lesson 4 (attention), for the tests that check, release and grade it.

- ``LESSON04_SOLUTION_IDS``: grade ids of the solution cells, in notebook order;
- ``LESSON04_POINTS``: grade id of each autograded test cell -> its points;
- no wrong answer passes the visible tests and fails only the hidden ones: the
  visible test cells try every rule the hidden ones grade (see tests/registry.py)
- ``LESSON04_WRONG_CAUGHT_VISIBLE``: solution grade id -> the full source of a
  replacement cell with a plausible mistake that only the hidden tests used to
  catch and the visible test cell catches now. Grading a notebook with it loses
  exactly the points of that exercise's test cell (the mistakes never touch what
  the other graded cells use: scaled_dot_product_attention always calls
  stable_softmax along the last dim, and always with a mask).
"""

from __future__ import annotations

LESSON04_SOLUTION_IDS: list[str] = [
    "attention_scores",
    "causal_mask",
    "stable_softmax",
    "scaled_dot_product_attention",
    "split_heads",
    "merge_heads",
    "causal_self_attention",
]

LESSON04_POINTS: dict[str, int] = {
    "attention_scores_tests": 2,
    "causal_mask_tests": 1,
    "stable_softmax_tests": 2,
    "scaled_dot_product_attention_tests": 3,
    "split_heads_tests": 2,
    "merge_heads_tests": 2,
    "causal_self_attention_tests": 3,
}

# None: the visible test cells grade every rule the hidden ones do.

# Mistakes that only the hidden tests used to catch; the visible test cell catches them now.
LESSON04_WRONG_CAUGHT_VISIBLE: dict[str, str] = {
    # Always normalises the last dim, whatever dim says. The visible tests once used the
    # default dim only.
    "stable_softmax": '''\
def stable_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """softmax of x, safe from overflow (but always along the last dim)."""
    z = x - x.amax(dim=-1, keepdim=True)
    e = torch.exp(z)
    return e / e.sum(dim=-1, keepdim=True)
''',
    # Applies the mask unconditionally, so mask=None raises TypeError (~None). The
    # visible tests once always passed a mask.
    "scaled_dot_product_attention": '''\
def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention (forgets that mask may be None)."""
    scores = attention_scores(q, k).masked_fill(~mask, float("-inf"))
    weights = stable_softmax(scores, dim=-1)
    return weights @ v, weights
''',
}
