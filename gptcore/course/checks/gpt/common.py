"""What lesson 5's checks share: building the learner's modules, GPT-2's parameter names,
running a module, comparing its output with gptcore's, seeded weights."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gptcore.model.config import GPTConfig

from ..report import Mistakes, call, fail, show, type_name, unchanged
from ..tensors import check_tensor, matches, recognise

__all__ = [
    "build",
    "check_names",
    "check_tied",
    "compare",
    "describe_config",
    "forward",
    "load",
    "output_tensor",
    "perturb",
    "random_config",
    "run",
    "strided_copy",
]


def describe_config(config: GPTConfig) -> str:
    fields = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "dropout", "bias")
    return "GPTConfig(" + ", ".join(f"{f}={getattr(config, f)}" for f in fields) + ")"


def random_config(rng: random.Random, **overrides: Any) -> GPTConfig:
    """A small random GPTConfig, drawn from ``rng``."""
    n_head = rng.choice([1, 2, 3, 4])
    base = dict(
        block_size=rng.choice([8, 12, 16]),
        vocab_size=rng.choice([11, 32, 65]),
        n_layer=rng.choice([1, 2]),
        n_head=n_head,
        n_embd=n_head * rng.choice([4, 8, 12]),
    )
    return GPTConfig(**{**base, **overrides})


# ----------------------------------------------------------- the learner's module
_INIT_HINTS = {
    AttributeError: "call super().__init__() first, before you assign any parameter or sub-module.",
    TypeError: "check the constructor's arguments against the docstring.",
}


def build(cls: Any, args: tuple[Any, ...], where: str) -> nn.Module:
    """The learner's module ``cls(*args)``, checked to be an nn.Module."""
    module = call(cls, *args, where=where, error_hints=_INIT_HINTS)
    if not isinstance(module, nn.Module):
        fail(
            f"{where} must give an nn.Module, but it gave a {type_name(module)}. "
            "Declare the class as `class Name(nn.Module):` and call super().__init__()."
        )
    return module


def _key_hints(missing: list[str], unexpected: list[str], bias: bool) -> str:
    hints = []
    flat = ("wte.", "wpe.", "h.", "ln_f.")
    if any(k.startswith("transformer.") for k in missing) and any(
        k.startswith(flat) for k in unexpected
    ):
        hints.append(
            "put wte, wpe, drop, h and ln_f inside self.transformer = nn.ModuleDict(...), "
            "as GPT-2 does, so the names read transformer.wte.weight and so on."
        )
    elif any(k.startswith("transformer.h.") for k in missing) and not any(
        ".h.0." in k or k.startswith("h.0.") for k in unexpected
    ):
        hints.append(
            "keep the blocks in an nn.ModuleList (transformer.h); in a plain Python list "
            "PyTorch does not see their parameters."
        )
    if "lm_head.bias" in unexpected:
        hints.append("lm_head has no bias: nn.Linear(n_embd, vocab_size, bias=False).")

    def biases(keys: list[str]) -> bool:
        return any(k.endswith(".bias") or k == "bias" for k in keys)

    if not bias and biases(unexpected) and not biases(missing):
        hints.append(
            "with bias=False there are no biases at all: Linear layers get bias=False and "
            "LayerNorm sets self.bias = None."
        )
    if bias and biases(missing) and not biases(unexpected):
        hints.append("with bias=True every Linear layer and every LayerNorm has a bias.")
    return "\n  ".join(hints)


_PARAMETER = "wrap it: self.weight = nn.Parameter(torch.ones(ndim))."


