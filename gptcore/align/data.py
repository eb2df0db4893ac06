"""The alignment task, made offline and deterministic from a seed: opposites.

The user asks for the opposite of a word ("opposite of hot?"); the assistant
answers with one word, in one of two styles: plain (``cold``) or the
preferred one, capitalised with a full stop (``Cold.``).

Why this task:

- It is small: 30 word pairs, two question templates, replies of a few
  characters. A character-level GPT of ~30k parameters learns the chat format
  and most answers in well under a minute on a CPU.
- Every stage moves a number that a program can measure exactly, with no
  judge model: SFT teaches the format (the share of *well-formed* replies, a
  word in one of the two styles followed by ``<|end|>``, goes from ~0 to ~1)
  and the answers (share *correct*); the demonstrations use both styles
  equally, so after SFT about half the replies are in the preferred style.
  The preference pairs prefer the capitalised style (and correct words), so
  the reward model's held-out accuracy, and the *preferred-style share* after
  RLHF or DPO, show what those stages add.
- Its text uses only characters of Tiny Shakespeare (letters, space, ``?``,
  ``.``), so the lesson-6 character model can be the base model.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import NamedTuple

from .chat import Message

__all__ = [
    "PAIRS",
    "TASK_CHARS",
    "Preference",
    "Reply",
    "demonstrations",
    "judge",
    "preference_pairs",
    "prompts",
]

# Each word appears once, so every question has one right answer.
PAIRS = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("left", "right"), ("fast", "slow"),
    ("day", "night"), ("wet", "dry"), ("open", "shut"), ("early", "late"), ("light", "dark"),
    ("hard", "soft"), ("high", "low"), ("rich", "poor"), ("full", "empty"), ("loud", "quiet"),
    ("tall", "short"), ("happy", "sad"), ("near", "far"), ("first", "last"), ("win", "lose"),
    ("love", "hate"), ("good", "bad"), ("young", "old"), ("in", "out"), ("black", "white"),
    ("east", "west"), ("north", "south"), ("sweet", "sour"), ("thick", "thin"), ("push", "pull"),
)  # fmt: skip
OPPOSITE = {**dict(PAIRS), **{b: a for a, b in PAIRS}}
TEMPLATES = ("opposite of {}?", "what is the opposite of {}?")
TASK_CHARS = "".join(sorted(set(" ?." + "".join(TEMPLATES).replace("{}", "") + "".join(
    w + w.capitalize() for w in OPPOSITE))))  # fmt: skip
_WORD = re.compile(r"([a-z]+)|([A-Z][a-z]*)\.")


def _preferred(word: str) -> str:
    return word.capitalize() + "."


@dataclass(frozen=True)
class Preference:
    """One human ranking: the same prompt, a chosen and a rejected reply."""

    prompt: list[Message]  # ends with the user's turn
    chosen: str
    rejected: str


class Reply(NamedTuple):
    """What ``judge`` measures in one reply."""

    well_formed: bool  # one word in one of the two styles, then <|end|>
    correct: bool  # well formed, and the word is the opposite
    preferred: bool  # well formed, in the capitalised style


def prompts(seed: int | None = None) -> list[list[Message]]:
    """Every question (60 words x 2 templates), shuffled by ``seed`` if given."""
    out = [
        [Message(role="user", content=t.format(w))] for w in sorted(OPPOSITE) for t in TEMPLATES
    ]
    if seed is not None:
        random.Random(seed).shuffle(out)
    return out


def _word(prompt: list[Message]) -> str:
    question = prompt[-1]["content"]
    return question.rstrip("?").split()[-1]


def demonstrations(n: int, seed: int = 0) -> list[list[Message]]:
    """``n`` conversations for SFT: a question and a correct reply, half in each style."""
    rng = random.Random(seed)
    everything = prompts()
    out = []
    for _ in range(n):
        prompt = rng.choice(everything)
        answer = OPPOSITE[_word(prompt)]
        reply = _preferred(answer) if rng.random() < 0.5 else answer
        out.append([*prompt, Message(role="assistant", content=reply)])
    return out


def preference_pairs(n: int, seed: int = 0) -> list[Preference]:
    """``n`` rankings: the chosen reply is correct and capitalised; the rejected one
    is the plain correct word (half the pairs: a style preference) or a wrong
    word in either style (a correctness preference)."""
    rng = random.Random(seed)
    everything = prompts()
    words = sorted(OPPOSITE)
    out = []
    for _ in range(n):
        prompt = rng.choice(everything)
        asked = _word(prompt)
        answer = OPPOSITE[asked]
        u = rng.random()
        if u < 0.5:
            rejected = answer
        else:
            wrong = rng.choice([w for w in words if w != answer])
            rejected = _preferred(wrong) if u < 0.75 else wrong
        out.append(Preference(prompt, _preferred(answer), rejected))
    return out


def judge(prompt: list[Message], reply: str, finished: bool) -> Reply:
    """Measure one reply to ``prompt``; ``finished``: it ended with ``<|end|>``."""
    m = _WORD.fullmatch(reply)
    if not finished or m is None:
        return Reply(False, False, False)
    word = (m.group(1) or m.group(2)).lower()
    return Reply(True, word == OPPOSITE[_word(prompt)], m.group(2) is not None)
