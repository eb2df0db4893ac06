"""gptcore.model.gpt: GPT-2's sizes, weight tying, initialisation, HF parity, errors, training.

GPT-2-sized models are built on the meta device (shapes without memory), so
counting their parameters costs nothing. Everything else uses tiny seeded
models. Hugging Face's GPT2LMHeadModel is built offline from a GPT2Config with
random weights; nothing is downloaded.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gptcore.model.gpt import GPT, GPTConfig
from gptcore.model.hf import config_from_hf, hf_config

TINY = GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=4, n_embd=32)


def _meta_gpt(config: GPTConfig) -> GPT:
    with torch.device("meta"):
        return GPT(config)


# ------------------------------------------------------------------- sizes
@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("gpt2", 124_439_808),
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", 774_030_080),
        ("gpt2-xl", 1_557_611_200),
    ],
)
def test_gpt2_parameter_counts(preset, expected):
    config = GPTConfig.preset(preset)
    assert _meta_gpt(config).num_params() == expected
    # The closed form: V C + T C + L (12 C^2 + 13 C) + 2 C, with C = n_embd.
    v, t, n, c = config.vocab_size, config.block_size, config.n_layer, config.n_embd
    assert v * c + t * c + n * (12 * c * c + 13 * c) + 2 * c == expected


def test_gpt2_small_shape():
    config = GPTConfig.preset("gpt2")
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size) == (12, 12, 768, 1024)
    assert config.vocab_size == 50257 and config.head_size == 64
    model = _meta_gpt(config)
    assert model.num_params(non_embedding=True) == 124_439_808 - 1024 * 768


def test_meta_count_equals_a_real_build():
    config = GPTConfig.preset("baby")
    assert _meta_gpt(config).num_params() == GPT(config).num_params() == 10_770_816


def test_num_params_without_biases():
    config = GPTConfig.preset("test", bias=False)
    model = GPT(config)
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    v, t, n, c = config.vocab_size, config.block_size, config.n_layer, config.n_embd
    assert model.num_params() == v * c + t * c + n * (12 * c * c + 2 * c) + c


# ------------------------------------------------------------ weight tying
def test_token_embedding_and_output_layer_are_one_tensor():
    torch.manual_seed(0)
    model = GPT(TINY)
    assert model.lm_head.weight is model.transformer.wte.weight
    names = {name for name, _ in model.named_parameters()}
    assert "lm_head.weight" not in names or "transformer.wte.weight" not in names
    assert {"lm_head.weight", "transformer.wte.weight"} <= set(model.state_dict())
    # A training step moves both ends together.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(TINY.vocab_size, (2, 8))
    _, loss = model(x, x)
    loss.backward()
    optimizer.step()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.num_params() == sum(p.numel() for p in set(model.parameters()))


# --------------------------------------------------------- initialisation
def test_initialisation_follows_gpt2():
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, vocab_size=512, n_layer=8, n_head=4, n_embd=128)
    model = GPT(config)
    c_proj_std = 0.02 / math.sqrt(2 * config.n_layer)
    seen_c_proj = 0
    for name, param in model.named_parameters():
        p = param.detach()
        if ".ln_" in name or name.startswith("transformer.ln_f"):
            fill = 1.0 if name.endswith("weight") else 0.0
            assert torch.equal(p, torch.full_like(p, fill)), name
        elif name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        elif name.endswith("c_proj.weight"):
            seen_c_proj += 1
            assert float(p.std()) == pytest.approx(c_proj_std, rel=0.05), name
            assert abs(float(p.mean())) < 0.1 * c_proj_std, name
        else:
            assert float(p.std()) == pytest.approx(0.02, rel=0.05), name
    assert seen_c_proj == 2 * config.n_layer


def test_residual_stream_does_not_grow_with_depth_at_init():
    def top_std(n_layer: int) -> float:
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=32, vocab_size=65, n_layer=n_layer, n_head=2, n_embd=64))
        x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(32))
        with torch.no_grad():
            for block in model.transformer.h:
                x = block(x)
        return float(x.std())

    idx = torch.randint(65, (4, 32), generator=torch.Generator().manual_seed(0))
    assert top_std(32) < 1.3 * top_std(2)


# ----------------------------------------------------------- HF parity
def _hf(config: GPTConfig, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    transformers.utils.logging.set_verbosity_error()
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(hf_config(config))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every LayerNorm away from the identity, every bias non-zero
        for p in hf.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return hf.eval()


HF_CONFIG = GPTConfig(block_size=24, vocab_size=101, n_layer=3, n_head=4, n_embd=48)


def test_hf_weights_give_hf_logits_and_loss():
    hf = _hf(HF_CONFIG)
    model = GPT.from_hf_state_dict(hf.state_dict(), HF_CONFIG).eval()
    assert model.lm_head.weight is model.transformer.wte.weight
    idx = torch.randint(HF_CONFIG.vocab_size, (3, HF_CONFIG.block_size))
    with torch.no_grad():
        logits, _ = model(idx)
        out = hf(idx, labels=idx)
        _, loss = model(idx[:, :-1], idx[:, 1:])  # HF shifts the labels itself
    assert logits.dtype == torch.float32
    assert float((logits - out.logits).abs().max()) <= 1e-4
    assert loss.item() == pytest.approx(float(out.loss), abs=1e-5)


def test_from_hf_state_dict_transposes_the_conv1d_weights():
    hf = _hf(HF_CONFIG)
    sd = hf.state_dict()
    model = GPT.from_hf_state_dict(sd, HF_CONFIG)
    own = model.state_dict()
    for key in ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"):
        assert torch.equal(own[f"transformer.h.1.{key}"], sd[f"transformer.h.1.{key}"].t())
    for key in ("transformer.wte.weight", "transformer.wpe.weight", "transformer.h.2.ln_1.bias"):
        assert torch.equal(own[key], sd[key])


def test_from_hf_state_dict_accepts_mask_buffers_and_a_missing_head():
    hf = _hf(HF_CONFIG)
    sd = dict(hf.state_dict())
    reference = GPT.from_hf_state_dict(sd, HF_CONFIG).state_dict()
    t = HF_CONFIG.block_size
    for i in range(HF_CONFIG.n_layer):  # what older transformers versions saved
        sd[f"transformer.h.{i}.attn.bias"] = torch.ones(t, t, dtype=torch.bool).tril()[None, None]
        sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    sd.pop("lm_head.weight")
    loaded = GPT.from_hf_state_dict(sd, HF_CONFIG).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())


def test_from_hf_state_dict_rejects_mismatched_dicts():
    sd = dict(_hf(HF_CONFIG).state_dict())
    missing = {k: v for k, v in sd.items() if k != "transformer.h.0.ln_1.weight"}
    with pytest.raises(ValueError, match="missing"):
        GPT.from_hf_state_dict(missing, HF_CONFIG)
    with pytest.raises(ValueError, match="unexpected"):
        GPT.from_hf_state_dict({**sd, "transformer.h.0.extra.weight": torch.zeros(1)}, HF_CONFIG)
    with pytest.raises(ValueError, match="missing"):  # one layer fewer than the config says
        GPT.from_hf_state_dict(sd, GPTConfig(**{**vars(HF_CONFIG), "n_layer": 4}))
    with pytest.raises(ValueError, match="shape"):
        GPT.from_hf_state_dict(sd, GPTConfig(**{**vars(HF_CONFIG), "vocab_size": 100}))


def test_hf_config_mapping_round_trips_and_rejects_what_gpt_cannot_be():
    transformers = pytest.importorskip("transformers")
    config = GPTConfig(block_size=24, vocab_size=101, n_layer=3, n_head=4, n_embd=48, dropout=0.1)
    hc = hf_config(config)
    assert (hc.n_positions, hc.vocab_size, hc.n_layer, hc.n_head, hc.n_embd) == (24, 101, 3, 4, 48)
    assert hc.resid_pdrop == hc.embd_pdrop == hc.attn_pdrop == 0.1
    assert hc.bos_token_id == hc.eos_token_id == 0  # HF's default 50256 is past this vocabulary
    assert hf_config(GPTConfig.preset("gpt2")).eos_token_id == 50256
    assert config_from_hf(hc) == GPTConfig(**{**vars(config), "dropout": 0.0})
    assert config_from_hf(hc, dropout=0.1) == config
    assert config_from_hf(transformers.GPT2Config()) == GPTConfig.preset("gpt2")
    # the same parameters, name for name and size for size
    hf_sd = transformers.GPT2LMHeadModel(hc).state_dict()
    ours = GPT(config).state_dict()
    assert all(ours[k].numel() == v.numel() for k, v in hf_sd.items() if k in ours)
    with pytest.raises(ValueError, match="bias=True"):
        hf_config(GPTConfig(**{**vars(config), "bias": False}))
    with pytest.raises(ValueError, match="n_inner"):
        config_from_hf(transformers.GPT2Config(n_embd=48, n_head=4, n_inner=100))
    with pytest.raises(ValueError, match="activation_function"):
        config_from_hf(transformers.GPT2Config(activation_function="relu"))
    with pytest.raises(ValueError, match="layer_norm_epsilon"):
        config_from_hf(transformers.GPT2Config(layer_norm_epsilon=1e-6))
    with pytest.raises(ValueError, match="unknown config fields"):
        config_from_hf(hc, n_layers=2)


# ------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"n_embd": 30, "n_head": 4}, "not divisible"),
        ({"n_layer": 0}, "positive"),
        ({"block_size": -1}, "positive"),
        ({"vocab_size": True}, "positive"),
        ({"n_embd": 32.0}, "positive"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
    ],
)
def test_bad_configs_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**{**vars(TINY), **overrides})


def test_presets_and_overrides():
    config = GPTConfig.preset("baby", n_layer=4)
    assert (config.n_layer, config.n_embd, config.vocab_size, config.dropout) == (4, 384, 65, 0.2)
    with pytest.raises(ValueError, match="unknown preset"):
        GPTConfig.preset("gpt5")
    with pytest.raises(ValueError, match="unknown config fields"):
        GPTConfig.preset("test", n_layers=3)
    with pytest.raises(ValueError, match="not divisible"):
        GPTConfig.preset("gpt2", n_head=7)


# ----------------------------------------------------------- forward errors
@pytest.fixture(scope="module")
def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(TINY).eval()


@pytest.mark.parametrize(
    ("idx", "match"),
    [
        (torch.zeros(1, TINY.block_size + 1, dtype=torch.long), "exceeds block_size"),
        (torch.full((1, 4), TINY.vocab_size, dtype=torch.long), "token ids must be in"),
        (torch.full((1, 4), -1, dtype=torch.long), "token ids must be in"),
        (torch.zeros(1, 4), "LongTensor"),
        (torch.zeros(1, 4, dtype=torch.int32), "LongTensor"),
        (torch.zeros(4, dtype=torch.long), "LongTensor"),
    ],
)
def test_bad_inputs_are_refused(tiny, idx, match):
    with pytest.raises(ValueError, match=match):
        tiny(idx)


def test_forward_shapes_and_loss(tiny):
    idx = torch.randint(TINY.vocab_size, (3, 7))
    logits, loss = tiny(idx)
    assert logits.shape == (3, 7, TINY.vocab_size) and logits.dtype == torch.float32
    assert loss is None
    targets = torch.randint(TINY.vocab_size, (3, 7))
    logits, loss = tiny(idx, targets)
    assert loss.shape == () and loss.requires_grad
    expected = F.cross_entropy(logits.reshape(-1, TINY.vocab_size), targets.reshape(-1))
    assert loss.item() == pytest.approx(expected.item())


def test_targets_of_minus_one_are_ignored(tiny):
    idx = torch.randint(TINY.vocab_size, (2, 6))
    targets = torch.randint(TINY.vocab_size, (2, 6))
    masked = targets.clone()
    masked[:, :3] = -1
    logits, loss = tiny(idx, masked)
    kept = F.cross_entropy(logits[:, 3:].reshape(-1, TINY.vocab_size), targets[:, 3:].reshape(-1))
    assert loss.item() == pytest.approx(kept.item())


def test_the_past_does_not_see_the_future(tiny):
    idx = torch.randint(TINY.vocab_size, (1, 10))
    changed = idx.clone()
    changed[0, 6:] = (changed[0, 6:] + 1) % TINY.vocab_size
    with torch.no_grad():
        a, _ = tiny(idx)
        b, _ = tiny(changed)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


# ---------------------------------------------------------------- training
@pytest.mark.parametrize("vocab_size", [65, 1000])
def test_loss_at_init_is_about_ln_vocab_size(vocab_size):
    torch.manual_seed(0)
    config = GPTConfig(**{**vars(TINY), "vocab_size": vocab_size})
    model = GPT(config)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(vocab_size, (8, config.block_size), generator=gen)
    y = torch.randint(vocab_size, (8, config.block_size), generator=gen)
    _, loss = model(x, y)
    assert loss.item() == pytest.approx(math.log(vocab_size), abs=0.1)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=4, n_embd=64))
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(65, (4, 16), generator=gen)
    y = torch.randint(65, (4, 16), generator=gen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(80):
        optimizer.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = GPT(TINY)
    x = torch.randint(TINY.vocab_size, (2, TINY.block_size))
    _, loss = model(x, x)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------- dropout
def test_dropout_in_training_and_evaluation():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**vars(TINY), "dropout": 0.2}))
    idx = torch.randint(TINY.vocab_size, (2, 12))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(idx)[0], model(idx)[0])  # eval: deterministic
        model.train()
        first, second = model(idx)[0], model(idx)[0]
        assert not torch.allclose(first, second)  # train: dropout differs call to call
        torch.manual_seed(7)
        a = model(idx)[0]
        torch.manual_seed(7)
        b = model(idx)[0]
        assert torch.equal(a, b)  # ... but not for the same seed
    no_dropout = GPT(TINY).train()
    with torch.no_grad():
        assert torch.equal(no_dropout(idx)[0], no_dropout(idx)[0])


def test_dropout_modules_follow_the_config():
    model = GPT(GPTConfig(**{**vars(TINY), "dropout": 0.3}))
    ps = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    assert ps == {0.3}
    assert all(block.attn.dropout == 0.3 for block in model.transformer.h)


# ------------------------------------------------------------------- FLOPs
def test_flops_per_token():
    model = _meta_gpt(GPTConfig.preset("gpt2"))
    n = 124_439_808 - 1024 * 768  # non-embedding parameters (wte stays: it is the output layer)
    attention = 12 * 12 * 12 * 64 * 1024  # 12 * n_layer * n_head * head_size * T
    assert model.flops_per_token() == 6 * n + attention == 855_166_464
    assert model.flops_per_token(512) == 6 * n + attention // 2
    tiny = GPT(TINY)
    c = TINY
    assert tiny.flops_per_token(10) == 6 * tiny.num_params(non_embedding=True) + (
        12 * c.n_layer * c.n_head * c.head_size * 10
    )


def test_the_forward_pass_compiles_into_one_graph():
    """torch.compile sees one graph: the token-id check (which reads ids back to the
    host) is skipped while compiling, and still refuses bad ids otherwise."""
    import torch._dynamo

    model = GPT(GPTConfig.preset("test"))
    idx = torch.randint(0, model.config.vocab_size, (2, 8))
    explained = torch._dynamo.explain(model)(idx, idx)
    assert explained.graph_break_count == 0, explained.break_reasons
    with pytest.raises(ValueError, match="token ids must be in"):
        model(idx + model.config.vocab_size)
