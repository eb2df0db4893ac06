"""Known facts about lesson 2 (n-gram language models), for the release and grading tests.

Same layout as ``lesson_fixtures.py``: the solution cells' grade ids in
notebook order, the points of each autograded test cell, and, per solution
cell, a plausible mistake that only the hidden tests used to catch and the
visible test cell catches now.
"""

from __future__ import annotations

LESSON02_SOLUTION_IDS: list[str] = [
    "count_bigrams",
    "smoothed_probs",
    "generate",
    "perplexity",
]

LESSON02_POINTS: dict[str, int] = {
    "count_bigrams_tests": 2,
    "smoothed_probs_tests": 2,
    "generate_tests": 3,
    "perplexity_tests": 3,
    "bigram_shakespeare": 2,
}

# No wrong answer passes the visible test cells and fails the hidden ones: they
# grade every rule the hidden ones do (see lesson_fixtures.py). The mistakes only
# the hidden tests used to catch follow.

# add-k smoothing that never checks for a row without a distribution: with
# k = 0, a row of zeros becomes 0 / 0 = nan instead of raising ValueError. The
# visible tests once used k = 0 only on tables whose rows all hold a count.
LESSON02_WRONG_CAUGHT_VISIBLE: dict[str, str] = {
    "smoothed_probs": '''\
def smoothed_probs(counts: torch.Tensor, k: float = 1.0) -> torch.Tensor:
    """Add-k smoothing, row by row (forgets that k = 0 can leave a row with no counts)."""
    smoothed = counts.to(torch.float64) + k
    return smoothed / smoothed.sum(dim=-1, keepdim=True)
''',
}
