"""gptcore.course.checks.gpt: right answers pass, plausible wrong answers fail with the hint.

The right answers are gptcore's own modules (gptcore.model.gpt) and the solution
cells of the lesson notebook (executed here from the notebook's JSON). Each
wrong answer is a mistake a learner could make, written as a small subclass of
gptcore's module; its check must fail with a message that names the mistake.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gptcore.course.checks import gpt as checks
from gptcore.model.gpt import GPT, MLP, Block, GPTConfig, LayerNorm

from ..lesson05_fixtures import LESSON05_WRONG_CAUGHT_VISIBLE
from ..notebook_cells import HIDDEN_BEGIN, LessonNotebook

HIDDEN = HIDDEN_BEGIN
LESSON_NB = LessonNotebook.for_lesson("05_gpt")

# The keyword arguments of each check's hidden call, read from the notebook (the one place
# the seeds are written); the visible call passes none.
HIDDEN_ARGS: dict[str, dict] = LESSON_NB.hidden_arguments()


def run_check(check: str, *learner, args: str = "visible") -> None:
    kwargs = {} if args == "visible" else HIDDEN_ARGS[check]
    getattr(checks, check)(*learner, **kwargs)


cells, solution = LESSON_NB.fixtures()


# --------------------------------------------------------- right answers pass
def _ref_load(model, hf_state_dict):
    converted = GPT.from_hf_state_dict(hf_state_dict, model.config).state_dict()
    model.load_state_dict(converted)


class ScratchLayerNorm(LayerNorm):
    """gptcore's LayerNorm from tensor operations: gptcore's own calls F.layer_norm, which
    the exercise forbids (the check refuses it)."""

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        out = (x - mean) / torch.sqrt(((x - mean) ** 2).mean(-1, keepdim=True) + self.eps)
        return out * self.weight + (self.bias if self.bias is not None else 0.0)


REFERENCE = {
    "layer_norm": (ScratchLayerNorm,),
    "mlp": (MLP,),
    "block": (Block,),
    "gpt": (GPT,),
    "overfit_one_batch": (GPT,),
    "count_params": (checks.reference_count,),
    "load_hf_weights": (_ref_load,),
    "hf_parity": (GPT, _ref_load),
}
LEARNER = {
    "layer_norm": ("LayerNorm",),
    "mlp": ("MLP",),
    "block": ("Block",),
    "gpt": ("GPT",),
    "overfit_one_batch": ("GPT",),
    "count_params": ("count_params",),
    "load_hf_weights": ("load_hf_weights",),
    "hf_parity": ("GPT", "load_hf_weights"),
}


@pytest.mark.parametrize("check", list(REFERENCE))
@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_reference_passes(check, args):
    run_check(check, *REFERENCE[check], args=args)


def test_reference_count_matches_the_models():
    for config in [
        GPTConfig.preset("test"),
        GPTConfig.preset("test", bias=False),
        GPTConfig.preset("baby"),
        GPTConfig(block_size=5, vocab_size=3, n_layer=3, n_head=2, n_embd=6, bias=False),
    ]:
        assert checks.reference_count(config) == GPT(config).num_params()
    assert checks.reference_count(GPTConfig.preset("gpt2")) == 124_439_808
    assert checks.reference_count(GPTConfig.preset("gpt2-medium")) == 354_823_168


def test_checks_leave_the_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.layer_norm(ScratchLayerNorm)
    checks.gpt(GPT)
    checks.load_hf_weights(_ref_load)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------- wrong answers fail
# LayerNorm: one forward with a configurable mistake.
class WrongLN(LayerNorm):
    """gptcore's LayerNorm (parameters included) with a hand-written, mistaken forward."""

    def __init__(self, ndim, bias=True, eps=1e-5):
        super().__init__(ndim, bias=bias, eps=eps)

    def norm(self, x):
        mean = x.mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(x.var(-1, keepdim=True, correction=0) + self.eps)

    def forward(self, x):
        out = self.norm(x) * self.weight
        return out + self.bias if self.bias is not None else out


