"""Checks for lesson 3 (embeddings): one-hot lookup, sinusoidal positions, the neural bigram, training.

Each check compares the learner's code with gptcore's reference on seeded
inputs: ``one_hot_embed`` and ``sinusoidal_positional_encoding``
(``gptcore.model.embeddings``), ``BigramLM`` (``gptcore.model.bigram``) and
``train_step`` (``gptcore.train``). ``edge_cases=True`` adds inputs at the
edges of each contract (ids that never reach the last row, scalar and empty id
tensors, float64 weights, another base, ``targets=None``, a model left in eval
mode); the hidden tests use it.

Results must be tensors of the documented shape and dtype (or a Python float
for a loss value); they are compared only after those checks, as plain
tensors, so an object whose ``__eq__`` always answers True cannot pass. On a
wrong value the message names the input, the first entry that differs, and,
where a known mistake reproduces the wrong answer, which mistake it is.

The tensor helpers (``_tensor``, ``_close``, ``_compare``, ``_run``) are
generic; later lessons that check tensors can share them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gptcore.model import BigramLM, one_hot_embed, sinusoidal_positional_encoding
from gptcore.train import get_batch
from gptcore.train import train_step as reference_train_step

from . import fail, passed, show, type_name

__all__ = [
    "bigram_matches_counts",
    "neural_bigram",
    "one_hot_lookup",
    "sinusoidal_encoding",
    "train_step",
]

Mistakes = Iterable[tuple[Callable[[], Any], str]]


# ------------------------------------------------------------ tensor helpers
def _show_tensor(t: torch.Tensor, limit: int = 12) -> str:
    """Small tensors by value, large ones by shape and dtype."""
    dtype = str(t.dtype).removeprefix("torch.")
    if t.numel() <= limit:
        return f"tensor({t.tolist()}, dtype={dtype})"
    return f"tensor of shape {tuple(t.shape)}, dtype {dtype}"


def _show_arg(value: Any) -> str:
    return _show_tensor(value) if isinstance(value, torch.Tensor) else show(value, 60)


def _describe(name: str, *args: Any) -> str:
    return f"{name}({', '.join(_show_arg(a) for a in args)})"


def _run(
    fn: Callable[..., Any],
    *args: Any,
    where: str,
    hint: Callable[[BaseException], str] | None = None,
) -> Any:
    """``fn(*args)``; tensors in ``args`` must come back unchanged.

    Like ``gptcore.course.checks.call``, an exception becomes an ``AssertionError``
    naming the call (the original stays chained), with ``hint(exception)``
    appended; ``NotImplementedError`` passes through: the exercise is not done.
    """
    before = [a.detach().clone() if isinstance(a, torch.Tensor) else None for a in args]
    try:
        result = fn(*args)
    except NotImplementedError:
        raise
    except Exception as e:
        extra = hint(e) if hint else ""
        message = f"{where} raised {type(e).__name__}: {e}"
        raise AssertionError(message + (f"\nHint: {extra}" if extra else "")) from e
    for i, (arg, copy_) in enumerate(zip(args, before)):
        if copy_ is not None and (arg.shape != copy_.shape or not torch.equal(arg.detach(), copy_)):
            fail(
                f"{where} changed its argument #{i + 1} in place. Leave the inputs as they are: "
                "the caller still needs them."
            )
    return result


def _tensor(
    value: Any,
    what: str,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    *,
    shape_hint: Callable[[tuple[int, ...]], str] | None = None,
    dtype_hint: str = "",
) -> torch.Tensor:
    """A plain, detached copy of ``value`` after checking its type, dtype and shape."""
    if not isinstance(value, torch.Tensor):
        extra = ""
        if type(value).__module__ == "numpy":
            extra = "\nHint: stay in torch; torch has every operation you need here."
        fail(f"{what} must be a torch.Tensor, but it is a {type_name(value)}: {show(value)}{extra}")
    got_shape = tuple(value.shape)
    if value.dtype != dtype:
        fail(
            f"{what} must have dtype {dtype}, but it has dtype {value.dtype}."
            + (f"\nHint: {dtype_hint}" if dtype_hint else "")
        )
    if got_shape != shape:
        extra = shape_hint(got_shape) if shape_hint else ""
        fail(
            f"{what} must have shape {shape}, but it has shape {got_shape}."
            + (f"\nHint: {extra}" if extra else "")
        )
    return value.detach().as_subclass(torch.Tensor).clone()


def _close(got: torch.Tensor, expected: torch.Tensor, atol: Any, rtol: float) -> torch.Tensor:
    """Entrywise: |got - expected| <= atol + rtol * |expected| (NaN never matches)."""
    got, expected = got.double(), expected.double()
    return (got - expected).abs() <= atol + rtol * expected.abs()


def _matches(candidate: Any, got: torch.Tensor, atol: Any, rtol: float) -> bool:
    if not isinstance(candidate, torch.Tensor) or candidate.shape != got.shape:
        return False
    return bool(_close(got, candidate, atol, rtol).all())


def _diagnose(got: torch.Tensor, mistakes: Mistakes, atol: Any, rtol: float) -> str:
    """The hints of the known mistakes whose result matches ``got``, or ""."""
    hints: list[str] = []
    for compute, hint in mistakes:
        try:
            if _matches(compute(), got, atol, rtol) and hint not in hints:
                hints.append(hint)
        except Exception:
            continue  # that mistake would have crashed here; it is not the one
    return "\n  or: ".join(hints)


def _compare(
    got: torch.Tensor,
    expected: torch.Tensor,
    where: str,
    *,
    atol: Any = 1e-6,
    rtol: float = 1e-5,
    mistakes: Mistakes = (),
    what: str = "",
) -> None:
    """Fail, showing the first entry that differs, unless ``got`` is close to ``expected``.

    ``atol`` may be a tensor that broadcasts against ``expected`` (a tolerance per row).
    """
    ok = _close(got, expected, atol, rtol)
    if bool(ok.all()):
        return
    bad = (~ok).nonzero()
    first = tuple(bad[0].tolist())
    label = f"{what} of {where}" if what else where
    if expected.dim() == 0:
        lines = [f"{label} is wrong: expected {expected.item():.6g}, got {got.item():.6g}."]
    else:
        lines = [
            f"{label} is wrong: {len(bad)} of {ok.numel()} entries differ.",
            f"  first at index {first}: expected {expected[first].item():.6g}, "
            f"got {got[first].item():.6g}",
        ]
    if 1 < expected.numel() <= 24:
        lines += [f"  expected: {expected.tolist()}", f"  got:      {got.tolist()}"]
    hint = _diagnose(got, mistakes, atol, rtol)
    if hint:
        lines.append(f"Hint: {hint}")
    fail("\n".join(lines))


# ------------------------------------------------------------ one-hot lookup
_NUM_CLASSES_HINT = (
    "give F.one_hot the number of rows explicitly, num_classes=weight.shape[0]. Without it, "
    "F.one_hot makes vectors of length idx.max() + 1, too short when the largest id is not the "
    "last row (and it cannot tell the length at all for an empty idx)."
)
_ONE_HOT_DTYPE_HINT = (
    "F.one_hot returns int64 vectors; convert them to the weight's dtype with .to(weight.dtype) "
    "before the product."
)
_TRANSPOSE_HINT = "multiply the one-hot vectors (..., V) by weight (V, C) itself, not by weight.T."


def _error_of(compute: Callable[[], Any]) -> str | None:
    try:
        compute()
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def _one_hot_error_hint(idx: torch.Tensor, weight: torch.Tensor) -> Callable[[BaseException], str]:
    """Name the known mistake that raises exactly the learner's error on this input."""
    V = weight.shape[0]
    mistakes = [
        (lambda: F.one_hot(idx).to(weight.dtype) @ weight, _NUM_CLASSES_HINT),
        (lambda: F.one_hot(idx, V).to(weight.dtype) @ weight.T, _TRANSPOSE_HINT),
        (lambda: F.one_hot(idx, V) @ weight, _ONE_HOT_DTYPE_HINT),
    ]

    def hint(e: BaseException) -> str:
        got = f"{type(e).__name__}: {e}"
        for compute, text in mistakes:
            if _error_of(compute) == got:
                return text
        return ""

    return hint


