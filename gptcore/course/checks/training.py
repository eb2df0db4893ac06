"""Checks for lesson 6 (training): batches, the learning-rate schedule, one step, evaluation.

Each check runs the learner's function and gptcore's reference
(``gptcore.train``) on the same seeded inputs: the same data and generator
seed for ``get_batch``, the same steps for ``lr_at``, and for
``optimization_step`` and ``estimate_loss`` two copies of one small seeded
GPT under the same torch random state (so dropout draws the same masks).
Results are compared for type, dtype, shape and value. ``cases`` adds random
inputs drawn from ``random.Random(seed)``; ``edge_cases=True`` adds the edges
of the contract (a single window, narrow integer dtypes, no warmup, no decay
phase, clipping disabled, batches given as a generator, a model that starts in
eval mode); the hidden tests use it.

On a wrong answer the message names the call, shows what was expected and
what came back, and, where a known mistake reproduces the wrong answer (the
mistake is replayed on a fresh copy of the same model), says which mistake it
is. Spies record how the function drives the model: which mode it is in, and
whether gradients, ``autocast`` and ``no_sync`` are on, at every forward and
backward.

Every check runs inside ``torch.random.fork_rng``, so it leaves the notebook's
random state as it found it.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import torch
from torch import nn

from gptcore.model.gpt import GPT, GPTConfig
from gptcore.train import configure_optimizer
from gptcore.train import estimate_loss as _ref_estimate_loss
from gptcore.train import get_batch as _ref_get_batch
from gptcore.train import lr_at as _ref_lr_at
from gptcore.train import optimization_step as _ref_optimization_step

from . import call, fail, passed, show, type_name

__all__ = ["estimate_loss", "get_batch", "lr_schedule", "optimization_step"]

Batch = tuple[torch.Tensor, torch.Tensor]


# ------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _rng(seed: int) -> Iterator[None]:
    """Seed torch for the check, and give the notebook its random state back afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one CPU thread, then restore the notebook's setting. The checks' models are
    tiny; for them, synchronising threads costs more than it saves (about 5x on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _hint(text: str) -> str:
    return f"\nHint: {text}" if text else ""


def _wrong(where: str, expected: Any, got: Any, hint: str = "") -> NoReturn:
    fail(
        f"{where} is wrong.\n  expected: {expected}\n  got:      {got}"
        + _hint(hint or "compare your code with the docstring, step by step.")
    )


def _tensor(value: Any, what: str, shape: tuple[int, ...], dtype: torch.dtype, hint: str = ""):
    """``value`` after checking it is a tensor of this shape and dtype."""
    if not isinstance(value, torch.Tensor):
        fail(f"{what} must be a torch.Tensor, but it is a {type_name(value)}: {show(value)}")
    if tuple(value.shape) != shape:
        fail(f"{what} must have shape {shape}, but it has shape {tuple(value.shape)}." + hint)
    if value.dtype != dtype:
        fail(f"{what} must have dtype {dtype}, but it has dtype {value.dtype}.")
    return value


def _float(value: Any, what: str) -> float:
    """``value`` as a plain float, after checking it is a finite Python float."""
    if isinstance(value, torch.Tensor):
        fail(
            f"{what} must be a Python float, but it is a torch.Tensor: {show(value, 60)}. "
            "Convert it with float(...) (a tensor that comes out of a forward pass also keeps "
            "the whole autograd graph alive)."
        )
    if isinstance(value, bool) or not isinstance(value, float):
        fail(f"{what} must be a float, but it is a {type_name(value)}: {show(value, 60)}")
    if not math.isfinite(value):
        fail(f"{what} must be a finite number, but it is {value}")
    return float(value)


def _close(a: float, b: float, rel: float = 1e-5, abs_: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def _same_params(a: nn.Module, b: nn.Module, rtol: float = 1e-4, atol: float = 1e-7) -> bool:
    return all(
        torch.allclose(p, q, rtol=rtol, atol=atol)
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def _max_param_diff(a: nn.Module, b: nn.Module) -> float:
    with torch.no_grad():
        return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


def _tiny_gpt(seed: int, dropout: float) -> GPT:
    """A GPT of a few thousand parameters, seeded: the checks' model."""
    config = GPTConfig(
        block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16, dropout=dropout
    )
    with _rng(seed):
        return GPT(config)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gen_text(seed: int) -> str:
    return f"torch.Generator().manual_seed({seed})"


class _Spy:
    """A stand-in for ``autocast`` or ``no_sync``: a function that returns a
    context manager, and records whether it is active right now."""

    def __init__(self) -> None:
        self.active = False
        self.entries = 0

    def __call__(self) -> contextlib.AbstractContextManager[None]:
        return self._context()

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        self.entries += 1
        self.active = True
        try:
            yield
        finally:
            self.active = False


class _Recorder:
    """Hooks on a model: per forward pass (mode, grad enabled, spies active), per backward."""

    def __init__(self, model: nn.Module, autocast: _Spy | None, no_sync: _Spy | None) -> None:
        self.forwards: list[dict[str, bool]] = []
        self.backwards: list[dict[str, bool]] = []
        self._autocast, self._no_sync = autocast, no_sync
        self._handles = [model.register_forward_pre_hook(self._on_forward)]
        # ln_f's gain is used by every forward and is not tied to anything: its
        # gradient hook fires exactly once per backward pass.
        self._handles.append(model.transformer.ln_f.weight.register_hook(self._on_backward))

    def _state(self) -> dict[str, bool]:
        return {
            "autocast": bool(self._autocast and self._autocast.active),
            "no_sync": bool(self._no_sync and self._no_sync.active),
        }

    def _on_forward(self, module: nn.Module, args: Any) -> None:
        self.forwards.append(
            {"training": module.training, "grad": torch.is_grad_enabled(), **self._state()}
        )

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backwards.append(self._state())

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _diagnose(matches: Callable[[Callable[[], Any]], bool], mistakes) -> str:
    """The hints of the known mistakes whose result ``matches`` accepts."""
    hints = []
    for compute, hint in mistakes:
        try:
            if matches(compute) and hint not in hints:
                hints.append(hint)
        except Exception:
            continue  # that mistake would have crashed here; it is not the one
    return "\n  or: ".join(hints)


# ------------------------------------------------------------------ get_batch
_BATCH_ERRORS = {
    IndexError: "off-by-one in the window start range? A window needs block_size + 1 tokens, "
    "so starts go from 0 to len(data) - block_size - 1: torch.randint(len(data) - block_size, "
    "(batch_size,), generator=generator).",
    RuntimeError: "off-by-one in the window start range? A window that runs past the end of "
    "data comes out short, and torch.stack needs equal lengths; with exactly one window, "
    "torch.randint(0, ...) has nothing to draw. Starts go from 0 to len(data) - block_size - 1: "
    "torch.randint(len(data) - block_size, (batch_size,), generator=generator).",
}


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


def _batch_mistakes(data, batch_size, block_size, state):
    """(compute, hint) pairs; each compute returns (x, y) as the mistake would."""
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
            lambda: windows(ix, shift=0),
            "targets not shifted by one: y[b, t] must be the token that FOLLOWS x[b, t], so "
            "y = data[i + 1 : i + 1 + block_size] while x = data[i : i + block_size].",
        ),
        (
            lambda: (windows(ix)[1], windows(ix)[0]),
            "return (x, y): the inputs first, then the targets.",
        ),
        (
            lambda: windows(starts(n - block_size - 1)),
            "off-by-one in the window start range: starts go from 0 to len(data) - block_size - 1 "
            "inclusive, that is torch.randint(len(data) - block_size, ...); you left out the last "
            "window.",
        ),
        (
            lambda: windows(starts(n - block_size + 1)),
            "off-by-one in the window start range: a window needs block_size + 1 tokens (x and "
            "its shifted y), so starts go up to len(data) - block_size - 1: "
            "torch.randint(len(data) - block_size, ...).",
        ),
        (
            lambda: windows(starts(n)),
            "a window starting near the end runs past the data: draw starts with "
            "torch.randint(len(data) - block_size, ...).",
        ),
    ]


def _check_batch_pair(
    got: Any, where: str, batch_size: int, block_size: int, data_dtype: torch.dtype
) -> Batch:
    if not isinstance(got, tuple) or len(got) != 2:
        fail(
            f"{where} must return a tuple (x, y) of two tensors, but it returned a "
            f"{type_name(got)}: {show(got, 80)}"
        )
    shape = (batch_size, block_size)
    shape_hints = {
        (batch_size, block_size + 1): " Did you return the whole window of block_size + 1 "
        "tokens? Split it: x = window[:, :-1], y = window[:, 1:].",
        (block_size, batch_size): " The batch comes first: stack the windows along dim 0.",
        (block_size,): " Stack batch_size windows into a (batch_size, block_size) tensor.",
    }
    for name, t in zip(("x", "y"), got):
        what = f"{name} from {where}"
        if not isinstance(t, torch.Tensor):
            fail(f"{what} must be a torch.Tensor, but it is a {type_name(t)}: {show(t, 80)}")
        _tensor(t, what, shape, t.dtype, shape_hints.get(tuple(t.shape), ""))
        if t.dtype != torch.int64:
            fail(
                f"{what} must have dtype torch.int64 (long), but it has {t.dtype}. Token ids "
                f"are often stored in a smaller integer type to save memory (this data is "
                f"{data_dtype}), but nn.Embedding and cross_entropy need int64: convert "
                "with .long()."
            )
    return got[0], got[1]


def get_batch(
    get_batch: Callable[..., Batch],
    *,
    seed: int = 0,
    cases: int = 20,
    edge_cases: bool = False,
) -> None:
    """Check ``get_batch(data, batch_size, block_size, generator) -> (x, y)``.

    Each input is drawn twice with the same generator, so a function that
    draws more (or less) than ``torch.randint(len(data) - block_size,
    (batch_size,), generator=generator)`` once per call gives different
    batches the second time.
    """
    inputs = [(torch.arange(100, 120), 4, 5, 0)]  # hand-checkable: the values are positions + 100
    if edge_cases:
        inputs += [
            (torch.arange(50, 56), 3, 5, 1),  # exactly one window: every start is 0
            (torch.arange(200, 230), 1, 1, 2),  # one-token windows, one row
            (torch.arange(300, 400).to(torch.int32), 4, 8, 3),  # stored as int32
            (torch.arange(0, 250).to(torch.uint8), 2, 16, 4),  # stored as uint8
            (torch.randint(65, (3000,), generator=_gen(5)).to(torch.int16), 64, 32, 6),
        ]
    rng = random.Random(seed)
    for _ in range(cases):
        n = rng.randint(8, 400)
        block_size, batch_size = rng.randint(1, min(24, n - 1)), rng.randint(1, 8)
        data = torch.randperm(n, generator=_gen(rng.randrange(2**31))) + 1000  # distinct ids
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
    gen, ref_gen = _gen(gen_seed), _gen(gen_seed)
    before = data.clone()
    for draw in (1, 2):
        where = (
            f"get_batch({_data_text(data)}, batch_size={batch_size}, "
            f"block_size={block_size}, generator={_gen_text(gen_seed)})"
            + (", called a second time with the same generator" if draw == 2 else "")
        )
        state = ref_gen.get_state()
        got = call(
            get_batch,
            data,
            batch_size,
            block_size,
            gen,
            name="get_batch",
            where=where,
            error_hints=_BATCH_ERRORS,
        )
        if not torch.equal(data, before):
            fail(f"{where} changed data. Read windows from it; never write into it.")
        x, y = _check_batch_pair(got, where, batch_size, block_size, data.dtype)
        ex, ey = _ref_get_batch(data, batch_size, block_size, ref_gen)
        if torch.equal(x, ex) and torch.equal(y, ey):
            continue
        hint = _diagnose(
            lambda compute, got=(x, y): all(torch.equal(a, b) for a, b in zip(compute(), got)),
            _batch_mistakes(data, batch_size, block_size, state),
        ) or _batch_hint(data, x, y, ex, block_size, draw)
        name, want, have = ("x", ex, x) if not torch.equal(x, ex) else ("y", ey, y)
        _wrong(f"{name} from {where}", show(want.tolist(), 200), show(have.tolist(), 200), hint)


def _batch_hint(data, x, y, ex, block_size, draw) -> str:
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


# ------------------------------------------------------------------ lr schedule
def _cosine(step, lr, min_lr, w, d, *, start=None, length=None, scale=None, angle=math.pi):
    start = w if start is None else start
    length = (d - w) if length is None else length
    progress = (step - start) / max(1, length)
    top = (lr - min_lr) if scale is None else scale
    return min_lr + 0.5 * (1.0 + math.cos(angle * progress)) * top


def _schedule(warm, decay, after):
    """An lr_at built from its three phases (each a function of step, lr, min_lr, w, d)."""

    def lr_at(step, lr, min_lr, w, d):
        if step < w:
            return warm(step, lr, min_lr, w, d)
        if step >= d:
            return after(step, lr, min_lr, w, d)
        return decay(step, lr, min_lr, w, d)

    return lr_at


def _ref(step, lr, min_lr, w, d):
    return _ref_lr_at(step, lr=lr, min_lr=min_lr, warmup_iters=w, decay_iters=d)


def _ref_warm(s, lr, mn, w, d):
    return lr * (s + 1) / w


def _ref_decay(s, lr, mn, w, d):
    return _cosine(s, lr, mn, w, d)


def _ref_after(s, lr, mn, w, d):
    return mn


def _lr_mistakes():
    ref_warm, ref_decay, ref_after = _ref_warm, _ref_decay, _ref_after
    return [
        (
            _schedule(lambda s, lr, mn, w, d: lr * s / w, ref_decay, ref_after),
            "warmup starting at 0 instead of lr / warmup_iters: the warmup rate is "
            "lr * (step + 1) / warmup_iters, so step 0 already takes a small step and step "
            "warmup_iters - 1 reaches lr.",
        ),
        (
            _schedule(lambda s, lr, mn, w, d: lr * (s + 1) / (w + 1), ref_decay, ref_after),
            "the warmup rate is lr * (step + 1) / warmup_iters: it reaches lr exactly at step "
            "warmup_iters - 1.",
        ),
        (
            lambda s, lr, mn, w, d: (
                ref_warm(s, lr, mn, w, d) if s <= w and s < d else _ref(s, lr, mn, w, d)
            ),
            "step == warmup_iters already belongs to the cosine (which starts at lr): warm up "
            "only while step < warmup_iters.",
        ),
        (
            _schedule(ref_warm, lambda s, lr, mn, w, d: _cosine(s, lr, 0.0, w, d), ref_after),
            "cosine not reaching min_lr: the cosine goes from lr down to min_lr, "
            "min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr); yours goes to 0.",
        ),
        (
            _schedule(
                ref_warm, lambda s, lr, mn, w, d: _cosine(s, lr, mn, w, d, scale=lr), ref_after
            ),
            "scale the cosine by (lr - min_lr), not by lr: min_lr + 0.5 * (1 + cos(pi * progress)) "
            "* (lr - min_lr) starts at lr and ends at min_lr.",
        ),
        (
            _schedule(
                ref_warm,
                lambda s, lr, mn, w, d: _cosine(s, lr, mn, w, d, start=0, length=d),
                ref_after,
            ),
            "progress starts at 0 when warmup ends: progress = (step - warmup_iters) / "
            "(decay_iters - warmup_iters).",
        ),
        (
            _schedule(
                ref_warm, lambda s, lr, mn, w, d: _cosine(s, lr, mn, w, d, length=d), ref_after
            ),
            "cosine not reaching min_lr at decay_iters: divide by the length of the decay phase, "
            "progress = (step - warmup_iters) / (decay_iters - warmup_iters), so progress is 1 at "
            "decay_iters.",
        ),
        (
            _schedule(ref_warm, ref_decay, lambda s, lr, mn, w, d: _cosine(s, lr, mn, w, d)),
            "after decay_iters the rate stays at min_lr; a cosine that keeps going climbs back "
            "up towards lr.",
        ),
        (
            _schedule(ref_warm, ref_decay, lambda s, lr, mn, w, d: 0.0),
            "after decay_iters the rate is min_lr, not 0.",
        ),
        (
            _schedule(ref_warm, ref_decay, lambda s, lr, mn, w, d: lr),
            "after decay_iters the rate is min_lr, not lr.",
        ),
        (
            _schedule(
                ref_warm,
                lambda s, lr, mn, w, d: lr - (lr - mn) * (s - w) / max(1, d - w),
                ref_after,
            ),
            "the decay follows half a cosine, 0.5 * (1 + cos(pi * progress)), not a straight line.",
        ),
        (
            _schedule(
                ref_warm, lambda s, lr, mn, w, d: _cosine(s, lr, mn, w, d, angle=1.0), ref_after
            ),
            "multiply progress by pi: cos(pi * progress) goes from 1 to -1 as progress goes "
            "from 0 to 1.",
        ),
        (
            _schedule(
                ref_warm,
                lambda s, lr, mn, w, d: _cosine(s, lr, mn, w, d, angle=2 * math.pi),
                ref_after,
            ),
            "half a cosine period, cos(pi * progress), not a whole one, cos(2 * pi * progress).",
        ),
        (
            lambda s, lr, mn, w, d: mn if s >= d else _cosine(s, lr, mn, w, d, start=0, length=d),
            "warm up first: while step < warmup_iters the rate is lr * (step + 1) / warmup_iters.",
        ),
    ]


def _lr_configs(edge_cases: bool) -> list[tuple[float, float, int, int]]:
    configs = [(1.0, 0.1, 10, 110)]  # hand-checkable: lr 0.1, 0.2, ... 1.0, then down to 0.1
    if edge_cases:
        configs += [
            (6e-4, 6e-5, 0, 50),  # no warmup: the cosine starts at step 0
            (1e-3, 1e-4, 20, 20),  # no decay phase: warmup, then min_lr
            (3e-4, 3e-4, 5, 40),  # min_lr == lr: constant after warmup
            (1e-2, 0.0, 1, 7),  # one warmup step, decay to 0
            (2e-3, 2e-4, 50, 5000),  # the CPU recipe's shape, long
        ]
    return configs


def _lr_steps(w: int, d: int, rng: random.Random) -> list[int]:
    if d <= 400:
        return list(range(0, d + 25))
    picks = {0, 1, w - 1, w, w + 1, d - 1, d, d + 1, d + 1000} | {
        rng.randrange(d + 50) for _ in range(60)
    }
    return sorted(s for s in picks if s >= 0)


def lr_schedule(
    lr_at: Callable[..., float],
    *,
    seed: int = 0,
    cases: int = 20,
    edge_cases: bool = False,
) -> None:
    """Check ``lr_at(step, *, lr, min_lr, warmup_iters, decay_iters) -> float``.

    Every step of each schedule (sampled for long ones) is compared with
    gptcore's ``lr_at`` (relative tolerance 1e-6).
    """
    rng = random.Random(seed)
    configs = _lr_configs(edge_cases)
    for _ in range(cases):
        lr = 10 ** rng.uniform(-4.5, -1)
        min_lr = lr * rng.choice([0.0, 0.01, 0.1, 0.1, 0.5, rng.random()])
        w = rng.randint(1, 60)
        configs.append((lr, min_lr, w, w + rng.randint(1, 300)))
    n = 0
    for lr, min_lr, w, d in configs:
        steps = _lr_steps(w, d, rng)
        _check_lr_config(lr_at, lr, min_lr, w, d, steps)
        n += len(steps)
    passed("lr_at", n)


_LR_ERRORS = {
    TypeError: "lr_at(step, *, lr, min_lr, warmup_iters, decay_iters): the step, then four "
    "keyword arguments.",
    ZeroDivisionError: "with decay_iters == warmup_iters there is no decay phase: from step "
    "decay_iters on, return min_lr before computing progress (test step >= decay_iters, not "
    ">), or divide by max(1, decay_iters - warmup_iters).",
}


def _check_lr_config(
    lr_at: Callable[..., float], lr: float, min_lr: float, w: int, d: int, steps: list[int]
) -> None:
    kw = dict(lr=lr, min_lr=min_lr, warmup_iters=w, decay_iters=d)
    args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    got: dict[int, float] = {}
    for step in steps:
        where = f"lr_at({step}, {args})"
        value = call(
            lambda s: lr_at(s, **kw), step, name="lr_at", where=where, error_hints=_LR_ERRORS
        )
        got[step] = _float(value, f"the result of {where}")
    for step in steps:
        expected = _ref(step, lr, min_lr, w, d)
        if _close(got[step], expected, rel=1e-6, abs_=1e-12):
            continue

        def whole_curve(compute: Callable[..., float]) -> bool:
            return all(_close(compute(s, lr, min_lr, w, d), got[s], 1e-6, 1e-12) for s in steps)

        def this_step(compute: Callable[..., float], step: int = step) -> bool:
            return _close(compute(step, lr, min_lr, w, d), got[step], 1e-6, 1e-12)

        # Prefer a mistake that explains the whole curve; else one that explains this step.
        hint = _diagnose(whole_curve, _lr_mistakes()) or _diagnose(this_step, _lr_mistakes())
        phase = (
            "warmup (step < warmup_iters)"
            if step < w
            else "after the decay (step >= decay_iters)"
            if step >= d
            else "cosine decay"
        )
        _wrong(
            f"lr_at({step}, {args}), in the {phase} phase,", repr(expected), repr(got[step]), hint
        )


# ---------------------------------------------------------- optimization_step
_STEP_ERRORS = {
    TypeError: "batches may be any iterable, even a generator, which has no len() and no "
    "indexing: start with batches = list(batches). Keep the signature optimization_step(model, "
    "optimizer, batches, grad_clip=1.0, *, autocast=contextlib.nullcontext, no_sync=None); "
    "autocast and no_sync are functions that RETURN a context manager: `with autocast():`.",
    AttributeError: "autocast and no_sync are functions that return a context manager: write "
    "`with autocast():` and `with no_sync():`, with the parentheses.",
    RuntimeError: "call backward() once per micro-batch, on that micro-batch's own loss; "
    "a second backward through the same graph fails.",
}


def _variant_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[Batch],
    grad_clip: float,
    *,
    divide: bool = True,
    clip_each: bool = False,
    zero: bool = True,
    zero_each: bool = False,
    train_mode: bool = True,
    loss_kind: str = "mean",
    norm_after: bool = False,
    do_step: bool = True,
    clip_zero: bool = False,
    step_then_clip: bool = False,
) -> tuple[float, float]:
    """optimization_step with one configurable mistake, for diagnosis."""
    batches = list(batches)
    if train_mode:
        model.train()
    if zero:
        optimizer.zero_grad(set_to_none=True)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    losses = []
    for x, y in batches:
        if zero_each:
            optimizer.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        (loss / len(batches) if divide else loss).backward()
        losses.append(float(loss.detach()))
        if clip_each and grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if step_then_clip and do_step:
        optimizer.step()
    live = [p for p in params if p.grad is not None]
    norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in live])))
    if grad_clip > 0 or clip_zero:
        torch.nn.utils.clip_grad_norm_(live, grad_clip)
    if norm_after:
        norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in live])))
    if do_step and not step_then_clip:
        optimizer.step()
    loss = {"mean": sum(losses) / len(losses), "sum": sum(losses), "last": losses[-1]}[loss_kind]
    return loss, norm


