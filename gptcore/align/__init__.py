"""From GPT to a chat assistant: SFT, a reward model, RLHF and DPO (lesson 8's library).

The stages, each one module:

- ``chat``: the chat format (role and end-of-turn tokens above the base
  vocabulary), ``render`` with its loss mask, ``parse``, ``grow_vocab``.
- ``data``: the task (opposites), demonstrations and preference pairs made
  from a seed, and ``judge`` to measure a reply.
- ``sft``: the masked next-token loss and ``finetune``.
- ``reward``: ``RewardModel``, the Bradley-Terry loss, pairwise accuracy.
- ``logprobs``: log-probabilities of a response's tokens under a model.
- ``dpo``: the DPO loss and ``train_dpo``.
- ``rl``: the KL-penalised reward and ``rlhf`` (REINFORCE with a baseline).
- ``evaluate``: the task's metrics on sampled replies.
- ``run``: alignment run folders (``load_aligned``).

Every training stage is ``gptcore.train.train`` with a batch source and a
loss function plugged in; each stage function takes its loss (or reward) as
an argument with gptcore's as the default, so a learner's can be swapped in.
"""

from .batches import pad, response_batch, row_source
from .chat import IGNORE_INDEX, ROLES, ChatFormat, Message, grow_vocab, sft_targets
from .data import Preference, demonstrations, judge, preference_pairs, prompts
from .dpo import dpo_loss, train_dpo
from .evaluate import evaluate_chat
from .logprobs import sequence_logprob, token_logprobs
from .reward import RewardModel, bradley_terry_loss, pairwise_accuracy, train_reward_model
from .rl import kl_penalized_reward, policy_gradient_loss, rlhf
from .run import load_aligned
from .sft import align_config, finetune, masked_lm_loss

__all__ = [
    "IGNORE_INDEX",
    "ROLES",
    "ChatFormat",
    "Message",
    "Preference",
    "RewardModel",
    "align_config",
    "bradley_terry_loss",
    "demonstrations",
    "dpo_loss",
    "evaluate_chat",
    "finetune",
    "grow_vocab",
    "judge",
    "kl_penalized_reward",
    "load_aligned",
    "masked_lm_loss",
    "pad",
    "pairwise_accuracy",
    "policy_gradient_loss",
    "preference_pairs",
    "prompts",
    "response_batch",
    "rlhf",
    "row_source",
    "sequence_logprob",
    "sft_targets",
    "token_logprobs",
    "train_dpo",
    "train_reward_model",
]
