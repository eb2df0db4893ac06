"""The plain-data channel between a grading kernel and the trusted test runner.

A socket pair stands in for the runtime folder's socket: the runner's end
(``trusted=True``) in the test, the kernel's end serving in a thread with a
namespace of its own, as ``GradingExecute`` sets them up.
"""

from __future__ import annotations

import base64
import json
import random
import socket
import struct
import subprocess
import sys
import threading

import pytest
import torch

from gptcore.course.checks.report import call, input_only, not_written
from gptcore.course.classroom.channel import ChannelError, Peer, Remote
from gptcore.model import GPTConfig


class Kernel:
    """The kernel's end, serving one "cell" at a time in a thread."""

    def __init__(self, namespace: dict) -> None:
        a, b = socket.socketpair()
        self.runner = Peer(a, trusted=True)
        self.peer = Peer(b, trusted=False, namespace=namespace)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.peer.serve()
        except BaseException as e:
            self.errors.append(e)

    def names(self, *names: str) -> dict:
        return self.runner.lookup(list(names))

    def end(self) -> None:
        self.runner.request("end")
        self.thread.join(5)


def kernel_with(source: str) -> tuple[Kernel, dict]:
    ns: dict = {"__name__": "__main__"}
    exec(compile(source, "<notebook>", "exec"), ns)
    k = Kernel(ns)
    return k, k.names(*[n for n in ns if not n.startswith("__")])


PLAIN = [
    None,
    True,
    0,
    -(2**80),
    1.5,
    float("nan"),
    float("-inf"),
    "é\n\x00",
    b"\x00\xff",
    [1, [2, (3, 4)]],
    (),
    {"a": 1, (1, 2): [3], 5: None},
    {1, 2},
    frozenset({"x"}),
    slice(1, None, 2),
    Ellipsis,
]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_plain_data_crosses_by_value(value):
    k, ns = kernel_with("def echo(x):\n    return x")
    got = ns["echo"](value)
    k.end()
    assert type(got) is type(value)
    assert got == value or (value != value and got != got)  # NaN


@pytest.mark.parametrize(
    "t",
    [
        torch.arange(6).reshape(2, 3),
        torch.zeros(0, 4),
        torch.tensor(3.5, dtype=torch.float64),
        torch.tensor([True, False]),
        torch.ones(3, dtype=torch.bfloat16),
        torch.arange(10)[::3],  # not contiguous
        torch.randn(300, 300),  # over INLINE_BYTES: in the safetensors blob
    ],
    ids=lambda t: f"{t.dtype}{tuple(t.shape)}",
)
def test_tensors_cross_by_value(t):
    k, ns = kernel_with("def echo(x):\n    return x")
    got = ns["echo"](t)
    k.end()
    assert type(got) is torch.Tensor and got.dtype == t.dtype and torch.equal(got, t)


def test_dtypes_sizes_devices_and_gptcore_dataclasses_cross():
    k, ns = kernel_with("def echo(*x):\n    return x")
    cfg = GPTConfig.preset("test")
    got = ns["echo"](torch.float16, torch.Size([2, 3]), torch.device("cpu"), cfg)
    k.end()
    assert got == (torch.float16, torch.Size([2, 3]), torch.device("cpu"), cfg)
    assert type(got[3]) is GPTConfig


def test_a_gradient_flag_comes_back():
    k, ns = kernel_with("def f(x):\n    return (x * 2).sum()")
    got = ns["f"](torch.ones(3, requires_grad=True))
    k.end()
    assert got.requires_grad and float(got.detach()) == 6.0


def test_changes_to_arguments_are_written_back():
    """A check passes copies and compares them afterwards: an in-place change must show."""
    k, ns = kernel_with(
        "def mutate(xs, d, t, g):\n"
        "    xs.append(9); d['new'] = 1; t += 1\n"
        "    return int(torch.randint(100, (1,), generator=g))\n"
        "import torch"
    )
    xs, d, t, g = [1], {"a": 0}, torch.zeros(2), torch.Generator().manual_seed(3)
    first = ns["mutate"](xs, d, t, g)
    k.end()
    assert (xs, d, t.tolist()) == ([1, 9], {"a": 0, "new": 1}, [1.0, 1.0])
    ref = torch.Generator().manual_seed(3)
    assert first == int(torch.randint(100, (1,), generator=ref))
    assert torch.equal(g.get_state(), ref.get_state()), "the generator moved on, as in one process"


