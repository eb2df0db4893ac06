"""Lesson 6, exercise 2: ``lr_at``, a step's learning rate: linear warmup, then cosine decay."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from gptcore.train import lr_at as _ref_lr_at

from ..report import call, check, diagnose, drives, fail, passed, show, wrong
from ..values import close
from .models import check_plain_float

# A schedule as the mistakes below write it: (step, lr, min_lr, warmup_iters, decay_iters).
Schedule = Callable[[int, float, float, int, int], float]


def _cosine(step, lr, min_lr, w, d, *, start=None, length=None, scale=None, angle=math.pi):
    start = w if start is None else start
    length = (d - w) if length is None else length
    progress = (step - start) / max(1, length)
    top = (lr - min_lr) if scale is None else scale
    return min_lr + 0.5 * (1.0 + math.cos(angle * progress)) * top


def _schedule(warm: Schedule, decay: Schedule, after: Schedule) -> Schedule:
    """An lr_at built from its three phases (each a function of step, lr, min_lr, w, d)."""

    def lr_at(step, lr, min_lr, w, d):
        if step < w:
            return warm(step, lr, min_lr, w, d)
        if step >= d:
            return after(step, lr, min_lr, w, d)
        return decay(step, lr, min_lr, w, d)

    return lr_at


def _ref(step: int, lr: float, min_lr: float, w: int, d: int) -> float:
    return _ref_lr_at(step, lr=lr, min_lr=min_lr, warmup_iters=w, decay_iters=d)


def _warm(s, lr, mn, w, d):
    return lr * (s + 1) / w


def _decay(s, lr, mn, w, d):
    return _cosine(s, lr, mn, w, d)


def _after(s, lr, mn, w, d):
    return mn


# (hint, the schedule a function with that mistake computes)
_LR_MISTAKES: list[tuple[str, Schedule]] = [
    (
        "warmup starting at 0 instead of lr / warmup_iters: the warmup rate is "
        "lr * (step + 1) / warmup_iters, so step 0 already takes a small step and step "
        "warmup_iters - 1 reaches lr.",
        _schedule(lambda s, lr, mn, w, d: lr * s / w, _decay, _after),
    ),
    (
        "the warmup rate is lr * (step + 1) / warmup_iters: it reaches lr exactly at step "
        "warmup_iters - 1.",
        _schedule(lambda s, lr, mn, w, d: lr * (s + 1) / (w + 1), _decay, _after),
    ),
    (
        "step == warmup_iters already belongs to the cosine (which starts at lr): warm up "
        "only while step < warmup_iters.",
        lambda s, lr, mn, w, d: (
            _warm(s, lr, mn, w, d) if s <= w and s < d else _ref(s, lr, mn, w, d)
        ),
    ),
    (
        "cosine not reaching min_lr: the cosine goes from lr down to min_lr, "
        "min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr); yours goes to 0.",
        _schedule(_warm, lambda s, lr, mn, w, d: _cosine(s, lr, 0.0, w, d), _after),
    ),
    (
        "scale the cosine by (lr - min_lr), not by lr: min_lr + 0.5 * (1 + cos(pi * progress)) "
        "* (lr - min_lr) starts at lr and ends at min_lr.",
        _schedule(_warm, lambda s, lr, mn, w, d: _cosine(s, lr, mn, w, d, scale=lr), _after),
    ),
    (
        "progress starts at 0 when warmup ends: progress = (step - warmup_iters) / "
        "(decay_iters - warmup_iters).",
        _schedule(
            _warm, lambda s, lr, mn, w, d: _cosine(s, lr, mn, w, d, start=0, length=d), _after
        ),
    ),
    (
        "cosine not reaching min_lr at decay_iters: divide by the length of the decay phase, "
        "progress = (step - warmup_iters) / (decay_iters - warmup_iters), so progress is 1 at "
        "decay_iters.",
        _schedule(_warm, lambda s, lr, mn, w, d: _cosine(s, lr, mn, w, d, length=d), _after),
    ),
    (
        "after decay_iters the rate stays at min_lr; a cosine that keeps going climbs back "
        "up towards lr.",
        _schedule(_warm, _decay, lambda s, lr, mn, w, d: _cosine(s, lr, mn, w, d)),
    ),
    (
        "after decay_iters the rate is min_lr, not 0.",
        _schedule(_warm, _decay, lambda s, lr, mn, w, d: 0.0),
    ),
    (
        "after decay_iters the rate is min_lr, not lr.",
        _schedule(_warm, _decay, lambda s, lr, mn, w, d: lr),
    ),
    (
        "the decay follows half a cosine, 0.5 * (1 + cos(pi * progress)), not a straight line.",
        _schedule(_warm, lambda s, lr, mn, w, d: lr - (lr - mn) * (s - w) / max(1, d - w), _after),
    ),
    (
        "multiply progress by pi: cos(pi * progress) goes from 1 to -1 as progress goes "
        "from 0 to 1.",
        _schedule(_warm, lambda s, lr, mn, w, d: _cosine(s, lr, mn, w, d, angle=1.0), _after),
    ),
    (
        "half a cosine period, cos(pi * progress), not a whole one, cos(2 * pi * progress).",
        _schedule(
            _warm, lambda s, lr, mn, w, d: _cosine(s, lr, mn, w, d, angle=2 * math.pi), _after
        ),
    ),
    (
        "warm up first: while step < warmup_iters the rate is lr * (step + 1) / warmup_iters.",
        lambda s, lr, mn, w, d: mn if s >= d else _cosine(s, lr, mn, w, d, start=0, length=d),
    ),
]

_LR_ERRORS = {
    TypeError: "lr_at(step, *, lr, min_lr, warmup_iters, decay_iters): the step, then four "
    "keyword arguments.",
    ZeroDivisionError: "with decay_iters == warmup_iters there is no decay phase: from step "
    "decay_iters on, return min_lr before computing progress (test step >= decay_iters, not "
    ">), or divide by max(1, decay_iters - warmup_iters).",
}


def _lr_configs() -> list[tuple[float, float, int, int]]:
    configs = [(1.0, 0.1, 10, 110)]  # hand-checkable: lr 0.1, 0.2, ... 1.0, then down to 0.1
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


@check()
def lr_at(
    lr_at: Callable[..., float],
    *,
    seed: int = 0,
    cases: int = 20,
) -> None:
    """Check ``lr_at(step, *, lr, min_lr, warmup_iters, decay_iters) -> float``.

    Every step of each schedule (sampled for long ones) is compared with
    gptcore's ``lr_at`` (relative tolerance 1e-6).
    """
    rng = random.Random(seed)
    configs = _lr_configs()
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


def _near(a: float, b: float) -> bool:
    return close(a, b, rtol=1e-6, atol=1e-12)


@drives
def _curve(lr_at: Callable[..., float], steps: list[int], kw: dict[str, float]) -> list[object]:
    """``lr_at(step, **kw)`` for each step, up to the first that raises."""
    values: list[object] = []
    for step in steps:
        try:
            values.append(lr_at(step, **kw))
        except Exception:
            break
    return values


def _check_lr_config(
    lr_at: Callable[..., float], lr: float, min_lr: float, w: int, d: int, steps: list[int]
) -> None:
    kw = dict(lr=lr, min_lr=min_lr, warmup_iters=w, decay_iters=d)
    args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    got: dict[int, float] = {}
    values = call(_curve, lr_at, steps, kw, name="lr_at", where=f"lr_at(step, {args})")
    if type(values) is not list or len(values) > len(steps):
        fail(f"lr_at's values came back as {show(values)}, not a list.")
    for i, step in enumerate(steps):
        where = f"lr_at({step}, {args})"
        if i < len(values):
            value = values[i]
        else:  # it raised here: again, one call, for the message that names the step
            value = call(
                lambda s: lr_at(s, **kw), step, name="lr_at", where=where, error_hints=_LR_ERRORS
            )
        got[step] = check_plain_float(value, f"the result of {where}")
    for step in steps:
        expected = _ref(step, lr, min_lr, w, d)
        if _near(got[step], expected):
            continue
        # Prefer a mistake that explains the whole curve; else one that explains this step.
        curve = [got[s] for s in steps]
        hint_text = diagnose(
            curve,
            [(h, lambda f=f: [f(s, lr, min_lr, w, d) for s in steps]) for h, f in _LR_MISTAKES],
            same=lambda a, b: all(_near(x, y) for x, y in zip(a, b)),
        ) or diagnose(
            got[step],
            [(h, lambda f=f, s=step: f(s, lr, min_lr, w, d)) for h, f in _LR_MISTAKES],
            same=_near,
        )
        phase = (
            "warmup (step < warmup_iters)"
            if step < w
            else "after the decay (step >= decay_iters)"
            if step >= d
            else "cosine decay"
        )
        wrong(
            f"lr_at({step}, {args}), in the {phase} phase,",
            expected,
            got[step],
            hint_text=hint_text or "compare your code with the docstring, step by step.",
        )
