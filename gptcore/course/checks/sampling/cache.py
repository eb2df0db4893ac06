"""Lesson 7, exercise 5: ``kv_cache_update``, and generation with the learner's cache and sampler.

``kv_cache_update(cache, k_new, v_new)`` is checked against what gptcore's
``KVCache.update`` keeps: every key and value appended so far, in the cache's
own preallocated buffers, with ``cache.length`` advanced, and a ``ValueError``
(changing nothing) when the new positions do not fit. ``cached_generation``
then runs a small GPT whose layers use the learner's cache and whose tokens
come from the learner's ``sample_token``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch

from gptcore.model.attention import KVCache
from gptcore.model.gpt import GPT, GPTCache, GPTConfig
from gptcore.sample import generate

from ..report import Shown, call, check, fail, not_written, passed, show, type_name, wrong
from ..tensors import generator, matches, seeded
from .common import MUTATION_HINT, describe, first_bad, randn, result_tensor, same, show_value
from .step import Setting, check_token, describe_setting, step_error

# One script: (batch, heads, max_len, head size, the T_new of each update, dtype)
Script = tuple[int, int, int, int, list[int], torch.dtype]


class _CheckedCache(KVCache):
    """gptcore's KVCache, except that its own update may not be used by the learner."""

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise AssertionError(
            "kv_cache_update called cache.update(...), gptcore's own implementation. Write the "
            "new keys and values into cache.k and cache.v yourself."
        )