def test_the_checks_see_a_mutation_as_in_one_process():
    k, ns = kernel_with("def sort_in_place(xs):\n    xs.sort()\n    return xs")
    with pytest.raises(AssertionError, match="changed its argument"):
        call(ns["sort_in_place"], [3, 1, 2], name="sort_in_place")
    k.end()


def test_random_states_follow_the_call():
    """A check seeds PyTorch and Python's random, then calls the student: same numbers."""
    k, ns = kernel_with(
        "import torch, random\n"
        "def draw():\n    return int(torch.randint(10**6, ())), random.random()"
    )
    torch.manual_seed(11)
    random.seed(12)
    got = ns["draw"]()
    again = ns["draw"]()  # the kernel's generators carry on between calls
    torch.manual_seed(11)
    random.seed(12)
    want = (int(torch.randint(10**6, ())), random.random())
    want_again = (int(torch.randint(10**6, ())), random.random())
    k.end()
    assert got == want and again == want_again


def test_grad_mode_follows_the_call():
    k, ns = kernel_with("import torch\ndef mode():\n    return torch.is_grad_enabled()")
    with torch.no_grad():
        off = ns["mode"]()
    on = ns["mode"]()
    k.end()
    assert (off, on) == (False, True)


def test_exceptions_keep_their_builtin_class_and_message():
    k, ns = kernel_with(
        "class Oops(KeyError):\n    pass\n"
        "def bad(kind):\n"
        "    if kind == 'value':\n        raise ValueError('k must be positive')\n"
        "    raise Oops('mine')"
    )
    with pytest.raises(ValueError, match="k must be positive"):
        ns["bad"]("value")
    with pytest.raises(KeyError) as info:
        ns["bad"]("own")
    k.end()
    assert type(info.value).__name__ == "Oops"


def test_an_unwritten_exercise_is_named_even_when_called_from_another():
    k, ns = kernel_with(
        "def merge(ids, pair, idx):\n    raise NotImplementedError()\n"
        "def encode(text):\n    return merge(list(text.encode()), (1, 2), 3)"
    )
    with pytest.raises(NotImplementedError) as info:
        call(ns["encode"], "ab", name="encode")
    k.end()
    assert str(info.value) == str(not_written("merge", used_by="encode"))


def test_a_students_object_is_a_handle_equal_to_nothing():
    """An object whose __eq__ always says True stays in the kernel: here it is a handle."""
    k, ns = kernel_with(
        "class Always(list):\n"
        "    def __eq__(self, other):\n        return True\n"
        "def merge(ids, pair, idx):\n    return Always()"
    )
    got = ns["merge"]([1, 2], (1, 2), 256)
    assert isinstance(got, Remote) and type(got) is not list
    assert got != [256] and not (got == [256])
    assert type(got).__qualname__ == "Always", "messages name the student's type"
    k.end()


def test_handles_to_student_objects_answer_attributes_items_and_calls():
    k, ns = kernel_with(
        "class Model:\n"
        "    def __init__(self, n):\n        self.n = n; self.table = {'a': [1, 2]}\n"
        "    def __call__(self, x):\n        return x * self.n\n"
        "    def __len__(self):\n        return self.n\n"
        "    def __iter__(self):\n        return iter(range(self.n))"
    )
    m = ns["Model"](3)
    assert (m.n, m.table["a"], m(2), len(m), list(m)) == (3, [1, 2], 6, 3, [0, 1, 2])
    m.n = 4
    assert m(2) == 8
    k.end()


def test_the_kernel_can_only_call_what_the_runner_passed():
    """The runner's objects: called with plain data, never read, so the kernel can never
    reach the checks, their modules or their globals."""
    k, ns = kernel_with(
        "def probe(f):\n"
        "    out = [f(2)]\n"
        "    attempts = [lambda: f.secret, lambda: f.__globals__.get('double'),\n"
        "                lambda: f.__self__, lambda: setattr(f, 'secret', 1)]\n"
        "    for attempt in attempts:\n"
        "        try:\n"
        "            out.append(repr(attempt()))\n"
        "        except Exception as e:\n"
        "            out.append(type(e).__name__)\n"
        "    return out"
    )

    def double(x):
        return 2 * x

    double.secret = "hidden"
    got = ns["probe"](double)
    k.end()
    assert got == [4, "PermissionError", "PermissionError", "AttributeError", "PermissionError"]
    assert double.secret == "hidden"


def test_callbacks_nest():
    """The kernel calls back into the runner, which calls the kernel again."""
    k, ns = kernel_with("def apply(f, x):\n    return f(x) + 1\ndef sq(x):\n    return x * x")
    assert ns["apply"](lambda x: ns["sq"](x), 5) == 26
    k.end()