def ln_variant(norm=None, forward=None, init=None):
    attrs = {}
    if norm:
        attrs["norm"] = lambda self, x: norm(self, x)
    if forward:
        attrs["forward"] = lambda self, x: forward(self, x)
    if init:

        def __init__(self, ndim, bias=True, eps=1e-5):
            WrongLN.__init__(self, ndim, bias, eps)
            init(self, ndim, bias)

        attrs["__init__"] = __init__
    return type("LayerNorm", (WrongLN,), attrs)


def _std_norm(x, dims, correction=0, eps=1e-5):
    mean = x.mean(dims, keepdim=True)
    return (x - mean) / torch.sqrt(x.var(dims, keepdim=True, correction=correction) + eps)


def _set_buffers(self, ndim, bias):
    del self.weight
    self.register_buffer("weight", torch.ones(ndim))


def _plain_tensor(self, ndim, bias):
    del self.weight
    self.weight = torch.ones(ndim)


def _always_bias(self, ndim, bias):
    self.bias = nn.Parameter(torch.zeros(ndim))


def _random_start(self, ndim, bias):
    with torch.no_grad():
        self.weight.normal_()


class NoSuperLN:
    def __init__(self, ndim, bias=True):
        self.weight = nn.Parameter(torch.ones(ndim))


class NotAModuleLN:
    def __init__(self, ndim, bias=True):
        self.weight = torch.ones(ndim)

    def __call__(self, x):
        return F.layer_norm(x, x.shape[-1:])


class LNNoSuperInit(nn.Module):
    def __init__(self, ndim, bias=True):
        self.weight = nn.Parameter(torch.ones(ndim))


def _inplace(self, x):
    x -= x.mean(-1, keepdim=True)
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + self.eps) * self.weight + self.bias


WRONG_LN = [
    (ln_variant(norm=lambda s, x: _std_norm(x, -1, correction=1)), "biased variance"),
    (ln_variant(norm=lambda s, x: _std_norm(x, 0)), "not over the batch"),
    (ln_variant(norm=lambda s, x: x / torch.sqrt(x.var(-1, keepdim=True, correction=0) + 1e-5)),
     "subtract the mean"),
    (ln_variant(forward=lambda s, x: s.norm(x)), "scale by self.weight"),
    (ln_variant(forward=lambda s, x: s.norm(x * s.weight + s.bias)), "differs from gptcore's"),
    (ln_variant(forward=lambda s, x: _std_norm(x * s.weight + s.bias, -1)), "differs from gptcore's"),
    (ln_variant(forward=lambda s, x: WrongLN.forward(s, x).double()), "dtype"),
    (ln_variant(forward=lambda s, x: (WrongLN.forward(s, x), None)), "not a tuple"),
    (ln_variant(forward=_inplace), "in place"),
    (ln_variant(init=_set_buffers), "not an nn.Parameter"),
    (ln_variant(init=_plain_tensor), "plain tensor"),
    (ln_variant(init=_random_start), "identity map"),
    (NotAModuleLN, "must give an nn.Module"),
    (LNNoSuperInit, "super().__init__()"),
    (ln_variant(forward=lambda s, x: F.layer_norm(x, s.weight.shape, s.weight, s.bias, s.eps)),
     "called torch's layer norm"),
    (ln_variant(forward=lambda s, x: torch.layer_norm(x, s.weight.shape, s.weight, s.bias, s.eps)),
     "called torch's layer norm"),
    (LayerNorm, "called torch's layer norm"),  # gptcore's own: F.layer_norm
]  # fmt: skip
EDGE_LN = [
    (ln_variant(norm=lambda s, x: (x - x.mean(-1, keepdim=True))
                / (x.var(-1, keepdim=True, correction=0).sqrt() + s.eps)), "inside the square root"),
    (ln_variant(norm=lambda s, x: _std_norm(x, -1, eps=0.0)), "add eps = 1e-5"),
    (ln_variant(init=_always_bias), "bias=False"),
]  # fmt: skip


