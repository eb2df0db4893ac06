"""Known facts about lesson 6 (training), for the tests that release and grade it.

The same three kinds of facts as ``lesson_fixtures.py`` holds for the other lessons:

- ``LESSON06_SOLUTION_IDS``: grade ids of the solution cells, in notebook order;
- ``LESSON06_POINTS``: grade id of each autograded test cell -> its points;
- no wrong answer passes the visible tests and fails only the hidden ones: the
  visible test cells try every rule the hidden ones grade (see tests/registry.py)
- ``LESSON06_WRONG_CAUGHT_VISIBLE``: solution grade id -> the full source of a
  replacement cell with a plausible mistake that only the hidden tests used to
  catch (or, for get_batch, that no test caught), and the visible test cell
  catches now; it costs only its own exercise's points;
- ``LESSON06_RIGHT_ANSWERS``: solution grade id -> a correct answer written
  differently from the solution, which must get full marks.
"""

from __future__ import annotations

LESSON06_SOLUTION_IDS: list[str] = [
    "get_batch",
    "lr_at",
    "optimization_step",
    "estimate_loss",
]

LESSON06_POINTS: dict[str, int] = {
    "get_batch_tests": 3,
    "lr_at_tests": 3,
    "optimization_step_tests": 4,
    "estimate_loss_tests": 3,
}


LESSON06_WRONG_CAUGHT_VISIBLE: dict[str, str] = {
    # issue 12: one torch.randint per window draws the same numbers as the single call the
    # docstring asks for, and passed every check.
    "get_batch": '''\
def get_batch(
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows, one torch.randint call per window."""
    high = len(data) - block_size
    ix = [int(torch.randint(high, (1,), generator=generator)) for _ in range(batch_size)]
    x = torch.stack([data[i : i + block_size] for i in ix])
    y = torch.stack([data[i + 1 : i + 1 + block_size] for i in ix])
    return x.long(), y.long()
''',
    # nanoGPT's get_lr: `step > decay_iters` instead of `>=`. The same curve whenever the
    # decay phase has a length; with decay_iters == warmup_iters (no decay phase, in the
    # hidden tests only) step decay_iters divides 0 by 0.
    "lr_at": '''\
def lr_at(step: int, *, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """Warmup, then cosine decay (divides by zero when there is no decay phase)."""
    if step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    if step > decay_iters:
        return min_lr
    ratio = (step - warmup_iters) / (decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)
''',
    # Switches back to training mode at the end instead of restoring the mode the model
    # had. The visible tests start every model in training mode; the hidden ones also
    # start some in eval mode, which must stay in eval mode.
    "estimate_loss": '''\
def estimate_loss(
    model: torch.nn.Module,
    data: torch.Tensor,
    batch_size: int,
    block_size: int,
    eval_iters: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    autocast=contextlib.nullcontext,
) -> float:
    """Mean validation loss (always leaves the model in training mode)."""
    model.eval()
    losses = []
    with torch.no_grad():
        for _ in range(eval_iters):
            x, y = get_batch(data, batch_size, block_size, generator)
            with autocast():
                _, loss = model(x.to(device), y.to(device))
            losses.append(float(loss))
    model.train()
    return sum(losses) / len(losses)
''',
}

LESSON06_RIGHT_ANSWERS: dict[str, str] = {
    # issue 12: `total += float(loss)` on a loss that requires grad makes torch warn on
    # stderr, which nbgrader scored as a failed cell: it must get full marks.
    "optimization_step": '''\
def optimization_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches,
    grad_clip: float = 1.0,
    *,
    autocast=contextlib.nullcontext,
    no_sync=None,
) -> tuple[float, float]:
    """One update; keeps float(loss) of each micro-batch."""
    batches = list(batches)
    n = len(batches)
    model.train()
    optimizer.zero_grad()
    total = 0.0
    for i, (x, y) in enumerate(batches):
        last = i == n - 1
        context = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with context:
            with autocast():
                _, loss = model(x, y)
            (loss / n).backward()
        total += float(loss)
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:
        grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(grads))
    optimizer.step()
    return total / n, float(norm)
''',
}
