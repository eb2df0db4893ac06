"""From logits to text: greedy decoding, temperature, top-k, top-p, and fast generation.

A language model gives one distribution over the vocabulary per step.
Generation picks a token from it, appends it, and asks again. The pieces:

- ``apply_temperature``: divide logits by T. T < 1 sharpens the distribution,
  T > 1 flattens it, T = 0 means greedy (always the most likely token).
- ``softmax_with_temperature``: the probabilities softmax(logits / T),
  computed without overflow.
- ``top_k_filter``: keep the k highest logits, drop the rest (-inf).
- ``top_p_filter``: keep the smallest set of most likely tokens whose total
  probability reaches p (nucleus sampling), drop the rest.
- ``sample_token``: all of the above, then one seeded draw.

``generate`` and ``stream`` run the loop. With the KV cache (the default) each
step feeds only the newest token and reuses the keys and values computed
before; without it, every step re-runs the whole context. Both give the same
tokens.

Past block_size: the model has position embeddings for ``block_size``
positions only, so the context slides: each step sees the last ``block_size``
tokens, renumbered from position 0. Because GPT-2's positions are absolute,
the cached keys and values of a slid window are no longer valid, so past
that point each step recomputes the window, exactly like uncached generation.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence

import torch
from torch import nn

from .model.attention import stable_softmax
from .ngram import sample_next

__all__ = [
    "apply_temperature",
    "check_sampling_args",
    "generate",
    "sample_token",
    "softmax_with_temperature",
    "stream",
    "top_k_filter",
    "top_p_filter",
]


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """ValueError for settings that have no meaning."""
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature={temperature!r} must be >= 0 (0 means greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} must be an int >= 1, or None to keep every token")
    if top_p is not None and not (0.0 < top_p <= 1.0):
        raise ValueError(f"top_p={top_p!r} must be in (0, 1]; 1.0 keeps every token")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature, shape (..., V). Temperature must be > 0 here."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 to scale logits; 0 means greedy: use argmax")
    return logits / temperature


def softmax_with_temperature(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Probabilities softmax(logits / T) along the last dim: (..., V) -> (..., V), same dtype.

    Stable for any logits: the max is subtracted before ``exp`` (see
    ``gptcore.model.attention.stable_softmax``), so logits of 1000 do not overflow.
    A logit of -inf gets probability exactly 0. Temperature must be > 0.
    """
    return stable_softmax(apply_temperature(logits, temperature), dim=-1)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest to -inf, along the last dim (..., V).

    Logits tied with the k-th largest are kept, so a tie can keep more than k.
    """
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to >= p.

    In descending order of probability, a token is kept when the probability
    mass *before* it is still below p; the most likely token is always kept.
    Shape (..., V) in and out; dropped logits become -inf.
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    probs = stable_softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # (..., V)
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """One token id from logits (V,): greedy at temperature 0, else temperature,
    then top-k, then top-p, then ``torch.multinomial`` with ``generator``."""
    check_sampling_args(temperature, top_k, top_p)
    if logits.ndim != 1:
        raise ValueError(
            f"logits must be one distribution of shape (V,), got {tuple(logits.shape)}"
        )
    if temperature == 0:
        return int(torch.argmax(logits))
    logits = apply_temperature(logits.float(), temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    return sample_next(stable_softmax(logits, dim=-1), generator)


@torch.inference_mode()
def stream(
    model: nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    stop_tokens: Collection[int] = (),
    use_cache: bool = True,
) -> Iterator[int]:
    """Yield new token ids one at a time (see ``generate``)."""
    check_sampling_args(temperature, top_k, top_p)
    ids = prompt_ids.tolist() if isinstance(prompt_ids, torch.Tensor) else list(prompt_ids)
    if not ids:
        raise ValueError(
            "the prompt is empty; give at least one token (e.g. a newline or <|endoftext|>)"
        )
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an int >= 0")
    if generator is None:
        generator = torch.Generator().manual_seed(0 if seed is None else seed)
    block_size = model.config.block_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    cache = model.new_cache(batch_size=1) if use_cache else None
    try:
        for _ in range(max_new_tokens):
            if cache is not None and len(ids) <= block_size:
                feed = torch.tensor(ids[cache.length :], device=device)[None]  # (1, T_new)
                logits, _ = model(feed, cache=cache)
            else:
                window = torch.tensor(ids[-block_size:], device=device)[
                    None
                ]  # (1, T <= block_size)
                logits, _ = model(window)
            token = sample_token(logits[0, -1], temperature, top_k, top_p, generator)
            ids.append(token)
            yield token
            if token in stop_tokens:
                return
    finally:
        model.train(was_training)


def generate(
    model: nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    stop_tokens: Collection[int] = (),
    use_cache: bool = True,
    callback: Callable[[int], None] | None = None,
) -> list[int]:
    """Generate up to ``max_new_tokens`` ids after ``prompt_ids``; returns only the new ids.

    Greedy when ``temperature == 0``. Generation stops early right after a
    token in ``stop_tokens`` (which is included). ``seed`` (or a
    ``generator``) makes sampling reproducible. ``callback(token)`` is called
    as each token is produced, for streaming output.
    """
    out = []
    for token in stream(
        model,
        prompt_ids,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        generator=generator,
        stop_tokens=stop_tokens,
        use_cache=use_cache,
    ):
        out.append(token)
        if callback is not None:
            callback(token)
    return out