def check_names(module: nn.Module, ref: nn.Module, where: str, bias: bool = True) -> None:
    """Same parameter names and shapes as gptcore's module, all of them nn.Parameters."""
    got, expected = module.state_dict(), ref.state_dict()
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    for k in missing:
        value = _attribute(module, k)
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            fail(
                f"{where}: {k} is a plain tensor, so PyTorch does not register it: it is not in "
                "state_dict() and an optimizer would never train it.",
                _PARAMETER,
            )
    if missing or unexpected:
        fail(
            f"{where} does not have GPT-2's parameter names, so GPT-2's weights cannot be "
            "loaded into it.\n"
            f"  expected: {show(list(expected), 400)}\n"
            f"  missing:    {show(missing, 300)}\n"
            f"  unexpected: {show(unexpected, 300)}",
            _key_hints(missing, unexpected, bias)
            or "name the attributes exactly as the docstring says.",
        )
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape):
            hint_text = ""
            if tuple(got[k].shape) == tuple(v.shape)[::-1]:
                hint_text = "nn.Linear(in_features, out_features) stores its weight as (out, in)."
            elif k.endswith(("c_fc.weight", "c_fc.bias", "mlp.c_proj.weight")):
                hint_text = "the MLP's hidden layer has 4 * n_embd units."
            fail(
                f"{where}: {k} has shape {tuple(got[k].shape)}, but GPT-2's has {tuple(v.shape)}.",
                hint_text,
            )
        if got[k].dtype != torch.float32:
            fail(f"{where}: {k} has dtype {got[k].dtype}; create parameters as float32.")
    params = {name for name, _ in module.named_parameters(remove_duplicate=False)}
    ref_params = {name for name, _ in ref.named_parameters(remove_duplicate=False)}
    for k in sorted(ref_params - params):
        fail(f"{where}: {k} is not an nn.Parameter, so an optimizer would never train it.", _PARAMETER)


def _attribute(module: nn.Module, key: str) -> Any:
    """``module.a.b.c`` for the key "a.b.c", or None."""
    obj: Any = module
    for part in key.split("."):
        try:
            obj = getattr(obj, part)
        except Exception:
            return None
    return obj


def check_tied(model: nn.Module, where: str) -> None:
    """The token embedding and lm_head share one nn.Parameter."""
    try:
        wte = model.transformer.wte.weight
        head = model.lm_head.weight
    except AttributeError as e:
        fail(f"{where}: {e}")
    if wte is not head:
        fail(
            f"{where}: the weights are not tied. GPT-2 uses one matrix both to embed tokens and "
            "to turn the last hidden states into logits.",
            "after creating both, set self.transformer.wte.weight = self.lm_head.weight.",
        )


def load(module: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    try:
        module.load_state_dict(state)
    except Exception as e:
        fail(f"load_state_dict into {where} failed: {type(e).__name__}: {e}")


def perturb(module: nn.Module, gen: torch.Generator, scale: float = 1.0) -> None:
    """Random, seeded weights that make every parameter matter: LayerNorm gains away from 1,
    non-zero biases, and matrices large enough that GELU's curve shows."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("bias"):
                p.copy_(0.2 * scale * noise)
            elif p.ndim == 1:  # LayerNorm gain
                p.copy_(1.0 + 0.3 * noise)
            else:
                p.copy_(noise * scale / math.sqrt(p.shape[-1]))


# ------------------------------------------------------------ running it
_IN_PLACE = (
    "Write x = x + ... instead of x += ..., since the caller (and autograd) still needs the "
    "original."
)


def run(module: nn.Module, x: torch.Tensor, where: str) -> Any:
    """``module(x)`` without gradients, failing if the module changed its input in place."""
    hints = {RuntimeError: "check the shapes in forward(); print them as you go."}
    with torch.no_grad():
        return call(
            module, x, name=type(module).__name__, where=where, error_hints=hints,
            arg_names=["x"], mutation_hint=_IN_PLACE,
        )  # fmt: skip


_NOT_CONTIGUOUS = (
    "targets may be a slice such as idx[:, 1:], which is not contiguous in memory, and .view() "
    "cannot flatten that: use targets.reshape(B * T) (or .reshape(-1)), which copies when it "
    "has to."
)


def _forward_hint(e: BaseException) -> str:
    if isinstance(e, RuntimeError) and "view size is not compatible" in str(e):
        return _NOT_CONTIGUOUS
    if isinstance(e, RuntimeError):
        return (
            "check the shapes in forward(); F.cross_entropy wants logits (B*T, V) and targets "
            "(B*T,): flatten both with .reshape."
        )
    if isinstance(e, IndexError):
        return "position ids must be torch.arange(T), each below block_size."
    return ""


def strided_copy(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` with ``t``'s strides: a non-contiguous input stays non-contiguous.

    ``report.call`` passes ``.clone()``s, which are contiguous, so a forward that
    only works on contiguous targets (``targets.view(-1)``) would pass there and
    crash in the notebook on ``idx[:, 1:]``.
    """
    copy = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device)
    return copy.copy_(t)