_STEP_MISTAKES = [
    (
        dict(divide=False),
        "forgot to divide the loss by the number of micro-batches: backward() ADDS gradients "
        "up, so (loss / len(batches)).backward() makes the total the gradient of the mean loss.",
    ),
    (
        dict(clip_each=True),
        "clipped before accumulating all micro-batches: clip once, after the last backward(), "
        "when the gradient is complete.",
    ),
    (
        dict(zero=False),
        "forgot zero_grad: the gradients from before the call were still there and got added "
        "to. Call optimizer.zero_grad() first.",
    ),
    (
        dict(zero_each=True),
        "zero the gradients once, before the first micro-batch, not before each one: zeroing "
        "inside the loop throws away the micro-batches already accumulated.",
    ),
    (
        dict(train_mode=False),
        "call model.train() first: the step must run in training mode (dropout on), whatever "
        "mode the model was left in.",
    ),
    (
        dict(loss_kind="sum"),
        "return the MEAN of the micro-batch losses (the loss of the whole batch), not their sum.",
    ),
    (
        dict(loss_kind="last"),
        "return the mean of all the micro-batch losses, not the last one.",
    ),
    (
        dict(norm_after=True),
        "return the gradient norm from BEFORE clipping (clip_grad_norm_ returns it); after "
        "clipping it is never above grad_clip, which hides a large gradient.",
    ),
    (
        dict(do_step=False),
        "forgot optimizer.step(): the parameters must change.",
    ),
    (
        dict(clip_zero=True),
        "grad_clip=0 disables clipping; clip_grad_norm_(params, 0) would scale every gradient "
        "to 0. Clip only if grad_clip > 0 (and then compute the norm yourself).",
    ),
    (
        dict(step_then_clip=True),
        "clip before optimizer.step(): clipping afterwards changes nothing that was applied.",
    ),
]


