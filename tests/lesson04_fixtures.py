"""Known facts about lesson 4 (attention), for the tests that check, release and grade it.

- ``LESSON04_SOLUTION_IDS``: grade ids of the solution cells, in notebook order;
- ``LESSON04_POINTS``: grade id of each autograded test cell -> its points;
- ``LESSON04_WRONG_VISIBLE_ONLY``: solution grade id -> the full source of a
  replacement cell with a plausible mistake that the visible test cell misses
  and the hidden tests catch. Grading a notebook with it must lose exactly the
  points of that exercise's test cell (the mistakes never touch what the other
  graded cells use: attention always calls stable_softmax along the last dim,
  and always with a mask).
"""

from __future__ import annotations

LESSON04_SOLUTION_IDS: list[str] = [
    "attention_scores",
    "causal_mask",
    "stable_softmax",
    "attention",
    "split_heads",
    "merge_heads",
    "causal_self_attention",
]

LESSON04_POINTS: dict[str, int] = {
    "attention_scores_tests": 2,
    "causal_mask_tests": 1,
    "stable_softmax_tests": 2,
    "attention_tests": 3,
    "split_heads_tests": 2,
    "merge_heads_tests": 2,
    "causal_self_attention_tests": 3,
}

LESSON04_WRONG_VISIBLE_ONLY: dict[str, str] = {
    # Always normalises the last dim, whatever dim says. The visible tests use the
    # default dim only; the hidden ones normalise other dims too.
    "stable_softmax": '''\
def stable_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """softmax of x, safe from overflow (but always along the last dim)."""
    z = x - x.amax(dim=-1, keepdim=True)
    e = torch.exp(z)
    return e / e.sum(dim=-1, keepdim=True)
''',
    # Applies the mask unconditionally, so mask=None raises TypeError (~None). The
    # visible tests always pass a mask; the hidden ones also call it without one.
    "attention": '''\
def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention (forgets that mask may be None)."""
    scores = attention_scores(q, k).masked_fill(~mask, float("-inf"))
    weights = stable_softmax(scores, dim=-1)
    return weights @ v, weights
''',
}