def test_the_runner_never_unpickles_what_the_kernel_sends():
    """A value tagged as a pickle (which would run code when loaded) is refused."""
    a, b = socket.socketpair()
    runner = Peer(a, trusted=True)
    payload = base64.b64encode(b"cos\nsystem\n(S'echo pwned'\ntR.").decode()

    def kernel() -> None:
        head, _ = _raw_recv(b)
        reply = json.dumps({"re": head["id"], "ok": {"$pk": payload}}).encode()
        b.sendall(struct.pack("<QQ", len(reply), 0) + reply)

    t = threading.Thread(target=kernel)
    t.start()
    with pytest.raises(ChannelError, match="unknown value tag"):
        runner.lookup(["x"])
    t.join()


def test_the_runner_refuses_a_message_carrying_a_pickle():
    a, b = socket.socketpair()
    runner = Peer(a, trusted=True)

    def kernel() -> None:
        head, _ = _raw_recv(b)
        raw = json.dumps({"re": head["id"], "ok": None, "pk": "gASVAAAAAAAAAAA="}).encode()
        b.sendall(struct.pack("<QQ", len(raw), 0) + raw)

    t = threading.Thread(target=kernel)
    t.start()
    with pytest.raises(ChannelError, match="never unpickles"):
        runner.lookup(["x"])
    t.join()


def test_the_runners_modules_and_optimizers_go_as_copies_and_come_back_trained():
    """train_step(model, optimizer, x, y) in the kernel: the runner's model and optimizer
    end as they would have in one process (weights, gradients, mode, optimizer state)."""
    k, ns = kernel_with(
        "def train_step(model, opt, x, y):\n"
        "    model.train()\n"
        "    loss = ((model(x) - y) ** 2).mean()\n"
        "    opt.zero_grad(); loss.backward(); opt.step()\n"
        "    return float(loss.detach())  # (float(loss) warns once per process: other tests need it)"
    )

    def setup():
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5)).eval()
        return m, torch.optim.AdamW(m.parameters(), lr=0.1)

    x, y = torch.randn(4, 3), torch.randn(4, 2)
    model, opt = setup()
    torch.manual_seed(5)
    got = ns["train_step"](model, opt, x, y)
    ref_model, ref_opt = setup()
    torch.manual_seed(5)
    ref_model.train()
    loss = ((ref_model(x) - y) ** 2).mean()
    ref_opt.zero_grad()
    loss.backward()
    ref_opt.step()
    k.end()
    assert got == float(loss.detach()), "the same dropout mask: the random state followed the call"
    assert model.training and model[1].training
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q) and torch.equal(p.grad, q.grad)
    assert opt.param_groups[0]["params"][0] is model[0].weight, "the optimizer is still ours"
    assert torch.equal(
        opt.state[model[0].weight]["exp_avg"], ref_opt.state[ref_model[0].weight]["exp_avg"]
    )


def test_other_objects_are_updated_in_place_and_come_back_as_themselves():
    from gptcore.model.attention import KVCache

    k, ns = kernel_with(
        "def update(cache, k_new):\n"
        "    end = cache.length + k_new.size(2)\n"
        "    cache.k[:, :, cache.length:end] = k_new\n"
        "    cache.length = end\n"
        "    cache.extra = 'new attributes stay in the kernel'\n"
        "    return cache"
    )
    cache = KVCache(1, 1, 4, 2)
    buffer = cache.k
    got = ns["update"](cache, torch.ones(1, 1, 3, 2))
    k.end()
    assert got is cache and cache.length == 3 and cache.k is buffer
    assert cache.k[0, 0, :, 0].tolist() == [1, 1, 1, 0]
    assert not hasattr(cache, "extra")


