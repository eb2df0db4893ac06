"""The checks framework (gptcore.course.checks.report) as the learner meets it.

- warnings from the learner's code never reach stderr (nbgrader counts any stderr
  output in a graded cell as a failed test): a passing check prints them on stdout
  after its ✓ line, a failing one ends its message with them;
- an unanswered exercise is one line, "exercise X is not written yet: ...", in a real
  kernel too, and still a NotImplementedError (0 points);
- a check that fails because an earlier exercise is wrong names that exercise.
"""

from __future__ import annotations

import math
import sys
import warnings
from itertools import pairwise

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from gptcore.course.checks import NotWritten, call, check, fail, passed
from gptcore.course.checks import embeddings as embedding_checks
from gptcore.course.checks import ngram as ngram_checks
from gptcore.course.checks import tokenization as tokenization_checks
from gptcore.model import BigramLM
from gptcore.ngram import smoothed_probs as ref_smoothed_probs

from ..conftest import ROOT


# ------------------------------------------------------------------- warnings
@check()
def toy_check(fn) -> None:
    if call(fn, 2, name="double") != 4:
        fail("double(2) is wrong.", "multiply by 2.")
    passed("double", 1)


def warns_then(result):
    def double(x):
        warnings.warn("a learner's warning", UserWarning, stacklevel=2)
        return result

    return double


def test_a_warning_of_a_passing_answer_is_a_note_on_stdout(capfd):
    toy_check(warns_then(4))
    out, err = capfd.readouterr()
    assert err == ""
    assert out.splitlines()[0] == "✓ double: all 1 cases passed"
    assert "note: double(2) warned: UserWarning: a learner's warning" in out


def test_a_warning_of_a_failing_answer_is_in_the_message(capfd):
    with pytest.raises(AssertionError) as failure:
        toy_check(warns_then(5))
    message = str(failure.value)
    assert message.startswith("double(2) is wrong.")
    assert "note: double(2) warned: UserWarning: a learner's warning" in message
    assert capfd.readouterr().err == ""


def test_a_warning_before_an_exception_is_in_the_message(capfd):
    def double(x):
        warnings.warn("about to fail", stacklevel=2)
        raise KeyError(x)

    with pytest.raises(AssertionError, match="about to fail") as failure:
        toy_check(double)
    assert str(failure.value).startswith("double(2) raised KeyError: 2")
    assert capfd.readouterr().err == ""


def test_call_outside_a_check_prints_its_warnings_on_stdout(capfd):
    # Lessons whose checks are not decorated with @check still keep stderr clean.
    assert call(warns_then(4), 2, name="double") == 4
    out, err = capfd.readouterr()
    assert err == ""
    assert "note: double(2) warned" in out


def test_float_of_a_loss_that_requires_grad_scores(capfd):
    """``float(loss)`` makes torch warn; the answer is right and must pass, quietly."""

    def train_step(model, optimizer, x, y):
        model.train()
        optimizer.zero_grad()
        _, loss = model(x, y)
        value = float(loss)  # torch: "Converting a tensor with requires_grad=True to a scalar"
        loss.backward()
        optimizer.step()
        return value

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escaped the check would fail here
        embedding_checks.train_step(train_step)
    out, err = capfd.readouterr()
    assert err == ""
    assert "✓ train_step" in out
    assert "requires_grad=True" in out  # reported, as a note


def test_lesson_check_with_a_warning_passes_quietly(capfd):
    def smoothed_probs(counts, k=1.0):
        warnings.warn("deprecated", DeprecationWarning, stacklevel=2)
        return ref_smoothed_probs(counts, k)

    ngram_checks.smoothed_probs(smoothed_probs)
    out, err = capfd.readouterr()
    assert err == "" and "DeprecationWarning: deprecated" in out


def test_what_a_check_prints_on_stderr_comes_out_on_stdout(capfd):
    @check()
    def noisy(fn) -> None:
        print("downloading... 100%", file=sys.stderr)  # e.g. a progress bar in gptcore
        passed("noisy", 1)

    noisy(None)
    out, err = capfd.readouterr()
    assert err == "" and "downloading... 100%" in out


# ----------------------------------------------------------- not written yet
def stub(*args):
    raise NotImplementedError()


def test_an_unwritten_exercise_is_one_line():
    def merge(ids, pair, idx):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError) as failure:
        tokenization_checks.bpe_merge(merge)
    error = failure.value
    assert isinstance(error, NotWritten)
    assert str(error).startswith("exercise merge is not written yet: replace")
    assert error._render_traceback_() == [str(error)]
    assert "\n" not in str(error)


def test_an_unwritten_earlier_exercise_is_named():
    def merge(ids, pair, idx):
        raise NotImplementedError()

    def encode(text, merges, pattern=None):
        return merge(list(text.encode()), (97, 97), 256)

    with pytest.raises(NotWritten, match=r"^exercise merge is not written yet \(encode uses it\)"):
        tokenization_checks.bpe_encode(encode)


def test_a_class_whose_forward_is_a_stub_is_named_by_the_class():
    class NeuralBigram(BigramLM):
        def forward(self, idx, targets=None):
            raise NotImplementedError()

    with pytest.raises(NotWritten, match=r"^exercise NeuralBigram is not written yet"):
        embedding_checks.neural_bigram(NeuralBigram)


