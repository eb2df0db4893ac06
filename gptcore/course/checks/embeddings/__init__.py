"""Checks for lesson 3 (embeddings): one-hot lookup, sinusoidal positions, the neural bigram, training.

Each check compares the learner's code with gptcore's reference on seeded
inputs: ``one_hot_embed`` and ``sinusoidal_positional_encoding``
(``gptcore.model.embeddings``), ``BigramLM`` (``gptcore.model.bigram``) and
``train_step`` (``gptcore.train``). Every call also runs the inputs at the
edges of each contract (ids that never reach the last row, scalar and empty id
tensors, float64 weights, another base, ``targets=None``, a model left in eval
mode): the visible test cells grade every rule the hidden ones do, which only
add other seeds and more cases.

Results must be tensors of the documented shape and dtype (or a Python float
for a loss value); they are compared only after those checks, as plain
tensors, so an object whose ``__eq__`` always answers True cannot pass. On a
wrong value the message names the input, the first entry that differs, and,
where a known mistake reproduces the wrong answer, which mistake it is.

The neural bigram's checks live in ``bigram.py``, ``train_step``'s in
``training.py``, the tables of known mistakes in ``mistakes.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from gptcore.model import embeddings as ref

from ..report import call, check, describe_call, fail, passed, watching
from ..tensors import check_tensor, compare
from . import mistakes as known
from .bigram import bigram_matches_counts, neural_bigram
from .training import train_step

__all__ = [
    "bigram_matches_counts",
    "neural_bigram",
    "one_hot_embed",
    "sinusoidal_positional_encoding",
    "train_step",
]


# ------------------------------------------------------------ one-hot lookup
def _random_lookup(rng: random.Random, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    V, C = rng.randint(2, 80), rng.randint(1, 16)
    shape = tuple(rng.randint(1, 6) for _ in range(rng.randint(1, 3)))
    return torch.randint(V, shape, generator=gen), torch.randn(V, C, generator=gen)


def _lookup_inputs(
    seed: int, cases: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    table = torch.arange(15.0).reshape(5, 3)  # row i is [3i, 3i + 1, 3i + 2]
    inputs: list[tuple[torch.Tensor, torch.Tensor]] = [
        (torch.tensor([3, 0, 4]), table),
        (torch.tensor([[1, 4, 1], [2, 0, 3]]), table),
    ]
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
    inputs += [_random_lookup(rng, gen) for _ in range(cases)]
    return inputs


@check()
def one_hot_embed(
    one_hot_embed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 20,
) -> None:
    """Check ``one_hot_embed(idx, weight) -> one_hot(idx) @ weight`` against gptcore's.

    The inputs include ids that never reach the last row, a scalar and an
    empty ``idx``, and a float64 ``weight``, whose dtype the result must keep.
    """
    inputs = _lookup_inputs(seed, cases)
    for idx, weight in inputs:
        where = describe_call("one_hot_embed", idx, weight)
        with watching(_LookupSpy(weight)) as spy:
            got = call(one_hot_embed, idx, weight, name="one_hot_embed", where=where,
                       error_hints=known.one_hot_error_hint(idx, weight))  # fmt: skip
        if spy.lookups:
            fail(
                f"{where} reads rows of weight directly ({', '.join(spy.lookups)}), which this "
                "exercise forbids: the point is to see the product give the lookup.",
                "build the one-hot vectors of idx, F.one_hot(idx, num_classes=weight.shape[0]), "
                "convert them to weight's dtype, and multiply them by weight (one_hot @ weight).",
            )
        got = check_tensor(
            got,
            f"the result of {where}",
            shape=(*idx.shape, weight.shape[1]),
            dtype=weight.dtype,
            shape_hint=known.one_hot_shape_hint(idx, weight),
            dtype_hint=(
                f"the vectors are rows of weight, so they keep weight's dtype ({weight.dtype}). "
                "Convert the one-hot vectors with .to(weight.dtype), not .float()."
            ),
            allow_subclass=True,
        )
        expected = ref.one_hot_embed(idx, weight)
        compare(got, expected, where, mistakes=known.one_hot_mistakes(idx, weight))
    passed("one_hot_embed", len(inputs))


# Operations that read entries of a tensor by position. On the weight (or a copy,
# a view or its transpose, recognised by value) each is "indexing weight".
_LOOKUPS = {
    torch.Tensor.__getitem__: "weight[...]",
    torch.Tensor.__iter__: "iterating over weight",
    torch.Tensor.unbind: "weight.unbind()",
    torch.unbind: "torch.unbind(weight)",
    torch.Tensor.index_select: "weight.index_select(...)",
    torch.index_select: "torch.index_select(weight, ...)",
    torch.Tensor.gather: "weight.gather(...)",
    torch.gather: "torch.gather(weight, ...)",
    torch.Tensor.take: "weight.take(...)",
    torch.take: "torch.take(weight, ...)",
    torch.take_along_dim: "torch.take_along_dim(weight, ...)",
    torch.Tensor.select: "weight.select(...)",
    torch.select: "torch.select(weight, ...)",
    torch.Tensor.narrow: "weight.narrow(...)",
    torch.Tensor.tolist: "weight.tolist()",
    torch.Tensor.numpy: "weight.numpy()",
    F.embedding: "F.embedding(idx, weight)",
    torch.embedding: "torch.embedding(weight, idx)",
}


class _LookupSpy(TorchFunctionMode):
    """Records the lookups (``_LOOKUPS``) the code inside reads from ``weight``.

    A torch-function mode sees every torch operation, whatever tensor object
    the learner's code holds: ``call`` hands it a copy of ``weight``, and it may
    detach, clone or transpose it first, so the weight is recognised by value.
    """

    gptcore_in_kernel = True  # see report.watching

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight.detach()
        self.lookups: list[str] = []

    def _is_weight(self, value: Any) -> bool:
        if not isinstance(value, torch.Tensor) or value.dim() != 2:
            return False
        w = self.weight
        return any(
            value.shape == t.shape and value.dtype == t.dtype and torch.equal(value.detach(), t)
            for t in (w, w.T)
        )

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        what = _LOOKUPS.get(func)
        if what and what not in self.lookups:
            if any(self._is_weight(a) for a in (*args, *kwargs.values())):
                self.lookups.append(what)
        return func(*args, **kwargs)


# ------------------------------------------------------- sinusoidal encoding
_DEFAULT: Any = object()  # "call without the base argument": the default must be 10000


def _encoding_inputs(seed: int, cases: int
) -> list[tuple[int, int, Any]]:
    inputs: list[tuple[int, int, Any]] = [(4, 4, _DEFAULT), (6, 2, _DEFAULT), (50, 16, _DEFAULT)]
    inputs += [
        (1, 2, _DEFAULT),
        (3, 6, 100.0),
        (64, 8, 10.0),
        (32, 32, 500000.0),
        (2048, 8, _DEFAULT),
        (1024, 768, 10000.0),
        (10, 4, 2.0),
    ]
    rng = random.Random(seed)
    for _ in range(cases):
        base = rng.choice([_DEFAULT, 10000.0, 100.0, 1000.0, 10.0, 5000.0])
        inputs.append((rng.randint(1, 300), 2 * rng.randint(1, 64), base))
    return inputs


@check()
def sinusoidal_positional_encoding(
    sinusoidal_positional_encoding: Callable[..., torch.Tensor],
    *,
    seed: int = 0,
    cases: int = 15,
) -> None:
    """Check ``sinusoidal_positional_encoding(block_size, n_embd[, base])`` against gptcore's.

    The result must be float32 (torch's default dtype), shape (block_size,
    n_embd). Computing in float32 is fine: the tolerance grows with the
    position, about ten times float32's rounding error in the angle. Other
    bases than the default 10000 are among the cases.
    """
    name = "sinusoidal_positional_encoding"
    inputs = _encoding_inputs(seed, cases)
    for T, C, base in inputs:
        args = (T, C) if base is _DEFAULT else (T, C, base)
        base = 10000.0 if base is _DEFAULT else base
        where = f"{name}({T}, {C}" + (f", base={base:g})" if len(args) == 3 else ")")
        got = call(sinusoidal_positional_encoding, *args, name=name, where=where)
        got = check_tensor(
            got,
            f"the result of {where}",
            shape=(T, C),
            dtype=torch.get_default_dtype(),
            shape_hint=(
                "one row per position (block_size rows), one column per dimension (n_embd columns)."
            ),
            dtype_hint=(
                "return torch's default float dtype, float32, the dtype of the embeddings it is "
                "added to: create tensors with dtype=torch.float32 (or end with .float())."
            ),
            allow_subclass=True,
        )
        expected = ref.sinusoidal_positional_encoding(T, C, base).double()
        compare(got, expected, where, atol=known.pe_tolerance(T), rtol=0.0,
                mistakes=known.pe_mistakes(T, C, base))  # fmt: skip
    passed(name, len(inputs))
