"""Known facts about lesson 7 (sampling), for the tests that check, release and grade it.

- ``LESSON07_SOLUTION_IDS``: grade ids of the solution cells, in notebook order;
- ``LESSON07_POINTS``: grade id of each autograded test cell -> its points;
- no wrong answer passes the visible tests and fails only the hidden ones: the
  visible test cells try every rule the hidden ones grade (see tests/registry.py)
- ``LESSON07_WRONG_CAUGHT_VISIBLE``: solution grade id -> the full source of a
  replacement cell with a plausible mistake that only the hidden tests used to
  catch, and the visible test cell catches now. It still costs only its own
  exercise's points: each mistake shows only on inputs that the other graded
  cells never give it (logits beyond exp's range, ties, batches of rows, top-k
  and top-p together, a cache asked to overflow).
"""

from __future__ import annotations

LESSON07_SOLUTION_IDS: list[str] = [
    "softmax_with_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_token",
    "kv_cache_update",
]

LESSON07_POINTS: dict[str, int] = {
    "softmax_with_temperature_tests": 2,
    "top_k_filter_tests": 2,
    "top_p_filter_tests": 3,
    "sample_token_tests": 3,
    "kv_cache_update_tests": 3,
    "cached_generation": 2,
}


LESSON07_WRONG_CAUGHT_VISIBLE: dict[str, str] = {
    # No max subtraction: right for the moderate logits of the visible tests, nan
    # for logits of 1000 or a temperature of 0.1 (hidden). top_p_filter and
    # sample_token call it only on logits small enough for exp.
    "softmax_with_temperature": '''\
def softmax_with_temperature(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(logits / temperature), without subtracting the max first."""
    e = torch.exp(logits / temperature)
    return e / e.sum(dim=-1, keepdim=True)
''',
    # Exactly k indices kept: a tie with the k-th largest loses a token. Random
    # logits never tie; the hidden tests have ties.
    "top_k_filter": '''\
def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the indices of the k largest logits (drops ties with the k-th)."""
    k = min(k, logits.size(-1))
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep.scatter_(-1, torch.topk(logits, k, dim=-1).indices, True)
    return logits.masked_fill(~keep, float("-inf"))
''',
    # Indexing with a 1-D tensor of ids only works for one row (V,); the hidden
    # tests pass batches (..., V). sample_token only ever gives one row.
    "top_p_filter": '''\
def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter for a single row of logits."""
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = softmax_with_temperature(sorted_logits, 1.0)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    keep = order[mass_before < p]
    out = torch.full_like(logits, float("-inf"))
    out[keep] = logits[keep]
    return out
''',
    # top-p before top-k: the same as the right order when only one filter is
    # on (the visible tests, and the generation check), not when both are.
    "sample_token": '''\
def sample_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """One decoding step, with the two filters in the wrong order."""
    if temperature == 0:
        return int(torch.argmax(logits))
    z = logits / temperature
    if top_p is not None and top_p < 1.0:
        z = top_p_filter(z, top_p)
    if top_k is not None:
        z = top_k_filter(z, top_k)
    probs = softmax_with_temperature(z, 1.0)
    return int(torch.multinomial(probs, num_samples=1, generator=generator))
''',
    # No check that the new positions fit. A slice past the end of the buffer is
    # cut short silently, so a full cache loses the new keys without an error.
    # Generation never overflows the cache; the hidden tests do.
    "kv_cache_update": '''\
def kv_cache_update(
    cache: KVCache, k_new: torch.Tensor, v_new: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append to the cache (forgets to check that the new positions fit)."""
    start, end = cache.length, cache.length + k_new.size(2)
    cache.k[:, :, start:end] = k_new
    cache.v[:, :, start:end] = v_new
    cache.length = end
    return cache.k[:, :, :end], cache.v[:, :, :end]
''',
}