# MLP
def mlp_variant(forward=None, hidden=4, always_bias=False):
    class WrongMLP(MLP):
        def __init__(self, config):
            super().__init__(config)
            bias = True if always_bias else config.bias
            if hidden != 4:
                self.c_fc = nn.Linear(config.n_embd, hidden * config.n_embd, bias=bias)
                self.c_proj = nn.Linear(hidden * config.n_embd, config.n_embd, bias=bias)
            elif always_bias:
                self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
                self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

        def forward(self, x):
            return forward(self, x) if forward else MLP.forward(self, x)

    return WrongMLP


WRONG_MLP = [
    (mlp_variant(lambda s, x: s.c_proj(F.gelu(s.c_fc(x)))), "tanh approximation"),
    (mlp_variant(lambda s, x: s.c_proj(F.relu(s.c_fc(x)))), "not ReLU"),
    (mlp_variant(lambda s, x: s.c_proj(s.c_fc(x))), "apply the GELU between"),
    (mlp_variant(lambda s, x: x + MLP.forward(s, x)), "belongs to the Block"),
    (mlp_variant(lambda s, x: s.gelu(MLP.forward(s, x))), "apply GELU once"),
    (mlp_variant(lambda s, x: s.c_proj(torch.tanh(s.c_fc(x)))), "not tanh itself"),
    (mlp_variant(hidden=2), "4 * n_embd"),
]
EDGE_MLP = [
    (mlp_variant(lambda s, x: s.c_proj(s.dropout(s.gelu(s.c_fc(x))))), "to the output of c_proj"),
    (mlp_variant(lambda s, x: s.c_proj(s.gelu(s.c_fc(x)))), "to the output of c_proj"),
    (mlp_variant(always_bias=True), "bias=False"),
]


# Block
def block_variant(forward):
    return type("Block", (Block,), {"forward": lambda self, x: forward(self, x)})


def _inplace_block(s, x):
    x += s.attn(s.ln_1(x))
    return x + s.mlp(s.ln_2(x))


class RenamedBlock(Block):
    def __init__(self, config):
        super().__init__(config)
        self.attention = self.attn
        del self.attn

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


WRONG_BLOCK = [
    (block_variant(lambda s, x: s.ln_2((h := s.ln_1(x + s.attn(x)))  + s.mlp(h))), "post-LN"),
    (block_variant(lambda s, x: s.mlp(s.ln_2(s.attn(s.ln_1(x))))), "forgot the residual"),
    (block_variant(lambda s, x: s.mlp(s.ln_2(x + s.attn(s.ln_1(x))))), "its own residual"),
    (block_variant(lambda s, x: (h := s.attn(s.ln_1(x))) + s.mlp(s.ln_2(h))), "its own residual"),
    (block_variant(lambda s, x: (g := s.ln_2((h := s.ln_1(x)) + s.attn(h))) + s.mlp(g)),
     "never normalised"),
    (block_variant(lambda s, x: (h := x + s.attn(s.ln_1(x))) + s.mlp(s.ln_1(h))), "ln_1 belongs"),
    (block_variant(lambda s, x: (h := x + s.mlp(s.ln_2(x))) + s.attn(s.ln_1(h))), "attention comes first"),
    (block_variant(lambda s, x: x + s.attn(s.ln_1(x)) + s.mlp(s.ln_2(x))), "parallel"),
    (block_variant(lambda s, x: (h := x + s.attn(x)) + s.mlp(h)), "normalise the input"),
    (block_variant(lambda s, x: s.ln_2((h := x + s.attn(s.ln_1(x))) + s.mlp(h))), "un-normalised"),
    (block_variant(_inplace_block), "in place"),
    (RenamedBlock, "GPT-2's parameter names"),
]  # fmt: skip


