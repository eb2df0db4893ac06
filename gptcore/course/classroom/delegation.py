"""Delegation: an answer that calls gptcore's own implementation of its exercise.

Each exercise (by grade id) names the library functions and classes that
implement it (:data:`REFERENCES`). A solution cell that reaches one of them
(``from gptcore.ngram import smoothed_probs``, ``gptcore.ngram.smoothed_probs``,
an alias of a gptcore module, ``getattr(m, "smoothed_probs")``,
``vars(m)["smoothed_probs"]`` or ``importlib.import_module("gptcore.ngram")``)
is flagged for review. It is a flag, not a zero: a human decides.

What it does not see: names built at run time (``"smoothed_" + "probs"``),
or a reference reached through an object a check handed to the answer. The
review flag for the import machinery (:mod:`.review`) covers some of those.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["REFERENCES", "delegation_flags", "reference_names"]

# grade id -> qualified names of gptcore's implementation of that exercise.
# tests/grading/test_classroom_attacks.py holds that every name resolves and that every
# solution cell of every lesson has an entry.
REFERENCES: dict[str, tuple[str, ...]] = {
    # 01_tokenization
    "bpe_pair_counts": ("gptcore.tokenizer.bpe.BPETokenizer.train",),
    "bpe_merge": ("gptcore.tokenizer.bpe.merge_pair",),
    "bpe_train": ("gptcore.tokenizer.bpe.BPETokenizer.train",),
    "bpe_encode": ("gptcore.tokenizer.bpe.BPETokenizer.encode", "gptcore.tokenizer.pretrained.gpt2"),
    "bpe_decode": ("gptcore.tokenizer.bpe.BPETokenizer.decode", "gptcore.tokenizer.pretrained.gpt2"),
    # 02_ngram
    "count_bigrams": ("gptcore.ngram.count_ngrams", "gptcore.ngram.NGramModel.fit"),
    "smoothed_probs": ("gptcore.ngram.smoothed_probs",),
    "generate": ("gptcore.ngram.sample_next", "gptcore.ngram.NGramModel.sample"),
    "perplexity": (
        "gptcore.ngram.perplexity",
        "gptcore.ngram.nll",
        "gptcore.ngram.NGramModel.perplexity",
    ),
    # 03_embeddings
    "one_hot_embed": ("gptcore.model.embeddings.one_hot_embed",),
    "sinusoidal_positional_encoding": (
        "gptcore.model.embeddings.sinusoidal_positional_encoding",
        "gptcore.model.embeddings.SinusoidalPositionalEncoding",
    ),
    "neural_bigram": ("gptcore.model.bigram.BigramLM",),
    "train_step": ("gptcore.train.optim.train_step",),
    # 04_attention
    "attention_scores": ("gptcore.model.attention.attention_scores",),
    "causal_mask": ("gptcore.model.attention.causal_mask",),
    "stable_softmax": ("gptcore.model.attention.stable_softmax",),
    "scaled_dot_product_attention": ("gptcore.model.attention.scaled_dot_product_attention",),
    "split_heads": ("gptcore.model.attention.split_heads",),
    "merge_heads": ("gptcore.model.attention.merge_heads",),
    "causal_self_attention": ("gptcore.model.attention.CausalSelfAttention",),
    # 05_gpt
    "layer_norm": ("gptcore.model.gpt.LayerNorm",),
    "mlp": ("gptcore.model.gpt.MLP",),
    "block": ("gptcore.model.gpt.Block",),
    "gpt": ("gptcore.model.gpt.GPT",),
    "count_params": ("gptcore.model.gpt.GPT.num_params",),
    "load_hf_weights": (
        "gptcore.model.gpt.GPT.from_hf_state_dict",
        "gptcore.model.gpt.GPT.from_pretrained",
        "gptcore.model.hf.convert_hf_state_dict",
    ),
    # 06_training
    "get_batch": ("gptcore.train.batches.get_batch",),
    "lr_at": ("gptcore.train.schedule.lr_at",),
    "optimization_step": ("gptcore.train.optim.optimization_step",),
    "estimate_loss": ("gptcore.train.optim.estimate_loss",),
    # 07_sampling
    "softmax_with_temperature": ("gptcore.sample.softmax_with_temperature",),
    "top_k_filter": ("gptcore.sample.top_k_filter",),
    "top_p_filter": ("gptcore.sample.top_p_filter",),
    "sample_token": ("gptcore.sample.sample_token",),
    "kv_cache_update": ("gptcore.model.attention.KVCache.update",),
    # 08_chatgpt
    "loss_mask": ("gptcore.align.chat.ChatFormat.render", "gptcore.align.chat.sft_targets"),
    "masked_lm_loss": ("gptcore.align.sft.masked_lm_loss",),
    "pairwise_loss": ("gptcore.align.reward.bradley_terry_loss",),
    "kl_penalized_reward": ("gptcore.align.rl.kl_penalized_reward",),
    "response_logprob": (
        "gptcore.align.logprobs.sequence_logprob",
        "gptcore.align.logprobs.token_logprobs",
    ),
    "dpo_loss": ("gptcore.align.dpo.dpo_loss",),
}

# Method names too common to flag on their own (``d.update(...)``): they count
# only when reached through a gptcore name.
_COMMON = {"update", "encode", "decode", "train", "fit", "sample", "forward", "reset"}


@dataclass(frozen=True)
class _Target:
    qualname: str
    module: str  # gptcore.ngram
    export: str  # the module's attribute: smoothed_probs, or the class of a method
    member: str  # the last name: the function, class or method


def _split(qualname: str) -> _Target:
    """Module, exported name and member of a qualified name (modules are lower case)."""
    parts = qualname.split(".")
    i = next(
        (k for k, p in enumerate(parts) if k and (p[:1].isupper() or k == len(parts) - 1)),
        len(parts) - 1,
    )
    return _Target(qualname, ".".join(parts[:i]), parts[i], parts[-1])


def reference_names(grade_ids: Iterable[str]) -> list[str]:
    """The qualified names the exercises ``grade_ids`` must not delegate to."""
    return list(dict.fromkeys(q for g in grade_ids for q in REFERENCES.get(g, ())))


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


def _dotted(node: ast.expr) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def delegation_flags(code: str, grade_ids: Iterable[str], bound: set[str]) -> list[str]:
    """What in ``code`` (one cell, IPython syntax already transformed) reaches gptcore's
    implementation of ``grade_ids``. ``bound``: names the notebook binds to gptcore
    modules or objects (``checks``, ``gptcore``, aliases); the cell's imports add to it."""
    targets = [_split(q) for q in reference_names(grade_ids)]
    if not targets:
        return []
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # a cell that does not parse does not run either
    bound = set(bound) | gptcore_names(tree)
    exports = {t.export for t in targets}
    members = {t.member for t in targets}
    # Methods (GPT.num_params): flagged through any object, unless the name is common.
    methods = {t.member for t in targets if t.member != t.export} - _COMMON
    modules = {t.module for t in targets}
    words = {w for w in exports | members if w not in _COMMON}
    found: list[str] = []
    for node in ast.walk(tree):
        hit = ""
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gptcore"):
            names = {a.name for a in node.names}
            if names & (exports | members) or ("*" in names and node.module in modules):
                hit = f"from {node.module} import {', '.join(sorted(names))}"
        elif isinstance(node, ast.Attribute) and node.attr in exports | members:
            root = _root(node)
            if (isinstance(root, ast.Name) and root.id in bound) or node.attr in methods:
                hit = _dotted(node) or f"....{node.attr}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            # getattr(m, "smoothed_probs"), vars(m)["..."], import_module("gptcore.ngram")
            if text in words or any(m == text or m.startswith(text + ".") for m in modules):
                hit = repr(text)
        if hit:
            found.append(f"reaches gptcore's own implementation of the exercise: `{hit}`")
    return list(dict.fromkeys(found))


def gptcore_names(tree: ast.AST) -> set[str]:
    """Names that ``tree``'s imports bind to gptcore modules or objects."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "gptcore":
                    names.add(a.asname or "gptcore")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gptcore"):
            names.update(a.asname or a.name for a in node.names)
    return names
