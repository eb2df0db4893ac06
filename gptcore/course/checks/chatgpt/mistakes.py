"""Tables of known mistakes for lesson 8's checks: what a function with each mistake returns.

Each table is a list of (hint, answer) pairs (gptcore.course.checks.report.Mistakes);
answers are computed lazily, and one that raises is simply not the mistake.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gptcore.align import IGNORE_INDEX, ChatFormat
from gptcore.align.logprobs import token_logprobs

from ..report import Mistakes

# ---------------------------------------------------------------- loss mask
OFF_BY_ONE = (
    "the mask is off by one token: keep each assistant content token and the <|end|> that "
    "closes the turn, not the <|assistant|> role token"
)
ON_PROMPT = (
    "the mask is on the prompt: it must keep the assistant's tokens (what the model learns "
    "to write) and drop the system and user tokens"
)


def mask_mistakes(chat: ChatFormat, ids: list[int], expected: list[int]) -> Mistakes:
    assistant, end = chat.role_ids["assistant"], chat.end_id
    roles = set(chat.role_ids.values())
    shifted_left = [*expected[1:], 0]  # the role token in, the <|end|> out
    shifted_right = [0, *expected[:-1]]  # the first content token out, the token after <|end|> in
    no_end = [0 if t == end else m for t, m in zip(ids, expected, strict=True)]
    with_role = [1 if t == assistant else m for t, m in zip(ids, expected, strict=True)]
    inverted = [1 - m for m in expected]
    prompt_content = [int(not m and t not in roles and t != end) for t, m in zip(ids, expected, strict=True)]
    return [
        (OFF_BY_ONE, shifted_left),
        (OFF_BY_ONE + " (yours starts one token late and runs one past <|end|>)", shifted_right),
        ("the <|end|> closing each assistant turn must be kept too: it is how the model "
         "learns to stop", no_end),
        (OFF_BY_ONE + " (yours keeps the <|assistant|> token as well)", with_role),
        (ON_PROMPT, inverted),
        (ON_PROMPT, prompt_content),
        ("the mask keeps everything: only the assistant's turns are learned", [1] * len(ids)),
    ]  # fmt: skip


# ------------------------------------------------------------ masked LM loss
def masked_lm_mistakes(logits: torch.Tensor, targets: torch.Tensor) -> Mistakes:
    keep = targets != IGNORE_INDEX  # (B, T)
    nll = -token_logprobs(logits, targets)  # (B, T), 0 where ignored
    per_row = nll.sum(-1) / keep.sum(-1).clamp_min(1)  # (B,)
    return [
        ("divide by the number of kept targets, not by every position (ignored ones add 0 "
         "to the sum but must not count)", lambda: nll.sum() / targets.numel()),
        ("the loss is the mean over the kept targets, not their sum", lambda: nll.sum()),
        ("average over all kept targets at once, not the mean of each row's mean (rows keep "
         "different numbers of targets)", lambda: per_row.mean()),
        ("take the cross-entropy of log_softmax(logits), not of the raw logits",
         lambda: -(logits.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)[keep]).mean()),
    ]  # fmt: skip


# ------------------------------------------------------------- pairwise loss
PAIR_SIGN = (
    "sign error: the loss is -log sigmoid(r_chosen - r_rejected); yours rewards the "
    "rejected reply"
)
UNSTABLE = (
    "log(sigmoid(x)) underflows to log(0) = -inf for large differences; use F.logsigmoid "
    "(or -F.softplus(-x))"
)


def pairwise_mistakes(rc: torch.Tensor, rr: torch.Tensor) -> Mistakes:
    d = rc - rr
    return [
        (PAIR_SIGN, lambda: -F.logsigmoid(-d).mean()),
        ("the loss is -log sigmoid(...): the minus sign is missing", lambda: F.logsigmoid(d).mean()),
        ("the loss is the mean over pairs, not the sum", lambda: -F.logsigmoid(d).sum()),
        (UNSTABLE, lambda: -torch.log(torch.sigmoid(d)).mean()),
        ("take the log: -log sigmoid(d), not -sigmoid(d) or 1 - sigmoid(d)",
         lambda: -torch.sigmoid(d).mean()),
        ("take the log: -log sigmoid(d), not -sigmoid(d) or 1 - sigmoid(d)",
         lambda: (1 - torch.sigmoid(d)).mean()),
    ]  # fmt: skip


# -------------------------------------------------------- KL-penalised reward
KL_SIGN = (
    "the KL term's sign is flipped: subtract beta * (logp_policy - logp_ref), so that "
    "drifting away from the reference costs reward"
)
KL_REFERENCE = (
    "the penalty is measured against the wrong model: the KL is between the policy and the "
    "frozen reference (logp_policy - logp_ref); the policy against itself is always 0"
)


def kl_mistakes(reward: torch.Tensor, lp: torch.Tensor, lr: torch.Tensor, beta: float) -> Mistakes:
    kl = lp - lr
    return [
        (KL_SIGN, lambda: reward + beta * kl),
        (KL_REFERENCE, lambda: reward.clone()),
        (KL_REFERENCE + " (yours uses the reference's log-prob alone)", lambda: reward - beta * lr),
        (KL_REFERENCE + " (yours uses the policy's log-prob alone)", lambda: reward - beta * lp),
        ("multiply the KL term by beta, not the whole reward", lambda: beta * (reward - kl)),
        ("the KL term must be multiplied by beta", lambda: reward - kl),
        ("the penalty is beta times the log-ratio, not its absolute value",
         lambda: reward - beta * kl.abs()),
        ("the penalty uses log-probabilities as they are: log pi - log ref, not the ratio "
         "exp(log pi - log ref)", lambda: reward - beta * kl.exp()),
    ]  # fmt: skip


# ----------------------------------------------------------- response log-prob
OVER_PROMPT = (
    "log-probabilities summed over the prompt too: DPO and RLHF score only the response "
    "ids[:, prompt_len:]; the prompt is the same for every reply and is not the policy's output"
)


def logprob_mistakes(logits: torch.Tensor, ids: torch.Tensor, n: int) -> Mistakes:
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    nxt = logp[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, T-1): log p(ids[t+1])
    same = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # (B, T): log p(ids[t]) at t
    raw = logits.float()[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return [
        (OVER_PROMPT, lambda: nxt.sum(-1)),
        (OVER_PROMPT + " (yours starts one token into the prompt)", lambda: nxt[:, n - 2 :].sum(-1)),
        ("off by one: the logits at position t predict ids[:, t + 1], so ids[:, t] is scored "
         "by logits[:, t - 1]", lambda: same[:, n:].sum(-1)),
        ("off by one: the response starts at ids[:, prompt_len], predicted by "
         "logits[:, prompt_len - 1]; yours leaves out its first token", lambda: nxt[:, n:].sum(-1)),
        ("take log_softmax of the logits before picking the tokens' entries",
         lambda: raw[:, n - 1 :].sum(-1)),
        ("the sequence log-probability is the sum over the response's tokens, not the mean",
         lambda: nxt[:, n - 1 :].mean(-1)),
        ("sum log-probabilities, not probabilities", lambda: nxt[:, n - 1 :].exp().sum(-1)),
    ]  # fmt: skip


# ------------------------------------------------------------------- DPO loss
def dpo_mistakes(pc, pr, rc, rr, beta: float) -> Mistakes:
    margin = (pc - rc) - (pr - rr)
    return [
        ("sign error: the loss is -log sigmoid(beta * margin) with margin = (chosen's "
         "log-ratio) - (rejected's log-ratio)", lambda: -F.logsigmoid(-beta * margin).mean()),
        ("the reference is missing: each log-prob is measured against the reference's, "
         "log pi - log ref", lambda: -F.logsigmoid(beta * (pc - pr)).mean()),
        ("the reference's log-probs are subtracted: log pi(y) - log ref(y), not + log ref",
         lambda: -F.logsigmoid(beta * ((pc + rc) - (pr + rr))).mean()),
        ("pair each reference log-prob with the same reply: ref_chosen with policy_chosen",
         lambda: -F.logsigmoid(beta * ((pc - rr) - (pr - rc))).mean()),
        ("the margin must be multiplied by beta", lambda: -F.logsigmoid(margin).mean()),
        ("multiply the margin by beta inside the sigmoid, not the loss outside it",
         lambda: -beta * F.logsigmoid(margin).mean()),
        ("the loss is the mean over pairs, not the sum", lambda: -F.logsigmoid(beta * margin).sum()),
        (UNSTABLE, lambda: -torch.log(torch.sigmoid(beta * margin)).mean()),
    ]  # fmt: skip