def _make_optimizer(kind: str, model: nn.Module) -> torch.optim.Optimizer:
    if kind == "sgd":  # plain SGD: the update is the gradient itself, so its size shows
        return torch.optim.SGD(model.parameters(), lr=0.5)
    return configure_optimizer(model, 1e-2, 0.1, (0.9, 0.95))


def _fill_grads(model: nn.Module, seed: int) -> None:
    """Leftover gradients from an earlier step, as a training loop would have them."""
    g = _gen(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 0.3


def _random_batches(rng: random.Random, n: int, batch_size: int, block_size: int) -> list[Batch]:
    g = _gen(rng.randrange(2**31))
    return [
        (
            torch.randint(32, (batch_size, block_size), generator=g),
            torch.randint(32, (batch_size, block_size), generator=g),
        )
        for _ in range(n)
    ]


def _step_cases(rng: random.Random, cases: int, edge_cases: bool) -> list[dict[str, Any]]:
    base = dict(opt="sgd", clip=1.0, mode="eval", as_iter=False, spies=False, train_mode=False)
    out = [
        {**base, "n": 1, "clip": 100.0},  # one micro-batch, no clipping in effect
        {**base, "n": 3, "clip": 100.0},  # accumulation without clipping: the sizes show
        {**base, "n": 3, "clip": 0.05},  # accumulation, then clipping
        {**base, "n": 2, "opt": "adamw", "clip": 1.0, "spies": True},  # autocast, no_sync
    ]
    if edge_cases:
        out += [
            {**base, "n": 2, "clip": 0.0},  # clipping disabled
            {**base, "n": 4, "clip": 0.01, "opt": "adamw"},
            {**base, "n": 3, "clip": 0.5, "as_iter": True},  # batches from a generator
            {**base, "n": 1, "clip": 1.0, "spies": True},  # no_sync never used
            {**base, "n": 4, "clip": 0.0, "spies": True, "mode": "train"},
        ]
    for _ in range(cases):
        out.append(
            {
                **base,
                "n": rng.randint(1, 4),
                "clip": rng.choice([0.02, 0.1, 0.5, 1.0, 100.0]),
                "opt": rng.choice(["sgd", "adamw"]),
                "mode": rng.choice(["train", "eval"]),
                "spies": rng.random() < 0.3,
            }
        )
    for case in out:
        case.update(
            model_seed=rng.randrange(2**31),
            grad_seed=rng.randrange(2**31),
            torch_seed=rng.randrange(2**31),
            batches=_random_batches(rng, case["n"], rng.randint(1, 4), rng.randint(2, 16)),
        )
    return out


def _setup(case: dict[str, Any]) -> tuple[GPT, torch.optim.Optimizer]:
    model = _tiny_gpt(case["model_seed"], dropout=0.1)
    optimizer = _make_optimizer(case["opt"], model)
    _fill_grads(model, case["grad_seed"])
    model.train(case["mode"] == "train")
    return model, optimizer


def optimization_step(
    optimization_step: Callable[..., tuple[float, float]],
    *,
    seed: int = 0,
    cases: int = 4,
    edge_cases: bool = False,
) -> None:
    """Check ``optimization_step(model, optimizer, batches, grad_clip=1.0, *, autocast, no_sync)``.

    The learner's step and gptcore's run on two copies of one seeded GPT
    (dropout 0.1, started in eval mode, with gradients left over from an
    earlier step) under the same torch random state; the returned (loss,
    norm) and the updated parameters must agree. Plain SGD makes the size of
    the gradient visible in the update; AdamW is what training uses.
    """
    all_cases = _step_cases(random.Random(seed), cases, edge_cases)
    with _one_thread():
        for case in all_cases:
            _check_step_case(optimization_step, case)
    passed("optimization_step", len(all_cases))


def _run_step(fn: Callable[..., Any], case: dict[str, Any], model, optimizer, spies) -> Any:
    batches = case["batches"]
    arg = (xy for xy in batches) if case["as_iter"] else list(batches)
    kwargs = {"autocast": spies[0], "no_sync": spies[1]} if case["spies"] else {}
    with _rng(case["torch_seed"]):
        return fn(model, optimizer, arg, case["clip"], **kwargs)


def _mistaken_step(case: dict[str, Any], options: dict[str, Any]):
    model, optimizer = _setup(case)
    with _rng(case["torch_seed"]):
        result = _variant_step(model, optimizer, case["batches"], case["clip"], **options)
    return result, model


def _check_step_case(optimization_step: Callable[..., Any], case: dict[str, Any]) -> None:
    n, clip = case["n"], case["clip"]
    b, t = case["batches"][0][0].shape
    where = (
        f"optimization_step(model, {'SGD' if case['opt'] == 'sgd' else 'AdamW'} optimizer, "
        f"{'a generator of' if case['as_iter'] else 'a list of'} {n} micro-batch"
        f"{'es' if n > 1 else ''} of shape ({b}, {t}), grad_clip={clip!r}"
        + (", autocast=..., no_sync=..." if case["spies"] else "")
        + f"), model in {case['mode']} mode"
    )
    model, optimizer = _setup(case)
    spies = (_Spy(), _Spy())
    recorder = _Recorder(model, *spies) if case["spies"] else _Recorder(model, None, None)
    try:
        got = call(
            _run_step,
            optimization_step,
            case,
            model,
            optimizer,
            spies,
            name="optimization_step",
            where=where,
            error_hints=_STEP_ERRORS,
        )
    finally:
        recorder.remove()
    if not isinstance(got, tuple) or len(got) != 2:
        fail(
            f"{where} must return a tuple (loss, grad_norm) of two floats, but it returned "
            f"a {type_name(got)}: {show(got, 80)}"
        )
    loss = _float(got[0], f"the loss returned by {where}")
    norm = _float(got[1], f"the gradient norm returned by {where}")
    _check_step_spies(where, recorder, case)

    ref_model, ref_opt = _setup(case)
    ref_loss, ref_norm = _run_step(_ref_optimization_step, case, ref_model, ref_opt, spies)

    def matches(compute: Callable[[], Any]) -> bool:
        (m_loss, m_norm), m_model = compute()
        return _close(m_loss, loss) and _close(m_norm, norm, 1e-4) and _same_params(m_model, model)

    mistakes = [(lambda o=o: _mistaken_step(case, o), h) for o, h in _STEP_MISTAKES]
    if not _close(loss, ref_loss):
        hint = _diagnose(matches, mistakes)
        _wrong(f"the loss returned by {where}", repr(ref_loss), repr(loss), hint)
    if not _close(norm, ref_norm, 1e-4):
        hint = _diagnose(matches, mistakes) or (
            "return the global L2 norm of all the gradients, measured after the last "
            "backward() and before clipping: torch.nn.utils.clip_grad_norm_ returns it."
        )
        _wrong(f"the gradient norm returned by {where}", repr(ref_norm), repr(norm), hint)
    if not _same_params(model, ref_model):
        hint = _diagnose(matches, mistakes) or (
            "zero the gradients, accumulate (loss / len(batches)).backward() over every "
            "micro-batch, clip once if grad_clip > 0, then optimizer.step()."
        )
        diff = _max_param_diff(model, ref_model)
        _wrong(
            f"the parameters after {where}",
            "gptcore's update",
            f"parameters that differ from it by up to {diff:.3g}",
            hint,
        )


def _check_step_spies(where: str, recorder: _Recorder, case: dict[str, Any]) -> None:
    n = case["n"]
    forwards, backwards = recorder.forwards, recorder.backwards
    if len(forwards) != n:
        fail(
            f"{where} ran {len(forwards)} forward pass(es); expected {n}, one per micro-batch. "
            "Call model(x, y) once for each (x, y) (not model.forward(x, y), which skips "
            "PyTorch's hooks)."
        )
    if not all(f["training"] for f in forwards):
        fail(
            f"{where} ran a forward pass in eval mode. Call model.train() first: the step must "
            "train with dropout on, whatever mode the model was left in."
        )
    if not all(f["grad"] for f in forwards):
        fail(f"{where} ran a forward pass with gradients off; training needs them on.")
    if not case["spies"]:
        return
    if not all(f["autocast"] for f in forwards):
        fail(
            f"{where} ran a forward pass outside autocast. Run each forward inside "
            "`with autocast():`, so that on a GPU it runs in bfloat16."
        )
    want = [True] * (n - 1) + [False]
    if len(backwards) != n:
        fail(
            f"{where} ran {len(backwards)} backward pass(es); expected {n}: call "
            "(loss / len(batches)).backward() once per micro-batch, right after its forward."
        )
    if [f["no_sync"] for f in forwards] != want or [b["no_sync"] for b in backwards] != want:
        seen = [f["no_sync"] for f in forwards]
        fail(
            f"{where}: no_sync() must be active around the forward and backward of every "
            f"micro-batch except the last, that is {want}; yours was active for the forwards "
            f"{seen} and the backwards {[b['no_sync'] for b in backwards]}. The last "
            "micro-batch runs without it, so that the gradients are synchronised once, when "
            "they are complete."
        )


# ---------------------------------------------------------------- estimate_loss
def _eval_cases(rng: random.Random, cases: int, edge_cases: bool) -> list[dict[str, Any]]:
    base = dict(mode="train", device=None, spies=False)
    out = [
        {**base, "iters": 1, "batch_size": 2, "block_size": 8},
        {**base, "iters": 4, "batch_size": 3, "block_size": 16},
        {**base, "iters": 3, "batch_size": 2, "block_size": 5, "device": "cpu", "spies": True},
    ]
    if edge_cases:
        out += [
            {**base, "iters": 2, "batch_size": 2, "block_size": 8, "mode": "eval"},
            {**base, "iters": 5, "batch_size": 1, "block_size": 1, "mode": "eval", "spies": True,
             "device": torch.device("cpu")},
            {**base, "iters": 1, "batch_size": 8, "block_size": 16},
        ]  # fmt: skip
    for _ in range(cases):
        out.append(
            {
                **base,
                "iters": rng.randint(1, 5),
                "batch_size": rng.randint(1, 4),
                "block_size": rng.randint(1, 16),
                "mode": rng.choice(["train", "eval"]) if edge_cases else "train",
                "spies": rng.random() < 0.5,
                "device": "cpu",
            }
        )
    for case in out:
        case.update(
            model_seed=rng.randrange(2**31),
            gen_seed=rng.randrange(2**31),
            torch_seed=rng.randrange(2**31),
            data=torch.randint(32, (rng.randint(40, 300),), generator=_gen(rng.randrange(2**31))),
        )
    return out


def _eval_mistakes(case: dict[str, Any], losses: list[float]):
    return [
        (lambda: sum(losses), "return the MEAN of the eval_iters batch losses, not their sum."),
        (lambda: losses[-1], "average the losses of all eval_iters batches, not just the last."),
        (lambda: losses[0], "draw a new batch in every iteration (get_batch inside the loop)."),
        (
            lambda: _eval_in_train_mode(case),
            "evaluation in train mode: call model.eval() first, so dropout is off.",
        ),
    ]


def _eval_in_train_mode(case: dict[str, Any]) -> float:
    model = _tiny_gpt(case["model_seed"], dropout=0.2)
    model.train()
    gen = _gen(case["gen_seed"])
    with _rng(case["torch_seed"]), torch.no_grad():
        losses = []
        for _ in range(case["iters"]):
            x, y = _ref_get_batch(case["data"], case["batch_size"], case["block_size"], gen)
            losses.append(float(model(x, y)[1]))
    return sum(losses) / len(losses)


def estimate_loss(
    estimate_loss: Callable[..., float],
    *,
    seed: int = 0,
    cases: int = 4,
    edge_cases: bool = False,
) -> None:
    """Check ``estimate_loss(model, data, batch_size, block_size, eval_iters, generator,
    device="cpu", autocast=contextlib.nullcontext) -> float``.

    The model is a seeded GPT with dropout 0.2, so a forward pass in train mode
    gives a different loss. The learner's function must draw its batches with
    ``get_batch`` (the one from exercise 1), so it is compared with gptcore's
    on the same generator seed; afterwards both generators must be in the
    same state (exactly ``eval_iters`` batches drawn).
    """
    all_cases = _eval_cases(random.Random(seed), cases, edge_cases)
    with _one_thread():
        for case in all_cases:
            _check_eval_case(estimate_loss, case)
    passed("estimate_loss", len(all_cases))


_EVAL_ERRORS = {
    TypeError: "estimate_loss(model, data, batch_size, block_size, eval_iters, generator, "
    "device='cpu', autocast=contextlib.nullcontext): keep this signature; autocast is a "
    "function that returns a context manager: `with autocast():`.",
    AttributeError: "autocast is a function that returns a context manager: write "
    "`with autocast():`.",
}


def _check_eval_case(estimate_loss: Callable[..., float], case: dict[str, Any]) -> None:
    bs, ts, iters = case["batch_size"], case["block_size"], case["iters"]
    args_text = (
        f"model, data of {len(case['data'])} tokens, batch_size={bs}, block_size={ts}, "
        f"eval_iters={iters}, generator={_gen_text(case['gen_seed'])}"
    )
    if case["device"] is not None:
        args_text += f", device={case['device']!r}"
    if case["spies"]:
        args_text += ", autocast=..."
    where = f"estimate_loss({args_text}) with the model in {case['mode']} mode"

    was_training = case["mode"] == "train"
    model = _tiny_gpt(case["model_seed"], dropout=0.2)
    model.train(was_training)
    autocast = _Spy()
    recorder = _Recorder(model, autocast if case["spies"] else None, None)
    gen = _gen(case["gen_seed"])
    args: list[Any] = [model, case["data"], bs, ts, iters, gen]
    if case["device"] is not None or case["spies"]:
        args.append(case["device"] if case["device"] is not None else "cpu")
    if case["spies"]:
        args.append(autocast)
    try:
        with _rng(case["torch_seed"]):
            got = call(
                estimate_loss, *args, name="estimate_loss", where=where, error_hints=_EVAL_ERRORS
            )
    finally:
        recorder.remove()
    forwards = recorder.forwards
    if len(forwards) != iters:
        fail(
            f"{where} ran {len(forwards)} forward pass(es); expected eval_iters = {iters}, "
            "one per batch (call model(x, y), not model.forward(x, y))."
        )
    if any(f["training"] for f in forwards):
        fail(
            f"{where} ran the model in train mode: evaluation in train mode keeps dropout "
            "on, which makes the loss noisy and too high. Call model.eval() before the loop."
        )
    if any(f["grad"] for f in forwards):
        fail(
            f"{where} ran the model with gradients on: evaluation with gradients builds an "
            "autograd graph for every batch that no backward() ever uses, wasting memory "
            "and time. Decorate the function with @torch.no_grad() or loop inside "
            "`with torch.no_grad():`."
        )
    if case["spies"] and not all(f["autocast"] for f in forwards):
        fail(f"{where} ran a forward pass outside autocast: use `with autocast():`.")
    if model.training != was_training:
        if was_training:
            fail(
                f"{where} left the model in eval mode. Not restoring train mode means the "
                "training that follows runs without dropout: remember was_training = "
                "model.training at the start and call model.train(was_training) at the end."
            )
        fail(
            f"{where} left the model in train mode, but it was in eval mode before the call. "
            "Restore the mode the model HAD (was_training = model.training at the start, "
            "model.train(was_training) at the end) rather than always calling model.train()."
        )
    value = _float(got, f"the result of {where}")

    ref_model = _tiny_gpt(case["model_seed"], dropout=0.2)
    ref_model.train(was_training)
    ref_gen = _gen(case["gen_seed"])
    with _rng(case["torch_seed"]):
        expected = _ref_estimate_loss(ref_model, case["data"], bs, ts, iters, ref_gen)
    if not _close(value, expected):
        losses = _batch_losses(ref_model, case)
        hint = _diagnose(lambda c: _close(c(), value), _eval_mistakes(case, losses))
        _wrong(
            f"the result of {where}",
            repr(expected),
            repr(value),
            hint
            or "average the loss of eval_iters batches, each drawn with get_batch(data, "
            "batch_size, block_size, generator). If checks.get_batch fails, fix get_batch "
            "first: estimate_loss draws its batches with it.",
        )
    if not torch.equal(gen.get_state(), ref_gen.get_state()):
        fail(
            f"{where} gave the right loss but left the generator in a different state: draw "
            "exactly eval_iters batches, each with get_batch(data, batch_size, block_size, "
            "generator), and nothing else from the generator."
        )


def _batch_losses(model: nn.Module, case: dict[str, Any]) -> list[float]:
    """The eval-mode loss of each of the eval_iters batches, in order."""
    model.eval()
    gen, losses = _gen(case["gen_seed"]), []
    with torch.no_grad():
        for _ in range(case["iters"]):
            x, y = _ref_get_batch(case["data"], case["batch_size"], case["block_size"], gen)
            losses.append(float(model(x, y)[1]))
    return losses
