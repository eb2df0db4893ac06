"""Lesson 4, attention itself: scaled_dot_product_attention, split_heads, merge_heads,
causal_self_attention."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from gptcore.model import attention as ref
from gptcore.model.attention import CausalSelfAttention
from gptcore.model.config import GPTConfig

from ..report import Mistakes, call, check, fail, passed, type_name
from ..tensors import generator, recognise, seeded
from .common import (
    Refused,
    compare,
    describe,
    dtype_hint,
    randn,
    refusing,
    result_tensor,
    tolerance,
    uniform,
)
from .scores import attention_scores, causal_mask, stable_softmax

__all__ = ["causal_self_attention", "merge_heads", "scaled_dot_product_attention", "split_heads"]


# ------------------------------------------------------------------ attention
_FILL = "Fill the scores where mask is False with float('-inf') before the softmax: scores.masked_fill(~mask, float('-inf'))."


def _attention_mistakes(q, k, v, mask) -> tuple[Mistakes, Mistakes]:
    """(mistakes in the weights, mistakes in the output)."""
    d = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    allowed = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask

    def w(s: torch.Tensor, dim: int = -1) -> torch.Tensor:
        return torch.softmax(s, dim)

    right = ref.scaled_dot_product_attention(q, k, v, mask, return_weights=True)[1]
    weights = [
        ("the mask was not applied. " + _FILL, lambda: w(scores)),
        (
            "fill masked scores with float('-inf'), not 0: after the softmax a score of 0 still gets weight.",
            lambda: w(scores.masked_fill(~allowed, 0.0)),
        ),
        (
            "mask is True where a query MAY attend: fill where it is False, masked_fill(~mask, ...), not masked_fill(mask, ...).",
            lambda: w(scores.masked_fill(allowed, float("-inf"))),
        ),
        (
            "apply the mask to the scores before the softmax: zeroing weights afterwards leaves rows that no longer sum to 1.",
            lambda: w(scores) * allowed,
        ),
        (
            "take the softmax over the keys, the last dim (dim=-1): each query's weights must sum to 1.",
            lambda: w(scores.masked_fill(~allowed, float("-inf")), -2),
        ),
        (
            "did you scale by sqrt(head_dim)? Use your attention_scores(q, k).",
            lambda: w((q @ k.transpose(-2, -1)).masked_fill(~allowed, float("-inf"))),
        ),
        ("row i of the weights belongs to query i: weights[..., i, j] = softmax over j of q_i . k_j.", lambda: right.transpose(-2, -1)),
    ]  # fmt: skip
    out = [
        ("out = weights @ v: row i of out mixes the values with query i's weights (row i).", lambda: right.transpose(-2, -1) @ v),
        ("out = weights @ v has shape (..., Tq, dv); do not transpose it.", lambda: (right @ v).transpose(-2, -1)),
        ("the weights mix the values v, not the keys k.", lambda: right @ k),
        ("the weights mix the values v, not the queries q.", lambda: right @ q),
    ]  # fmt: skip
    return weights, out


def _leak(
    where: str, weights: torch.Tensor, allowed: torch.Tensor, causal: bool, mistakes: Mistakes
) -> None:
    """Fail if a query puts weight on a key the mask forbids."""
    leaked = (weights.abs() > 1e-6) & ~allowed.expand_as(weights)
    if not leaked.any():
        return
    index = [int(x) for x in leaked.nonzero()[0]]
    i, j = index[-2:]
    value = weights[tuple(index)].item()
    what = (
        f"the mask lets position i see j > i: query {i} puts weight {value:.4g} on key {j}, in its future."
        if causal
        else f"query {i} puts weight {value:.4g} on key {j}, where the mask is False."
    )
    known = recognise(weights, mistakes, **tolerance(weights.dtype))
    fail(f"{where} is wrong: at index {index} of the weights, {what}", known or _FILL)


def _unpack_pair(result: Any, where: str, names: tuple[str, str], shapes) -> None:
    """Fail unless ``result`` is a tuple of two, in the documented order."""
    if type(result) is not tuple:
        more = ""
        if isinstance(result, torch.Tensor):
            more = f" (a tensor of shape {tuple(result.shape)}); return both: return {names[0]}, {names[1]}"
        elif isinstance(result, list):
            more = f"; return a tuple: return {names[0]}, {names[1]}"
        fail(
            f"{where} must return a tuple ({names[0]}, {names[1]}), but it returned a {type_name(result)}{more}"
        )
    if len(result) != 2:
        fail(
            f"{where} must return a tuple of two tensors ({names[0]}, {names[1]}), but it returned {len(result)} items"
        )
    a, b = result
    if (
        isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        and shapes[0] != shapes[1]
        and tuple(a.shape) == shapes[1] and tuple(b.shape) == shapes[0]
    ):  # fmt: skip
        fail(
            f"{where} returned ({names[1]}, {names[0]}); return them in the order ({names[0]}, {names[1]})."
        )


def _random_mask(g: torch.Generator, *shape: int) -> torch.Tensor:
    mask = torch.rand(*shape, generator=g) < 0.6
    keep = torch.randint(shape[-1], shape[:-1], generator=g)  # every query sees at least one key
    return mask | F.one_hot(keep, shape[-1]).bool()


def _attention_inputs(seed: int, cases: int) -> list[tuple[Any, ...]]:
    """(q, k, v, mask, pass_mask): pass_mask False leaves mask at its default."""
    zeros = torch.zeros(3, 2)  # every score 0: each query averages the values it may see
    inputs: list[tuple[Any, ...]] = [
        (zeros, zeros, torch.tensor([[1.0], [2.0], [3.0]]), ref.causal_mask(3), True),
    ]
    g, rng = generator(seed), random.Random(seed)
    for i in range(cases):
        t, d = rng.randint(1, 9), rng.choice([2, 4, 8, 16])
        lead = [rng.randint(1, 3), rng.randint(1, 4)][: 1 + i % 2]
        scale = uniform(g, 0.5, 2.0)
        q, k, v = (randn(g, *lead, t, d) * scale for _ in range(3))
        inputs.append((q, k, v, ref.causal_mask(t), True))
    f64 = torch.float64
    inputs += [
        (*(randn(g, 2, 3, 6, 8) for _ in range(3)), None, False),  # no mask: see everything
        (*(randn(g, 2, 3, 6, 8) for _ in range(3)), None, True),  # default mask=None
        (randn(g, 2, 4, 8), randn(g, 2, 7, 8), randn(g, 2, 7, 3), _random_mask(g, 4, 7), True),
        (randn(g, 2, 2, 5, 4), randn(g, 2, 2, 5, 4), randn(g, 2, 2, 5, 6), _random_mask(g, 2, 1, 5, 5), True),
        (*(randn(g, 1, 2, 7, 16, dtype=f64) for _ in range(3)), ref.causal_mask(7), True),
        (*(randn(g, 1, 1, 1, 4) for _ in range(3)), ref.causal_mask(1), True),  # one position
        (*(randn(g, 5, 8) * 3 for _ in range(3)), ref.causal_mask(5), True),  # (T, d), no batch
    ]  # fmt: skip
    return inputs


_ATTENTION_ERRORS = {
    TypeError: "mask may be None (no mask): apply it only when it is given, if mask is not None.",
    RuntimeError: "q, k: (..., T, d), v: (..., T, dv), mask broadcasts to (..., Tq, Tk).",
}


@check(uses={"attention_scores": attention_scores, "stable_softmax": stable_softmax})
def scaled_dot_product_attention(
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    *,
    seed: int = 0,
    cases: int = 8,
) -> None:
    """Check ``scaled_dot_product_attention(q, k, v, mask=None) -> (out, weights)`` against
    gptcore and torch.

    The inputs include calls without a mask, other masks, float64, and keys that
    outnumber the queries.
    """
    name = "scaled_dot_product_attention"
    inputs = _attention_inputs(seed, cases)
    for q, k, v, mask, pass_mask in inputs:
        args = (q, k, v, mask) if pass_mask else (q, k, v)
        where = describe(name, *args)
        out, weights = ref.scaled_dot_product_attention(q, k, v, mask, return_weights=True)
        shapes = (tuple(out.shape), tuple(weights.shape))
        result = call(fn, *args, name=name, where=where, error_hints=_ATTENTION_ERRORS)
        _unpack_pair(result, where, ("out", "weights"), shapes)
        w_mistakes, out_mistakes = _attention_mistakes(q, k, v, mask)
        got_w = result_tensor(
            result[1], f"the weights returned by {where}", shapes[1], q.dtype,
            mistakes=w_mistakes, shape_hint="the weights are (..., Tq, Tk): one row per query, one column per key.",
            dtype_hint=dtype_hint(q.dtype),
        )  # fmt: skip
        if mask is not None:
            t = q.size(-2)
            causal = mask.shape == (t, t) and torch.equal(mask, ref.causal_mask(t))
            _leak(where, got_w, mask, causal, w_mistakes)
        compare(where, "the weights", got_w, weights, w_mistakes)
        got_out = result_tensor(
            result[0], f"the output returned by {where}", shapes[0], q.dtype,
            mistakes=out_mistakes, shape_hint="out = weights @ v is (..., Tq, dv).",
            dtype_hint=dtype_hint(q.dtype),
        )  # fmt: skip
        compare(where, "the output", got_out, out, out_mistakes)
        if q.dtype == torch.float32 and mask is not None:  # torch's fused kernel agrees
            fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            compare(where + " (against torch's fused attention)", "the output", got_out, fused)
    passed(name, len(inputs))


# ---------------------------------------------------------------------- heads
_SPLIT_HOW = "x.view(B, T, n_head, C // n_head).transpose(1, 2)"


def _split_mistakes(x: torch.Tensor, n_head: int) -> Mistakes:
    b, t, c = x.shape
    hs = c // n_head
    return [
        (
            "heads split in the wrong order: view x as (B, T, n_head, head_size) first, then "
            "transpose(1, 2). Viewing it directly as (B, n_head, T, head_size) mixes positions into heads.",
            lambda: x.reshape(b, n_head, t, hs),
        ),
        (
            "each head gets a contiguous slice of head_size channels (head h: channels h*hs to "
            "(h+1)*hs - 1): view the last dim as (n_head, head_size), not (head_size, n_head).",
            lambda: x.reshape(b, t, hs, n_head).permute(0, 3, 1, 2),
        ),
        (
            "transpose(1, 2) after the view, so the head dim comes before T: (B, n_head, T, head_size).",
            lambda: x.reshape(b, t, n_head, hs),
        ),
        (
            "swap dims 1 and 2 (T and n_head) only: transpose(1, 2).",
            lambda: x.reshape(b, t, n_head, hs).transpose(1, 3),
        ),
    ]


@check()
def split_heads(
    fn: Callable[[torch.Tensor, int], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 10,
) -> None:
    """Check ``split_heads(x, n_head)``: (B, T, C) -> (B, n_head, T, C // n_head)."""
    inputs = [(torch.arange(8.0).view(1, 2, 4), 2)]
    g, rng = generator(seed), random.Random(seed)
    for _ in range(cases):
        n_head = rng.choice([2, 3, 4])
        c = n_head * rng.randint(2, 5)
        inputs.append((randn(g, rng.randint(1, 3), rng.randint(2, 7), c), n_head))
    wide = randn(g, 2, 5, 36)
    inputs += [
        (randn(g, 2, 5, 12), 1),  # one head holds every channel
        (randn(g, 2, 5, 6), 6),  # one channel per head
        (randn(g, 3, 1, 8), 4),  # one position
        (randn(g, 1, 4, 8, dtype=torch.float64), 2),
        (torch.arange(2 * 3 * 12).view(2, 3, 12), 4),  # integers: pure bookkeeping
        (wide[..., 12:24], 3),  # a slice of c_attn's output, as in attention
    ]
    errors = {RuntimeError: _SPLIT_HOW, TypeError: "use integer division: C // n_head."}
    for x, n_head in inputs:
        b, t, c = x.shape
        where = describe("split_heads", x, n_head)
        before = x.clone()
        # x itself, not a copy as call(fn, x, ...) would pass: a copy of the slice above is
        # contiguous, and a split_heads that only works on contiguous tensors must fail here.
        got = call(lambda x=x, n=n_head: fn(x, n), name="split_heads", where=where, error_hints=errors)
        if not torch.equal(x, before):
            fail(
                f"{where} changed its argument #1 in place. Leave the input alone: view and "
                "transpose build the heads without changing x."
            )
        mistakes = _split_mistakes(x, n_head)
        got = result_tensor(
            got, f"the result of {where}", (b, n_head, t, c // n_head), x.dtype, mistakes=mistakes,
            shape_hint=f"the result is (B, n_head, T, C // n_head): {_SPLIT_HOW}.",
            dtype_hint="splitting heads only moves numbers around; keep x's dtype.",
        )  # fmt: skip
        compare(where, "the heads", got, ref.split_heads(x, n_head), mistakes)
    passed("split_heads", len(inputs))


_MERGE_VIEW = (
    "x.transpose(1, 2) is not contiguous in memory, so .view() cannot flatten it: call "
    ".contiguous() first, or use .reshape(...)."
)


def _merge_mistakes(x: torch.Tensor) -> Mistakes:
    b, h, t, hs = x.shape
    return [
        (
            "heads merged in the wrong order: transpose before view. x is (B, n_head, T, head_size); "
            "x.transpose(1, 2) makes it (B, T, n_head, head_size), and only then can the last two "
            "dims be flattened into C.",
            lambda: x.reshape(b, t, h * hs),
        ),
        (
            "keep each head's channels together: transpose(1, 2) gives (B, T, n_head, head_size); "
            "do not move head_size before n_head.",
            lambda: x.permute(0, 2, 3, 1).reshape(b, t, h * hs),
        ),
        ("flatten the last two dims into C = n_head * head_size: the result is (B, T, C).", lambda: x.transpose(1, 2)),
    ]  # fmt: skip


@check()
def merge_heads(
    fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 10,
) -> None:
    """Check ``merge_heads(x)``: (B, n_head, T, hs) -> (B, T, n_head * hs), split_heads undone."""
    inputs = [torch.tensor([[[[0.0, 1.0], [4.0, 5.0]], [[2.0, 3.0], [6.0, 7.0]]]])]
    g, rng = generator(seed), random.Random(seed)
    for _ in range(cases):
        shape = (rng.randint(1, 3), rng.choice([2, 3, 4]), rng.randint(2, 7), rng.randint(1, 5))
        inputs.append(randn(g, *shape))
    inputs += [
        randn(g, 2, 1, 5, 6),  # one head
        randn(g, 2, 6, 5, 1),  # head_size 1
        randn(g, 3, 4, 1, 2),  # one position
        randn(g, 1, 2, 4, 4, dtype=torch.float64),
        ref.split_heads(randn(g, 2, 5, 12), 3),  # split_heads' output (not contiguous)
        torch.arange(2 * 3 * 4 * 2).view(2, 3, 4, 2),  # integers
    ]
    for x in inputs:
        b, h, t, hs = x.shape
        where = describe("merge_heads", x)
        # call passes a copy that keeps x's strides: split_heads' output stays non-contiguous
        got = call(fn, x, name="merge_heads", where=where, error_hints={RuntimeError: _MERGE_VIEW})
        mistakes = _merge_mistakes(x)
        got = result_tensor(
            got, f"the result of {where}", (b, t, h * hs), x.dtype, mistakes=mistakes,
            shape_hint="the result is (B, T, n_head * head_size): x.transpose(1, 2).reshape(B, T, C).",
            dtype_hint="merging heads only moves numbers around; keep x's dtype.",
        )  # fmt: skip
        compare(where, "the merged heads", got, ref.merge_heads(x), mistakes)
    passed("merge_heads", len(inputs))


# ---------------------------------------------------- causal self-attention
def _module(g: torch.Generator, n_embd: int, n_head: int, bias: bool, dtype: torch.dtype):
    config = GPTConfig(
        block_size=64, vocab_size=8, n_layer=1, n_head=n_head, n_embd=n_embd, bias=bias
    )
    with seeded(0):  # nn.Linear's init draws from the global RNG; leave the notebook's alone
        attn = CausalSelfAttention(config).to(dtype).eval()
    with torch.no_grad():  # our own seeded weights, independent of torch's init and global RNG
        for p in attn.parameters():
            scale = 1 / math.sqrt(p.size(-1)) if p.ndim == 2 else 0.2
            p.copy_(randn(g, *p.shape, dtype=dtype) * scale)
    return attn


def _self_attention_mistakes(
    x: torch.Tensor, attn: CausalSelfAttention
) -> tuple[Mistakes, Mistakes]:
    c, nh = attn.n_embd, attn.n_head
    mask = ref.causal_mask(x.size(1))

    def run(order=(0, 1, 2), masked=True, proj=True, heads=nh):
        qkv = attn.c_attn(x).split(c, dim=2)
        q, k, v = (ref.split_heads(qkv[i], heads) for i in order)
        y, w = ref.scaled_dot_product_attention(
            q, k, v, mask if masked else None, return_weights=True
        )
        y = ref.merge_heads(y)
        return (attn.c_proj(y) if proj else y), w

    order_hint = "c_attn(x) holds q, k and v side by side, in that order: q, k, v = attn.c_attn(x).split(attn.n_embd, dim=-1)."
    weights = [
        ("the mask was not applied: pass causal_mask(T) to your scaled_dot_product_attention.", lambda: run(masked=False)[1]),
        (order_hint, lambda: run(order=(1, 0, 2))[1]),
        (order_hint, lambda: run(order=(0, 2, 1))[1]),
        ("split q, k and v into attn.n_head heads (your split_heads) before attention: the weights are (B, n_head, T, T).", lambda: run(heads=1)[1]),
    ]  # fmt: skip
    out = [
        ("pass the merged heads through attn.c_proj: y = attn.c_proj(merge_heads(out)).", lambda: run(proj=False)[0]),
        (order_hint, lambda: run(order=(0, 2, 1))[0]),
        (order_hint, lambda: run(order=(2, 1, 0))[0]),
    ]  # fmt: skip
    return weights, out


_REFUSED_ATTN = "causal_self_attention must build attention from your own pieces and attn's layers (attn.c_attn, attn.c_proj), not call attn(x)."
_SELF_ATTENTION_ERRORS = {
    Refused: "use attn.c_attn(x), your split_heads, scaled_dot_product_attention, causal_mask and merge_heads, then attn.c_proj."
}


def _self_attention_configs(seed: int, cases: int):
    """(B, T, C, n_head, bias, dtype) of each case."""
    rng = random.Random(seed)
    configs: list[tuple[int, int, int, int, bool, torch.dtype]] = [
        (1, 4, 8, 2, True, torch.float32)
    ]
    for _ in range(cases):
        n_head = rng.choice([2, 3, 4])
        configs.append((rng.randint(1, 3), rng.randint(2, 12), n_head * rng.choice([2, 4, 8]), n_head, True, torch.float32))  # fmt: skip
    configs += [
        (2, 7, 16, 1, True, torch.float32),  # one head
        (2, 5, 6, 6, True, torch.float32),  # head_size 1
        (3, 1, 8, 2, True, torch.float32),  # one position
        (2, 9, 12, 3, False, torch.float32),  # no biases
        (2, 6, 8, 2, True, torch.float64),
        (1, 64, 48, 6, True, torch.float32),  # a full block
    ]
    return configs


@check(
    uses={
        "split_heads": split_heads,
        "causal_mask": causal_mask,
        "scaled_dot_product_attention": scaled_dot_product_attention,
        "merge_heads": merge_heads,
    }
)
def causal_self_attention(
    fn: Callable[[torch.Tensor, CausalSelfAttention], tuple[torch.Tensor, torch.Tensor]],
    *,
    seed: int = 0,
    cases: int = 4,
) -> None:
    """Check ``causal_self_attention(x, attn) -> (y, weights)`` against ``attn(x, return_weights=True)``.

    The learner's function must use ``attn``'s layers, not call ``attn`` itself
    (that call is refused during the check). Its output must also match the
    fused path, ``attn(x)``.
    """
    g = generator(seed)
    configs = _self_attention_configs(seed, cases)
    for b, t, c, n_head, bias, dtype in configs:
        attn = _module(g, c, n_head, bias, dtype)
        x = randn(g, b, t, c, dtype=dtype)
        where = f"causal_self_attention(<{str(dtype)[6:]} x of shape {(b, t, c)}>, attn with n_embd={c}, n_head={n_head}, bias={bias})"
        with torch.no_grad():
            y, weights = attn(x, return_weights=True)
            fused = attn(x)
        before = {k: p.clone() for k, p in attn.state_dict().items()}
        with refusing([(CausalSelfAttention, "forward")], _REFUSED_ATTN):
            result = call(
                fn, x, attn, name="causal_self_attention", where=where,
                error_hints=_SELF_ATTENTION_ERRORS,
            )  # fmt: skip
        if any(not torch.equal(p, before[k]) for k, p in attn.state_dict().items()):
            fail(f"{where} changed attn's weights; only read them.")
        shapes = ((b, t, c), (b, n_head, t, t))
        _unpack_pair(result, where, ("y", "weights"), shapes)
        w_mistakes, y_mistakes = _self_attention_mistakes(x, attn)
        got_w = result_tensor(
            result[1], f"the weights returned by {where}", shapes[1], dtype, mistakes=w_mistakes,
            shape_hint="the weights are (B, n_head, T, T): one (T, T) matrix per head.",
            dtype_hint=dtype_hint(dtype),
        )  # fmt: skip
        _leak(where, got_w, ref.causal_mask(t), True, w_mistakes)
        compare(where, "the weights", got_w, weights, w_mistakes)
        got_y = result_tensor(
            result[0], f"the output returned by {where}", shapes[0], dtype, mistakes=y_mistakes,
            shape_hint="y has x's shape (B, T, C): merge the heads, then attn.c_proj.",
            dtype_hint=dtype_hint(dtype),
        )  # fmt: skip
        compare(where, "the output y", got_y, y, y_mistakes)
        compare(where + " (against the fused path, attn(x))", "the output y", got_y, fused)
    passed("causal_self_attention", len(configs))