def _cache_error(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "kv_cache_update must not call cache.update: the update is what you are writing."
    if "expanded size" in str(e) or "must match the size" in str(e):
        return (
            "write the new positions into the slice they fill: "
            "cache.k[:, :, cache.length : cache.length + T_new] = k_new (T_new = k_new.size(2))."
        )
    return ""


def _update(fn: Callable[..., Any], cache: KVCache, k_new, v_new, where: str) -> Any:
    return call(
        fn,
        cache,
        k_new,
        v_new,
        name="kv_cache_update",
        where=where,
        error_hints=_cache_error,
        mutation_hint="k_new and v_new are the layer's keys and values, which attention still "
        "uses after the update: copy them into the cache's buffers without modifying them.",
    )


def _check_buffers(where: str, cache: KVCache, shape: tuple[int, ...], length: int, before: int):
    if (
        type(cache.k) is not torch.Tensor
        or tuple(cache.k.shape) != shape
        or tuple(cache.v.shape) != shape
    ):
        fail(
            f"after {where}, cache.k and cache.v must still be the preallocated buffers of shape "
            f"{shape}, but cache.k is {show_value(cache.k)}.",
            "write into the buffers, cache.k[:, :, start:end] = k_new, instead of replacing "
            "them. torch.cat would copy the whole cache at every step, which is exactly the "
            "cost a cache is there to avoid.",
        )
    if type(cache.length) is not int or cache.length != length:
        fail(
            f"after {where}, cache.length must be {length} ({before} cached before + "
            f"{length - before} new), but it is {show(cache.length)}.",
            "advance cache.length by T_new = k_new.size(2), after writing, so that the next "
            "update appends after these positions.",
        )


def _returned_shape_hint(value: Any, max_len: int, length: int, before: int) -> str:
    if not isinstance(value, torch.Tensor) or value.ndim != 4:
        return ""
    n = value.size(2)
    if n == max_len != length:
        return "return only the positions filled so far, cache.k[:, :, :cache.length]."
    if n == length - before:
        return "return every position cached so far, the new ones and the old ones."
    if n == before:
        return "return the cache after appending, the new positions included."
    return ""


def _check_cache_result(
    got: Any,
    where: str,
    cache: KVCache,
    kv_all: tuple[torch.Tensor, torch.Tensor],
    t_new: int,
    before: int,
    shape: tuple[int, int, int, int],
) -> None:
    """The result of one update (``kv_all``: every key and value appended so far; ``shape``:
    the buffers' shape when the cache was made, as cache.max_len reads the buffer itself)."""
    k_all, v_all = kv_all
    length, max_len = k_all.size(2), shape[2]
    if type(got) is not tuple or len(got) != 2:
        fail(
            f"{where} must return a tuple of two tensors (k_all, v_all), but it returned "
            f"{type_name(got)}: {show(got, 80)}"
        )
    _check_buffers(where, cache, shape, length, before)
    for i, (name, expected, other) in enumerate((("k_all", k_all, v_all), ("v_all", v_all, k_all))):
        value = result_tensor(
            got[i],
            f"{name}, item {i} of the result of {where}",
            expected,
            shape_hint=_returned_shape_hint(got[i], max_len, length, before),
        )
        if same(value, expected):
            continue
        hint_text = ""
        if same(value, other):
            hint_text = "return (keys, values) in that order."
        elif before and same(value[:, :, :t_new], expected[:, :, before:]):
            hint_text = (
                f"append: write the new positions at {before}..{length - 1} (cache.length "
                "onwards), not from position 0. Overwriting loses the past the cache exists to "
                "keep."
            )
        fail(
            f"{name} returned by {where} is wrong: it must hold, in order, every key (or value) "
            f"appended so far.\n{first_bad(value, expected, exact=True)}",
            hint_text,
        )
    for name, buf, expected in (("cache.k", cache.k, k_all), ("cache.v", cache.v, v_all)):
        if not same(buf[:, :, :length].detach(), expected):
            fail(
                f"after {where}, {name}[:, :, :{length}] must hold every position appended so "
                "far, but it does not.",
                "store the new positions in the cache's own buffers (returning them is not "
                "enough: the next step reads the buffers).",
            )


def _overflow(
    kv_cache_update: Callable[..., Any], cache: KVCache, k_new: torch.Tensor, v_new: torch.Tensor
) -> None:
    """A call whose new positions do not fit must raise ValueError and change nothing."""
    where = describe("kv_cache_update", cache, k_new, v_new)
    before = cache.length
    # Called directly, not through call(): here an exception is the right answer.
    try:
        kv_cache_update(cache, k_new, v_new)
    except NotImplementedError as e:
        raise not_written("kv_cache_update") from e
    except ValueError:
        if cache.length != before:
            fail(
                f"{where} raised ValueError, as it should, but changed cache.length from {before} "
                f"to {cache.length}. Check that the new positions fit before changing anything."
            )
        return
    except Exception as e:
        raise AssertionError(
            f"{where}: {k_new.size(2)} new position(s) do not fit after {before} of "
            f"max_len={cache.max_len}, so this must raise ValueError, but it raised "
            f"{type(e).__name__}: {e}\nHint: check first, "
            "if cache.length + k_new.size(2) > cache.max_len: raise ValueError(...)."
        ) from e
    fail(
        f"{where}: {k_new.size(2)} new position(s) do not fit after {before} of "
        f"max_len={cache.max_len}, yet it returned without an error. A slice past the end of "
        "the buffer is silently cut short in torch, so the new keys are lost.",
        "check first, if cache.length + k_new.size(2) > cache.max_len: raise ValueError(...). "
        "(Past block_size the context slides, positions change, and the cache is invalid.)",
    )


def _cache_scripts(seed: int, cases: int) -> list[Script]:
    scripts: list[Script] = [
        (2, 2, 8, 4, [3, 1, 1, 2], torch.float32),  # a prompt, then one token at a time
        (1, 3, 6, 2, [1, 1, 1], torch.float32),
    ]
    scripts += [
        (1, 2, 6, 3, [4, 2], torch.float32),  # filled to the last position
        (3, 1, 5, 2, [1, 1, 1, 1, 1], torch.float64),
        (2, 4, 16, 8, [16], torch.float32),  # everything in one go
    ]
    rng = random.Random(seed)
    for _ in range(cases):
        max_len = rng.randint(4, 20)
        chunks, total = [], 0
        while total < max_len - 1 and len(chunks) < 6:
            chunks.append(rng.randint(1, min(4, max_len - 1 - total)))
            total += chunks[-1]
        b, h, hs = rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 6)
        scripts.append((b, h, max_len, hs, chunks, torch.float32))
    return scripts


