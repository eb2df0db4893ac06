"""The gptcore command line: train (and resume), tokenize, data; one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gptcore.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gptcore.cli", *args], capture_output=True, text=True, timeout=300
    )


def _train_args(out, *extra: str) -> list[str]:
    """``gptcore train`` for a tiny, quiet, one-thread run into ``out``."""
    common = ["--preset", "test", "--batch_size", "4", "--no-progress", "--threads", "1"]
    return ["train", *common, "--out", str(out), *extra]


def test_train_then_the_same_command_resumes(tmp_path):
    args = _train_args(tmp_path, "--eval_interval", "5", "--eval_iters", "2", "--n_layer", "1")
    first = _run(*args, "--max_iters", "5")
    assert first.returncode == 0, first.stderr
    assert (
        "step 5:" in first.stdout
        and (tmp_path / "latest").read_text().strip() == "checkpoint-000005"
    )
    second = _run(*args, "--max_iters", "10")
    assert second.returncode == 0 and "step 10:" in second.stdout
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]][-1] == "10"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--n_layer", "x"], "invalid int value"),
        (["train", "--n_embd", "100", "--n_head", "3"], "not divisible"),
        (["train", "--preset", "nope"], "unknown preset"),
        (["train", "--tokenizer", "nope", "--out", "/nonexistent/x"], None),
        (["train", "--lr", "-1"], "lr > 0"),
        (["grade", "/nonexistent/lesson"], "does not exist"),
        (["tokenize", "hi", "--tokenizer", "/nonexistent.bpe"], None),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line(args, needle, capsys):
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors exit directly
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("gptcore"), err
    if needle:
        assert needle in err


def test_tokenize_and_data(capsys):
    assert main(["tokenize", "Hello world"]) == 0
    out = capsys.readouterr().out
    assert "15496" in out and "995" in out and "11 characters -> 2 tokens" in out
    assert main(["data"]) == 0
    assert "tinyshakespeare" in capsys.readouterr().out


def test_sample_streams_reproducible_text(tmp_path):
    train = _run(*_train_args(tmp_path, "--max_iters", "3", "--eval_iters", "1"))
    assert train.returncode == 0, train.stderr
    args = [
        "sample",
        str(tmp_path),
        "--prompt",
        "ROMEO:",
        "-n",
        "40",
        "--top-k",
        "5",
        "--seed",
        "3",
    ]
    a, b = _run(*args), _run(*args)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("ROMEO:")
    assert len(a.stdout) == len("ROMEO:") + 40 + 1, "40 characters and a newline"
    bad = _run("sample", str(tmp_path), "--temperature", "-1")
    assert bad.returncode == 2 and "temperature" in bad.stderr and bad.stderr.count("\n") == 1
    missing = _run("sample", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "train first" in missing.stderr