@pytest.mark.parametrize(
    "reply",
    [
        {"$dc": "os:system", "f": {}},
        {"$dc": "gptcore.course.checks.report:Shown", "f": {}},
        {"$y": 12345},
        {"$T": "0"},
        {"$T": {"b": "AAAA", "dt": "float32", "sh": [5]}},
        {"$T": {"b": "", "dt": "Tensor", "sh": [0]}},
        {"$T": {"b": "", "dt": "float32", "sh": [-1]}},
        {"$f": "1e999"},
        {"$d": [[1]]},
        {"$zzz": 1},
        {"$x": [99, 3, 100, [1]]},
        {"$il": [1, [1, True]]},
        "x" and [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
    ],
    ids=["os.system", "course class", "unknown handle", "missing tensor", "short bytes",
         "not a dtype", "negative shape", "bad float",
         "bad dict", "unknown tag", "addition to nothing", "ints with a bool", "too deep"],
)  # fmt: skip
def test_malformed_values_are_refused(reply):
    a, b = socket.socketpair()
    runner = Peer(a, trusted=True)

    def kernel() -> None:
        head, _ = _raw_recv(b)
        raw = json.dumps({"re": head["id"], "ok": reply}).encode()
        b.sendall(struct.pack("<QQ", len(raw), 0) + raw)

    t = threading.Thread(target=kernel)
    t.start()
    with pytest.raises((ChannelError, ValueError, AttributeError, ModuleNotFoundError)):
        runner.lookup(["x"])
    t.join()


def test_an_oversized_message_is_refused_before_it_is_read():
    a, b = socket.socketpair()
    runner = Peer(a, trusted=True)
    b.sendall(struct.pack("<QQ", 1 << 40, 0))
    with pytest.raises(ChannelError, match="over the limit"):
        runner.lookup(["x"])


def _raw_recv(sock: socket.socket) -> tuple[dict, bytes]:
    nh, nb = struct.unpack("<QQ", sock.recv(16, socket.MSG_WAITALL))
    head = json.loads(sock.recv(nh, socket.MSG_WAITALL))
    return head, sock.recv(nb, socket.MSG_WAITALL) if nb else b""


class Holder:
    """A runner object that keeps a student's function and a lambda (as _LearnerCache does)."""


def test_inside_a_copy_kernel_objects_are_references_and_lambdas_are_callbacks():
    k, ns = kernel_with(
        "def update(h, x):\n    return h.scale(x) + 1\n"
        "def run(h, x):\n    return h.upd(h, x)"
    )
    holder = Holder()
    seen = []
    holder.scale = lambda x: seen.append(x) or 10 * x
    holder.upd = ns["update"]
    got = ns["run"](holder, 2)
    k.end()
    assert (got, seen) == (21, [2]), "the lambda ran here, the student's function there"


def test_repeated_calls_in_one_request_read_as_separate_calls():
    """checks.report.call_repeated: thousands of draws in one round trip, the same tokens,
    errors and changed arguments as separate calls would give."""
    from gptcore.course.checks.report import call_repeated

    k, ns = kernel_with(
        "import torch\n"
        "def draw(p, g):\n    return int(torch.multinomial(p, 1, generator=g))\n"
        "def third_fails(xs, n=[0]):\n"
        "    n[0] += 1\n"
        "    if n[0] == 3:\n        raise ValueError('third')\n"
        "    return len(xs)\n"
        "def mutates(xs):\n    xs.append(1)\n    return 0"
    )
    p = torch.tensor([0.2, 0.3, 0.5])
    g = torch.Generator().manual_seed(4)
    got = call_repeated(ns["draw"], p, g, times=500, name="draw")
    ref = torch.Generator().manual_seed(4)
    want = [int(torch.multinomial(p, 1, generator=ref)) for _ in range(500)]
    assert got == want and torch.equal(g.get_state(), ref.get_state())
    with pytest.raises(AssertionError, match=r"third_fails\(\[1\]\) raised ValueError: third"):
        call_repeated(ns["third_fails"], [1], times=5, name="third_fails")
    with pytest.raises(AssertionError, match="changed its argument"):
        call_repeated(ns["mutates"], [5], times=5, name="mutates")
    k.end()
    local = [0]
    assert call_repeated(lambda: local.append(1) or len(local), times=3) == [2, 3, 4]


def test_big_containers_are_sent_once_and_copied_fresh_for_every_call():
    """GPT-2's 50,000 merges go to the kernel once; each call still gets its own copy."""
    k, ns = kernel_with(
        "def size(merges):\n    n = len(merges)\n    merges.clear()\n    return n\n"
        "def first(ids):\n    return ids[0]"
    )
    merges = {(i, i + 1): 256 + i for i in range(50_000)}
    sent = []
    k.runner.sock = _Recording(k.runner.sock, sent)
    assert ns["size"](merges) == 50_000 and merges == {}, "the change is written back"
    merges = {(i, i + 1): 256 + i for i in range(50_000)}
    first_size = sum(sent)
    sent.clear()
    assert ns["size"](dict(merges)) == 50_000, "a fresh copy, not the one cleared above"
    assert sum(sent) < first_size / 20, "only its digest the second time"
    with pytest.raises(AssertionError, match="changed its argument"):
        call(ns["size"], merges, name="size")
    assert ns["first"](list(range(10**6))) == 0
    k.end()


class _Recording:
    """A socket that notes how many bytes each send carries."""

    def __init__(self, sock: socket.socket, sizes: list[int]) -> None:
        self._sock, self._sizes = sock, sizes

    def sendall(self, data: bytes) -> None:
        self._sizes.append(len(data))
        self._sock.sendall(data)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def test_a_growing_list_of_ints_goes_as_what_it_adds():
    """A generation loop passes the whole history back for every token: after the first
    time, only the new tokens travel, and the runner still gets each history whole."""
    k, ns = kernel_with(
        "def generate(next_id, context, n):\n"
        "    out = list(context)\n"
        "    for _ in range(n):\n"
        "        out.append(next_id(out))\n"
        "    return out[len(context):]\n"
        "def twice(f):\n"
        "    return f(list(range(40))), f([7] + list(range(40))), f([1, True] * 20)"
    )
    histories = []
    sent = []
    k.peer.sock = _Recording(k.peer.sock, sent)

    def next_id(h):
        histories.append([type(x).__name__ for x in h if type(x) is not int] or list(h))
        return len(h) % 5

    got = ns["generate"](next_id, list(range(50)), 400)
    want = list(range(50))
    for _ in range(400):
        want.append(len(want) % 5)
    assert got == want[50:]
    assert histories == [want[:i] for i in range(50, 450)], "each history, whole"
    # (whole, they would take about 3.5 bytes a token: 350 KB)
    assert sum(sent) < sum(len(h) for h in histories) / 2, "not every history in full"
    histories.clear()
    ns["twice"](next_id)
    assert histories == [list(range(40)), [7, *range(40)], ["bool"] * 20], (
        "a list that does not extend the last one goes whole; a bool stays a bool"
    )
    k.end()


@input_only
def _where(x):
    return threading.current_thread().name, 2 * x


def test_a_function_marked_input_only_runs_in_the_kernel_others_are_called_back():
    k, ns = kernel_with("def use(f, x):\n    return f(x)")
    here = threading.current_thread().name
    assert ns["use"](_where, 4) == (k.thread.name, 8), "imported and run there"
    assert ns["use"](lambda x: (threading.current_thread().name, 2 * x), 4) == (here, 8)
    k.end()


def test_a_big_container_of_callables_still_calls_back():
    k, ns = kernel_with("def call_all(fs):\n    return sum(f() for f in fs)")
    seen = []
    fs = [lambda i=i: seen.append(i) or i for i in range(300)]
    assert ns["call_all"](fs) == sum(range(300)) and seen == list(range(300))
    k.end()


_TAMPERING_KERNEL = """
import socket, sys, torch
from gptcore.course.classroom.channel import Peer
import gptcore.course.checks.ngram.sampling as s

def generate(next_token_probs, context, num_tokens, generator):
    if TAMPER:  # every token certain, in the kernel's copy of the check's chain
        s._CHAIN.copy_(torch.eye(s._CHAIN.shape[0], dtype=s._CHAIN.dtype))
    out, new = list(context), []
    for _ in range(num_tokens):
        t = int(torch.multinomial(next_token_probs(out), 1, generator=generator))
        out.append(t)
        new.append(t)
    return new

TAMPER = sys.argv[2] == "1"
peer = Peer(socket.socket(fileno=int(sys.argv[1])), trusted=False, namespace={"generate": generate})
while True:
    peer.serve()
"""


@pytest.mark.parametrize("tamper", [False, True])
def test_an_input_only_function_runs_in_the_kernel_where_tampering_only_fails(tamper):
    """checks.report.input_only: lesson 2's Markov chain runs in the kernel (no round trip
    per token). A kernel that changes its copy of the chain changes what the student's
    tokens follow, never what the check compares them with: a right answer fails."""
    from gptcore.course.checks.ngram.sampling import check_distribution

    a, b = socket.socketpair()
    child = subprocess.Popen(
        [sys.executable, "-c", _TAMPERING_KERNEL, str(b.fileno()), str(int(tamper))],
        pass_fds=[b.fileno()],
    )
    b.close()
    try:
        runner = Peer(a, trusted=True)
        generate = runner.lookup(["generate"])["generate"]
        if tamper:
            with pytest.raises(AssertionError, match="do not follow the distribution"):
                check_distribution(generate, [1, 2, 3], 2000)
        else:
            check_distribution(generate, [1, 2, 3], 2000)
    finally:
        child.kill()
        child.wait()