def _run_script(
    kv_cache_update: Callable[..., Any],
    script: Script,
    gen: torch.Generator,
) -> int:
    """Append each chunk of ``script`` to a fresh cache, checking every update; the updates run."""
    b, h, max_len, hs, chunks, dtype = script
    cache = _CheckedCache(b, h, max_len, hs, dtype=dtype)
    ks: list[torch.Tensor] = []
    vs: list[torch.Tensor] = []
    for t_new in chunks:
        k_new = randn(gen, b, h, t_new, hs, dtype=dtype)
        v_new = randn(gen, b, h, t_new, hs, dtype=dtype)
        where = describe("kv_cache_update", cache, k_new, v_new)
        before = cache.length
        got = _update(kv_cache_update, cache, k_new, v_new, where)
        ks.append(k_new)
        vs.append(v_new)
        kv_all = (torch.cat(ks, 2), torch.cat(vs, 2))
        _check_cache_result(got, where, cache, kv_all, t_new, before, (b, h, max_len, hs))
    if cache.length == max_len:  # full: one more position does not fit
        k_new, v_new = randn(gen, b, h, 1, hs, dtype=dtype), randn(gen, b, h, 1, hs, dtype=dtype)
        _overflow(kv_cache_update, cache, k_new, v_new)
        return len(chunks) + 1
    return len(chunks)


def _check_partial_overflow_and_reset(kv_cache_update: Callable[..., Any], gen) -> int:
    """Room for 2 more, 3 arrive: ValueError; after reset() the cache starts again at 0."""
    cache = _CheckedCache(1, 2, 6, 3)
    ones = torch.ones(1, 2, 4, 3)
    _update(kv_cache_update, cache, ones, ones, "kv_cache_update")
    _overflow(kv_cache_update, cache, torch.ones(1, 2, 3, 3), torch.ones(1, 2, 3, 3))
    cache.reset()
    k_new, v_new = randn(gen, 1, 2, 2, 3), randn(gen, 1, 2, 2, 3)
    where = describe("kv_cache_update", cache, k_new, v_new) + " after cache.reset()"
    got = _update(kv_cache_update, cache, k_new, v_new, where)
    _check_cache_result(got, where, cache, (k_new, v_new), k_new.size(2), 0, (1, 2, 6, 3))
    return 3


