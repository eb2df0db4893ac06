"""Hugging Face GPT-2 interop: the one GPTConfig <-> GPT2Config mapping and the weight conversion.

``transformers`` is a dev extra, so it is imported inside the functions that need
it: importing gptcore.model never pulls it in. A round trip::

    from transformers import GPT2LMHeadModel
    from gptcore.model import GPT, GPTConfig, config_from_hf, hf_config

    hf = GPT2LMHeadModel(hf_config(GPTConfig.preset("test")))
    model = GPT.from_hf_state_dict(hf.state_dict(), config_from_hf(hf.config))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from .config import GPTConfig

if TYPE_CHECKING:
    from transformers import GPT2Config

__all__ = ["config_from_hf", "convert_hf_state_dict", "hf_config"]

# HF's GPT-2 stores these as Conv1D weights, (in, out): the transpose of nn.Linear's (out, in).
TRANSPOSED = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)
# Buffers HF keeps in some versions' state dicts (the causal mask); they are not weights.
_HF_BUFFERS = (".attn.bias", ".attn.masked_bias")
_ENDOFTEXT = 50256  # GPT-2's <|endoftext|> id
_LAYER_NORM_EPS = 1e-5  # gptcore.model.LayerNorm's default, and GPT-2's
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both are GELU's tanh approximation, as our MLP


def hf_config(config: GPTConfig) -> GPT2Config:
    """The transformers ``GPT2Config`` of the same shape as ``config``.

    A ``GPT2LMHeadModel`` built from it has exactly the parameters of ``GPT(config)``
    (up to the Conv1D transposes), so weights move both ways. Dropout goes to all
    three of HF's dropout rates, the way GPT applies its one rate everywhere.
    """
    try:
        from transformers import GPT2Config
    except ImportError:
        raise ValueError("hf_config needs transformers: pip install transformers") from None
    if not config.bias:
        raise ValueError(
            "Hugging Face's GPT-2 always has biases; use a GPTConfig with bias=True"
        )
    # HF's default bos/eos id is 50256, which points past a small vocabulary and
    # makes generate() complain; 0 is always a valid id.
    special = _ENDOFTEXT if config.vocab_size > _ENDOFTEXT else 0
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=None,  # 4 * n_embd, as our MLP
        activation_function="gelu_new",
        layer_norm_epsilon=_LAYER_NORM_EPS,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        tie_word_embeddings=True,
        bos_token_id=special,
        eos_token_id=special,
    )


def config_from_hf(hf: GPT2Config, **overrides: Any) -> GPTConfig:
    """The GPTConfig of the same shape as a transformers ``GPT2Config`` (``model.config``).

    Dropout is a training choice, not part of the weights, so it is not read from
    ``hf`` (OpenAI's checkpoints say 0.1, our GPT-2 presets 0.0): pass ``dropout=``
    among ``overrides`` to set it. Raises ValueError for a GPT2Config that GPT
    cannot reproduce (another activation, MLP width or LayerNorm epsilon).
    """
    n_inner = getattr(hf, "n_inner", None)
    if n_inner not in (None, 4 * hf.n_embd):
        raise ValueError(f"n_inner={n_inner}: GPT's MLP is 4 * n_embd = {4 * hf.n_embd} wide")
    if getattr(hf, "activation_function", "gelu_new") not in _ACTIVATIONS:
        raise ValueError(
            f"activation_function={hf.activation_function!r}: GPT's MLP uses GELU's tanh "
            f"approximation, one of {_ACTIVATIONS}"
        )
    eps = getattr(hf, "layer_norm_epsilon", _LAYER_NORM_EPS)
    if eps != _LAYER_NORM_EPS:
        raise ValueError(f"layer_norm_epsilon={eps}: GPT's LayerNorm uses {_LAYER_NORM_EPS}")
    if not getattr(hf, "tie_word_embeddings", True):
        raise ValueError("tie_word_embeddings=False: GPT ties lm_head to the token embedding")
    config = GPTConfig(
        block_size=hf.n_positions,
        vocab_size=hf.vocab_size,
        n_layer=hf.n_layer,
        n_head=hf.n_head,
        n_embd=hf.n_embd,
        dropout=0.0,
        bias=True,
    )
    unknown = set(overrides) - {f.name for f in dataclasses.fields(GPTConfig)}
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}")
    return dataclasses.replace(config, **overrides)


def convert_hf_state_dict(
    sd: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], config: GPTConfig
) -> None:
    """Copy a ``GPT2LMHeadModel`` state dict into ``own`` (a GPT's ``state_dict()``), in place.

    Transposes the Conv1D weights, skips HF's mask buffers and its lm_head (tied
    to the token embedding, as ours), and raises ValueError naming the first keys
    or shapes that do not match a GPT of ``config``.
    """
    sd = {k: v for k, v in sd.items() if not k.endswith(_HF_BUFFERS)}
    sd.pop("lm_head.weight", None)  # tied to transformer.wte.weight
    expected = {k for k in own if k != "lm_head.weight"}
    missing, unexpected = expected - set(sd), set(sd) - expected
    if missing or unexpected:
        raise ValueError(
            f"state dict does not match a GPT-2 with {config}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    with torch.no_grad():
        for k, v in sd.items():
            v = v.t() if k.endswith(TRANSPOSED) else v
            if own[k].shape != v.shape:
                raise ValueError(f"{k}: shape {tuple(v.shape)} does not fit {tuple(own[k].shape)}")
            own[k].copy_(v)
