"""gptcore.align: the chat format and its mask, the losses against trusted formulas
(and their plausible wrong variants), each stage on a tiny model, the CLI."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from gptcore.align import (
    IGNORE_INDEX,
    ChatFormat,
    RewardModel,
    align_config,
    bradley_terry_loss,
    demonstrations,
    dpo_loss,
    evaluate_chat,
    finetune,
    grow_vocab,
    judge,
    kl_penalized_reward,
    load_aligned,
    masked_lm_loss,
    pairwise_accuracy,
    policy_gradient_loss,
    preference_pairs,
    prompts,
    response_batch,
    rlhf,
    sequence_logprob,
    sft_targets,
    token_logprobs,
    train_dpo,
    train_reward_model,
)
from gptcore.align.data import TASK_CHARS, Preference
from gptcore.model import GPT, GPTConfig
from gptcore.tokenizer import BPETokenizer, CharTokenizer, gpt2

U = {"role": "user", "content": "ab"}
A = {"role": "assistant", "content": "c"}
FAST = dict(progress=False, threads=1, eval_iters=1, log_interval=1)


def abc_chat() -> ChatFormat:
    return ChatFormat(CharTokenizer.from_text("abc"))  # a=0 b=1 c=2; specials 3..6


def tiny_model(chat: ChatFormat, block_size: int = 24, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(block_size=block_size, vocab_size=chat.vocab_size, n_layer=1, n_head=2, n_embd=16)
    )


# ---------------------------------------------------------------- chat format
def test_render_ids_and_mask_by_hand():
    chat = abc_chat()
    assert (chat.role_ids, chat.end_id, chat.vocab_size) == (
        {"system": 3, "user": 4, "assistant": 5},
        6,
        7,
    )
    ids, mask = chat.render([{"role": "system", "content": "a"}, U, A, U, {**A, "content": "ba"}])
    # <sys> a <end> <user> a b <end> <asst> c <end> <user> a b <end> <asst> b a <end>
    assert ids == [3, 0, 6, 4, 0, 1, 6, 5, 2, 6, 4, 0, 1, 6, 5, 1, 0, 6]
    # Kept: assistant content and its <end>; not the <asst> role token, not system or user.
    assert mask == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1]
    assert chat.render_prompt([U]) == [4, 0, 1, 6, 5]
    ids, mask = chat.render([U, {**A, "content": ""}])
    assert ids == [4, 0, 1, 6, 5, 6] and mask == [0, 0, 0, 0, 0, 1], "an empty reply still ends"


def test_sft_targets_shift_the_mask_with_the_ids():
    ids, mask = abc_chat().render([U, A])  # [4, 0, 1, 6, 5, 2, 6], mask [0, 0, 0, 0, 0, 1, 1]
    x, y = sft_targets(ids, mask)
    assert x == [4, 0, 1, 6, 5, 2]
    assert y == [IGNORE_INDEX] * 4 + [2, 6], "after <asst> predict c, after c predict <end>"
    with pytest.raises(ValueError, match="same length"):
        sft_targets(ids, mask[:-1])


CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "what is the opposite of hot?"},
    {"role": "assistant", "content": "Cold."},
    {"role": "user", "content": "and of <|endoftext|> up?"},
    {"role": "assistant", "content": "down"},
]


@pytest.mark.parametrize("kind", ["char", "bpe", "gpt2"])
def test_round_trip_for_every_tokenizer(kind):
    text = "".join(t["content"] for t in CONV)
    tok = {
        "char": lambda: CharTokenizer.from_text(text),
        "bpe": lambda: BPETokenizer.train(text * 3, 300, special_tokens=["<|endoftext|>"]),
        "gpt2": gpt2,
    }[kind]()
    chat = ChatFormat(tok)
    assert chat.vocab_size == tok.vocab_size + 4
    ids, mask = chat.render(CONV)
    assert chat.parse(ids) == CONV
    assert max(ids) == chat.end_id and all(i < tok.vocab_size for i, m in zip(ids, mask) if m and i != chat.end_id)
    # Text never becomes a special id: "<|endoftext|>" typed by a user stays characters.
    assert all(i < tok.vocab_size or i in (*chat.role_ids.values(), chat.end_id) for i in ids)
    if kind == "gpt2":
        assert 50256 not in ids and chat.end_id == 50260
    kept = [i for i, m in zip(ids, mask) if m]
    assert kept == [*tok.encode("Cold."), chat.end_id, *tok.encode("down"), chat.end_id]


def test_parse_keeps_an_unfinished_reply_and_decode_reply():
    chat = abc_chat()
    assert chat.parse([4, 0, 6, 5, 2, 2]) == [U | {"content": "a"}, A | {"content": "cc"}]
    assert chat.decode_reply([2, 0, 6, 1]) == ("ca", True)
    assert chat.decode_reply([2, 0]) == ("ca", False)
    with pytest.raises(ValueError, match="outside a turn"):
        chat.parse([0, 1])
    with pytest.raises(ValueError, match="unfinished"):
        chat.parse([4, 0, 5])


@pytest.mark.parametrize(
    "conv, match",
    [
        ([], "empty"),
        ("hello", "list of"),
        ([{"role": "bot", "content": "a"}], "unknown role 'bot'"),
        ([{"role": "user"}], "exactly 'role' and 'content'"),
        ([{"role": "user", "content": 3}, A], "content must be a str"),
        ([A], "should be 'user'"),
        ([U, U, A], "turn 1 is 'user' but should be 'assistant'"),
        ([U, A, {"role": "system", "content": "a"}, U, A], "system turn may only come first"),
        ([U, A, U], "must end with a assistant turn"),
        ([{"role": "system", "content": "a"}], "must end with a assistant turn"),
    ],
)
def test_bad_conversations_say_what_is_wrong(conv, match):
    with pytest.raises(ValueError, match=match):
        abc_chat().render(conv)


def test_render_prompt_needs_a_last_user_turn():
    with pytest.raises(ValueError, match="must end with a user turn"):
        abc_chat().render_prompt([U, A])


def test_grow_vocab_keeps_the_old_model():
    chat = abc_chat()
    torch.manual_seed(0)
    old = GPT(GPTConfig(block_size=8, vocab_size=3, n_layer=1, n_head=2, n_embd=16))
    new = grow_vocab(old, chat.vocab_size)
    x = torch.tensor([[0, 1, 2, 1]])
    assert new.config.vocab_size == 7 and new.lm_head.weight is new.transformer.wte.weight
    assert torch.allclose(new(x)[0][..., :3], old(x)[0]), "old tokens: same logits"
    with pytest.raises(ValueError, match="only grow"):
        grow_vocab(new, 3)


# ------------------------------------------------------------------- losses
def test_masked_loss_matches_cross_entropy_and_wrong_masks_differ():
    chat = abc_chat()
    model = tiny_model(chat)
    ids, mask = chat.render([U, A, U, {**A, "content": "ab"}])
    x, y = (torch.tensor([v]) for v in sft_targets(ids, mask))
    logits, own = model(x, y)
    ours = masked_lm_loss(logits, y)
    keep = y[0] != IGNORE_INDEX
    by_hand = F.cross_entropy(logits[0][keep], y[0][keep])
    assert ours.ndim == 0 and torch.allclose(ours, by_hand) and torch.allclose(ours, own)
    ref = F.cross_entropy(logits[0], y[0], ignore_index=-1)
    assert torch.allclose(ours, ref)
    # Plausible mistakes give other numbers.
    m = torch.tensor(mask)
    ids_t = torch.tensor(ids)
    off_by_one = torch.where(m[:-1].bool(), ids_t[1:], torch.tensor(IGNORE_INDEX))[None]
    on_prompt = ids_t[1:][None]
    for wrong in (off_by_one, on_prompt):
        assert not torch.allclose(masked_lm_loss(logits, wrong), ours)


def test_token_and_sequence_logprobs_score_only_the_response():
    chat = abc_chat()
    model = tiny_model(chat)
    prompt, reply = chat.render_prompt([U]), [2, 0, chat.end_id]
    x, y = response_batch([prompt, prompt[:2]], [reply, reply[:1]], chat.end_id)
    assert x.shape == y.shape == (2, 7) and x.dtype == y.dtype == torch.long
    assert y[0].tolist() == [-1, -1, -1, -1, 2, 0, 6] and y[1].tolist() == [-1, 2, -1, -1, -1, -1, -1]
    logits, _ = model(x)
    lp = token_logprobs(logits, y)
    full = torch.log_softmax(logits, -1)
    assert lp.shape == (2, 7) and lp.dtype == torch.float32
    assert torch.allclose(lp[0, 4:], full[0, [4, 5, 6], [2, 0, 6]]) and (lp[0, :4] == 0).all()
    seq = sequence_logprob(model, x, y)
    assert seq.shape == (2,) and torch.allclose(seq[0], full[0, [4, 5, 6], [2, 0, 6]].sum())
    with_prompt = full[0, :6].gather(-1, torch.tensor(prompt[1:] + reply)[:6, None]).sum()
    assert not torch.allclose(seq[0], with_prompt)
    with pytest.raises(ValueError, match="agree on"):
        token_logprobs(logits, y[:, :3])


def test_bradley_terry_by_hand_and_sign_error():
    rc, rr = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 0.5])
    want = (math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.exp(-1.5))) / 3
    got = bradley_terry_loss(rc, rr)
    assert got.ndim == 0 and got.item() == pytest.approx(want, abs=1e-6)
    assert torch.allclose(got, -F.logsigmoid(rc - rr).mean())
    assert not torch.allclose(bradley_terry_loss(rr, rc), got), "swapped: a sign error"


def test_dpo_loss_by_hand_beta_and_wrong_variants():
    pc, pr = torch.tensor([-2.0, -5.0]), torch.tensor([-4.0, -3.0])
    rc, rr = torch.tensor([-3.0, -4.0]), torch.tensor([-3.0, -3.0])
    margin = torch.tensor([(-2 + 3) - (-4 + 3), (-5 + 4) - (-3 + 3)])  # [2, -1]
    got = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert got.ndim == 0 and torch.allclose(got, -F.logsigmoid(0.5 * margin).mean())
    assert got.item() == pytest.approx(
        (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2, abs=1e-6
    )
    assert not torch.allclose(dpo_loss(pc, pr, rc, rr, beta=0.1), got)
    assert not torch.allclose(dpo_loss(pr, pc, rr, rc, beta=0.5), got), "chosen/rejected swapped"
    assert not torch.allclose(dpo_loss(pc, pr, rr, rc, beta=0.5), got), "references swapped"


def test_dpo_with_prompt_logprobs_included_differs():
    chat = abc_chat()
    policy, ref = tiny_model(chat, seed=1), tiny_model(chat, seed=2)
    prompt = chat.render_prompt([U])
    xc, yc = response_batch([prompt], [[2, 6]], chat.end_id)
    xr, yr = response_batch([prompt], [[0, 6]], chat.end_id)
    right = dpo_loss(*(sequence_logprob(m, x, y) for m, x, y in (
        (policy, xc, yc), (policy, xr, yr), (ref, xc, yc), (ref, xr, yr))), beta=0.1)  # fmt: skip

    def whole(m, x):  # the mistake: every next token scored, the prompt's too
        return sequence_logprob(m, x[:, :-1], x[:, 1:])

    wrong = dpo_loss(whole(policy, xc), whole(policy, xr), whole(ref, xc), whole(ref, xr), beta=0.1)
    assert not torch.allclose(right, wrong)


def test_kl_penalized_reward_by_hand():
    r, lp, lr = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])
    got = kl_penalized_reward(r, lp, lr, beta=0.5)
    assert torch.allclose(got, torch.tensor([1.0 - 0.5 * 1.0, 2.0 - 0.5 * -2.0]))
    assert torch.equal(kl_penalized_reward(r, lp, lr, beta=0.0), r), "beta=0: no penalty"
    assert not torch.allclose(kl_penalized_reward(r, lr, lp, beta=0.5), got), "KL sign"
    lp_param = lp.clone().requires_grad_()
    loss = policy_gradient_loss(lp_param, torch.tensor([1.0, -1.0]))
    loss.backward()
    assert loss.item() == pytest.approx(-(-1.0 + 3.0) / 2)
    assert torch.allclose(lp_param.grad, torch.tensor([-0.5, 0.5]))


def test_reward_model_reads_the_last_real_token():
    chat = abc_chat()
    rm = RewardModel.from_gpt(tiny_model(chat))
    x = torch.tensor([[4, 0, 1, 6, 5, 2, 6, 6], [4, 0, 1, 6, 5, 2, 6, 6]])
    last = torch.tensor([6, 6])
    r = rm(x, last)
    assert r.shape == (2,) and r.dtype == torch.float32
    x2 = x.clone()
    x2[1, 7] = 0  # padding after the last token changes nothing (causal attention)
    assert torch.allclose(rm(x2, last), r)
    assert not torch.allclose(rm(x, torch.tensor([6, 5]))[1], r[1])


# --------------------------------------------------------------------- data
def test_data_is_deterministic_and_judged_exactly(shakespeare):
    assert demonstrations(20, seed=3) == demonstrations(20, seed=3) != demonstrations(20, seed=4)
    assert preference_pairs(20, seed=3) == preference_pairs(20, seed=3)
    assert len(prompts()) == 120 and set(TASK_CHARS) <= set(shakespeare)
    styles = {d[-1]["content"][-1] == "." for d in demonstrations(200)}
    assert styles == {True, False}, "demonstrations use both styles"
    q = [{"role": "user", "content": "opposite of hot?"}]
    assert judge(q, "cold", True) == (True, True, False)
    assert judge(q, "Cold.", True) == (True, True, True)
    assert judge(q, "Warm.", True) == (True, False, True)
    assert judge(q, "Cold", True).well_formed is False
    assert judge(q, "Cold.", False).well_formed is False
    for p in preference_pairs(50):
        assert judge(p.prompt, p.chosen, True).preferred and p.chosen != p.rejected


# ------------------------------------------------------------------- stages
CONVS = [[U, A], [{**U, "content": "ba"}, {**A, "content": "ab"}]] * 8


def test_finetune_learns_resumes_bit_for_bit_and_reloads(tmp_path):
    chat = abc_chat()
    loss = []
    full = finetune(tiny_model(chat), chat, CONVS, align_config(str(tmp_path / "a"), max_iters=30,
                    lr=1e-2, batch_size=4, **FAST), callback=lambda row: loss.append(row["loss"]))  # fmt: skip
    assert loss[-1] < loss[0] / 2
    half = align_config(str(tmp_path / "b"), max_iters=15, lr=1e-2, lr_decay_iters=30, batch_size=4, **FAST)
    finetune(tiny_model(chat), chat, CONVS, half)
    resumed = finetune(tiny_model(chat), chat, CONVS, align_config(str(tmp_path / "b"),
                       max_iters=30, lr=1e-2, batch_size=4, **FAST))  # fmt: skip
    for p, q in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    model, chat2, state = load_aligned(tmp_path / "a")
    assert state["step"] == 30 and chat2.vocab_size == chat.vocab_size
    assert torch.equal(model.lm_head.weight, full.model.lm_head.weight)


def test_finetune_uses_the_loss_it_is_given(tmp_path):
    chat = abc_chat()
    seen = []

    def loss(logits, targets):
        seen.append(targets.shape)
        return masked_lm_loss(logits, targets)

    rendered = []

    def render(conv):
        rendered.append(conv)
        return chat.render(conv)

    finetune(tiny_model(chat), chat, CONVS, align_config(str(tmp_path), max_iters=2, batch_size=4,
             **FAST), loss=loss, render=render)  # fmt: skip
    assert seen and all(s[0] == 4 for s in seen) and rendered == CONVS
    with pytest.raises(ValueError, match="grow_vocab"):
        finetune(GPT(GPTConfig(block_size=8, vocab_size=3, n_layer=1, n_head=2, n_embd=16)),
                 chat, CONVS, align_config(str(tmp_path)))  # fmt: skip
    with pytest.raises(ValueError, match="block_size"):
        finetune(tiny_model(chat, block_size=4), chat, CONVS, align_config(str(tmp_path / "c")))


PAIRS = [
    Preference([U], "c", "a"),
    Preference([{**U, "content": "ba"}], "cc", "b"),
] * 8


def test_reward_dpo_and_rlhf_stages_run_and_keep_the_reference(tmp_path):
    chat = abc_chat()
    sft = tiny_model(chat)
    before = {k: v.clone() for k, v in sft.state_dict().items()}
    rm = train_reward_model(sft, chat, PAIRS, align_config(str(tmp_path / "rm"), max_iters=40,
                            lr=1e-2, batch_size=4, **FAST)).model  # fmt: skip
    assert isinstance(rm, RewardModel) and pairwise_accuracy(rm, chat, PAIRS) == 1.0
    assert isinstance(load_aligned(tmp_path / "rm")[0], RewardModel)
    dpo = train_dpo(sft, chat, PAIRS, align_config(str(tmp_path / "dpo"), max_iters=3, batch_size=4,
                    **FAST), beta=0.1).model  # fmt: skip
    assert dpo is not sft
    qs = [[U], [{**U, "content": "ba"}]]
    calls = []

    def penalized(reward, logp_policy, logp_ref, beta):
        calls.append(beta)
        return kl_penalized_reward(reward, logp_policy, logp_ref, beta)

    for beta in (0.1, 0.0):
        result, stats = rlhf(sft, rm, chat, qs, align_config(str(tmp_path / f"rl{beta}"),
                             max_iters=3, batch_size=4, **FAST), beta=beta, max_new_tokens=4,
                             penalized=penalized)  # fmt: skip
        assert len(stats.reward) == len(stats.kl) == 3 and result.model is not sft
    assert calls[:3] == [0.1] * 3 and 0.0 in calls, "the learner's reward is the one used"
    assert all(torch.equal(v, sft.state_dict()[k]) for k, v in before.items()), "SFT model untouched"
    with pytest.raises(ValueError, match="beta"):
        rlhf(sft, rm, chat, qs, align_config(str(tmp_path / "x")), beta=-1)
    with pytest.raises(ValueError, match="beta"):
        train_dpo(sft, chat, PAIRS, align_config(str(tmp_path / "y")), beta=0)


def test_evaluate_chat_on_the_task():
    chat = ChatFormat(CharTokenizer.from_text(TASK_CHARS))
    model = tiny_model(chat, block_size=48)
    rm = RewardModel.from_gpt(model)
    m = evaluate_chat(model, chat, prompts()[:6], reward_model=rm, reference=model, max_new_tokens=4)
    assert set(m) == {"well_formed", "correct", "preferred", "reward", "kl"}
    assert all(0 <= m[k] <= 1 for k in ("well_formed", "correct", "preferred"))
    assert m["kl"] == pytest.approx(0.0, abs=1e-6), "KL of a model from itself"


# ---------------------------------------------------------------------- CLI
def test_cli_stages_and_chat_with_piped_stdin(tmp_path, capsys, monkeypatch):
    from gptcore.cli import main

    common = ["--max_iters", "2", "--batch_size", "4", "--threads", "1", "--no-progress", "--eval", "8"]
    sft, rm = str(tmp_path / "sft"), str(tmp_path / "rm")
    assert main(["sft", sft, "--examples", "20", *common]) == 0
    out = capsys.readouterr().out
    assert "before: well_formed" in out and "after: well_formed" in out
    assert main(["reward", rm, "--sft", sft, "--pairs", "20", *common]) == 0
    assert "held-out pairwise accuracy" in capsys.readouterr().out
    assert main(["dpo", str(tmp_path / "dpo"), "--sft", sft, "--pairs", "8", *common]) == 0
    assert "dpo: well_formed" in capsys.readouterr().out
    rl = ["rlhf", str(tmp_path / "rl"), "--sft", sft, "--reward", rm, "--beta", "0", *common]
    assert main(rl) == 0
    out = capsys.readouterr().out
    assert "sft: well_formed" in out and "rlhf: well_formed" in out and "kl " in out
    monkeypatch.setattr("sys.stdin", io.StringIO("opposite of hot?\nwhat is 1?\nopposite of up?\n"))
    assert main(["chat", sft, "-n", "5"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2, "one reply per line the model can read"
    assert "'1'" in captured.err and "not in the vocabulary" in captured.err
    assert main(["chat", rm]) == 2
    assert "reward model" in capsys.readouterr().err
    assert main(["rlhf", str(tmp_path / "x"), "--sft", rm, "--reward", rm]) == 2


def test_cli_sft_from_a_trained_shakespeare_run(tmp_path, capsys):
    from gptcore.cli import main

    base, sft = str(tmp_path / "base"), str(tmp_path / "sft")
    fast = ["--max_iters", "1", "--batch_size", "2", "--threads", "1", "--no-progress"]
    assert main(["train", "--out", base, "--preset", "test", "--block_size", "48", "--eval_iters", "1", *fast]) == 0
    assert main(["sft", sft, "--base", base, "--examples", "8", "--eval", "2", *fast]) == 0
    model, chat, _ = load_aligned(sft)
    assert chat.vocab_size == 65 + 4 == model.config.vocab_size, "Shakespeare's 65 characters + 4"
    assert "after: well_formed" in capsys.readouterr().out


@pytest.mark.slow
def test_each_stage_moves_its_metric(tmp_path):
    """The numbers benchmarks/bench_align.py reports, with margins well inside them
    (shorter reward and RLHF runs than the defaults, to stay near 2 minutes)."""
    import dataclasses

    from gptcore.align.commands import BETA, FRESH, STAGE_DEFAULTS

    torch.set_num_threads(1)
    chat = ChatFormat(CharTokenizer.from_text(TASK_CHARS))
    every = prompts()

    def config(stage):
        kw = {**STAGE_DEFAULTS[stage], "progress": False, "threads": 1}
        return align_config(str(tmp_path / stage), **{"eval_interval": kw["max_iters"], **kw})

    torch.manual_seed(0)
    base = GPT(GPTConfig(vocab_size=chat.vocab_size, **FRESH))
    assert evaluate_chat(base, chat, every)["well_formed"] < 0.2
    sft = finetune(base, chat, demonstrations(2000), config("sft")).model
    after = evaluate_chat(sft, chat, every)
    assert after["well_formed"] > 0.8 and after["correct"] > 0.6
    pairs = preference_pairs(1100, seed=1)
    short = dataclasses.replace(config("reward"), max_iters=150, eval_interval=150)
    rm = train_reward_model(sft, chat, pairs[100:], short, val_fraction=0.0).model
    assert pairwise_accuracy(rm, chat, pairs[:100]) > 0.85
    ref = evaluate_chat(sft, chat, every, reward_model=rm, reference=sft)
    short = dataclasses.replace(config("rlhf"), max_iters=100, eval_interval=100)
    policy = rlhf(sft, rm, chat, every, short, beta=BETA["rlhf"])[0].model
    dpo = train_dpo(sft, chat, pairs[100:], config("dpo"), beta=BETA["dpo"]).model
    for model, gain in ((policy, 0.15), (dpo, 0.08)):
        m = evaluate_chat(model, chat, every, reward_model=rm, reference=sft)
        assert m["preferred"] > ref["preferred"] + gain and m["reward"] > ref["reward"] + 0.5
        assert m["well_formed"] > 0.75 and 0 < m["kl"] < 5
