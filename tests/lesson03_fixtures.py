"""Known facts about lesson 3 (embeddings), for the tests that check, release and grade it.

- ``LESSON03_SOLUTION_IDS``: grade ids of the solution cells, in notebook order;
- ``LESSON03_POINTS``: grade id of each autograded test cell -> its points;
- ``LESSON03_WRONG_CAUGHT_VISIBLE``: solution grade id -> the full source of a
  replacement cell with a plausible mistake that only the hidden tests used to
  catch and the visible test cell catches now (the mistakes never touch what
  the other graded cells use).
"""

from __future__ import annotations

LESSON03_SOLUTION_IDS: list[str] = [
    "one_hot_embed",
    "sinusoidal_positional_encoding",
    "neural_bigram",
    "train_step",
]

LESSON03_POINTS: dict[str, int] = {
    "one_hot_embed_tests": 2,
    "sinusoidal_positional_encoding_tests": 3,
    "neural_bigram_tests": 3,
    "train_step_tests": 2,
    "bigram_matches_counts": 2,
}

# No wrong answer passes the visible test cells and fails the hidden ones: they
# grade every rule the hidden ones do (see lesson_fixtures.py). These are mistakes
# that only the hidden tests used to catch; the visible test cell catches them now.
LESSON03_WRONG_CAUGHT_VISIBLE: dict[str, str] = {
    # F.one_hot without num_classes makes vectors of length idx.max() + 1. The visible
    # inputs once all used the last row somewhere.
    "one_hot_embed": '''\
def one_hot_embed(idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Embed ids through one-hot vectors (lets F.one_hot guess their length)."""
    return F.one_hot(idx).to(weight.dtype) @ weight
''',
    # Always 10000, whatever base says. The visible tests once used the default base only.
    "sinusoidal_positional_encoding": '''\
def sinusoidal_positional_encoding(block_size: int, n_embd: int, base: float = 10000.0) -> torch.Tensor:
    """The sinusoidal encodings, computed in float32 (ignores base)."""
    pos = torch.arange(block_size).float().unsqueeze(1)
    div = 10000.0 ** (torch.arange(0, n_embd, 2).float() / n_embd)
    pe = torch.zeros(block_size, n_embd)
    pe[:, 0::2] = torch.sin(pos / div)
    pe[:, 1::2] = torch.cos(pos / div)
    return pe
''',
    # Computes the loss even when targets is None. The visible tests once always passed targets.
    "neural_bigram": '''\
class NeuralBigram(nn.Module):
    """A bigram whose forward always computes the loss."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets=None):
        logits = self.token_embedding(idx)
        B, T, V = logits.shape
        loss = F.cross_entropy(logits.view(B * T, V), targets.view(B * T))
        return logits, loss
''',
    # Never calls model.train(). The visible tests once handed over models in training
    # mode only; now also a model with dropout left in eval mode.
    "train_step": '''\
def train_step(model, optimizer, x, y):
    """One step, without switching the model to training mode."""
    optimizer.zero_grad()
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    return loss.item()
''',
}
