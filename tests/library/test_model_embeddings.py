"""gptcore's embeddings, neural bigram, batch sampler and training step (lesson 3's references)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from gptcore.model import (
    BigramLM,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    one_hot_embed,
    sinusoidal_positional_encoding,
)
from gptcore.train import get_batch, train_step


# ---------------------------------------------------------------- sinusoidal
def test_sinusoidal_by_hand():
    pe = sinusoidal_positional_encoding(3, 4)
    assert pe.shape == (3, 4) and pe.dtype == torch.float32
    # Pair 0 turns 1 radian per position, pair 1 turns 10000 ** (-2/4) = 0.01.
    expected = [
        [0.0, 1.0, 0.0, 1.0],
        [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
        [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)],
    ]
    torch.testing.assert_close(pe, torch.tensor(expected), rtol=0, atol=1e-7)


def _loops(T: int, C: int, base: float) -> torch.Tensor:
    out = torch.zeros(T, C, dtype=torch.float64)
    for p in range(T):
        for i in range(C // 2):
            angle = p / base ** (2 * i / C)
            out[p, 2 * i], out[p, 2 * i + 1] = math.sin(angle), math.cos(angle)
    return out


@pytest.mark.parametrize(("T", "C", "base"), [(1, 2, 10000.0), (50, 16, 10000.0), (20, 6, 100.0)])
def test_sinusoidal_matches_the_formula(T, C, base):
    got = sinusoidal_positional_encoding(T, C, base)
    torch.testing.assert_close(got, _loops(T, C, base).float(), rtol=0, atol=1e-6)


def test_sinusoidal_is_precise_at_long_range():
    # Computed in float64 then rounded: no float32 drift at position 4095.
    got = sinusoidal_positional_encoding(4096, 8).double()
    torch.testing.assert_close(got[-1], _loops(4096, 8, 10000.0)[-1], rtol=0, atol=1e-7)


def test_sinusoidal_dot_product_depends_only_on_distance():
    pe = sinusoidal_positional_encoding(200, 32).double()
    for k in (0, 1, 5, 40):
        dots = (pe[: 200 - k] * pe[k:]).sum(-1)  # PE[p] . PE[p + k] for every p
        torch.testing.assert_close(dots, torch.full_like(dots, float(dots[0])), atol=1e-5, rtol=0)
    assert float(pe[0] @ pe[0]) == pytest.approx(16.0)  # C/2 pairs, each sin^2 + cos^2


def test_sinusoidal_offset_is_a_rotation():
    pe = sinusoidal_positional_encoding(64, 8, base=100.0).double()
    k = 3
    omega = 100.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    c, s = torch.cos(k * omega), torch.sin(k * omega)
    sin_p, cos_p = pe[:, 0::2], pe[:, 1::2]
    torch.testing.assert_close(pe[k:, 0::2], (sin_p * c + cos_p * s)[:-k])  # sin(a + b)
    torch.testing.assert_close(pe[k:, 1::2], (cos_p * c - sin_p * s)[:-k])  # cos(a + b)


@pytest.mark.parametrize(("T", "C"), [(0, 4), (4, 3), (4, 0), (-1, 2)])
def test_sinusoidal_rejects_bad_sizes(T, C):
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positional_encoding(T, C)


# ------------------------------------------------------------------- one-hot
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_hot_equals_lookup(shape, dtype):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(11, 6, generator=gen, dtype=dtype)
    idx = torch.randint(11, shape, generator=gen)
    got = one_hot_embed(idx, weight)
    assert got.shape == (*shape, 6) and got.dtype == dtype
    assert torch.equal(got, F.embedding(idx, weight))
    assert torch.equal(got, weight[idx])


def test_one_hot_accepts_int32_and_rejects_floats():
    weight = torch.randn(5, 3)
    assert torch.equal(
        one_hot_embed(torch.tensor([4, 0], dtype=torch.int32), weight), weight[[4, 0]]
    )
    with pytest.raises(ValueError, match="integer token ids"):
        one_hot_embed(torch.tensor([1.0]), weight)


def test_one_hot_gradient_reaches_only_used_rows():
    weight = torch.randn(9, 4, requires_grad=True)
    one_hot_embed(torch.tensor([[2, 5], [5, 7]]), weight).sum().backward()
    used = weight.grad.abs().sum(1).nonzero().flatten().tolist()
    assert used == [2, 5, 7]
    assert weight.grad[5].tolist() == [2.0] * 4  # id 5 occurs twice


# ----------------------------------------------------------------- positions
def test_learned_positions():
    torch.manual_seed(0)
    pos = LearnedPositionalEmbedding(block_size=8, n_embd=4)
    assert [tuple(p.shape) for p in pos.parameters()] == [(8, 4)]
    assert pos(5).shape == (5, 4) and torch.equal(pos(5), pos.weight[:5])
    assert pos(8).shape == (8, 4)
    with pytest.raises(ValueError, match="block_size=8"):
        pos(9)


def test_sinusoidal_module_is_a_fixed_buffer():
    enc = SinusoidalPositionalEncoding(block_size=16, n_embd=6, base=50.0)
    assert list(enc.parameters()) == [] and enc.state_dict() == {}
    assert torch.equal(enc(10), sinusoidal_positional_encoding(16, 6, 50.0)[:10])
    with pytest.raises(ValueError, match="longer than block_size=16"):
        enc(17)


# -------------------------------------------------------------------- bigram
@pytest.mark.parametrize(("n_embd", "n_params"), [(None, 13 * 13), (4, 13 * 4 + 4 * 13 + 13)])
def test_bigram_shapes_and_parameters(n_embd, n_params):
    torch.manual_seed(0)
    model = BigramLM(13, n_embd)
    assert sum(p.numel() for p in model.parameters()) == n_params
    idx = torch.randint(13, (3, 7))
    logits, loss = model(idx)
    assert logits.shape == (3, 7, 13) and logits.dtype == torch.float32 and loss is None


def test_bigram_table_is_a_lookup_and_loss_is_cross_entropy():
    torch.manual_seed(0)
    model = BigramLM(10)
    idx, targets = torch.randint(10, (4, 6)), torch.randint(10, (4, 6))
    logits, loss = model(idx, targets)
    assert torch.equal(logits, model.token_embedding.weight[idx])
    expected = F.cross_entropy(logits.reshape(-1, 10), targets.reshape(-1))
    assert loss.shape == () and torch.equal(loss, expected)
    manual = -logits.log_softmax(-1).gather(-1, targets[..., None]).mean()
    torch.testing.assert_close(loss, manual)
    loss.backward()
    assert model.token_embedding.weight.grad is not None


def test_bigram_with_log_counts_scores_like_the_count_model():
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]])
    model = BigramLM(3)
    with torch.no_grad():
        model.token_embedding.weight.copy_(probs.log())
    idx, nxt = torch.tensor([[0, 1, 2, 0]]), torch.tensor([[1, 2, 0, 0]])
    _, loss = model(idx, nxt)
    expected = -probs[idx, nxt].log().mean()
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize(
    "idx", [torch.tensor([[0, 5]]), torch.tensor([[-1, 0]]), torch.tensor([[0.0, 1.0]])]
)
def test_bigram_rejects_bad_ids(idx):
    with pytest.raises(ValueError):
        BigramLM(5)(idx)


def test_bigram_rejects_bad_sizes():
    for args in [(0,), (5, 0)]:
        with pytest.raises(ValueError):
            BigramLM(*args)


def test_trained_bigram_reaches_the_count_bigram(shakespeare):
    from gptcore.data import train_val_split
    from gptcore.ngram import NGramModel
    from gptcore.tokenizer import CharTokenizer

    tok = CharTokenizer.from_text(shakespeare)
    V = tok.vocab_size
    train_ids, val_ids = train_val_split(tok.encode(shakespeare))
    train, val = torch.tensor(train_ids), torch.tensor(val_ids)
    counts = NGramModel(2, V, k=0.01).fit(train_ids)
    probs = torch.stack([counts.next_token_probs([i]) for i in range(V)])
    count_loss = float(-probs[val[:-1], val[1:]].log().mean())
    assert count_loss == pytest.approx(2.4875, abs=1e-3)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = BigramLM(V)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(0)
        for _ in range(600):
            train_step(model, optimizer, *get_batch(train, 64, 64, gen))
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        _, loss = model(val[None, :-1], val[None, 1:])
    assert abs(float(loss) - count_loss) < 0.02


# ----------------------------------------------------------------- get_batch
def test_get_batch_windows_and_shift():
    data = torch.arange(100, dtype=torch.int32) * 3
    x, y = get_batch(data, 6, 10, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (6, 10) and x.dtype == y.dtype == torch.int64
    assert x.is_contiguous() and y.is_contiguous()  # model code may call .view() on them
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row, target in zip(x, y):
        start = int(row[0]) // 3
        assert torch.equal(row, data[start : start + 10].long())
        assert torch.equal(target, data[start + 1 : start + 11].long())


def test_get_batch_is_deterministic_with_a_generator():
    data = torch.randint(50, (1000,))
    a = get_batch(data, 4, 8, torch.Generator().manual_seed(7))
    b = get_batch(data, 4, 8, torch.Generator().manual_seed(7))
    c = get_batch(data, 4, 8, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_get_batch_uses_every_start_including_the_last():
    data = torch.arange(12)
    x, _ = get_batch(data, 2000, 8, torch.Generator().manual_seed(0))
    assert set(x[:, 0].tolist()) == {0, 1, 2, 3}  # the last window ends at data[11]


def test_get_batch_errors():
    with pytest.raises(ValueError, match="1-D"):
        get_batch(torch.zeros(4, 20, dtype=torch.long), 2, 3)
    with pytest.raises(ValueError, match="block_size=8"):
        get_batch(torch.arange(8), 2, 8)


# ---------------------------------------------------------------- train_step
def _model_and_batches():
    torch.manual_seed(0)
    model = BigramLM(9, n_embd=5)
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(9, (300,), generator=gen)
    return model, [get_batch(data, 8, 16, gen) for _ in range(3)]


def test_train_step_matches_a_manual_step():
    model, batches = _model_and_batches()
    manual = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    manual_opt = torch.optim.AdamW(manual.parameters(), lr=0.05)
    for p, q in zip(model.parameters(), manual.parameters()):  # leftover gradients
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    model.eval()
    for x, y in batches:
        got = train_step(model, opt, x, y)
        manual_opt.zero_grad()
        _, loss = manual(x, y)
        loss.backward()
        manual_opt.step()
        assert type(got) is float and got == pytest.approx(float(loss.detach()), rel=1e-6)
        assert model.training
        for p, q in zip(model.parameters(), manual.parameters()):
            torch.testing.assert_close(p, q)


def test_train_step_decreases_the_loss():
    model, batches = _model_and_batches()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = batches[0]
    losses = [train_step(model, opt, x, y) for _ in range(30)]
    assert losses[-1] < losses[0] - 0.5
