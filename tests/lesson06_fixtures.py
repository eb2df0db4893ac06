"""Known facts about lesson 6 (training), for the tests that release and grade it.

The same three kinds of facts as ``lesson_fixtures.py`` holds for the other lessons:

- ``LESSON06_SOLUTION_IDS``: grade ids of the solution cells, in notebook order;
- ``LESSON06_POINTS``: grade id of each autograded test cell -> its points;
- ``LESSON06_WRONG_VISIBLE_ONLY``: solution grade id -> the full source of a
  replacement cell with a plausible mistake that the visible test cell misses
  and the hidden tests catch. Grading a notebook with it must lose exactly the
  points of that exercise's test cell.
"""

from __future__ import annotations

LESSON06_SOLUTION_IDS: list[str] = [
    "get_batch",
    "lr_schedule",
    "optimization_step",
    "estimate_loss",
]

LESSON06_POINTS: dict[str, int] = {
    "get_batch_tests": 3,
    "lr_schedule_tests": 3,
    "optimization_step_tests": 4,
    "estimate_loss_tests": 3,
}

LESSON06_WRONG_VISIBLE_ONLY: dict[str, str] = {
    # nanoGPT's get_lr: `step > decay_iters` instead of `>=`. The same curve whenever the
    # decay phase has a length; with decay_iters == warmup_iters (no decay phase, in the
    # hidden tests only) step decay_iters divides 0 by 0.
    "lr_schedule": '''\
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