# GPT
def gpt_forward(self, idx, targets=None, *, pos=True, ln_f=True, softmax=False, drop=True,
                loss="mean", pos_from="wpe", pair=True):  # fmt: skip
    tr = self.transformer
    b, t = idx.shape
    x = tr.wte(idx)
    if pos:
        p = torch.arange(t)
        x = x + (tr.wte(p) if pos_from == "wte" else tr.wpe(idx if pos_from == "idx" else p))
    x = tr.drop(x) if drop else x
    for block in self.blocks():
        x = block(x)
    x = tr.ln_f(x) if ln_f else x
    logits = self.lm_head(x)
    if softmax:
        logits = torch.softmax(logits, -1)
    if targets is None:
        return (logits, None) if pair else logits
    flat, tgt = logits.view(b * t, -1), targets.reshape(b * t)
    losses = {
        "mean": lambda: F.cross_entropy(flat, tgt),
        "sum": lambda: F.cross_entropy(flat, tgt, reduction="sum"),
        "softmax": lambda: F.cross_entropy(torch.softmax(flat, -1), tgt),
        "unflat": lambda: F.cross_entropy(logits, targets),
        "item": lambda: F.cross_entropy(flat, tgt).item(),
        "detached": lambda: F.cross_entropy(flat, tgt).detach(),
        "shifted": lambda: F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                           targets[:, 1:].reshape(-1)),
    }  # fmt: skip
    return logits, losses[loss]()


def gpt_variant(after_init=None, **forward_flags):
    class WrongGPT(GPT):
        def __init__(self, config):
            super().__init__(config)
            if after_init:
                after_init(self, config)

        def blocks(self):
            return self.transformer.h if "h" in self.transformer else self._plain_blocks

        def forward(self, idx, targets=None):
            return gpt_forward(self, idx, targets, **forward_flags)

    return WrongGPT


def _untie(self, config):
    self.transformer.wte.weight = nn.Parameter(self.lm_head.weight.detach().clone())


def _default_init(self, config):
    for m in self.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            m.reset_parameters()


def _embedding_default(self, config):
    for m in self.modules():
        if isinstance(m, nn.Embedding):
            m.reset_parameters()


def _unit_init(self, config):
    with torch.no_grad():
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, 1.0)


def _c_proj_std(std):
    def fix(self, config):
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    p.normal_(0.0, std(config))

    return fix


def _scale_all(self, config):
    with torch.no_grad():
        for name, p in self.named_parameters():
            if name.endswith(("c_attn.weight", "c_fc.weight")):
                p.normal_(0.0, 0.02 / math.sqrt(2 * config.n_layer))


def _random_biases(self, config):
    with torch.no_grad():
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.uniform_(-0.1, 0.1)


def _plain_list(self, config):
    object.__setattr__(self, "_plain_blocks", list(self.transformer.h))
    del self.transformer["h"]


def _head_bias(self, config):
    self.lm_head.bias = nn.Parameter(torch.zeros(config.vocab_size))


class FlatGPT(GPT):
    """wte, wpe, h, ln_f directly on the model, not in self.transformer."""

    def __init__(self, config):
        super().__init__(config)
        for name in ("wte", "wpe", "drop", "h", "ln_f"):
            setattr(self, name, self.transformer[name])
        del self.transformer


WRONG_GPT = [
    (gpt_variant(_untie), "not tied"),
    (gpt_variant(_default_init), "nn.Linear's default init"),
    (gpt_variant(_embedding_default), "nn.Embedding starts at N(0, 1)"),
    (gpt_variant(_c_proj_std(lambda c: 0.02)), "forgot the c_proj scaling"),
    (gpt_variant(_c_proj_std(lambda c: 0.02 / math.sqrt(c.n_layer))), "not 1 / sqrt(n_layer)"),
    (gpt_variant(_scale_all), "only the c_proj weights"),
    (gpt_variant(_random_biases), "start every bias at zero"),
    (gpt_variant(_plain_list), "nn.ModuleList"),
    (gpt_variant(_head_bias), "lm_head has no bias"),
    (FlatGPT, "self.transformer = nn.ModuleDict"),
    (gpt_variant(pos=False), "add the position embeddings"),
    (gpt_variant(pos_from="wte"), "their own table"),
    (gpt_variant(pos_from="idx"), "torch.arange(T)"),
    (gpt_variant(ln_f=False), "final LayerNorm"),
    (gpt_variant(softmax=True), "before any softmax"),
    (gpt_variant(pair=False), "must return a pair"),
    (gpt_variant(loss="sum"), "not the sum"),
    (gpt_variant(loss="softmax"), "takes logits"),
    (gpt_variant(loss="unflat"), "flatten both"),
    (gpt_variant(loss="item"), "0-dim tensor"),
    (gpt_variant(loss="detached"), "does not require grad"),
    (gpt_variant(loss="shifted"), "already shifted"),
]
EDGE_GPT = [(gpt_variant(drop=False), "apply self.transformer.drop once")]