def test_an_unwritten_exercise_in_a_kernel_shows_one_line(tmp_path):
    """What the learner sees: the error output of the test cell is one short line."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from gptcore.course.checks import tokenization as checks\n\n"
            "def get_stats(ids):\n    raise NotImplementedError()"
        ),
        nbformat.v4.new_code_cell("checks.bpe_pair_counts(get_stats)"),
    ]
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    with pytest.raises(CellExecutionError):
        client.execute()
    (error,) = [o for o in nb.cells[1].outputs if o.output_type == "error"]
    assert error.ename == "NotWritten"
    assert error.evalue.startswith("exercise get_stats is not written yet")
    assert error.traceback == [error.evalue]  # no frames through gptcore's internals
    # What gptcore grade's table says for it: "<ename>: <evalue>", cut to its limit.
    from gptcore.course.cells import _first_line_error

    assert "exercise get_stats is not written yet" in _first_line_error(error)


# ----------------------------------------------------- blaming earlier exercises
LESSON1_CODE = '''
def get_stats(ids):
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids, pair, idx):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(idx)
            i += 1  # forgets that the pair used up two ids
        else:
            out.append(ids[i])
            i += 1
    return out


def encode(text, merges, pattern=None):
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        stats = get_stats(ids)
        pair = min(stats, key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = merge(ids, pair, merges[pair])
    return ids
'''


def test_a_wrong_earlier_exercise_is_blamed_by_name():
    ns: dict = {}
    exec(LESSON1_CODE, ns)
    with pytest.raises(AssertionError) as failure:
        tokenization_checks.bpe_encode(ns["encode"])
    first = str(failure.value).splitlines()[0]
    assert first.startswith("this uses your merge, which is wrong: merge(")
    assert first.endswith("fix merge first.")
    assert "encode(" in str(failure.value)  # the original message follows


def test_an_earlier_exercise_called_inside_a_lambda_is_blamed():
    """Names used in a lambda or generator expression live in nested code objects."""
    ns: dict = {}
    exec(LESSON1_CODE, ns)
    exec(
        "def encode_nested(text, merges, pattern=None):\n"
        "    step = lambda ids, pair: merge(ids, pair, merges[pair])\n"
        "    ids = list(text.encode('utf-8'))\n"
        "    while len(ids) >= 2:\n"
        "        pair = min(get_stats(ids), key=lambda p: merges.get(p, float('inf')))\n"
        "        if pair not in merges:\n"
        "            break\n"
        "        ids = step(ids, pair)\n"
        "    return ids\n",
        ns,
    )
    assert "merge" not in ns["encode_nested"].__code__.co_names  # only in the lambda's code
    with pytest.raises(AssertionError, match=r"^this uses your merge"):
        tokenization_checks.bpe_encode(ns["encode_nested"])


def test_earlier_functions_can_be_given_explicitly():
    ns: dict = {}
    exec(LESSON1_CODE, ns)
    with pytest.raises(AssertionError, match=r"^this uses your merge"):
        tokenization_checks.bpe_encode(ns["encode"], depends_on={"merge": ns["merge"]})
    with pytest.raises(AssertionError) as failure:  # nothing given: nothing blamed
        tokenization_checks.bpe_encode(ns["encode"], depends_on={})
    assert not str(failure.value).startswith("this uses")


def test_a_right_earlier_exercise_is_not_blamed():
    ns: dict = {}
    exec(LESSON1_CODE.replace("i += 1  # forgets", "i += 2  #"), ns)
    ns["encode_wrong"] = lambda text, merges, pattern=None: ns["encode"](text, merges)[::-1]
    with pytest.raises(AssertionError) as failure:
        tokenization_checks.bpe_encode(ns["encode_wrong"])
    assert "this uses your" not in str(failure.value)


def test_a_passing_check_with_earlier_functions_prints_only_its_line(capsys):
    # Quiet: the earlier checks run only when the check fails.
    from gptcore.tokenizer import BPETokenizer

    def encode(text, merges, pattern=None):
        return BPETokenizer(merges, pattern=pattern).encode_ordinary(text)

    tokenization_checks.bpe_encode(encode, depends_on={"merge": stub})
    assert capsys.readouterr().out.startswith("✓ encode")
    assert torch.is_grad_enabled()


def test_a_put_together_check_names_the_wrong_piece():
    """Lesson 2's put-together check gets every function; a wrong one is named first."""
    from gptcore.ngram import nll, sample_next

    def count_bigrams(ids, vocab_size):
        ids = torch.tensor(ids, dtype=torch.long)
        pairs = ids[:-1] * vocab_size + ids[1:]
        return torch.bincount(pairs, minlength=vocab_size**2).view(vocab_size, vocab_size)

    def smoothed_probs(counts, k=1.0):  # divides by the wrong total
        counts = counts.double()
        return (counts + k) / (counts.sum(-1, keepdim=True) + k)

    def generate(next_token_probs, context, num_tokens, generator):
        history, out = list(context), []
        for _ in range(num_tokens):
            out.append(sample_next(next_token_probs(history), generator))
            history.append(out[-1])
        return out

    def perplexity(probs, ids):
        return math.exp(nll([float(probs[a, b]) for a, b in pairwise(ids)]))

    with pytest.raises(AssertionError) as failure:
        ngram_checks.bigram_shakespeare(
            count_bigrams, smoothed_probs, generate, perplexity, num_tokens=50
        )
    first = str(failure.value).splitlines()[0]
    assert first.startswith("this uses your smoothed_probs, which is wrong: smoothed_probs(")