def _one_hot_mistakes(idx: torch.Tensor, weight: torch.Tensor) -> Mistakes:
    V = weight.shape[0]
    return [(lambda: F.one_hot(idx, V).to(weight.dtype) @ weight.T, _TRANSPOSE_HINT)]


def _one_hot_shape_hint(
    idx: torch.Tensor, weight: torch.Tensor
) -> Callable[[tuple[int, ...]], str]:
    V, C = weight.shape

    def hint(shape: tuple[int, ...]) -> str:
        if shape == (*idx.shape, V):
            return (
                "these are the one-hot vectors themselves; multiply them by weight to get (..., C)."
            )
        if shape[-1:] == (C,) and math.prod(shape) == idx.numel() * C:
            return f"keep the shape of idx: ids of shape {tuple(idx.shape)} give vectors of shape {(*idx.shape, C)}."
        return f"idx has shape {tuple(idx.shape)} and weight has shape {(V, C)}: the result has shape idx.shape + (C,)."

    return hint


def _random_lookup(
    rng: random.Random, gen: torch.Generator, *, include_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    V, C = rng.randint(2, 80), rng.randint(1, 16)
    shape = tuple(rng.randint(1, 6) for _ in range(rng.randint(1, 3)))
    idx = torch.randint(V, shape, generator=gen)
    if include_last:
        idx.view(-1)[rng.randrange(idx.numel())] = V - 1
    return idx, torch.randn(V, C, generator=gen)


def one_hot_lookup(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 20,
    edge_cases: bool = False,
) -> None:
    """Check ``fn(idx, weight) -> one_hot(idx) @ weight`` against ``one_hot_embed``.

    The visible inputs always use the last row's id somewhere; the edge cases
    include ids that never reach it, a scalar and an empty ``idx``, and a
    float64 ``weight``, whose dtype the result must keep.
    """
    gen = torch.Generator().manual_seed(seed)
    table = torch.arange(15.0).reshape(5, 3)  # row i is [3i, 3i + 1, 3i + 2]
    inputs: list[tuple[torch.Tensor, torch.Tensor]] = [
        (torch.tensor([3, 0, 4]), table),
        (torch.tensor([[1, 4, 1], [2, 0, 3]]), table),
    ]
    if edge_cases:
        inputs += [
            (torch.tensor([0, 1]), table),  # the largest id is not the last row
            (torch.tensor(2), table),  # one id: a single vector (C,)
            (torch.zeros(0, dtype=torch.long), table),  # no ids at all: shape (0, C)
            (torch.zeros(2, 0, dtype=torch.long), table),
            (
                torch.tensor([[7, 7], [0, 3]]),
                torch.randn(10, 4, generator=gen, dtype=torch.float64),
            ),
            (torch.tensor([1, 0]), torch.randn(2, 2, generator=gen)),  # square: weight.T would fit
            (torch.randint(1000, (3, 5), generator=gen), torch.randn(1000, 8, generator=gen)),
            (torch.tensor([0, 0, 0]), torch.randn(1, 6, generator=gen)),
            (
                torch.randint(6, (2, 2, 2), generator=gen),
                torch.randn(6, 6, generator=gen, dtype=torch.float64),
            ),
        ]
    rng = random.Random(seed)
    inputs += [_random_lookup(rng, gen, include_last=not edge_cases) for _ in range(cases)]
    for idx, weight in inputs:
        where = _describe("one_hot_lookup", idx, weight)
        got = _run(fn, idx, weight, where=where, hint=_one_hot_error_hint(idx, weight))
        got = _tensor(
            got,
            f"the result of {where}",
            (*idx.shape, weight.shape[1]),
            weight.dtype,
            shape_hint=_one_hot_shape_hint(idx, weight),
            dtype_hint=(
                f"the vectors are rows of weight, so they keep weight's dtype ({weight.dtype}). "
                "Convert the one-hot vectors with .to(weight.dtype), not .float()."
            ),
        )
        expected = one_hot_embed(idx, weight)
        _compare(got, expected, where, mistakes=_one_hot_mistakes(idx, weight))
    passed("one_hot_lookup", len(inputs))


# ------------------------------------------------------- sinusoidal encoding
def _pe_variant(
    T: int,
    C: int,
    base: float,
    *,
    swap: bool = False,
    exponent: str = "2i/C",
    halves: bool = False,
    start: int = 0,
    sign: float = -1.0,
) -> torch.Tensor:
    """The sinusoidal encoding with one known mistake, for diagnosis."""
    pos = torch.arange(start, start + T, dtype=torch.float64)[:, None]
    if exponent == "j/C":  # every dimension its own frequency, j / C
        j = torch.arange(C, dtype=torch.float64)
        angles = pos * base ** (sign * j / C)
        out = torch.empty(T, C, dtype=torch.float64)
        out[:, 0::2] = torch.sin(angles[:, 0::2])
        out[:, 1::2] = torch.cos(angles[:, 1::2])
        return out
    i = torch.arange(C // 2, dtype=torch.float64)
    power = {"2i/C": 2 * i / C, "i/C": i / C, "2i": 2 * i, "i/(C/2-1)": i / max(C // 2 - 1, 1)}[
        exponent
    ]
    angles = pos * base ** (sign * power)
    first, second = (torch.cos, torch.sin) if swap else (torch.sin, torch.cos)
    if halves:
        return torch.cat([first(angles), second(angles)], dim=1)
    out = torch.empty(T, C, dtype=torch.float64)
    out[:, 0::2] = first(angles)
    out[:, 1::2] = second(angles)
    return out


def _pe_mistakes(T: int, C: int, base: float) -> Mistakes:
    mistakes = [
        (
            lambda: _pe_variant(T, C, base, swap=True),
            "sin goes in the even dimensions (0, 2, 4, ...) and cos in the odd ones: you swapped them.",
        ),
        (
            lambda: _pe_variant(T, C, base, exponent="i/C"),
            "the exponent is 2i / n_embd, where i counts the sin/cos PAIRS (0 .. n_embd/2 - 1); "
            "equivalently, torch.arange(0, n_embd, 2) / n_embd. You used i / n_embd.",
        ),
        (
            lambda: _pe_variant(T, C, base, exponent="2i"),
            "divide the exponent by n_embd: base ** (2i / n_embd), so the slowest pair turns "
            "about base times slower than the fastest, whatever n_embd is.",
        ),
        (
            lambda: _pe_variant(T, C, base, exponent="j/C"),
            "both dimensions of a pair share one frequency: dimensions 2i and 2i + 1 both use "
            "exponent 2i / n_embd.",
        ),
        (
            lambda: _pe_variant(T, C, base, exponent="i/(C/2-1)"),
            "the exponent is 2i / n_embd (i = 0 .. n_embd/2 - 1), which stops just short of 1; "
            "not i / (n_embd/2 - 1), which reaches it.",
        ),
        (
            lambda: _pe_variant(T, C, base, halves=True),
            "interleave: PE[:, 0::2] = sin(...), PE[:, 1::2] = cos(...). You put all the sines "
            "first and all the cosines after them.",
        ),
        (
            lambda: _pe_variant(T, C, base, start=1),
            "positions start at 0: the first row is sin(0) = 0 and cos(0) = 1 alternating.",
        ),
        (
            lambda: _pe_variant(T, C, base, sign=1.0),
            "divide the position by base ** (2i / n_embd) (or multiply by base ** (-2i / n_embd)); "
            "you multiplied by base ** (+2i / n_embd).",
        ),
    ]
    mistakes.append(
        (
            lambda: sinusoidal_positional_encoding(T, C, base).double().T,
            "one row per position and one column per dimension: you returned the transpose.",
        )
    )
    if base != 10000.0:
        mistakes.append(
            (
                lambda: _pe_variant(T, C, 10000.0),
                f"use the base argument (here {base:g}) instead of the fixed 10000.",
            )
        )
    return mistakes


def _pe_tolerance(T: int) -> torch.Tensor:
    # float32 arithmetic loses about 1e-7 * p in the angle of position p; allow 10x that.
    return 1e-5 + 1e-6 * torch.arange(T, dtype=torch.float64)[:, None]


def sinusoidal_encoding(
    fn: Callable[..., torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 15,
    edge_cases: bool = False,
) -> None:
    """Check ``fn(block_size, n_embd[, base])`` against ``sinusoidal_positional_encoding``.

    The result must be float32 (torch's default dtype), shape (block_size,
    n_embd). Computing in float32 is fine: the tolerance grows with the
    position, about ten times float32's rounding error in the angle. Without
    ``edge_cases`` the base is always 10000.
    """
    default = object()
    inputs: list[tuple[int, int, Any]] = [(4, 4, default), (6, 2, default), (50, 16, default)]
    if edge_cases:
        inputs += [
            (1, 2, default),
            (3, 6, 100.0),
            (64, 8, 10.0),
            (32, 32, 500000.0),
            (2048, 8, default),
            (1024, 768, 10000.0),
            (10, 4, 2.0),
        ]
    rng = random.Random(seed)
    for _ in range(cases):
        base = (
            rng.choice([100.0, 1000.0, 10.0, 5000.0])
            if edge_cases
            else rng.choice([default, 10000.0])
        )
        inputs.append((rng.randint(1, 300), 2 * rng.randint(1, 64), base))
    for T, C, base in inputs:
        args = (T, C) if base is default else (T, C, base)
        base = 10000.0 if base is default else base
        where = f"sinusoidal_encoding({T}, {C}" + (f", base={base:g})" if len(args) == 3 else ")")
        got = _run(fn, *args, where=where)
        got = _tensor(
            got,
            f"the result of {where}",
            (T, C),
            torch.get_default_dtype(),
            shape_hint=lambda s: (
                "one row per position (block_size rows), one column per dimension (n_embd columns)."
            ),
            dtype_hint=(
                "return torch's default float dtype, float32, the dtype of the embeddings it is "
                "added to: create tensors with dtype=torch.float32 (or end with .float())."
            ),
        )
        expected = sinusoidal_positional_encoding(T, C, base).double()
        _compare(
            got, expected, where, atol=_pe_tolerance(T), rtol=0.0, mistakes=_pe_mistakes(T, C, base)
        )
    passed("sinusoidal_encoding", len(inputs))


# --------------------------------------------------------------- neural bigram
_SUPER_HINT = (
    "start __init__ with super().__init__(): nn.Module must set itself up before you can "
    "assign layers to self."
)


def _construct_hint(e: BaseException) -> str:
    return _SUPER_HINT if "Module.__init__" in str(e) else ""


def _forward_hint(with_targets: bool) -> Callable[[BaseException], str]:
    def hint(e: BaseException) -> str:
        text = str(e)
        if not with_targets and ("None" in text or isinstance(e, (TypeError, AttributeError))):
            return (
                "this call passes no targets (targets=None). Compute the loss only when targets "
                "are given; otherwise return (logits, None)."
            )
        if "Expected target size" in text or "Expected input batch_size" in text:
            return (
                "F.cross_entropy wants logits of shape (N, V) and targets of shape (N,): flatten "
                "with logits.view(B * T, V) and targets.view(B * T)."
            )
        if "view size is not compatible" in text:
            return "view() needs a contiguous tensor; use .reshape(), which copies when it must."
        if "not implemented for 'Float'" in text or "Long" in text:
            return "ids and targets are int64 (Long) tensors; pass them as they are."
        return ""

    return hint


def _bigram_specs(
    rng: random.Random, cases: int, edge_cases: bool
) -> list[tuple[int, int, int, bool]]:
    specs = [(7, 2, 3, True), (65, 4, 16, True)]  # (vocab_size, B, T, with targets)
    if edge_cases:
        specs += [
            (65, 4, 16, False),
            (5, 1, 1, True),
            (1, 2, 3, True),
            (3, 1, 1, False),
            (65, 1, 256, True),
        ]
    specs += [
        (rng.randint(2, 80), rng.randint(1, 6), rng.randint(1, 24), True) for _ in range(cases)
    ]
    return specs


def _loss_mistakes(logits: torch.Tensor, targets: torch.Tensor) -> Mistakes:
    V = logits.shape[-1]
    flat, tgt = logits.reshape(-1, V).double(), targets.reshape(-1)
    return [
        (
            lambda: F.cross_entropy(flat, tgt, reduction="sum"),
            "take the mean over the B*T positions, not the sum (F.cross_entropy's default "
            "reduction='mean' does it).",
        ),
        (
            lambda: F.cross_entropy(flat.softmax(-1), tgt),
            "F.cross_entropy takes raw logits and applies the softmax itself: do not softmax first.",
        ),
        (
            lambda: F.nll_loss(flat, tgt),
            "F.nll_loss expects log-probabilities; with raw logits use F.cross_entropy (or "
            "F.nll_loss(F.log_softmax(logits, -1), targets)).",
        ),
        (
            lambda: F.cross_entropy(flat, tgt, reduction="none").sum() / flat.shape[0] / V,
            "divide by the number of positions B*T only, not by V as well.",
        ),
    ]


def _new_bigram(cls: Callable[[int], nn.Module], V: int) -> nn.Module:
    """``cls(V)``, after checking it is the one-table bigram the exercise describes."""
    name = getattr(cls, "__name__", "model")
    model = _run(cls, V, where=f"{name}({V})", hint=_construct_hint)
    if not isinstance(model, nn.Module):
        fail(f"{name}({V}) must be an nn.Module, but it is a {type_name(model)}: {show(model)}")
    emb = getattr(model, "token_embedding", None)
    if not isinstance(emb, nn.Embedding):
        fail(
            f"{name}({V}).token_embedding must be an nn.Embedding, but it is "
            f"{'missing' if emb is None else 'a ' + type_name(emb)}.\nHint: in __init__, store "
            "the table as self.token_embedding = nn.Embedding(vocab_size, vocab_size)."
        )
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if params != {"token_embedding.weight": (V, V)}:
        fail(
            f"{name}({V}) has the parameters {params}, but a bigram needs exactly one: "
            f"token_embedding.weight of shape {(V, V)}, one row of next-token logits per token."
            "\nHint: nn.Embedding(vocab_size, vocab_size) and nothing else (no extra layers)."
        )
    if emb.weight.dtype != torch.float32:
        fail(f"{name}({V}).token_embedding must hold float32 weights, not {emb.weight.dtype}.")
    return model


def _logits_shape_hint(B: int, T: int, V: int) -> Callable[[tuple[int, ...]], str]:
    def hint(shape: tuple[int, ...]) -> str:
        if shape == ():
            return "forward returns (logits, loss), in that order."
        if shape == (B * T, V):
            return (
                "return the logits as (B, T, V), one row of V scores per position; reshape only "
                "the copy that you pass to F.cross_entropy."
            )
        return "row idx[b, t] of the table holds the V logits for position (b, t): self.token_embedding(idx)."

    return hint


_LOSS_SHAPE_HINT = (
    "the loss is one number, the mean over all B*T positions: a 0-dim tensor. "
    "F.cross_entropy's default reduction='mean' gives it."
)


def _check_bigram_case(
    cls: Callable[[int], nn.Module], V: int, B: int, T: int, with_targets: bool, seed: int
) -> None:
    name = getattr(cls, "__name__", "model")
    model = _new_bigram(cls, V)
    torch.manual_seed(seed)
    ref = BigramLM(V)
    with torch.no_grad():
        model.token_embedding.weight.copy_(ref.token_embedding.weight)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(V, (B, T), generator=gen)
    targets = torch.randint(V, (B, T), generator=gen)
    args = (idx, targets) if with_targets else (idx,)
    where = f"{name}({V})({', '.join(_show_arg(a) for a in args)})"
    result = _run(model, *args, where=where, hint=_forward_hint(with_targets))
    if type(result) is not tuple or len(result) != 2:
        fail(
            f"{where} must return a tuple (logits, loss), but it returned a "
            f"{type_name(result)}: {show(result)}"
        )
    logits, loss = result
    ref_logits, ref_loss = ref(*args)
    expected = ref_logits.detach()
    got = _tensor(
        logits,
        f"the logits returned by {where}",
        (B, T, V),
        torch.float32,
        shape_hint=_logits_shape_hint(B, T, V),
    )
    logit_mistakes = [
        (
            lambda: expected.softmax(-1),
            "return raw logits, not probabilities: no softmax in forward.",
        ),
        (lambda: expected.log_softmax(-1), "return raw logits: F.cross_entropy normalises them."),
    ]
    _compare(got, expected, where, what="the logits", mistakes=logit_mistakes)
    if not with_targets:
        if loss is not None:
            fail(f"{where} was called without targets, so its loss must be None, not {show(loss)}.")
        return
    if isinstance(loss, float):
        fail(
            f"the loss returned by {where} is a float. Return the tensor that F.cross_entropy "
            "gives: training calls loss.backward() on it, and a float has no gradient."
        )
    got_loss = _tensor(
        loss,
        f"the loss returned by {where}",
        (),
        torch.float32,
        shape_hint=lambda shape: _LOSS_SHAPE_HINT,
    )
    if loss.grad_fn is None or not loss.requires_grad:
        fail(
            f"the loss returned by {where} is not connected to the table: backward() cannot reach "
            "token_embedding.weight.\nHint: return the tensor that F.cross_entropy gives, not "
            "loss.item() or a new torch.tensor(...), and do not compute it under torch.no_grad()."
        )
    mistakes = _loss_mistakes(expected, targets)
    _compare(got_loss, ref_loss.detach(), where, what="the loss", mistakes=mistakes)
    loss.backward()
    ref_loss.backward()
    grad = model.token_embedding.weight.grad
    if grad is None:
        fail(f"after loss.backward(), the table of {where} has no gradient.")
    _compare(
        grad.detach().as_subclass(torch.Tensor),
        ref.token_embedding.weight.grad,
        f"{where}, then loss.backward()",
        what="the gradient of the table",
    )


def neural_bigram(
    cls: Callable[[int], nn.Module],
    *,
    seed: int = 0,
    cases: int = 8,
    edge_cases: bool = False,
) -> None:
    """Check a bigram module ``cls(vocab_size)`` against ``gptcore.model.BigramLM``.

    The module must hold exactly one parameter, ``token_embedding``, an
    ``nn.Embedding(vocab_size, vocab_size)``; the check copies BigramLM's
    seeded table into it. ``model(idx, targets)`` must return ``(logits,
    loss)``: logits (B, T, V) float32, loss a 0-dim float32 tensor (mean
    cross-entropy) through which gradients reach the table. The edge cases
    call ``model(idx)`` without targets, which must return ``(logits, None)``.
    """
    rng = random.Random(seed)
    specs = _bigram_specs(rng, cases, edge_cases)
    for case, (V, B, T, with_targets) in enumerate(specs):
        _check_bigram_case(cls, V, B, T, with_targets, seed * 1000 + case)
    passed("neural bigram", len(specs))


# ----------------------------------------------------------------- train step
class _DropoutBigram(nn.Module):
    """A bigram with dropout between its embedding and output layer: train() and eval() differ."""

    def __init__(self, vocab_size: int, n_embd: int = 8, p: float = 0.5) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.dropout = nn.Dropout(p)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.lm_head(self.dropout(self.token_embedding(idx)))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


_OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]] = {
    "SGD(lr=0.5)": lambda ps: torch.optim.SGD(ps, lr=0.5),
    "SGD(lr=0.1, momentum=0.9)": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "AdamW(lr=0.01)": lambda ps: torch.optim.AdamW(ps, lr=0.01),
}
_MODELS: dict[str, Callable[[], nn.Module]] = {
    "BigramLM(11)": lambda: BigramLM(11),
    "BigramLM(11, n_embd=6)": lambda: BigramLM(11, n_embd=6),
    "BigramLM(30, n_embd=4)": lambda: BigramLM(30, n_embd=4),
    "a bigram with dropout, in eval mode": lambda: _DropoutBigram(11),
}


def _setup(model_name: str, opt_name: str, seed: int):
    """A seeded model and optimizer, with leftover gradients from an earlier backward()."""
    torch.manual_seed(seed)
    model = _MODELS[model_name]()
    if "eval mode" in model_name:
        model.eval()
    optimizer = _OPTIMIZERS[opt_name](model.parameters())
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():  # stale gradients that zero_grad() must clear
        p.grad = torch.randn(p.shape, generator=gen)
    return model, optimizer


def _batches(model_name: str, seed: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    V = 30 if "30" in model_name else 11
    gen = torch.Generator().manual_seed(seed + 1)
    data = torch.randint(V, (200,), generator=gen)
    return [get_batch(data, 4, 8, gen) for _ in range(steps)]


def _variant_step(variant: str) -> Callable[..., float]:
    """train_step with one known mistake."""

    def step(model, optimizer, x, y):
        model.train()
        if variant != "no zero_grad":
            optimizer.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def _replay(model_name, opt_name, seed, batches, k, last_step) -> nn.Module:
    """The model after k reference steps and then ``last_step``."""
    model, optimizer = _setup(model_name, opt_name, seed)
    for x, y in batches[:k]:
        torch.manual_seed(seed + 7)
        reference_train_step(model, optimizer, x, y)
    torch.manual_seed(seed + 7)
    last_step(model, optimizer, *batches[k])
    return model


def _train_cases(rng: random.Random, cases: int, edge_cases: bool) -> list[tuple[str, str]]:
    setups = [("BigramLM(11)", "SGD(lr=0.5)"), ("BigramLM(11, n_embd=6)", "AdamW(lr=0.01)")]
    if edge_cases:
        setups += [
            ("a bigram with dropout, in eval mode", "AdamW(lr=0.01)"),
            ("a bigram with dropout, in eval mode", "SGD(lr=0.5)"),
            ("BigramLM(30, n_embd=4)", "SGD(lr=0.1, momentum=0.9)"),
        ]
    plain = [m for m in _MODELS if "eval" not in m]
    setups += [(rng.choice(plain), rng.choice(list(_OPTIMIZERS))) for _ in range(cases)]
    return setups


def _check_train_case(
    fn: Callable[..., float], model_name: str, opt_name: str, s: int, steps: int
) -> int:
    mine, my_opt = _setup(model_name, opt_name, s)
    ref, ref_opt = _setup(model_name, opt_name, s)
    batches = _batches(model_name, s, steps)
    for k, (x, y) in enumerate(batches):
        where = (
            f"train_step(model, optimizer, x, y) at step {k + 1} of {steps} (model = "
            f"{model_name}, optimizer = {opt_name}, x and y of shape {tuple(x.shape)})"
        )
        before = {n: p.detach().clone() for n, p in mine.named_parameters()}
        stepped: list[int] = []
        hook = my_opt.register_step_post_hook(lambda *_, seen=stepped: seen.append(1))
        torch.manual_seed(s + 7)  # the same dropout masks on both sides
        try:
            got = _run(fn, mine, my_opt, x, y, where=where)
        finally:
            hook.remove()
        torch.manual_seed(s + 7)
        expected = reference_train_step(ref, ref_opt, x, y)
        if not mine.training:
            fail(
                f"{where}: the model is still in eval mode after the step.\nHint: call "
                "model.train() first. Layers such as dropout behave differently in training, and "
                "a model is often left in eval mode after measuring the validation loss."
            )
        if isinstance(got, torch.Tensor):
            fail(
                f"{where} returned a {type_name(got)}: {show(got)}. Return a Python float, "
                "loss.item(): a tensor would keep the whole graph of this step alive."
            )
        if type(got) is not float:
            fail(f"{where} must return the loss as a float, not a {type_name(got)}: {show(got)}")
        if len(stepped) != 1:
            fail(
                f"{where} called step() {len(stepped)} times on the optimizer passed in; call "
                "optimizer.step() exactly once, after loss.backward().\nHint: use the optimizer "
                "you are given; do not create a new one."
            )
        if all(torch.equal(p.detach(), before[n]) for n, p in mine.named_parameters()):
            fail(
                f"{where} did not change the model's parameters.\nHint: call "
                "optimizer.zero_grad() BEFORE loss.backward(): zeroing the gradients between "
                "backward() and step() throws them away."
            )
        if not math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-6):
            hint = ""
            if "eval" not in model_name:
                with torch.no_grad():
                    after = float(ref(x, y)[1])
                if math.isclose(got, after, rel_tol=1e-5, abs_tol=1e-6):
                    hint = (
                        "\nHint: return the loss computed before optimizer.step(), the one "
                        "that you called backward() on."
                    )
            fail(
                f"{where} returned the loss {got!r}, but the loss on this batch is {expected!r}.{hint}"
            )
        no_zero_grad = _replay(model_name, opt_name, s, batches, k, _variant_step("no zero_grad"))
        forgot = dict(no_zero_grad.named_parameters())
        mine_params = dict(mine.named_parameters())
        for n, p in ref.named_parameters():
            mistake = forgot[n].detach()
            _compare(
                mine_params[n].detach().as_subclass(torch.Tensor),
                p.detach(),
                f"parameter {n} after {where}",
                mistakes=[(lambda m=mistake: m, _ZERO_GRAD_HINT)],
            )
    return len(batches)


_ZERO_GRAD_HINT = (
    "call optimizer.zero_grad() before loss.backward(). backward() ADDS to .grad, so without "
    "it this step also used gradients left over from before."
)


def train_step(
    fn: Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor], float],
    *,
    seed: int = 0,
    cases: int = 3,
    edge_cases: bool = False,
    steps: int = 3,
) -> None:
    """Check ``fn(model, optimizer, x, y) -> float`` against ``gptcore.train.train_step``.

    Two copies of a seeded model start from the same weights, optimizer state
    and leftover gradients (as if backward() had run before without a step);
    ``fn`` trains one copy and the reference the other, ``steps`` times on the
    same batches. After every step the returned loss (a Python float, the loss
    before the update) and all parameters must match. The edge cases hand over
    a model with dropout that was left in eval mode: ``fn`` must switch it back
    to training mode.
    """
    rng = random.Random(seed)
    total = 0
    for case, (model_name, opt_name) in enumerate(_train_cases(rng, cases, edge_cases)):
        total += _check_train_case(fn, model_name, opt_name, seed * 100 + case, steps)
    passed("train_step", total)


