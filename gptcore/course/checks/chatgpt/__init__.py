"""Checks for lesson 8 (from GPT to ChatGPT): the SFT loss mask and loss, the reward
model's pairwise loss, the KL-penalised reward of RLHF, response log-probabilities and DPO.

Each check compares the learner's function with gptcore's reference
(``gptcore.align``) on hand-checkable inputs, then on ``cases`` random ones
drawn from a seeded generator. The visible call already tries every rule the
docstrings state (several turns and a system turn, an empty reply, rewards
far apart, beta = 0, rows of different lengths); the hidden tests only add
seeds and cases.

Results must have the documented type, shape and dtype before their values
are compared, as plain tensors or lists, so an object whose ``__eq__`` always
answers True cannot pass. Losses must stay differentiable: SFT, the reward
model and DPO train through them. A wrong value that a known mistake
reproduces is named: a mask off by one token or on the prompt, a sign error in
the pairwise loss, the KL term's sign or a penalty against the wrong model,
log-probabilities summed over the prompt, and DPO without its reference.

``mask`` holds the loss-mask check, ``losses`` the others, ``mistakes`` the
tables of known mistakes. The notebook imports the package:
``from gptcore.course.checks import chatgpt as checks``.
"""

from __future__ import annotations

from .losses import dpo_loss, kl_penalized_reward, masked_lm_loss, pairwise_loss, response_logprob
from .mask import loss_mask

__all__ = [
    "dpo_loss",
    "kl_penalized_reward",
    "loss_mask",
    "masked_lm_loss",
    "pairwise_loss",
    "response_logprob",
]
