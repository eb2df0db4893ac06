"""gptcore.train: the pieces, and train() end to end (resume, checkpoints, NaN, DDP)."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from gptcore.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from gptcore.model import GPT, GPTConfig
from gptcore.train import (
    TrainConfig,
    TrainingDiverged,
    configure_optimizer,
    estimate_loss,
    get_batch,
    load_run,
    lr_at,
    optimization_step,
    train,
)

TINY = dict(preset="test", batch_size=4, eval_iters=2, log_interval=1, progress=False, threads=1)


# ------------------------------------------------------------------- pieces
def test_lr_schedule_by_hand():
    kw = dict(lr=1.0, min_lr=0.1, warmup_iters=10, decay_iters=110)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)  # halfway down the cosine
    assert lr_at(110, **kw) == pytest.approx(0.1) and lr_at(500, **kw) == pytest.approx(0.1)
    lrs = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(lrs)), "monotone decay after warmup"
    assert lr_at(0, lr=1.0, min_lr=0.0, warmup_iters=0, decay_iters=10) == pytest.approx(1.0)


def test_get_batch_tensor_and_memmap_agree(tmp_path):
    data = torch.arange(1000) % 97
    path = tmp_path / "tokens.bin"
    data.numpy().astype(np.uint16).tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r")
    x1, y1 = get_batch(data, 5, 8, torch.Generator().manual_seed(3))
    x2, y2 = get_batch(mm, 5, 8, torch.Generator().manual_seed(3))
    assert x1.shape == (5, 8) and x1.dtype == torch.long and x2.dtype == torch.long
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:, 1:], y1[:, :-1]), "targets are inputs shifted by one"
    with pytest.raises(ValueError, match="more than block_size"):
        get_batch(data[:8], 1, 8)
    with pytest.raises(ValueError, match="1-D"):
        get_batch(data.view(10, 100), 1, 8)


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("test"))


def test_accumulation_equals_one_big_batch():
    x, y = get_batch(torch.arange(500) % 64, 8, 16, torch.Generator().manual_seed(0))
    a, b = _tiny_model(), _tiny_model()
    opt_a = configure_optimizer(a, 1e-3, 0.1)
    opt_b = configure_optimizer(b, 1e-3, 0.1)
    loss_a, norm_a = optimization_step(a, opt_a, [(x, y)], grad_clip=0.0)
    loss_b, norm_b = optimization_step(b, opt_b, [(x[:4], y[:4]), (x[4:], y[4:])], grad_clip=0.0)
    assert loss_a == pytest.approx(loss_b, rel=1e-6) and norm_a == pytest.approx(norm_b, rel=1e-5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_clipping_caps_the_gradient_norm():
    x, y = get_batch(torch.arange(500) % 64, 4, 16, torch.Generator().manual_seed(0))
    model = _tiny_model()
    opt = configure_optimizer(model, 0.0, 0.0)
    _, norm = optimization_step(model, opt, [(x, y)], grad_clip=1e-3)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm > 1e-3 and float(after) == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(ValueError, match="at least one"):
        optimization_step(model, opt, [])


def test_weight_decay_groups():
    model = _tiny_model()
    opt = configure_optimizer(model, 1e-3, 0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(
        p.dim() < 2 for p in no_decay["params"]
    )
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()


def test_estimate_loss_is_deterministic_and_restores_mode():
    model = _tiny_model()
    data = torch.arange(500) % 64
    a = estimate_loss(model, data, 4, 16, 3, torch.Generator().manual_seed(1))
    b = estimate_loss(model, data, 4, 16, 3, torch.Generator().manual_seed(1))
    assert a == b and model.training
    assert abs(a - math.log(64)) < 0.3, "an untrained model is close to uniform"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1.0}, "lr > 0"),
        ({"min_lr": 1.0, "lr": 0.1}, "min_lr"),
        ({"log_file": "x.txt"}, "csv"),
        ({"preset": "huge"}, "unknown preset"),
        ({"model": {"n_embd": 30, "n_head": 4}}, "divisible"),
    ],
)
def test_bad_train_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


# --------------------------------------------------------------- end to end
def test_resume_continues_bit_for_bit(tmp_path):
    cfg = TrainConfig(
        out_dir=str(tmp_path / "full"),
        max_iters=12,
        eval_interval=6,
        lr_decay_iters=12,
        model={"dropout": 0.1},
        **TINY,
    )
    full = train(cfg)
    part = train(cfg, out_dir=str(tmp_path / "part"), max_iters=6)
    assert part.step == 6
    resumed = train(cfg, out_dir=str(tmp_path / "part"))
    assert resumed.step == 12
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    assert resumed.val_loss == full.val_loss
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    rows = (tmp_path / "part" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,val_loss,lr") and len(rows) == 1 + 12
    # Running the finished run again does nothing and returns the same model.
    again = train(cfg, out_dir=str(tmp_path / "part"))
    assert again.step == 12 and again.history == resumed.history


class _Exploding(GPT):
    """Returns a NaN loss from its 5th training forward on."""

    calls = 0

    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        if self.training and targets is not None:
            type(self).calls += 1
            if type(self).calls >= 5:
                loss = loss * float("nan")
        return logits, loss


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), max_iters=10, eval_interval=2, **TINY)
    torch.manual_seed(0)
    model = _Exploding(GPTConfig.preset("test", vocab_size=65))
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 4.*checkpoint at step 4"):
        train(cfg, model=model)
    assert latest_checkpoint(tmp_path).name == "checkpoint-000004"
    fresh = GPT(GPTConfig.preset("test", vocab_size=65))
    state = load_checkpoint(tmp_path, fresh)
    assert state["step"] == 4
    assert all(torch.isfinite(p).all() for p in fresh.parameters())


def test_max_seconds_stops_with_a_checkpoint(tmp_path):
    out = train(
        TrainConfig(
            out_dir=str(tmp_path), max_iters=10_000, eval_interval=10_000, max_seconds=0.5, **TINY
        )
    )
    assert 0 < out.step < 10_000 and out.val_loss is not None
    assert latest_checkpoint(tmp_path).name == f"checkpoint-{out.step:06d}"


KILL_DURING_SAVE = """
import os, signal, sys
import torch
from gptcore import checkpoint as ck
from gptcore.model import GPT, GPTConfig
run = sys.argv[1]
torch.manual_seed(0)
model = GPT(GPTConfig.preset("test"))
ck.save_checkpoint(run, model, {"step": 1})
with torch.no_grad():
    for p in model.parameters():
        p.add_(1.0)
