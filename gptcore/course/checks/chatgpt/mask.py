"""The check of ``loss_mask``: which tokens of a rendered conversation SFT learns."""

from __future__ import annotations

import random
from collections.abc import Callable

from gptcore.align import ChatFormat, Message
from gptcore.tokenizer import CharTokenizer

from ..report import call, check, describe_call, diagnose, passed, show, wrong
from ..values import check_int_list
from . import mistakes as known

_WORDS = ("hot", "cold", "up", "down", "what is", "Yes.", "no", "a b", "?")


def _conversation(rng: random.Random) -> list[Message]:
    turns: list[Message] = []
    if rng.random() < 0.3:
        turns.append(Message(role="system", content=rng.choice(_WORDS)))
    for _ in range(rng.randint(1, 3)):
        turns.append(Message(role="user", content=rng.choice(_WORDS)))
        turns.append(Message(role="assistant", content=rng.choice((*_WORDS, ""))))
    return turns


def _inputs(seed: int, cases: int) -> list[tuple[ChatFormat, list[Message]]]:
    """Hand-checkable conversations first (the docstring's example among them), then random ones."""
    abc = ChatFormat(CharTokenizer.from_text("abc"))
    wide = ChatFormat(CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyzHCYNW?. "))
    u, a, s = "user", "assistant", "system"
    hand = [
        [{"role": u, "content": "ab"}, {"role": a, "content": "c"}],  # the docstring's example
        [{"role": u, "content": "a"}, {"role": a, "content": "bc"}, {"role": u, "content": "c"},
         {"role": a, "content": "ab"}],  # two assistant turns
        [{"role": s, "content": "b"}, {"role": u, "content": "a"}, {"role": a, "content": "cab"}],
        [{"role": u, "content": "abc"}, {"role": a, "content": ""}],  # an empty reply: only <|end|>
    ]  # fmt: skip
    inputs = [(abc, [Message(**t) for t in conv]) for conv in hand]  # type: ignore[typeddict-item]
    rng = random.Random(seed)
    inputs += [(wide, _conversation(rng)) for _ in range(cases)]
    return inputs


@check()
def loss_mask(
    loss_mask: Callable[[ChatFormat, list[int]], list[int]], *, seed: int = 0, cases: int = 20
) -> None:
    """Check ``loss_mask(chat, ids) -> mask`` against ``ChatFormat.render``'s mask."""
    inputs = _inputs(seed, cases)
    for chat, conversation in inputs:
        ids, expected = chat.render(conversation)
        where = describe_call("loss_mask", "chat", ids)
        got = call(loss_mask, chat, ids, name="loss_mask", where=where, arg_names=["chat", "ids"])
        got = check_int_list(got, f"the result of {where}")
        if len(got) != len(ids):
            wrong(f"the length of the result of {where}", len(ids), len(got),
                  "the mask has one 0 or 1 per id")  # fmt: skip
        if any(m not in (0, 1) for m in got):
            wrong(f"{where}", show(expected), show(got), "every entry must be 0 or 1")
        if got != expected:
            tokens = [chat.SPECIALS[t - chat.tokenizer.vocab_size]
                      if t >= chat.tokenizer.vocab_size else chat.tokenizer.decode([t]) for t in ids]  # fmt: skip
            wrong(
                where, expected, got, f"the tokens: {tokens}",
                hint_text=diagnose(got, known.mask_mistakes(chat, ids, expected)),
            )  # fmt: skip
    passed("loss_mask", len(inputs))