# ------------------------------------------------- the bigram, trained for real
def _count_bigram_val_loss(train: list[int], val: torch.Tensor, V: int, k: float) -> float:
    from gptcore.ngram import NGramModel

    model = NGramModel(2, V, k=k).fit(train)
    probs = torch.stack(
        [model.next_token_probs([i]) for i in range(V)]
    )  # (V, V), rows: current token
    return float(-probs[val[:-1], val[1:]].log().mean())


def bigram_matches_counts(
    cls: Callable[[int], nn.Module],
    step_fn: Callable[..., float],
    *,
    steps: int = 600,
    batch_size: int = 64,
    block_size: int = 64,
    lr: float = 0.1,
    k: float = 0.01,
    tolerance: float = 0.02,
    seed: int = 0,
) -> None:
    """Train ``cls(V)`` with ``step_fn`` on Tiny Shakespeare and compare with the count bigram.

    Characters, the standard split (``train_val_split``), AdamW(lr) and
    ``steps`` batches from ``get_batch``. The validation loss is the mean
    cross-entropy of the model's logits on every (current, next) pair of the
    validation text; it must come within ``tolerance`` nats of the add-k
    count bigram's loss on the same pairs.
    """
    from gptcore.data import load_text, train_val_split
    from gptcore.tokenizer import CharTokenizer

    text = load_text("tinyshakespeare")
    tok = CharTokenizer.from_text(text)
    V = tok.vocab_size
    train_ids, val_ids = train_val_split(tok.encode(text))
    train, val = torch.tensor(train_ids), torch.tensor(val_ids)
    target = _count_bigram_val_loss(train_ids, val, V, k)

    torch.manual_seed(seed)
    name = getattr(cls, "__name__", "model")
    model = _run(cls, V, where=f"{name}({V})", hint=_construct_hint)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x, y = get_batch(train, batch_size, block_size, gen)
        loss = _run(step_fn, model, optimizer, x, y, where=f"train_step at step {step}")
        if not isinstance(loss, float) or not math.isfinite(loss):
            fail(
                f"train_step returned {show(loss)} at step {step}; run the train_step test above first."
            )
    with torch.no_grad():
        logits, _ = model(val[None, :-1], val[None, 1:])
        if not isinstance(logits, torch.Tensor) or logits.shape != (1, len(val) - 1, V):
            fail(
                "the model's logits have the wrong type or shape; run the neural bigram test above first."
            )
        neural = float(F.cross_entropy(logits.reshape(-1, V).float(), val[1:]))
    gap = neural - target
    if abs(gap) > tolerance:
        fail(
            f"after {steps} steps your {name} has validation loss {neural:.4f} nats, but the count "
            f"bigram has {target:.4f}: {abs(gap):.4f} apart, more than {tolerance}.\nHint: run the "
            "tests of NeuralBigram and train_step above; both must pass before this one can."
        )
    print(
        f"✓ neural bigram after {steps} steps: validation loss {neural:.4f} nats; count bigram "
        f"{target:.4f}; difference {gap:+.4f} (allowed ±{tolerance})"
    )