# overfit_one_batch
class FrozenHeadGPT(GPT):
    def forward(self, idx, targets=None):
        t = idx.shape[1]
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(t)).detach()
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


class StuckGPT(GPT):
    """Its optimizer sees no parameters worth training: the loss cannot fall."""

    def __init__(self, config):
        super().__init__(config)
        self.scale = nn.Parameter(torch.ones(()))

    def parameters(self, recurse=True):
        yield self.scale

    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        return logits, (loss * self.scale if loss is not None else None)


WRONG_OVERFIT = [
    (gpt_variant(_unit_init), "should be close to ln(65)"),
    (FrozenHeadGPT, "transformer.wpe.weight has no gradient"),
    (StuckGPT, "did not overfit one batch"),
]


# count_params
def counter(**changes):
    def count(config):
        c, v, t, n = config.n_embd, config.vocab_size, config.block_size, config.n_layer
        b = 1 if changes.get("bias", config.bias) else 0
        ln = c + b * c
        attn = 3 * c * c + 3 * b * c + changes.get("proj", c * c + b * c)
        mlp = changes.get("mlp", 8 * c * c + 5 * b * c)
        return (
            v * c * changes.get("wte", 1)
            + t * c * changes.get("wpe", 1)
            + changes.get("layers", n) * (changes.get("lns", 2) * ln + attn + mlp)
            + changes.get("ln_f", 1) * ln
            + changes.get("head_bias", 0) * v
        )

    return count


