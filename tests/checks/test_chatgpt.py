"""gptcore.course.checks.chatgpt: right answers pass, plausible wrong answers fail with the hint.

The right answers are gptcore.align's own code, another correct way to write each
function, and the solution cells of the lesson notebook (executed here from the
notebook's JSON). Each wrong answer is a mistake a learner could make; its check must
fail with a message that names it (issue 14: a mask off by one token, the mask on the
prompt, a sign error in the reward loss, the KL term's sign or reference model wrong,
DPO log-probs summed over the prompt).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptcore import align
from gptcore.course.checks import chatgpt as checks
from gptcore.course.checks.chatgpt.losses import reference_response_logprob

from ..notebook_cells import LessonNotebook, one_thread_fixture

_one_thread = one_thread_fixture()
LESSON_NB = LessonNotebook.for_lesson("08_chatgpt")
HIDDEN_ARGS = LESSON_NB.hidden_arguments()
cells, solution = LESSON_NB.fixtures()
IGNORE = align.IGNORE_INDEX


# ------------------------------------------------------------------ right answers
def reference_mask(chat, ids):
    """gptcore's mask: render the conversation that the ids encode again."""
    return chat.render(chat.parse(ids))[1]


def mask_by_turns(chat, ids):
    """Another correct way: find each turn's role, mark the assistant's tokens after it."""
    mask, role = [0] * len(ids), None
    roles = {v: k for k, v in chat.role_ids.items()}
    for i, t in enumerate(ids):
        if t in roles:
            role = roles[t]
        elif role == "assistant":
            mask[i] = 1
        if t == chat.end_id:
            role = None
    return mask


def lm_loss_by_hand(logits, targets):
    keep = (targets != IGNORE).float()
    nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp_min(0), reduction="none")
    return (nll * keep).sum() / keep.sum()


def response_logprob_loop(logits, ids, prompt_len):
    total = torch.zeros(ids.shape[0])
    for t in range(prompt_len, ids.shape[1]):
        total = total + torch.log_softmax(logits[:, t - 1], -1).gather(-1, ids[:, t : t + 1])[:, 0]
    return total


RIGHT = {
    "loss_mask": [reference_mask, mask_by_turns],
    "masked_lm_loss": [align.masked_lm_loss, lm_loss_by_hand],
    "pairwise_loss": [align.bradley_terry_loss, lambda c, r: F.softplus(r - c).mean()],
    "kl_penalized_reward": [align.kl_penalized_reward, lambda r, p, q, b: r + b * (q - p)],
    "response_logprob": [reference_response_logprob, response_logprob_loop],
    "dpo_loss": [
        align.dpo_loss,
        lambda pc, pr, rc, rr, b: F.softplus(-b * ((pc - pr) - (rc - rr))).mean(),
    ],
}


@pytest.mark.parametrize("which", ["visible", "hidden"])
@pytest.mark.parametrize("name", list(RIGHT))
def test_right_answers_pass(name, which):
    kwargs = {} if which == "visible" else HIDDEN_ARGS[name]
    for fn in RIGHT[name]:
        getattr(checks, name)(fn, **kwargs)


@pytest.mark.parametrize("name", list(RIGHT))
def test_the_notebook_solution_passes(name, solution):
    getattr(checks, name)(solution[name])


# ------------------------------------------------------------------ wrong answers
def _fails(check, fn, *needles):
    with pytest.raises(AssertionError) as info:
        check(fn)
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in:\n{message}"
    return message


class AlwaysEqual(list):
    def __eq__(self, other):
        return True

    __hash__ = None


class EqualTensor(torch.Tensor):
    def __eq__(self, other):
        return True

    __hash__ = torch.Tensor.__hash__


def _shift(mask, by):
    return [*mask[by:], *[0] * by] if by > 0 else [*[0] * -by, *mask[:by]]


