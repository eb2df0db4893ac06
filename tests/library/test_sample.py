"""gptcore.sample and the KV cache: filters, seeded sampling, cache parity, HF parity."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from gptcore.model import GPT, GPTConfig, hf_config
from gptcore.model.attention import KVCache, causal_mask, offset_causal_mask
from gptcore.sample import (
    apply_temperature,
    generate,
    sample_token,
    stream,
    top_k_filter,
    top_p_filter,
)

NEG = float("-inf")


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("test", **{"vocab_size": 50, "block_size": 24, **kw})).eval()


def test_filters_by_hand():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0])
    assert top_k_filter(logits, 2).tolist() == [NEG, 3.0, 2.0, NEG]
    assert top_k_filter(logits, 10).tolist() == logits.tolist()
    assert top_k_filter(torch.tensor([1.0, 2.0, 2.0, 0.0]), 1).tolist() == [NEG, 2.0, 2.0, NEG], (
        "ties kept"
    )
    # probs of log([0.5, 0.3, 0.15, 0.05]): p=0.5 keeps one, 0.6 two, 0.9 three, 1.0 all.
    lp = torch.log(torch.tensor([0.15, 0.5, 0.05, 0.3]))
    kept = lambda p: [i for i, v in enumerate(top_p_filter(lp, p).tolist()) if v != NEG]  # noqa: E731
    assert (
        kept(0.5) == [1]
        and kept(0.6) == [1, 3]
        and kept(0.9) == [0, 1, 3]
        and kept(1.0) == [0, 1, 2, 3]
    )
    assert kept(0.01) == [1], "the most likely token always survives"
    assert torch.equal(apply_temperature(logits, 2.0), logits / 2)


def test_temperature_reshapes_the_distribution():
    logits = torch.tensor([2.0, 1.0, 0.0])
    cold = torch.softmax(apply_temperature(logits, 0.5), -1)
    hot = torch.softmax(apply_temperature(logits, 2.0), -1)
    base = torch.softmax(logits, -1)
    assert cold[0] > base[0] > hot[0] and hot[2] > base[2] > cold[2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_invalid_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_token(torch.zeros(5), **kwargs)
    with pytest.raises(ValueError, match=match):
        generate(_model(), [1], 3, **kwargs)


def test_empty_prompt_and_bad_lengths():
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(_model(), [], 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(_model(), [1], -1)


def test_greedy_is_argmax():
    logits = torch.tensor([0.1, 5.0, 0.2])
    assert sample_token(logits, temperature=0) == 1
    model = _model()
    out = generate(model, [3], 5, temperature=0)
    ids = [3]
    for tok in out:
        with torch.no_grad():
            assert tok == int(model(torch.tensor([ids]))[0][0, -1].argmax())
        ids.append(tok)


def test_sampled_frequencies_follow_the_filtered_distribution():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    logits = probs.log()
    n = 20_000
    g = torch.Generator().manual_seed(0)
    plain = Counter(sample_token(logits, generator=g) for _ in range(n))
    for i, p in enumerate(probs.tolist()):
        assert abs(plain[i] / n - p) < 0.015
    topk = Counter(sample_token(logits, top_k=2, generator=g) for _ in range(n))
    assert set(topk) == {0, 1} and abs(topk[0] / n - 4 / 7) < 0.015
    nucleus = Counter(sample_token(logits, top_p=0.75, generator=g) for _ in range(n))
    assert set(nucleus) == {0, 1, 2} and abs(nucleus[2] / n - 2 / 9) < 0.015
    cold = Counter(sample_token(logits, temperature=0.5, generator=g) for _ in range(n))
    sq = probs**2 / (probs**2).sum()
    assert abs(cold[0] / n - float(sq[0])) < 0.015


def test_seeded_generation_is_reproducible():
    model = _model()
    a = generate(model, [1, 2], 20, seed=7, top_k=10)
    assert a == generate(model, [1, 2], 20, seed=7, top_k=10)
    assert a != generate(model, [1, 2], 20, seed=8, top_k=10)
    assert all(type(t) is int for t in a)


@pytest.mark.parametrize("prompt_len", [1, 5, 24])
def test_cache_gives_exactly_the_uncached_tokens(prompt_len):
    model = _model()
    prompt = list(range(1, prompt_len + 1))
    for seed in range(4):
        kw = dict(seed=seed, temperature=1.0, top_p=0.95)
        # 40 new tokens run well past block_size=24: the window slides.
        assert generate(model, prompt, 40, use_cache=True, **kw) == generate(
            model, prompt, 40, use_cache=False, **kw
        )


def test_cached_logits_match_full_forward():
    model = _model()
    idx = torch.randint(0, 50, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_cache(batch_size=2)
        parts = [
            model(idx[:, :7], cache=cache)[0],
            model(idx[:, 7:8], cache=cache)[0],
            model(idx[:, 8:20], cache=cache)[0],
        ]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.length == 20
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(idx[:, :5], cache=cache)


def test_kv_cache_update_and_overflow():
    cache = KVCache(1, 2, 4, 3)
    k1, v1 = torch.ones(1, 2, 3, 3), 2 * torch.ones(1, 2, 3, 3)
    k, v = cache.update(k1, v1)
    assert k.shape == (1, 2, 3, 3) and cache.length == 3 and torch.equal(v, v1)
    k, v = cache.update(3 * torch.ones(1, 2, 1, 3), 4 * torch.ones(1, 2, 1, 3))
    assert k.shape == (1, 2, 4, 3) and k[0, 0, :, 0].tolist() == [1, 1, 1, 3]
    with pytest.raises(ValueError, match="do not fit"):
        cache.update(k1[:, :, :1], v1[:, :, :1])
    assert torch.equal(offset_causal_mask(0, 5), causal_mask(5))
    assert offset_causal_mask(2, 2).tolist() == [
        [True, True, True, False],
        [True, True, True, True],
    ]


def test_stop_tokens_and_streaming():
    model = _model()
    full = generate(model, [1], 30, seed=3)
    stop = full[10]
    first = full.index(stop)
    assert generate(model, [1], 30, seed=3, stop_tokens={stop}) == full[: first + 1]
    seen = []
    assert generate(model, [1], 8, seed=3, callback=seen.append) == seen == full[:8]
    it = stream(model, [1], 30, seed=3)
    assert [next(it) for _ in range(3)] == full[:3]


def test_greedy_matches_hugging_face_generate():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=64, vocab_size=97, n_layer=2, n_head=4, n_embd=32)
    hf = transformers.GPT2LMHeadModel(hf_config(cfg)).eval()
    ours = GPT.from_hf_state_dict(hf.state_dict(), cfg).eval()
    prompt = torch.tensor([[5, 17, 42, 8]])
    with torch.no_grad():
        theirs = hf.generate(
            prompt, max_new_tokens=40, do_sample=False, pad_token_id=0, eos_token_id=None
        )[0, 4:].tolist()
    assert generate(ours, prompt[0], 40, temperature=0) == theirs
