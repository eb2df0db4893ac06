"""The student's nn.Modules in the trusted runner (``classroom/mirror.py``), and the watchers
that run beside the student's code (``checks.report.watching``).

Each test builds the student's module in a "kernel" (the kernel's end of the channel in a
thread, as in ``test_channel.py``) and checks that its mirror behaves as the module itself
would in one process: the same classes and names, tied weights tied, gradients through
``backward()`` equal, an optimizer built in the runner training it. Then the watchers: the
rules lessons 3, 5 and 6 grade about *how* the code works still hold when the tests run in
the runner, and a kernel that sends a change that does not fit is refused.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gptcore.course.checks import embeddings, gpt, report, training
from gptcore.course.classroom import channel
from gptcore.course.classroom.channel import ChannelError

from .test_channel import kernel_with

NET = '''
import torch
import torch.nn.functional as F
from torch import nn

class Net(nn.Module):
    def __init__(self, V=7, C=4):
        super().__init__()
        self.emb = nn.Embedding(V, C)
        self.blocks = nn.ModuleList([nn.Linear(C, C), nn.Linear(C, C, bias=False)])
        self.head = nn.Linear(C, V, bias=False)
        self.head.weight = self.emb.weight  # tied, as GPT-2's
        self.register_buffer("mask", torch.tril(torch.ones(3, 3)))
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
        self.scale = 2.0

    def forward(self, idx, targets=None, extra=None):
        x = self.emb(idx)
        for b in self.blocks:
            x = x + torch.tanh(b(x))
        if extra is not None:
            x = x * extra
        logits = self.head(x) * self.scale
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))

class Cut(Net):
    def forward(self, idx, targets=None, extra=None):
        logits, loss = super().forward(idx, targets, extra)
        return logits, loss.detach()

def train_step(model, optimizer, x, y):
    model.train()
    optimizer.zero_grad()
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    return loss.item()

def sgd_by_hand(model, lr):
    for p in model.parameters():
        p.data -= lr * p.data.sign()  # .data: no version bump, still seen

def grow(model):
    model.extra = nn.Linear(4, 2)  # a new sub-module: the layout changes
    return len(list(model.parameters()))

def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}

def is_training(module):
    return [m.training for m in module.modules()]

def total(module):
    return float(sum(p.detach().sum() for p in module.parameters()))
'''


def _local():
    """The same classes, made in this process: what one process would give."""
    ns: dict = {}
    exec(compile(NET, "<local>", "exec"), ns)
    return ns


def _pair(seed: int = 0):
    k, names = kernel_with(NET)
    mirror = names["Net"]()
    local = _local()["Net"]()
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in mirror.parameters():
            p.copy_(torch.randn(p.shape))
    local.load_state_dict(mirror.state_dict())
    return k, names, mirror, local


def test_a_module_arrives_as_a_module_of_the_same_shape():
    k, _, mirror, local = _pair()
    assert isinstance(mirror, nn.Module) and type(mirror).__name__ == "Net"
    assert isinstance(mirror.emb, nn.Embedding) and isinstance(mirror.blocks, nn.ModuleList)
    assert isinstance(mirror.blocks[1], nn.Linear) and len(mirror.blocks) == 2
    names = [n for n, _ in mirror.named_parameters(remove_duplicate=False)]
    assert names == [n for n, _ in local.named_parameters(remove_duplicate=False)]
    assert mirror.head.weight is mirror.emb.weight  # tied here as there
    assert list(mirror.state_dict()) == list(local.state_dict())  # the persistent buffer only
    assert torch.equal(mirror.mask, torch.tril(torch.ones(3, 3)))
    assert mirror.scale == 2.0 and mirror.emb.num_embeddings == 7  # read from the kernel
    k.end()


def test_gradients_through_the_mirror_are_those_of_one_process():
    k, _, mirror, local = _pair(1)
    gen = torch.Generator().manual_seed(2)
    idx, targets = torch.randint(7, (2, 3), generator=gen), torch.randint(7, (2, 3), generator=gen)
    extra = torch.randn(2, 3, 4, generator=gen)
    got_extra, want_extra = extra.clone().requires_grad_(), extra.clone().requires_grad_()
    logits, loss = mirror(idx, targets, got_extra)
    ref_logits, ref_loss = local(idx, targets, want_extra)
    assert loss.requires_grad and torch.allclose(logits, ref_logits)
    (loss + logits.pow(2).mean()).backward()  # the runner's own ops after the kernel's
    (ref_loss + ref_logits.pow(2).mean()).backward()
    for (n, p), q in zip(mirror.named_parameters(), local.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), n
    assert torch.allclose(got_extra.grad, want_extra.grad, atol=1e-6)
    with torch.no_grad():
        out, _ = mirror(idx)
    assert not out.requires_grad and torch.allclose(out, local(idx)[0])
    # A loss cut from the graph in the kernel arrives cut here too.
    logits, cut = k.names("Cut")["Cut"]()(idx, targets)
    assert logits.grad_fn is not None and cut.grad_fn is None and not cut.requires_grad
    k.end()


def test_an_optimizer_built_in_the_runner_trains_the_students_module():
    k, names, mirror, local = _pair(3)
    opt = torch.optim.AdamW(mirror.parameters(), lr=0.05)
    ref_opt = torch.optim.AdamW(local.parameters(), lr=0.05)
    step = _local()["train_step"]
    gen = torch.Generator().manual_seed(4)
    for _ in range(4):
        x, y = torch.randint(7, (2, 3), generator=gen), torch.randint(7, (2, 3), generator=gen)
        got = names["train_step"](mirror, opt, x, y)
        want = step(local, ref_opt, x, y)
        assert got == pytest.approx(want, rel=1e-5)
    for p, q in zip(mirror.parameters(), local.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    assert opt.state_dict()["state"][0]["step"] == 4  # the kernel's steps, back in ours
    k.end()


def test_changes_go_both_ways():
    k, names, mirror, _ = _pair(5)
    mirror.eval()
    assert names["is_training"](mirror) == [False] * len(list(mirror.modules())) == [False] * 6
    before = mirror.emb.weight.detach().clone()
    names["sgd_by_hand"](mirror, 0.5)
    assert torch.allclose(mirror.emb.weight, before - 0.5 * before.sign())
    with torch.no_grad():
        for p in mirror.parameters():
            p.fill_(1.0)
    assert names["total"](mirror) == sum(p.numel() for p in mirror.parameters())
    assert names["total"](mirror.blocks[1]) == 16  # a sub-module, the student's own
    k.end()


def test_a_new_layout_comes_with_every_value():
    """The student's code adds a sub-module: the mirror is rebuilt, and holds the values of
    the parameters that did not change as well as the new ones."""
    k, names, mirror, _ = _pair(6)
    assert names["grow"](mirror) == 6  # 4 (emb and head tied) and the new 2
    assert isinstance(mirror.extra, nn.Linear)
    theirs = names["weights"](mirror)
    ours = dict(mirror.named_parameters())
    assert list(ours) == list(theirs)
    for n, t in theirs.items():
        assert torch.equal(ours[n].detach(), t), n
    k.end()


def _headers(monkeypatch) -> list[dict]:
    """The headers of the runner's messages from now on."""
    seen: list[dict] = []
    real = channel._Encoder.finish

    def finish(self, header):
        blob = real(self, header)
        if self.peer.trusted:
            seen.append(dict(header))
        return blob

    monkeypatch.setattr(channel._Encoder, "finish", finish)
    return seen


