"""The chat format: role tokens, an end-of-turn token, rendering and its loss mask.

A conversation is a list of turns ``{"role": ..., "content": ...}``: an
optional ``system`` turn first, then ``user`` and ``assistant`` turns
alternating, starting with ``user``. Each turn renders as::

    <|user|> content tokens <|end|>

The four special tokens get the ids right *above* the base tokenizer's
vocabulary (``base.vocab_size + 0 .. + 3``), for every tokenizer alike:
character, BPE and GPT-2. That is the simplest design that is correct for all
three: no string in a user's text can ever encode to a special id (the base
tokenizer cannot produce ids that large), nothing in the base tokenizer
changes, and a pretrained model only needs four new embedding rows
(``grow_vocab``). GPT-2's ``<|endoftext|>`` keeps its meaning (end of a
document) and is not reused as end of turn; content is encoded as ordinary
text, so no text can produce a special id.

The loss mask keeps exactly the tokens the assistant must learn to produce:
the content tokens of every assistant turn *and* that turn's ``<|end|>``
(so the model learns to stop). Masked out: every system and user token, their
``<|end|>``, and the ``<|assistant|>`` role token itself, which the chat
program writes to hand the model its turn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TypedDict

import torch

from ..model.gpt import GPT
from ..tokenizer.base import Tokenizer

__all__ = [
    "IGNORE_INDEX",
    "ROLES",
    "ChatFormat",
    "Message",
    "grow_vocab",
    "sft_targets",
]

ROLES = ("system", "user", "assistant")
# Masked-out targets, as gptcore's GPT.forward ignores them in its cross-entropy.
IGNORE_INDEX = -1


class Message(TypedDict):
    role: str
    content: str


def _check_turns(conversation: Sequence[Mapping[str, str]], *, last: str) -> None:
    """ValueError naming what is wrong; ``last`` is the role the conversation must end with."""
    if isinstance(conversation, (str, bytes)) or not isinstance(conversation, Sequence):
        raise ValueError(
            "a conversation is a list of {'role': ..., 'content': ...} dicts, "
            f"got {type(conversation).__name__}"
        )
    if not conversation:
        raise ValueError("the conversation is empty; give at least one user turn")
    for i, turn in enumerate(conversation):
        if not isinstance(turn, Mapping) or set(turn) != {"role", "content"}:
            raise ValueError(f"turn {i} must be a dict with exactly 'role' and 'content'")
        if turn["role"] not in ROLES:
            raise ValueError(f"turn {i} has unknown role {turn['role']!r}; use one of {ROLES}")
        if not isinstance(turn["content"], str):
            raise ValueError(f"turn {i}: content must be a str")
    body = list(conversation)
    if body[0]["role"] == "system":
        body = body[1:]
    elif any(t["role"] == "system" for t in body):
        raise ValueError("a system turn may only come first")
    offset = len(conversation) - len(body)
    for i, turn in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if turn["role"] != want:
            raise ValueError(
                f"turn {i + offset} is {turn['role']!r} but should be {want!r}: after an optional "
                "system turn, user and assistant turns alternate, starting with user"
            )
    if not body or body[-1]["role"] != last:
        raise ValueError(
            f"the conversation must end with a {last} turn"
            + (" (render_prompt continues after the user's turn)" if last == "user" else "")
        )


class ChatFormat:
    """A base tokenizer plus four special tokens: ``<|system|>``, ``<|user|>``,
    ``<|assistant|>`` and ``<|end|>`` (ids ``base.vocab_size + 0..3``).

    >>> from gptcore.tokenizer import CharTokenizer
    >>> chat = ChatFormat(CharTokenizer.from_text("abc"))
    >>> ids, mask = chat.render([{"role": "user", "content": "ab"},
    ...                          {"role": "assistant", "content": "c"}])
    >>> ids, mask
    ([4, 0, 1, 6, 5, 2, 6], [0, 0, 0, 0, 0, 1, 1])
    """

    SPECIALS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")

    def __init__(self, tokenizer: Tokenizer) -> None:
        if not isinstance(tokenizer, Tokenizer):
            raise ValueError("ChatFormat needs a gptcore tokenizer (encode, decode, vocab_size)")
        self.tokenizer = tokenizer
        base = tokenizer.vocab_size
        self.role_ids = {role: base + i for i, role in enumerate(ROLES)}
        self.end_id = base + 3

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: the base tokenizer's plus the four special tokens."""
        return self.end_id + 1

    def _encode(self, text: str) -> list[int]:
        if not text:
            return []
        # Text is only ever text: a user who types "<|endoftext|>" gets the
        # characters, never GPT-2's special id (tiktoken's encode_ordinary).
        ordinary = getattr(self.tokenizer, "encode_ordinary", None)
        return ordinary(text) if ordinary is not None else self.tokenizer.encode(text)

    def render(self, conversation: Sequence[Mapping[str, str]]) -> tuple[list[int], list[int]]:
        """ids and a 0/1 loss mask of the same length; the conversation ends with the assistant.

        ``mask[i] == 1`` exactly when ``ids[i]`` is an assistant content token
        or the ``<|end|>`` closing an assistant turn (see the module docstring).
        """
        _check_turns(conversation, last="assistant")
        ids: list[int] = []
        mask: list[int] = []
        for turn in conversation:
            content = self._encode(turn["content"])
            keep = 1 if turn["role"] == "assistant" else 0
            ids += [self.role_ids[turn["role"]], *content, self.end_id]
            mask += [0] + [keep] * (len(content) + 1)
        return ids, mask

    def render_prompt(self, conversation: Sequence[Mapping[str, str]]) -> list[int]:
        """The ids that ask for the assistant's next turn: the conversation (ending
        with a user turn), then ``<|assistant|>``."""
        _check_turns(conversation, last="user")
        ids: list[int] = []
        for turn in conversation:
            ids += [self.role_ids[turn["role"]], *self._encode(turn["content"]), self.end_id]
        return [*ids, self.role_ids["assistant"]]

    def parse(self, ids: Iterable[int]) -> list[Message]:
        """The reverse of ``render``: ids -> turns. A last turn without ``<|end|>``
        (a reply cut off by a token limit) is kept as it is."""
        role_of = {v: k for k, v in self.role_ids.items()}
        turns: list[Message] = []
        role: str | None = None
        content: list[int] = []
        for i, t in enumerate(int(t) for t in ids):
            if t in role_of:
                if role is not None:
                    raise ValueError(f"id {i}: a role token inside an unfinished {role} turn")
                role, content = role_of[t], []
            elif t == self.end_id:
                if role is None:
                    raise ValueError(f"id {i}: <|end|> outside a turn")
                turns.append({"role": role, "content": self.tokenizer.decode(content)})
                role = None
            elif role is None:
                raise ValueError(f"id {i}: token {t} outside a turn; turns start with a role token")
            else:
                content.append(t)
        if role is not None:
            turns.append({"role": role, "content": self.tokenizer.decode(content)})
        return turns

    def decode_reply(self, ids: Iterable[int]) -> tuple[str, bool]:
        """A generated reply's text (up to ``<|end|>``) and whether it ended with ``<|end|>``.

        Special ids inside the reply are dropped from the text: a reply that
        produces one is not well formed, which ``finished`` does not hide.
        """
        out: list[int] = []
        for t in ids:
            if int(t) == self.end_id:
                return self.tokenizer.decode(out), True
            if int(t) < self.tokenizer.vocab_size:
                out.append(int(t))
        return self.tokenizer.decode(out), False


