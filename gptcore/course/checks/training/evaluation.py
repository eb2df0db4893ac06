"""Lesson 6, exercise 4: ``estimate_loss``, the mean loss over random batches, in eval mode."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gptcore.train import estimate_loss as _ref_estimate_loss
from gptcore.train import get_batch as _ref_get_batch

from ..report import call, check, diagnose, fail, passed, wrong
from ..tensors import generator, one_thread, seeded
from ..values import close
from .batches import get_batch as _check_get_batch
from .models import Recorder, Spy, check_plain_float, generator_text, tiny_gpt

_EVAL_ERRORS = {
    TypeError: "estimate_loss(model, data, batch_size, block_size, eval_iters, generator, "
    "device='cpu', autocast=contextlib.nullcontext): keep this signature; autocast is a "
    "function that returns a context manager: `with autocast():`.",
    AttributeError: "autocast is a function that returns a context manager: write "
    "`with autocast():`.",
}


def _eval_cases(rng: random.Random, cases: int) -> list[dict[str, Any]]:
    base = dict(mode="train", device=None, spies=False)
    out = [
        {**base, "iters": 1, "batch_size": 2, "block_size": 8},
        {**base, "iters": 4, "batch_size": 3, "block_size": 16},
        {**base, "iters": 3, "batch_size": 2, "block_size": 5, "device": "cpu", "spies": True},
    ]
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
                "mode": rng.choice(["train", "eval"]),
                "spies": rng.random() < 0.5,
                "device": "cpu",
            }
        )
    for case in out:
        case.update(
            model_seed=rng.randrange(2**31),
            gen_seed=rng.randrange(2**31),
            torch_seed=rng.randrange(2**31),
            data=torch.randint(
                32, (rng.randint(40, 300),), generator=generator(rng.randrange(2**31))
            ),
        )
    return out


def _eval_mistakes(case: dict[str, Any], losses: list[float]) -> list[tuple[str, Any]]:
    """(hint, the loss a function with that mistake returns); ``losses`` are the right
    eval-mode losses of the eval_iters batches, in order."""
    return [
        ("return the MEAN of the eval_iters batch losses, not their sum.", lambda: sum(losses)),
        ("average the losses of all eval_iters batches, not just the last.", lambda: losses[-1]),
        ("draw a new batch in every iteration (get_batch inside the loop).", lambda: losses[0]),
        (
            "evaluation in train mode: call model.eval() first, so dropout is off.",
            lambda: _eval_in_train_mode(case),
        ),
    ]


def _eval_in_train_mode(case: dict[str, Any]) -> float:
    model = tiny_gpt(case["model_seed"], dropout=0.2)
    model.train()
    gen = generator(case["gen_seed"])
    with seeded(case["torch_seed"]), torch.no_grad():
        losses = []
        for _ in range(case["iters"]):
            x, y = _ref_get_batch(case["data"], case["batch_size"], case["block_size"], gen)
            losses.append(float(model(x, y)[1]))
    return sum(losses) / len(losses)


def _batch_losses(model: nn.Module, case: dict[str, Any]) -> list[float]:
    """The eval-mode loss of each of the eval_iters batches, in order."""
    model.eval()
    gen, losses = generator(case["gen_seed"]), []
    with torch.no_grad():
        for _ in range(case["iters"]):
            x, y = _ref_get_batch(case["data"], case["batch_size"], case["block_size"], gen)
            losses.append(float(model(x, y)[1]))
    return losses


@check(uses={"get_batch": _check_get_batch})
def estimate_loss(
    estimate_loss: Callable[..., float],
    *,
    seed: int = 0,
    cases: int = 4,
) -> None:
    """Check ``estimate_loss(model, data, batch_size, block_size, eval_iters, generator,
    device="cpu", autocast=contextlib.nullcontext) -> float``.

    The model is a seeded GPT with dropout 0.2, so a forward pass in train mode
    gives a different loss. The learner's function must draw its batches with
    ``get_batch`` (the one from exercise 1), so it is compared with gptcore's
    on the same generator seed; afterwards both generators must be in the
    same state (exactly ``eval_iters`` batches drawn).
    """
    all_cases = _eval_cases(random.Random(seed), cases)
    with one_thread():
        for case in all_cases:
            _check_eval_case(estimate_loss, case)
    passed("estimate_loss", len(all_cases))


def _eval_where(case: dict[str, Any]) -> str:
    args_text = (
        f"model, data of {len(case['data'])} tokens, batch_size={case['batch_size']}, "
        f"block_size={case['block_size']}, eval_iters={case['iters']}, "
        f"generator={generator_text(case['gen_seed'])}"
    )
    if case["device"] is not None:
        args_text += f", device={case['device']!r}"
    if case["spies"]:
        args_text += ", autocast=..."
    return f"estimate_loss({args_text}) with the model in {case['mode']} mode"


def _check_eval_case(estimate_loss: Callable[..., float], case: dict[str, Any]) -> None:
    where = _eval_where(case)
    was_training = case["mode"] == "train"
    model = tiny_gpt(case["model_seed"], dropout=0.2)
    model.train(was_training)
    autocast = Spy()
    recorder = Recorder(model, autocast if case["spies"] else None, None)
    gen = generator(case["gen_seed"])
    args: list[Any] = [model, case["data"], case["batch_size"], case["block_size"], case["iters"]]
    args.append(gen)
    if case["device"] is not None or case["spies"]:
        args.append(case["device"] if case["device"] is not None else "cpu")
    if case["spies"]:
        args.append(autocast)
    try:
        with seeded(case["torch_seed"]):
            got = call(
                estimate_loss, *args, name="estimate_loss", where=where, error_hints=_EVAL_ERRORS
            )
    finally:
        recorder.remove()
    _check_eval_spies(where, recorder, case)
    _check_mode_restored(where, model, was_training)
    value = check_plain_float(got, f"the result of {where}")

    ref_model = tiny_gpt(case["model_seed"], dropout=0.2)
    ref_model.train(was_training)
    ref_gen = generator(case["gen_seed"])
    with seeded(case["torch_seed"]):
        expected = _ref_estimate_loss(
            ref_model, case["data"], case["batch_size"], case["block_size"], case["iters"], ref_gen
        )
    if not close(value, expected, rtol=1e-5, atol=1e-9):
        hint_text = diagnose(
            value,
            _eval_mistakes(case, _batch_losses(ref_model, case)),
            same=lambda got, answer: close(answer, got, rtol=1e-5, atol=1e-9),
        )
        wrong(
            f"the result of {where}",
            expected,
            value,
            hint_text=hint_text
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


def _check_eval_spies(where: str, recorder: Recorder, case: dict[str, Any]) -> None:
    forwards, iters = recorder.forwards, case["iters"]
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


def _check_mode_restored(where: str, model: nn.Module, was_training: bool) -> None:
    if model.training == was_training:
        return
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