def forward(model: nn.Module, args: tuple[Any, ...], where: str) -> tuple[Any, Any]:
    """``model(*args)``, checked to be a pair (logits, loss); tensors keep their strides."""
    given = [strided_copy(a) if isinstance(a, torch.Tensor) else a for a in args]
    out = call(
        lambda: model(*given), name=type(model).__name__, where=where, error_hints=_forward_hint
    )
    for i, (before, after) in enumerate(zip(args, given)):
        if isinstance(before, torch.Tensor):
            unchanged(before, after, where, ("idx", "targets")[i] if i < 2 else f"#{i + 1}")
    if not isinstance(out, tuple) or len(out) != 2:
        fail(
            f"{where} must return a pair (logits, loss), but it returned "
            + (
                f"one tensor of shape {tuple(out.shape)}."
                if isinstance(out, torch.Tensor)
                else f"a {type_name(out)}: {show(out, 80)}."
            ),
            "return logits, loss, with loss = None when targets is None.",
        )
    return out


def output_tensor(got: Any, what: str, shape: tuple[int, ...]) -> torch.Tensor:
    """``got``, a module's output, as a detached float32 tensor of ``shape``.

    A tuple gets a message of its own: GPT's forward returns one, and a LayerNorm,
    an MLP or a Block written the same way must return the tensor alone.
    """
    if isinstance(got, tuple):
        fail(
            f"{what} must be a torch.Tensor, but it is a tuple. Return one tensor, not a tuple."
        )
    return check_tensor(
        got, what, shape=shape, dtype=torch.float32,
        dtype_hint="avoid converting, and build new tensors with the input's dtype.",
    )  # fmt: skip


def compare(
    got: torch.Tensor,
    expected: torch.Tensor,
    where: str,
    *,
    atol: float,
    rtol: float,
    mistakes: Mistakes = (),
    otherwise: str = "",
) -> None:
    """Fail unless ``got`` matches gptcore's ``expected``, naming the largest difference.

    Unlike ``tensors.compare``, the message leads with the largest difference, not
    the first: a module's output differs everywhere at once, and how far it is off
    says more than where.
    """
    if matches(got, expected, atol=atol, rtol=rtol, equal_nan=True):
        return
    got_d, exp_d = got.detach().double(), expected.detach().double()
    if torch.isnan(got_d).any():
        where_nan = tuple(torch.nonzero(torch.isnan(got_d))[0].tolist())
        head = f"{where} contains NaN (first at index {where_nan})."
    else:
        diff = (got_d - exp_d).abs()
        i = tuple(int(j) for j in torch.unravel_index(diff.argmax(), diff.shape))
        head = (
            f"{where} differs from gptcore's reference: the largest difference is "
            f"{float(diff.max()):.3g} at index {i} (expected {float(exp_d[i]):.6g}, got "
            f"{float(got_d[i]):.6g}; tolerance {atol:g} + {rtol:g} * |expected|)."
        )
    fail(head, recognise(got, mistakes, atol=atol, rtol=rtol) or otherwise)
