"""Known facts about lesson 8 (from GPT to ChatGPT), for the tests that check, release and grade it.

- ``LESSON08_SOLUTION_IDS``: grade ids of the solution cells, in notebook order;
- ``LESSON08_POINTS``: grade id of each autograded test cell -> its points;
- no wrong answer passes the visible tests and fails only the hidden ones: the
  visible test cells try every rule the hidden ones grade (see tests/registry.py)
"""

from __future__ import annotations

LESSON08_SOLUTION_IDS: list[str] = [
    "loss_mask",
    "masked_lm_loss",
    "pairwise_loss",
    "kl_penalized_reward",
    "response_logprob",
    "dpo_loss",
]

LESSON08_POINTS: dict[str, int] = {
    "loss_mask_tests": 3,
    "masked_lm_loss_tests": 3,
    "pairwise_loss_tests": 2,
    "kl_penalized_reward_tests": 3,
    "response_logprob_tests": 3,
    "dpo_loss_tests": 3,
}

