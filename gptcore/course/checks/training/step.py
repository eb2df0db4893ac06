"""Lesson 6, exercise 3: ``optimization_step``, one update from micro-batches (accumulation,
clipping, autocast, no_sync)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from gptcore.model.gpt import GPT
from gptcore.train import configure_optimizer
from gptcore.train import optimization_step as _ref_optimization_step

from ..report import Shown, call, check, diagnose, fail, passed, show, type_name, wrong
from ..tensors import generator, one_thread, seeded
from ..values import close
from .models import Batch, Recorder, Spy, check_plain_float, max_param_diff, same_params, tiny_gpt

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


# (hint, the options of _variant_step that make that mistake)
_STEP_MISTAKES: list[tuple[str, dict[str, Any]]] = [
    (
        "forgot to divide the loss by the number of micro-batches: backward() ADDS gradients "
        "up, so (loss / len(batches)).backward() makes the total the gradient of the mean loss.",
        dict(divide=False),
    ),
    (
        "clipped before accumulating all micro-batches: clip once, after the last backward(), "
        "when the gradient is complete.",
        dict(clip_each=True),
    ),
    (
        "forgot zero_grad: the gradients from before the call were still there and got added "
        "to. Call optimizer.zero_grad() first.",
        dict(zero=False),
    ),
    (
        "zero the gradients once, before the first micro-batch, not before each one: zeroing "
        "inside the loop throws away the micro-batches already accumulated.",
        dict(zero_each=True),
    ),
    (
        "call model.train() first: the step must run in training mode (dropout on), whatever "
        "mode the model was left in.",
        dict(train_mode=False),
    ),
    (
        "return the MEAN of the micro-batch losses (the loss of the whole batch), not their sum.",
        dict(loss_kind="sum"),
    ),
    ("return the mean of all the micro-batch losses, not the last one.", dict(loss_kind="last")),
    (
        "return the gradient norm from BEFORE clipping (clip_grad_norm_ returns it); after "
        "clipping it is never above grad_clip, which hides a large gradient.",
        dict(norm_after=True),
    ),
    ("forgot optimizer.step(): the parameters must change.", dict(do_step=False)),
    (
        "grad_clip=0 disables clipping; clip_grad_norm_(params, 0) would scale every gradient "
        "to 0. Clip only if grad_clip > 0 (and then compute the norm yourself).",
        dict(clip_zero=True),
    ),
    (
        "clip before optimizer.step(): clipping afterwards changes nothing that was applied.",
        dict(step_then_clip=True),
    ),
]


def _make_optimizer(kind: str, model: nn.Module) -> torch.optim.Optimizer:
    if kind == "sgd":  # plain SGD: the update is the gradient itself, so its size shows
        return torch.optim.SGD(model.parameters(), lr=0.5)
    return configure_optimizer(model, 1e-2, 0.1, (0.9, 0.95))


def _fill_grads(model: nn.Module, seed: int) -> None:
    """Leftover gradients from an earlier step, as a training loop would have them."""
    g = generator(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 0.3


def _random_batches(rng: random.Random, n: int, batch_size: int, block_size: int) -> list[Batch]:
    g = generator(rng.randrange(2**31))
    return [
        (
            torch.randint(32, (batch_size, block_size), generator=g),
            torch.randint(32, (batch_size, block_size), generator=g),
        )
        for _ in range(n)
    ]


def _step_cases(rng: random.Random, cases: int) -> list[dict[str, Any]]:
    base = dict(opt="sgd", clip=1.0, mode="eval", as_iter=False, spies=False, train_mode=False)
    out = [
        {**base, "n": 1, "clip": 100.0},  # one micro-batch, no clipping in effect
        {**base, "n": 3, "clip": 100.0},  # accumulation without clipping: the sizes show
        {**base, "n": 3, "clip": 0.05},  # accumulation, then clipping
        {**base, "n": 2, "opt": "adamw", "clip": 1.0, "spies": True},  # autocast, no_sync
    ]
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
    model = tiny_gpt(case["model_seed"], dropout=0.1)
    optimizer = _make_optimizer(case["opt"], model)
    _fill_grads(model, case["grad_seed"])
    model.train(case["mode"] == "train")
    return model, optimizer


@check()
def optimization_step(
    optimization_step: Callable[..., tuple[float, float]],
    *,
    seed: int = 0,
    cases: int = 4,
) -> None:
    """Check ``optimization_step(model, optimizer, batches, grad_clip=1.0, *, autocast, no_sync)``.

    The learner's step and gptcore's run on two copies of one seeded GPT
    (dropout 0.1, started in eval mode, with gradients left over from an
    earlier step) under the same torch random state; the returned (loss,
    norm) and the updated parameters must agree. Plain SGD makes the size of
    the gradient visible in the update; AdamW is what training uses.
    """
    all_cases = _step_cases(random.Random(seed), cases)
    with one_thread():
        for case in all_cases:
            _check_step_case(optimization_step, case)
    passed("optimization_step", len(all_cases))


def _run_step(fn: Callable[..., Any], case: dict[str, Any], model, optimizer, spies) -> Any:
    batches = case["batches"]
    arg = (xy for xy in batches) if case["as_iter"] else list(batches)
    kwargs = {"autocast": spies[0], "no_sync": spies[1]} if case["spies"] else {}
    with seeded(case["torch_seed"]):
        return fn(model, optimizer, arg, case["clip"], **kwargs)


def _mistaken_step(case: dict[str, Any], options: dict[str, Any]):
    model, optimizer = _setup(case)
    # diagnose() computes answers under no_grad; a training step needs gradients.
    with seeded(case["torch_seed"]), torch.enable_grad():
        result = _variant_step(model, optimizer, case["batches"], case["clip"], **options)
    return result, model


def _step_where(case: dict[str, Any]) -> str:
    n, (b, t) = case["n"], case["batches"][0][0].shape
    return (
        f"optimization_step(model, {'SGD' if case['opt'] == 'sgd' else 'AdamW'} optimizer, "
        f"{'a generator of' if case['as_iter'] else 'a list of'} {n} micro-batch"
        f"{'es' if n > 1 else ''} of shape ({b}, {t}), grad_clip={case['clip']!r}"
        + (", autocast=..., no_sync=..." if case["spies"] else "")
        + f"), model in {case['mode']} mode"
    )


def _near(a: float, b: float, rtol: float = 1e-5) -> bool:
    return close(a, b, rtol=rtol, atol=1e-9)


def _check_step_case(optimization_step: Callable[..., Any], case: dict[str, Any]) -> None:
    where = _step_where(case)
    model, optimizer = _setup(case)
    spies = (Spy(), Spy())
    recorder = Recorder(model, *spies) if case["spies"] else Recorder(model, None, None)
    try:
        got = call(
            lambda: _run_step(optimization_step, case, model, optimizer, spies),
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
    loss = check_plain_float(got[0], f"the loss returned by {where}")
    norm = check_plain_float(got[1], f"the gradient norm returned by {where}")
    _check_step_spies(where, recorder, case)

    ref_model, ref_opt = _setup(case)
    ref_loss, ref_norm = _run_step(_ref_optimization_step, case, ref_model, ref_opt, spies)
    if _near(loss, ref_loss) and _near(norm, ref_norm, 1e-4) and same_params(model, ref_model):
        return
    hint_text = diagnose(
        (loss, norm, model),
        [(h, lambda o=o: _mistaken_step(case, o)) for h, o in _STEP_MISTAKES],
        same=lambda got, answer: (
            _near(answer[0][0], got[0])
            and _near(answer[0][1], got[1], 1e-4)
            and same_params(answer[1], got[2])
        ),
    )
    if not _near(loss, ref_loss):
        wrong(
            f"the loss returned by {where}",
            ref_loss,
            loss,
            hint_text=hint_text or "compare your code with the docstring, step by step.",
        )
    if not _near(norm, ref_norm, 1e-4):
        wrong(
            f"the gradient norm returned by {where}",
            ref_norm,
            norm,
            hint_text=hint_text
            or "return the global L2 norm of all the gradients, measured after the last "
            "backward() and before clipping: torch.nn.utils.clip_grad_norm_ returns it.",
        )
    wrong(
        f"the parameters after {where}",
        Shown("gptcore's update"),
        Shown(f"parameters that differ from it by up to {max_param_diff(model, ref_model):.3g}"),
        hint_text=hint_text
        or "zero the gradients, accumulate (loss / len(batches)).backward() over every "
        "micro-batch, clip once if grad_clip > 0, then optimizer.step().",
    )


def _check_step_spies(where: str, recorder: Recorder, case: dict[str, Any]) -> None:
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
