"""What lesson 6's checks share: the seeded model, the spies that watch it, float results.

``optimization_step`` and ``estimate_loss`` are checked by running the
learner's function and gptcore's on two copies of one tiny seeded GPT under the
same torch random state (so dropout draws the same masks). Spies record how the
learner's function drives the model: which mode it is in, and whether
gradients, ``autocast`` and ``no_sync`` are on, at every forward and backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from gptcore.model.gpt import GPT, GPTConfig

from ..report import fail, show
from ..tensors import seeded
from ..values import check_float

Batch = tuple[torch.Tensor, torch.Tensor]


def tiny_gpt(seed: int, dropout: float) -> GPT:
    """A GPT of a few thousand parameters, seeded: the checks' model."""
    config = GPTConfig(
        block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16, dropout=dropout
    )
    with seeded(seed):
        return GPT(config)


def generator_text(seed: int) -> str:
    """How a message shows the generator a check passed: ``torch.Generator().manual_seed(3)``."""
    return f"torch.Generator().manual_seed({seed})"


def check_plain_float(value: Any, what: str) -> float:
    """``value`` after checking it is a finite Python float; a tensor gets lesson 6's advice."""
    if isinstance(value, torch.Tensor):
        # Refused before check_float, which would only say how to convert: a loss tensor
        # that is kept also keeps its autograd graph, which is what this lesson is about.
        fail(
            f"{what} must be a Python float, but it is a torch.Tensor: {show(value, 60)}. "
            "Convert it with float(...) (a tensor that comes out of a forward pass also keeps "
            "the whole autograd graph alive)."
        )
    return check_float(value, what, finite=True)


def same_params(a: nn.Module, b: nn.Module, rtol: float = 1e-4, atol: float = 1e-7) -> bool:
    """Whether two copies of one model hold the same parameters, within the tolerance."""
    return all(
        torch.allclose(p, q, rtol=rtol, atol=atol)
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    """The largest difference between two copies of one model's parameters."""
    with torch.no_grad():
        return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))


class Spy:
    """A stand-in for ``autocast`` or ``no_sync``: a function that returns a
    context manager, and records whether it is active right now. In class grading it
    runs where the learner's code does (see report.watching), and what it recorded
    comes back."""

    gptcore_in_kernel = True

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


class Recorder:
    """Hooks on a model: per forward pass (mode, grad enabled, spies active), per backward.

    In class grading the model and this recorder go to the learner's process together
    (the forward hook with the model; the gradient hook is added again there, since a
    copied parameter loses its hooks), record there, and the records come back (see
    report.watching)."""

    gptcore_in_kernel = True

    def __init__(self, model: nn.Module, autocast: Spy | None, no_sync: Spy | None) -> None:
        self.forwards: list[dict[str, bool]] = []
        self.backwards: list[dict[str, bool]] = []
        self._autocast, self._no_sync = autocast, no_sync
        self._handles = [model.register_forward_pre_hook(self._on_forward)]
        # ln_f's gain is used by every forward and is not tied to anything: its gradient
        # hook fires exactly once per backward pass, however many forwards it sums.
        self._hook_gain(model)

    def _hook_gain(self, model: nn.Module) -> None:
        gain = model.transformer.ln_f.weight
        if getattr(self, "_hooked", None) is not gain:
            self._hooked = gain
            self._handles.append(gain.register_hook(self._on_backward))

    def __getstate__(self) -> dict[str, Any]:
        # A copied parameter loses its hooks: the copy hooks it again at its first forward.
        return {k: v for k, v in vars(self).items() if k not in ("_hooked", "_handles")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, _handles=[])

    def _state(self) -> dict[str, bool]:
        return {
            "autocast": bool(self._autocast and self._autocast.active),
            "no_sync": bool(self._no_sync and self._no_sync.active),
        }

    def _on_forward(self, module: nn.Module, args: Any) -> None:
        self._hook_gain(module)
        self.forwards.append(
            {"training": module.training, "grad": torch.is_grad_enabled(), **self._state()}
        )

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backwards.append(self._state())

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
