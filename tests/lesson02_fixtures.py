"""Known facts about lesson 2 (n-gram language models), for the release and grading tests.

Same layout as ``lesson_fixtures.py``: the solution cells' grade ids in
notebook order, the points of each autograded test cell, and, per solution
cell, a plausible mistake that the visible test cell misses and the hidden
tests catch (grading it loses exactly that exercise's test-cell points).
"""

from __future__ import annotations

LESSON02_SOLUTION_IDS: list[str] = [
    "bigram_counts",
    "add_k_smoothing",
    "seeded_sampling",
    "perplexity",
]

LESSON02_POINTS: dict[str, int] = {
    "bigram_counts_tests": 2,
    "add_k_smoothing_tests": 2,
    "seeded_sampling_tests": 3,
    "perplexity_tests": 3,
    "bigram_shakespeare": 2,
}

# add-k smoothing that never checks for a row without a distribution: with
# k = 0, a row of zeros becomes 0 / 0 = nan instead of raising ValueError. The
# visible tests use k = 0 only on tables whose rows all hold a count, and the
# put-together check uses k > 0; the hidden tests include a row of zeros.
LESSON02_WRONG_VISIBLE_ONLY: dict[str, str] = {
    "add_k_smoothing": '''\
def normalize(counts: torch.Tensor, k: float = 1.0) -> torch.Tensor:
    """Add-k smoothing, row by row (forgets that k = 0 can leave a row with no counts)."""
    smoothed = counts.to(torch.float64) + k
    return smoothed / smoothed.sum(dim=-1, keepdim=True)
''',
}