WRONG_MASKS = [
    (lambda c, ids: _shift(reference_mask(c, ids), 1), "off by one token"),
    (lambda c, ids: _shift(reference_mask(c, ids), -1), "off by one token"),
    (lambda c, ids: [1 - m for m in reference_mask(c, ids)], "the mask is on the prompt"),
    (
        lambda c, ids: [int(t == c.role_ids["assistant"]) or m for t, m in zip(ids, reference_mask(c, ids))],
        "off by one token",
    ),
    (
        lambda c, ids: [0 if t == c.end_id else m for t, m in zip(ids, reference_mask(c, ids))],
        "learns to stop",
    ),
    (lambda c, ids: [1] * len(ids), "keeps everything"),
    (lambda c, ids: [bool(m) for m in reference_mask(c, ids)], "list of ints"),
    (lambda c, ids: torch.tensor(reference_mask(c, ids)), "list of ints"),
    (lambda c, ids: AlwaysEqual(reference_mask(c, ids)), "list of ints"),
    (lambda c, ids: reference_mask(c, ids)[:-1], "length"),
    (lambda c, ids: [2 * m for m in reference_mask(c, ids)], "0 or 1"),
]


@pytest.mark.parametrize(("fn", "needle"), WRONG_MASKS)
def test_wrong_masks_fail(fn, needle):
    _fails(checks.loss_mask, fn, needle)


def mask_in_place(chat, ids):
    mask = reference_mask(chat, ids)
    ids[:] = mask
    return mask


def test_mask_that_changes_ids_fails():
    _fails(checks.loss_mask, mask_in_place, "changed its argument ids")


def _keep(targets):
    return targets != IGNORE


WRONG_LM = [
    (
        lambda lo, t: -(torch.log_softmax(lo, -1).gather(-1, t.clamp_min(0)[..., None])[..., 0] * _keep(t)).sum()
        / t.numel(),
        "not by every position",
    ),
    (lambda lo, t: align.masked_lm_loss(lo, t) * _keep(t).sum(), "not their sum"),
    (
        lambda lo, t: torch.stack(
            [align.masked_lm_loss(lo[i : i + 1], t[i : i + 1]) for i in range(len(t)) if _keep(t[i]).any()]
        ).mean(),
        "row's mean",
    ),
    (lambda lo, t: align.masked_lm_loss(lo, t).detach(), "carries no gradient"),
    (lambda lo, t: align.masked_lm_loss(lo, t).item(), "must be a torch.Tensor"),
    (lambda lo, t: align.masked_lm_loss(lo, t).double(), "dtype"),
    (lambda lo, t: align.masked_lm_loss(lo, t).reshape(1), "shape"),
    (lambda lo, t: align.masked_lm_loss(lo, t).as_subclass(EqualTensor) * 0, "subclass"),
]


@pytest.mark.parametrize(("fn", "needle"), WRONG_LM)
def test_wrong_masked_lm_losses_fail(fn, needle):
    _fails(checks.masked_lm_loss, fn, needle)


WRONG_PAIRWISE = [
    (lambda c, r: -F.logsigmoid(r - c).mean(), "sign error"),
    (lambda c, r: F.softplus(c - r).mean(), "sign error"),
    (lambda c, r: F.logsigmoid(c - r).mean(), "minus sign is missing"),
    (lambda c, r: -F.logsigmoid(c - r).sum(), "not the sum"),
    (lambda c, r: -torch.log(torch.sigmoid(c - r)).mean(), "F.logsigmoid"),
    (lambda c, r: -torch.sigmoid(c - r).mean(), "take the log"),
    (lambda c, r: -F.logsigmoid(c - r), "shape"),
    (lambda c, r: (-F.logsigmoid(c - r).mean()).detach(), "carries no gradient"),
]


@pytest.mark.parametrize(("fn", "needle"), WRONG_PAIRWISE)
def test_wrong_pairwise_losses_fail(fn, needle):
    _fails(checks.pairwise_loss, fn, needle)


def kl_in_place(reward, lp, lr, beta):
    return reward.sub_(beta * (lp - lr))