WRONG_COUNT = [
    (counter(wte=2), "count that matrix once"),
    (counter(wpe=0), "position embeddings"),
    (counter(bias=False), "every Linear layer and every LayerNorm has a bias"),
    (counter(lns=0, ln_f=0), "count the LayerNorms"),
    (counter(ln_f=0), "final LayerNorm"),
    (counter(lns=1), "both LayerNorms"),
    (counter(proj=0), "output projection"),
    (counter(head_bias=1), "lm_head has no bias"),
    (counter(layers=1), "every one of the n_layer blocks"),
    (lambda config: float(checks.reference_count(config)), "float"),
    (lambda config: torch.tensor(checks.reference_count(config)), "tensor"),
    (lambda config: np.int64(checks.reference_count(config)), "int(...)"),
    (lambda config: GPT(config).num_params(), "built model parameters"),
]
EDGE_COUNT = [
    (
        lambda config: checks.reference_count(GPTConfig(**{
            **{k: getattr(config, k) for k in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd")},
            "bias": True,
        })),
        "no biases anywhere",
    ),
]  # fmt: skip


def test_the_mlp_width_mistake_is_named():
    def narrow(config):
        c = config.n_embd
        return checks.reference_count(config) - config.n_layer * (6 * c * c + 3 * c)

    with pytest.raises(AssertionError, match="4 \\* n_embd units"):
        checks.count_params(narrow)


# load_hf_weights
CONV1D = checks.CONV1D_WEIGHTS


def loader(transpose=CONV1D, skip_head=True, over="model", mutate=False, alias=False, only=None):
    def load(model, sd):
        own = model.state_dict()
        keys = list(sd) if over == "hf" else list(own)
        with torch.no_grad():
            for k in keys:
                if skip_head and k == "lm_head.weight":
                    continue
                if only is not None and not k.endswith(only):
                    continue
                v = sd[k]
                if k.endswith(transpose):
                    v = v.t()
                    if mutate:
                        sd[k] = v
                if alias:
                    model.get_parameter(k).data = v
                else:
                    own[k].copy_(v)

    return load


WRONG_HF = [
    (loader(transpose=()), "(in, out)"),
    (loader(transpose=("attn.c_attn.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")), "is square"),
    (loader(transpose=(*CONV1D, "wpe.weight")), "raised RuntimeError"),
    (loader(mutate=True), "changed hf_state_dict"),
    (loader(alias=True), "shares memory"),
    (loader(only=("weight",)), "still holds its initial value"),
    (lambda model, sd: None, "still holds its initial value"),
]
EDGE_HF = [
    (loader(over="hf", skip_head=False), "ignore HF keys your model does not have"),
    (loader(skip_head=False), "skip lm_head.weight"),
]


def test_hf_loader_with_a_wrong_value_names_the_tensor():
    def load(model, sd):
        loader()(model, sd)
        with torch.no_grad():
            w = model.transformer.h[0].ln_1.weight
            w.copy_(sd["transformer.h.0.ln_1.weight"] * 0)

    with pytest.raises(AssertionError, match=r"ln_1\.weight does not hold the value"):
        checks.load_hf_weights(load)


# hf_parity
class ExactGeluGPT(GPT):
    def __init__(self, config):
        super().__init__(config)
        for block in self.transformer.h:
            block.mlp.gelu = nn.GELU()


WRONG_PARITY = [(ExactGeluGPT, "differ from HF's GPT2LMHeadModel")]


WRONG = (
    [("layer_norm", (f,), h) for f, h in WRONG_LN]
    + [("mlp", (f,), h) for f, h in WRONG_MLP]
    + [("block", (f,), h) for f, h in WRONG_BLOCK]
    + [("gpt", (f,), h) for f, h in WRONG_GPT]
    + [("overfit_one_batch", (f,), h) for f, h in WRONG_OVERFIT]
    + [("count_params", (f,), h) for f, h in WRONG_COUNT]
    + [("load_hf_weights", (f,), h) for f, h in WRONG_HF]
    + [("hf_parity", (f, _ref_load), h) for f, h in WRONG_PARITY]
)
EDGE_CASES = (
    [("layer_norm", (f,), h) for f, h in EDGE_LN]
    + [("mlp", (f,), h) for f, h in EDGE_MLP]
    + [("gpt", (f,), h) for f, h in EDGE_GPT]
    + [("count_params", (f,), h) for f, h in EDGE_COUNT]
    + [("load_hf_weights", (f,), h) for f, h in EDGE_HF]
)


@pytest.mark.parametrize(("check", "fns", "hint"), WRONG, ids=[f"{c}-{h}" for c, _, h in WRONG])
@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_wrong_answer_fails_with_hint(check, fns, hint, args):
    with pytest.raises(AssertionError) as failure:
        run_check(check, *fns, args=args)
    assert hint in str(failure.value), str(failure.value)


@pytest.mark.parametrize(
    ("check", "fns", "hint"), EDGE_CASES, ids=[f"{c}-{h}" for c, _, h in EDGE_CASES]
)
@pytest.mark.parametrize("args", ["visible", "hidden"])
def test_edge_case_mistake_fails_visible_too(check, fns, hint, args):
    """Mistakes only the hidden tests used to catch (eps outside the square root, a bias when
    bias=False, ...): the visible call catches them now, with the same hint."""
    with pytest.raises(AssertionError) as failure:
        run_check(check, *fns, args=args)
    assert hint in str(failure.value), str(failure.value)


def test_messages_name_the_input_and_the_difference():
    with pytest.raises(AssertionError) as failure:
        checks.block(WRONG_BLOCK[0][0])
    message = str(failure.value)
    assert "Block(GPTConfig(block_size=16, vocab_size=64, n_layer=2" in message
    assert "x of shape (2, 9, 16)" in message
    assert "largest difference" in message and "expected" in message and "got" in message


# ------------------------------------------------- the notebook's test cells
@pytest.mark.parametrize("gid", sorted(LESSON05_WRONG_CAUGHT_VISIBLE))
def test_visible_test_cell_catches_what_only_hidden_tests_used_to(cells, gid):
    """A mistake that once passed the visible cell fails it now, with the check's message
    (not a bare assert); every other cell passes."""
    ns = LESSON_NB.namespace(cells, replace={gid: LESSON05_WRONG_CAUGHT_VISIBLE[gid]})
    with pytest.raises(AssertionError) as failure:
        exec(cells[f"{gid}_tests"].split(HIDDEN)[0], dict(ns))
    assert str(failure.value).startswith(f"{gid}("), str(failure.value)
    for other in LESSON_NB.points:
        if other != f"{gid}_tests":
            exec(cells[other], dict(ns))


VIEW_TARGETS = """\
class GPT(GPT):
    def forward(self, idx, targets=None):
        logits, _ = super().forward(idx)
        if targets is None:
            return logits, None
        b, t = idx.shape
        return logits, F.cross_entropy(logits.view(b * t, -1), targets.view(b * t))
"""
EPS_OUTSIDE = """\
class LayerNorm(LayerNorm):
    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = ((x - mean) ** 2).mean(-1, keepdim=True).sqrt()
        out = (x - mean) / (std + self.eps) * self.weight
        return out + self.bias if self.bias is not None else out
"""


@pytest.mark.parametrize(
    ("exercise", "source", "cell", "hint"),
    [
        ("gpt", VIEW_TARGETS, "gpt_tests", "not contiguous in memory, and .view() cannot flatten"),
        ("layer_norm", EPS_OUTSIDE, "layer_norm_tests", "eps goes inside the square root"),
    ],
)
def test_the_visible_cell_names_the_mistake(cells, exercise, source, cell, hint):
    """The issue's wrong answers: .view on a non-contiguous target slice (which crashed a
    later cell), eps outside the square root (visible once, hidden only)."""
    ns = LESSON_NB.namespace(cells, replace={exercise: cells[exercise] + "\n\n" + source})
    with pytest.raises(AssertionError) as failure:
        exec(cells[cell].split(HIDDEN)[0], dict(ns))
    assert hint in str(failure.value), str(failure.value)
    assert "tensor(" not in str(failure.value).split("\n", 1)[0]  # named, not a raw tensor


def test_a_block_failing_because_of_its_layer_norm_names_it():
    wrong_ln = ln_variant(norm=lambda s, x: _std_norm(x, -1, correction=1))

    class BlockWithWrongLN(Block):
        def __init__(self, config):
            super().__init__(config)
            self.ln_1 = wrong_ln(config.n_embd, bias=config.bias)
            self.ln_2 = wrong_ln(config.n_embd, bias=config.bias)

    with pytest.raises(AssertionError) as failure:
        checks.block(BlockWithWrongLN, depends_on={"LayerNorm": wrong_ln, "MLP": MLP})
    message = str(failure.value)
    assert message.startswith("this uses your LayerNorm, which is wrong: "), message
    assert "fix LayerNorm first" in message
    with pytest.raises(AssertionError) as failure:  # right parts: no blame
        checks.block(block_variant(lambda s, x: s.mlp(s.ln_2(s.attn(s.ln_1(x))))),
                     depends_on={"LayerNorm": ScratchLayerNorm, "MLP": MLP})  # fmt: skip
    assert "this uses your" not in str(failure.value)


class SoftmaxLossGPT(GPT):
    """Cross-entropy of the probabilities: right at initialisation, then stuck near ln V."""

    def forward(self, idx, targets=None):
        logits, _ = super().forward(idx)
        if targets is None:
            return logits, None
        flat = torch.softmax(logits, -1).reshape(-1, logits.size(-1))
        return logits, F.cross_entropy(flat, targets.reshape(-1))


def test_overfit_failures_name_their_own_cause():
    with pytest.raises(AssertionError) as failure:
        checks.overfit_one_batch(SoftmaxLossGPT)
    assert "F.cross_entropy takes logits" in str(failure.value), str(failure.value)
    with pytest.raises(AssertionError) as failure:
        checks.overfit_one_batch(StuckGPT)
    assert "not registered" in str(failure.value), str(failure.value)