def dying(folder, model, state):
    ck.save_model(model, str(folder / "model.safetensors"))  # half a checkpoint on disk...
    os.kill(os.getpid(), signal.SIGKILL)                       # ...then kill -9
ck._write_state = dying
ck.save_checkpoint(run, model, {"step": 2})
"""


def test_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, str(tmp_path)], capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()
    torch.manual_seed(0)
    expected = GPT(GPTConfig.preset("test"))
    model = GPT(GPTConfig.preset("test"))
    state = load_checkpoint(tmp_path, model)
    assert state["step"] == 1
    for p, q in zip(model.parameters(), expected.parameters()):
        assert torch.equal(p, q)
    # The next save clears the debris of the interrupted one.
    save_checkpoint(tmp_path, model, {"step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-000001",
        "checkpoint-000003",
        "latest",
    ]


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path, _tiny_model(), {"step": 1})
    with pytest.raises(ValueError, match="another config"):
        load_checkpoint(tmp_path, GPT(GPTConfig.preset("test", n_layer=3)))


def test_training_state_loads_on_the_cpu_whatever_the_model_device(tmp_path, monkeypatch):
    """RNG states must be CPU ByteTensors: resuming on a GPU once failed with
    "RNG state must be a torch.ByteTensor" when the state followed map_location."""
    import gptcore.checkpoint as ck

    gen = torch.Generator().manual_seed(3)
    save_checkpoint(tmp_path, _tiny_model(), {"step": 1, "batch_rng": gen.get_state()})
    # Stand in for a CUDA model (this machine may have no GPU): the weights go to
    # "meta", and the state must not.
    monkeypatch.setattr(ck, "load_model", lambda *a, **k: ([], []))
    state = load_checkpoint(tmp_path, _tiny_model(), map_location="meta")
    assert state["batch_rng"].device.type == "cpu"
    torch.Generator().set_state(state["batch_rng"])


class _RunsCode:
    """Unpickling this object runs code: it writes the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_loading_a_run_never_unpickles_code(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(out_dir=str(run), max_iters=2, eval_interval=2, **TINY))
    model, tokenizer, state = load_run(run)  # a genuine run loads without unpickling objects
    assert state["step"] == 2 and tokenizer.vocab_size == model.config.vocab_size == 65
    marker = tmp_path / "pwned"
    folder = latest_checkpoint(run)
    torch.save({**state, "history": _RunsCode(marker)}, folder / "state.pt")
    with pytest.raises(ValueError, match="refused, since unpickling it could run code"):
        load_run(run)
    with pytest.raises(ValueError, match="not written by gptcore's save_checkpoint"):
        load_checkpoint(run, GPT(GPTConfig.preset("test", vocab_size=65)))
    with pytest.raises(ValueError, match="refused"):
        train(TrainConfig(out_dir=str(run), max_iters=4, eval_interval=2, **TINY))
    assert not marker.exists()
    # The same file unpickled the unsafe way does run the code: the test would catch a regression.
    torch.load(folder / "state.pt", weights_only=False)
    assert marker.read_text() == "pwned"


DDP_SCRIPT = """
import json, sys
from gptcore.train import TrainConfig, train
out, batch = sys.argv[1], int(sys.argv[2])
r = train(TrainConfig(out_dir=out, preset="test", batch_size=batch, max_iters=4, eval_interval=4,
                      eval_iters=2, log_interval=1, progress=False, threads=1, log_file=None))
import torch.distributed as dist
if not dist.is_initialized() or dist.get_rank() == 0:
    params = [p.detach().flatten().tolist() for p in r.model.parameters()]
    json.dump({"loss": [row["loss"] for row in r.history], "params": params}, open(out + ".json", "w"))
if dist.is_initialized():
    dist.destroy_process_group()
"""


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one"), "8"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path / "two"),
            "4",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one.json").read_text())
    b = json.loads((tmp_path / "two.json").read_text())
    # Each process's loss is its half of the batch; rank 0 logs its own half.
    assert len(a["loss"]) == len(b["loss"]) == 4
    for pa, pb in zip(a["params"], b["params"]):
        np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-5)