WRONG_KL = [
    (lambda r, p, q, b: r + b * (p - q), "sign is flipped"),
    (lambda r, p, q, b: r - b * (q - p), "sign is flipped"),
    (lambda r, p, q, b: r - b * (p - p), "wrong model"),
    (lambda r, p, q, b: r - b * p, "wrong model"),
    (lambda r, p, q, b: r - (p - q), "multiplied by beta"),
    (lambda r, p, q, b: b * (r - (p - q)), "not the whole reward"),
    (lambda r, p, q, b: r - b * (p - q).abs(), "absolute value"),
    (lambda r, p, q, b: r - b * (p - q).exp(), "ratio"),
    (lambda r, p, q, b: (r - b * (p - q)).mean(), "do not average"),
    (lambda r, p, q, b: (r - b * (p - q)).double(), "dtype"),
    (kl_in_place, "in place"),
]


@pytest.mark.parametrize(("fn", "needle"), WRONG_KL)
def test_wrong_kl_rewards_fail(fn, needle):
    _fails(checks.kl_penalized_reward, fn, needle)


def _picked(logits, ids):
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]


WRONG_LOGPROB = [
    (lambda lo, ids, n: _picked(lo, ids).sum(-1), "summed over the prompt"),
    (lambda lo, ids, n: _picked(lo, ids)[:, n:].sum(-1), "off by one"),
    (
        lambda lo, ids, n: torch.log_softmax(lo, -1).gather(-1, ids[..., None])[..., 0][:, n:].sum(-1),
        "off by one",
    ),
    (lambda lo, ids, n: lo[:, :-1].gather(-1, ids[:, 1:, None])[..., 0][:, n - 1 :].sum(-1), "log_softmax"),
    (lambda lo, ids, n: _picked(lo, ids)[:, n - 1 :].mean(-1), "not the mean"),
    (lambda lo, ids, n: _picked(lo, ids)[:, n - 1 :].exp().sum(-1), "not probabilities"),
    (lambda lo, ids, n: _picked(lo, ids)[:, n - 1 :].sum(-1).detach(), "carries no gradient"),
    (lambda lo, ids, n: _picked(lo, ids)[:, n - 1 :], "shape"),
]


@pytest.mark.parametrize(("fn", "needle"), WRONG_LOGPROB)
def test_wrong_response_logprobs_fail(fn, needle):
    _fails(checks.response_logprob, fn, needle)


def _dpo(margin_fn):
    return lambda pc, pr, rc, rr, b: -F.logsigmoid(margin_fn(pc, pr, rc, rr, b)).mean()


WRONG_DPO = [
    (_dpo(lambda pc, pr, rc, rr, b: -b * ((pc - rc) - (pr - rr))), "sign error"),
    (_dpo(lambda pc, pr, rc, rr, b: b * (pc - pr)), "reference is missing"),
    (_dpo(lambda pc, pr, rc, rr, b: b * ((pc + rc) - (pr + rr))), "not + log ref"),
    (_dpo(lambda pc, pr, rc, rr, b: b * ((pc - rr) - (pr - rc))), "same reply"),
    (_dpo(lambda pc, pr, rc, rr, b: (pc - rc) - (pr - rr)), "multiplied by beta"),
    (lambda pc, pr, rc, rr, b: -torch.log(torch.sigmoid(b * ((pc - rc) - (pr - rr)))).mean(), "F.logsigmoid"),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (pr - rr))).sum(), "not the sum"),
    (lambda pc, pr, rc, rr, b: align.dpo_loss(pc, pr, rc, rr, b).detach(), "carries no gradient"),
]


@pytest.mark.parametrize(("fn", "needle"), WRONG_DPO)
def test_wrong_dpo_losses_fail(fn, needle):
    _fails(checks.dpo_loss, fn, needle)


def test_dpo_names_a_wrong_pairwise_loss_it_uses():
    def wrong_pairwise(c, r):
        return -F.logsigmoid(r - c).mean()

    def dpo(pc, pr, rc, rr, b):
        return wrong_pairwise(b * (pc - rc), b * (pr - rr))

    with pytest.raises(AssertionError) as info:
        checks.dpo_loss(dpo, depends_on={"pairwise_loss": wrong_pairwise})
    assert "pairwise_loss" in str(info.value) and "fix pairwise_loss first" in str(info.value)


@pytest.mark.parametrize("name", list(RIGHT))
def test_unwritten_exercise_says_so(name):
    def stub(*args):
        raise NotImplementedError

    stub.__name__ = name
    with pytest.raises(NotImplementedError):
        getattr(checks, name)(stub)