def sft_targets(ids: Sequence[int], mask: Sequence[int]) -> tuple[list[int], list[int]]:
    """Inputs and next-token targets for masked fine-tuning: ``x = ids[:-1]`` and
    ``y[t] = ids[t + 1]`` where ``mask[t + 1]`` is 1, else ``IGNORE_INDEX``."""
    if len(ids) != len(mask):
        raise ValueError(f"ids ({len(ids)}) and mask ({len(mask)}) must have the same length")
    x = list(ids[:-1])
    y = [t if m else IGNORE_INDEX for t, m in zip(ids[1:], mask[1:], strict=True)]
    return x, y


@torch.no_grad()
def grow_vocab(model: GPT, vocab_size: int, *, seed: int = 0) -> GPT:
    """A copy of ``model`` with ``vocab_size`` embedding rows: the old rows kept,
    the new ones (the chat tokens) drawn like GPT's own initialisation (N(0, 0.02)).

    The embedding is tied to the output layer, so the new tokens also get new
    output rows: before fine-tuning, the model rarely produces them.
    """
    old = model.config.vocab_size
    if vocab_size < old:
        raise ValueError(f"vocab_size={vocab_size} is below the model's {old}; it can only grow")
    grown = GPT(dataclasses.replace(model.config, vocab_size=vocab_size))
    state = {k: v for k, v in model.state_dict().items() if k != "transformer.wte.weight"}
    state.pop("lm_head.weight", None)
    missing, unexpected = grown.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"transformer.wte.weight", "lm_head.weight"}
    gen = torch.Generator().manual_seed(seed)
    new_rows = torch.randn(vocab_size - old, model.config.n_embd, generator=gen) * 0.02
    weight = model.lm_head.weight.detach().cpu()
    grown.lm_head.weight.copy_(torch.cat([weight, new_rows.to(weight.dtype)]))
    return grown.to(model.lm_head.weight.device)