def test_an_optimizer_is_sent_once_then_kept_until_it_changes_here(monkeypatch):
    """A training loop passes the same optimizer again and again: the kernel keeps its copy
    and gets only its number, until the runner's copy changes (a hyperparameter, its state),
    which sends a new copy. The numbers stay those of one process throughout."""
    k, names, mirror, local = _pair(7)
    opt = torch.optim.AdamW(mirror.parameters(), lr=0.05)
    ref_opt = torch.optim.AdamW(local.parameters(), lr=0.05)
    step = _local()["train_step"]
    gen = torch.Generator().manual_seed(8)
    headers = _headers(monkeypatch)

    def both():
        x, y = torch.randint(7, (2, 3), generator=gen), torch.randint(7, (2, 3), generator=gen)
        assert names["train_step"](mirror, opt, x, y) == pytest.approx(step(local, ref_opt, x, y), rel=1e-5)
        return [h for h in headers if h.get("op") == "call"][-1]

    first = both()
    assert "kn" in first and "kp" not in first and "pk" in first  # the copy, pickled
    second = both()
    assert "kp" in second and "kn" not in second  # the kept copy, by number
    for g in (opt, ref_opt):  # a change here: a new copy, with it
        g.param_groups[0]["lr"] = 0.2
    assert "kn" in both()
    assert "kp" in both()
    for g in (opt, ref_opt):
        for st in g.state.values():
            st["exp_avg"].mul_(0.5)  # in place: the version tells
    assert "kn" in both()
    for p, q in zip(mirror.parameters(), local.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    assert opt.state_dict()["state"][0]["step"] == ref_opt.state_dict()["state"][0]["step"] == 5
    k.end()


def test_the_random_state_goes_with_the_call_that_takes_it_on(monkeypatch):
    """A check seeds, reads an attribute of the student's function (a request the kernel
    takes no random state with), then calls it: the seed must go with the call. (Both ends
    share one random state in this test's threads; what is asserted is what is sent.)"""
    k, names = kernel_with("def f():\n    return 1\n")
    headers = _headers(monkeypatch)
    torch.manual_seed(123)
    assert names["f"].__name__ == "f"
    with pytest.raises(AttributeError):
        names["f"].gptcore_drives  # noqa: B018  (a request: getattr)
    assert names["f"]() == 1
    ops = [(h["op"], "rng" in h) for h in headers]
    assert ops == [("getattr", False), ("call", True)]
    k.end()


@report.drives
def _steps(step, model, optimizer, xs, ys):
    """A training loop of a check's (see report.drives): runs where the model is."""
    return [step(model, optimizer, x, y) for x, y in zip(xs, ys)]


def test_a_loop_marked_drives_runs_in_the_kernel_in_one_round_trip():
    k, names, mirror, local = _pair(9)
    opt = torch.optim.AdamW(mirror.parameters(), lr=0.05)
    ref_opt = torch.optim.AdamW(local.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(10)
    xs, ys = torch.randint(7, (5, 2, 3), generator=gen), torch.randint(7, (5, 2, 3), generator=gen)
    sent = k.runner._next_msg
    got = report.call(_steps, names["train_step"], mirror, opt, xs, ys, where="5 steps")
    assert k.runner._next_msg - sent == 1
    want = report.call(_steps, _local()["train_step"], local, ref_opt, xs, ys)  # here: no kernel
    assert type(got) is list and got == pytest.approx(want, rel=1e-5) and len(got) == 5
    for p, q in zip(mirror.parameters(), local.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    assert opt.state_dict()["state"][0]["step"] == 5  # the kernel's steps, back in ours
    k.end()


def test_overfitting_trains_what_the_students_model_calls_its_parameters():
    """The overfitting check's loop runs in the kernel: a model whose parameters() leaves out
    its weights cannot train, there as in one process (its mirror's parameters() would list
    them all)."""
    k, names = kernel_with(
        "import torch\nfrom torch import nn\nfrom gptcore.model import GPT\n"
        "class StuckGPT(GPT):\n"
        "    def __init__(self, config):\n"
        "        super().__init__(config)\n"
        "        self.scale = nn.Parameter(torch.ones(()))\n"
        "    def parameters(self, recurse=True):\n"
        "        yield self.scale\n"
        "    def forward(self, idx, targets=None):\n"
        "        logits, loss = super().forward(idx, targets)\n"
        "        return logits, (loss * self.scale if loss is not None else None)\n"
    )
    with pytest.raises(AssertionError, match="did not overfit one batch"):
        gpt.overfit_one_batch(names["StuckGPT"])
    k.end()


def test_the_checks_never_change_a_tensor_through_data():
    """The runner's end of a mirror sees its tensors change by their version counters
    (channel._Sync, by_version), which ``.data`` would bypass: no check uses it."""
    root = Path(report.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "data":
                if not (isinstance(node.value, ast.Name) and node.value.id == "gptcore"):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []
    assert len(list(root.rglob("*.py"))) > 20


def test_a_change_that_does_not_fit_is_refused(monkeypatch):
    k, names, mirror, _ = _pair()
    real = k.peer._sync_out

    def forged(header, enc):
        real(header, enc)
        rid = next(iter(k.peer.synced))
        header["ms"] = enc.value({rid: {"p": {"emb.weight": torch.zeros(3)}}})

    monkeypatch.setattr(k.peer, "_sync_out", forged)
    with pytest.raises(ChannelError, match="does not fit"):
        names["total"](mirror)


def test_a_gradient_that_does_not_fit_is_refused(monkeypatch):
    k, _, mirror, _ = _pair()
    monkeypatch.setattr(k.peer, "_backward", lambda parts: [torch.zeros(1)] * 4)
    _, loss = mirror(torch.tensor([[1, 2]]), torch.tensor([[3, 4]]))
    with pytest.raises(ChannelError, match="does not fit"):
        loss.backward()


# ---------------------------------------------------------------- watchers
def test_a_watcher_sees_what_the_students_code_does_there():
    k, names = kernel_with(
        "import torch\nimport torch.nn.functional as F\n"
        "def by_rows(idx, weight):\n    return weight[idx]\n"
        "def one_hot_embed(idx, weight):\n"
        "    return F.one_hot(idx, weight.shape[0]).to(weight.dtype) @ weight\n"
    )
    with pytest.raises(AssertionError, match=r"reads rows of weight directly \(weight\[\.\.\.\]\)"):
        embeddings.one_hot_embed(names["by_rows"], cases=1)
    embeddings.one_hot_embed(names["one_hot_embed"], cases=1)
    assert not report.WATCHING
    k.end()


def test_building_a_model_to_count_its_parameters_is_seen():
    k, names = kernel_with(
        "from gptcore.model import GPT\n"
        "def count_params(config):\n"
        "    return sum(p.numel() for p in GPT(config).parameters())\n"
    )
    with pytest.raises(AssertionError, match="built model parameters"):
        gpt.count_params(names["count_params"], cases=0)
    k.end()


def test_a_new_optimizer_in_train_step_is_seen():
    k, names = kernel_with(
        "import torch\n"
        "def train_step(model, optimizer, x, y):\n"
        "    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)\n"
        "    optimizer.zero_grad()\n"
        "    _, loss = model(x, y)\n"
        "    loss.backward()\n"
        "    optimizer.step()\n"
        "    return loss.item()\n"
    )
    with pytest.raises(AssertionError, match="called step\\(\\) 0 times on the optimizer passed in"):
        embeddings.train_step(names["train_step"])
    k.end()


STEP = """
import contextlib, torch
def optimization_step(model, optimizer, batches, grad_clip=1.0, *, autocast=contextlib.nullcontext, no_sync=None):
    batches = list(batches)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i, (x, y) in enumerate(batches):
        sync = contextlib.nullcontext() if i == len(batches) - 1 or no_sync is None else no_sync()
        with sync:
            with WRAP:
                _, loss = model(x, y)
            (loss / len(batches)).backward()
        total += float(loss.detach())
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip)) if grad_clip > 0 else float(
        torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
    optimizer.step()
    return total / len(batches), norm
"""


def test_a_training_step_is_watched_where_it_runs():
    """The autocast spy and the model's hooks go to the kernel with the model; a step that
    skips autocast computes the same numbers on a CPU, and only the watchers can tell."""
    k, names = kernel_with(STEP.replace("WRAP", "autocast()"))
    training.optimization_step(names["optimization_step"], cases=1)
    k.end()
    k, names = kernel_with(STEP.replace("WRAP", "contextlib.nullcontext()"))
    with pytest.raises(AssertionError, match="forward pass outside autocast"):
        training.optimization_step(names["optimization_step"], cases=1)
    k.end()


def test_a_watcher_must_say_where_it_runs():
    with pytest.raises(TypeError, match="gptcore_in_kernel"):
        with report.watching(torch.no_grad()):
            pass


def test_a_generator_argument_arrives_as_a_generator():
    k, names = kernel_with("import types\ndef kind(xs):\n    return type(xs).__name__, list(xs)\n")
    assert names["kind"](x * 2 for x in range(3)) == ("generator", [0, 2, 4])
    assert channel.MAX_ITEMS > 3
    k.end()


def test_functional_reference_for_the_mirror_test():
    """The local module really is the reference: F.cross_entropy of its logits is its loss."""
    net = _local()["Net"]()
    idx, targets = torch.tensor([[1, 2, 3]]), torch.tensor([[4, 5, 6]])
    logits, loss = net(idx, targets)
    assert torch.allclose(loss, F.cross_entropy(logits.view(-1, 7), targets.view(-1)))
