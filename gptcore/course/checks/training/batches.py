"""Lesson 6, exercise 1: ``get_batch``, random windows of a token stream as (inputs, targets)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import torch

from gptcore.train import get_batch as _ref_get_batch

from ..report import call, check, diagnose, fail, passed, show, type_name, wrong
from ..tensors import check_tensor, generator
from .models import Batch, generator_text

_BATCH_ERRORS = {
    IndexError: "off-by-one in the window start range? A window needs block_size + 1 tokens, "
    "so starts go from 0 to len(data) - block_size - 1: torch.randint(len(data) - block_size, "
    "(batch_size,), generator=generator).",
    RuntimeError: "off-by-one in the window start range? A window that runs past the end of "
    "data comes out short, and torch.stack needs equal lengths; with exactly one window, "
    "torch.randint(0, ...) has nothing to draw. Starts go from 0 to len(data) - block_size - 1: "
    "torch.randint(len(data) - block_size, (batch_size,), generator=generator).",
}


def _batch_mistakes(
    data: torch.Tensor, batch_size: int, block_size: int, state: torch.Tensor
) -> list[tuple[str, Callable[[], Batch]]]:
    """(hint, compute) pairs; each compute returns (x, y) as the mistake would."""
    n = len(data)

    def starts(high: int) -> torch.Tensor:
        g = torch.Generator()
        g.set_state(state)
        return torch.randint(high, (batch_size,), generator=g)

    def windows(ix: torch.Tensor, shift: int = 1) -> Batch:
        xs = torch.stack([data[i : i + block_size] for i in ix.tolist()]).long()
        ys = torch.stack([data[i + shift : i + shift + block_size] for i in ix.tolist()]).long()
        return xs, ys

    ix = starts(n - block_size)
    return [
        (
            "targets not shifted by one: y[b, t] must be the token that FOLLOWS x[b, t], so "
            "y = data[i + 1 : i + 1 + block_size] while x = data[i : i + block_size].",
            lambda: windows(ix, shift=0),
        ),
        (
            "return (x, y): the inputs first, then the targets.",
            lambda: (windows(ix)[1], windows(ix)[0]),
        ),
        (
            "off-by-one in the window start range: starts go from 0 to len(data) - block_size - 1 "
            "inclusive, that is torch.randint(len(data) - block_size, ...); you left out the last "
            "window.",
            lambda: windows(starts(n - block_size - 1)),
        ),
        (
            "off-by-one in the window start range: a window needs block_size + 1 tokens (x and "
            "its shifted y), so starts go up to len(data) - block_size - 1: "
            "torch.randint(len(data) - block_size, ...).",
            lambda: windows(starts(n - block_size + 1)),
        ),
        (
            "a window starting near the end runs past the data: draw starts with "
            "torch.randint(len(data) - block_size, ...).",
            lambda: windows(starts(n)),
        ),
    ]


@check()
def get_batch(
    get_batch: Callable[..., Batch],
    *,
    seed: int = 0,
    cases: int = 20,
) -> None:
    """Check ``get_batch(data, batch_size, block_size, generator) -> (x, y)``.

    Each input is drawn twice with the same generator, so a function that
    draws more (or less) than ``torch.randint(len(data) - block_size,
    (batch_size,), generator=generator)`` once per call gives different
    batches the second time; calls to ``torch.randint`` are counted, so that
    one call per window (which draws the same numbers) breaks "exactly one
    call" visibly. The edge cases (a single window, data stored as int32,
    uint8 or int16, which must come back as int64) are in every run.
    """
    inputs = [(torch.arange(100, 120), 4, 5, 0)]  # hand-checkable: the values are positions + 100
    inputs += [
        (torch.arange(50, 56), 3, 5, 1),  # exactly one window: every start is 0
        (torch.arange(200, 230), 1, 1, 2),  # one-token windows, one row
        (torch.arange(300, 400).to(torch.int32), 4, 8, 3),  # stored as int32
        (torch.arange(0, 250).to(torch.uint8), 2, 16, 4),  # stored as uint8
        (torch.randint(65, (3000,), generator=generator(5)).to(torch.int16), 64, 32, 6),
    ]
    rng = random.Random(seed)
    for _ in range(cases):
        n = rng.randint(8, 400)
        block_size, batch_size = rng.randint(1, min(24, n - 1)), rng.randint(1, 8)
        data = torch.randperm(n, generator=generator(rng.randrange(2**31))) + 1000  # distinct ids
        inputs.append((data, batch_size, block_size, rng.randrange(2**31)))
    for data, batch_size, block_size, gen_seed in inputs:
        _check_batch_case(get_batch, data, batch_size, block_size, gen_seed)
    passed("get_batch", len(inputs))


def _check_batch_case(
    get_batch: Callable[..., Batch],
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    gen_seed: int,
) -> None:
    gen, ref_gen = generator(gen_seed), generator(gen_seed)
    before = data.clone()
    for draw in (1, 2):
        where = (
            f"get_batch({_data_text(data)}, batch_size={batch_size}, "
            f"block_size={block_size}, generator={generator_text(gen_seed)})"
            + (", called a second time with the same generator" if draw == 2 else "")
        )
        state = ref_gen.get_state()
        # Called through a closure, so that the check sees data itself and can name it
        # when it changes ("changed data") rather than "argument #1".
        with _counting_randint() as draws:
            got = call(
                lambda: get_batch(data, batch_size, block_size, gen),
                name="get_batch",
                where=where,
                error_hints=_BATCH_ERRORS,
            )
        if not torch.equal(data, before):
            fail(f"{where} changed data. Read windows from it; never write into it.")
        x, y = _check_batch_pair(got, where, batch_size, block_size, data.dtype)
        ex, ey = _ref_get_batch(data, batch_size, block_size, ref_gen)
        if torch.equal(x, ex) and torch.equal(y, ey):
            if len(draws) > 1:
                # One draw per window gives the same numbers as one draw of batch_size (the
                # generator's stream is the same), so only counting the calls sees it.
                fail(
                    f"{where} gave the right batch but called torch.randint {len(draws)} "
                    "times; the docstring asks for exactly one call that draws every start "
                    "at once: ix = torch.randint(len(data) - block_size, (batch_size,), "
                    "generator=generator)."
                )
            continue
        hint_text = diagnose(
            (x, y),
            _batch_mistakes(data, batch_size, block_size, state),
            same=lambda got, answer: all(torch.equal(a, b) for a, b in zip(answer, got)),
        ) or _batch_hint(data, x, y, ex, block_size, draw)
        name, want, have = ("x", ex, x) if not torch.equal(x, ex) else ("y", ey, y)
        wrong(
            f"{name} from {where}",
            want.tolist(),
            have.tolist(),
            hint_text=hint_text or "compare your code with the docstring, step by step.",
        )


@contextlib.contextmanager
def _counting_randint() -> Iterator[list[tuple[Any, ...]]]:
    """Record every call to ``torch.randint`` (through the torch module) while inside."""
    calls: list[tuple[Any, ...]] = []
    original = torch.randint

    def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(args)
        return original(*args, **kwargs)

    torch.randint = counted  # type: ignore[assignment]
    try:
        yield calls
    finally:
        torch.randint = original  # type: ignore[assignment]


def _check_batch_pair(
    got: Any, where: str, batch_size: int, block_size: int, data_dtype: torch.dtype
) -> Batch:
    if not isinstance(got, tuple) or len(got) != 2:
        fail(
            f"{where} must return a tuple (x, y) of two tensors, but it returned a "
            f"{type_name(got)}: {show(got, 80)}"
        )
    shape_hints = {
        (batch_size, block_size + 1): "Did you return the whole window of block_size + 1 "
        "tokens? Split it: x = window[:, :-1], y = window[:, 1:].",
        (block_size, batch_size): "The batch comes first: stack the windows along dim 0.",
        (block_size,): "Stack batch_size windows into a (batch_size, block_size) tensor.",
    }
    out = []
    for name, t in zip(("x", "y"), got):
        what = f"{name} from {where}"
        # Any integer dtype passes here; the dtype gets its own message below.
        dtype = t.dtype if isinstance(t, torch.Tensor) else torch.int64
        t = check_tensor(
            t,
            what,
            shape=(batch_size, block_size),
            dtype=dtype,
            shape_hint=lambda shape: shape_hints.get(shape, ""),
        )
        if t.dtype != torch.int64:
            fail(
                f"{what} must have dtype torch.int64 (long), but it has {t.dtype}. Token ids "
                f"are often stored in a smaller integer type to save memory (this data is "
                f"{data_dtype}), but nn.Embedding and cross_entropy need int64: convert "
                "with .long()."
            )
        out.append(t)
    return out[0], out[1]


def _data_text(data: torch.Tensor) -> str:
    values = data.tolist()
    body = (
        show(values, 50)
        if len(values) <= 12
        else f"[{values[0]}, {values[1]}, … {len(values)} ids]"
    )
    dtype = "" if data.dtype == torch.int64 else f", dtype={data.dtype}"
    return f"tensor({body}{dtype})"


def _starts_of(rows: torch.Tensor, data: torch.Tensor, width: int) -> list[int] | None:
    """Where each row starts as a contiguous window of ``data``, if every row is one.

    Only meaningful when data's values are distinct (the random cases)."""
    position = {v: i for i, v in enumerate(data.tolist())}
    starts = []
    for row in rows.tolist():
        if not row or row[0] not in position:
            return None
        s = position[row[0]]
        if data[s : s + width].tolist() != row:
            return None
        starts.append(s)
    return starts


def _batch_hint(
    data: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    ex: torch.Tensor,
    block_size: int,
    draw: int,
) -> str:
    """A hint from the shape of the wrong batch, when no known mistake reproduces it."""
    x_starts = _starts_of(x, data, block_size)
    xy_starts = _starts_of(torch.cat([x, y[:, -1:]], dim=1), data, block_size + 1)
    if x_starts is not None and xy_starts is None:
        return (
            "each x row is a window of data, but y is not that window shifted by one: "
            "y = data[i + 1 : i + 1 + block_size]."
        )
    if xy_starts is not None:
        if draw == 2:
            return (
                "the first call was right but the second was not: draw from the generator "
                "exactly once per call, torch.randint(len(data) - block_size, (batch_size,), "
                "generator=generator), so that the same generator gives the same batches."
            )
        return (
            "your windows are real windows of data, but not the ones the generator picks: "
            "draw the starts with torch.randint(len(data) - block_size, (batch_size,), "
            "generator=generator), once, and take window b from start ix[b] (a different "
            "random function or a missing generator=generator gives other starts)."
        )
    if torch.equal(x, ex):
        return "x is right; y must be the same windows shifted one token to the right."
    return ""