@check()
def kv_cache_update(
    kv_cache_update: Callable[
        [KVCache, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
    ],
    *,
    seed: int = 0,
    cases: int = 6,
) -> None:
    """Check ``kv_cache_update(cache, k_new, v_new) -> (k_all, v_all)``: append (B, nh, T_new,
    hs) keys and values to a ``KVCache`` in place, advance ``cache.length``, return every
    cached position."""
    gen = generator(seed)
    n_updates = 0
    for script in _cache_scripts(seed, cases):
        n_updates += _run_script(kv_cache_update, script, gen)
    n_updates += _check_partial_overflow_and_reset(kv_cache_update, gen)
    passed("kv_cache_update", n_updates)


# --------------------------------------------------------- cached generation
class _LearnerCache(KVCache):
    """gptcore's KVCache with the learner's update."""

    def __init__(self, update: Callable[..., Any], *args: Any) -> None:
        super().__init__(*args)
        self._update = update

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._update(self, k_new, v_new)


def _model_error(e: BaseException) -> str:
    return (
        "the model failed while using your kv_cache_update; run "
        "checks.kv_cache_update(kv_cache_update) first, which tests it on its own."
    )


def _generation_runs(seed: int) -> list[tuple[list[int], Setting, int]]:
    """(prompt, setting, seed) of each generation."""
    runs: list[tuple[list[int], Setting, int]] = [
        ([5], (0.0, None, None), 11),
        ([3, 1, 4, 1, 5], (1.0, None, None), 12),
        ([2, 7], (0.8, 10, None), 13),
        ([9, 9, 9], (1.2, None, 0.9), 14),
    ]
    rng = random.Random(seed)
    runs += [
        ([rng.randrange(48) for _ in range(20)], (1.0, None, None), 15),
        ([rng.randrange(48) for _ in range(23)], (0.0, None, None), 16),
        ([1], (0.7, 5, None), 17),
        ([0, 47], (1.5, None, 0.95), 18),
    ]
    return runs


@check()
def cached_generation(
    sample_token: Callable[..., int],
    kv_cache_update: Callable[..., Any],
    *,
    seed: int = 0,
) -> None:
    """Generate with a GPT whose KV caches use ``kv_cache_update`` and whose tokens come from
    ``sample_token``: the prompt in one forward pass, then one new token per pass. The
    logits must match a full forward pass at every step, and the tokens must be
    ``gptcore.sample.generate(..., use_cache=False)``'s with the same seed."""
    with seeded(seed):
        model = GPT(GPTConfig.preset("test", vocab_size=48, block_size=24)).eval()
    runs = _generation_runs(seed)
    for prompt, setting, s in runs:
        _check_generation(model, sample_token, kv_cache_update, prompt, setting, s)
    passed("generation with your cache and your sampler", len(runs))


def _check_generation(
    model: GPT,
    sample_token: Callable[..., int],
    kv_cache_update: Callable[..., Any],
    prompt: list[int],
    setting: Setting,
    s: int,
) -> None:
    cfg = model.config
    # The last step feeds block_size tokens in all: the cache fills to its last position.
    n = cfg.block_size - len(prompt) + 1
    t, k, p = setting
    expected = generate(model, prompt, n, temperature=t, top_k=k, top_p=p, seed=s, use_cache=False)
    cache = GPTCache(
        [
            _LearnerCache(kv_cache_update, 1, cfg.n_head, cfg.block_size, cfg.head_size)
            for _ in range(cfg.n_layer)
        ]
    )
    g = generator(s)
    ids, feed, got = list(prompt), list(prompt), []
    what = (
        f"generating {n} tokens after the prompt {prompt} with {describe_setting(setting)}, "
        f"seed {s}"
    )
    with torch.inference_mode():
        for step in range(n):
            where = f"{what}, step {step}"
            logits = call(
                lambda x: model(x, cache=cache)[0],
                torch.tensor([feed]),
                name="kv_cache_update",
                where=where,
                error_hints=_model_error,
            )
            full = model(torch.tensor([ids]))[0]
            if not matches(logits[0, -1], full[0, -1], atol=1e-4, rtol=1e-3):
                fail(
                    f"{where}: with your cache, the model's logits for the next token differ "
                    f"from a full forward pass over all {len(ids)} tokens.\n"
                    f"{first_bad(logits[0, -1], full[0, -1], exact=False)}",
                    "run checks.kv_cache_update(kv_cache_update) first: each layer's cache "
                    "must return every key and value cached so far, in order.",
                )
            token = call(
                sample_token,
                logits[0, -1],
                t,
                k,
                p,
                g,
                name="sample_token",
                where=where,
                error_hints=step_error,
                mutation_hint=MUTATION_HINT,
            )
            token = check_token(token, f"sample_token, {where}", cfg.vocab_size)
            ids.append(token)
            got.append(token)
            feed = [token]
    if got != expected:
        first = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
        wrong(
            what,
            Shown(f"{expected} (gptcore.sample.generate, no cache)"),
            Shown(show(got, 300)),
            f"  first difference at new token {first}",
            hint_text="the logits matched at every step, so the sampling differs: run "
            "checks.sample_token(sample_token) first.",
        )
