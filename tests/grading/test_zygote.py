"""The trusted runners' fork server (gptcore.course.classroom.zygote).

Each runner here is the real thing (a fork of a real zygote, or a runner started
on its own), and the kernel's end of the channel is a Peer in a thread of the
test, as in test_channel.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gptcore.course.classroom import zygote as zmod
from gptcore.course.classroom.channel import Peer
from gptcore.course.classroom.trusted import TrustedRunner
from gptcore.course.classroom.zygote import ForkedProcess, Zygote, ZygoteError

# Lesson 1's checks: their warm() builds GPT-2's tokenizers in the zygote.
IMPORTS = ["import json", "from gptcore.course.checks import tokenization as checks"]
NOTEBOOK = (
    "def double(x):\n    return 2 * x\n"
    "def wait():\n    release.wait(20)\n"
)


@pytest.fixture(autouse=True, scope="module")
def _no_zygotes_left():
    yield
    zmod.close_zygotes()


class Kernel:
    """The notebook's end of the channel: answers one test cell at a time in a thread."""

    def __init__(self, path: str) -> None:
        self.release = threading.Event()
        ns: dict = {"__name__": "__main__", "release": self.release}
        exec(compile(NOTEBOOK, "<notebook>", "exec"), ns)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.peer = Peer(self.sock, trusted=False, namespace=ns)

    def cell(self, runner: TrustedRunner, source: str, timeout: float = 60) -> dict:
        thread = threading.Thread(target=self._serve, daemon=True)
        thread.start()
        runner.run(source, "test")
        result = runner.read(timeout)
        thread.join(5)
        assert isinstance(result, dict), result
        return result

    def _serve(self) -> None:
        try:
            self.peer.serve()
        except Exception:  # the runner died mid-cell: its result says so
            pass


def start(folder: Path, imports: list[str] = IMPORTS, log=None) -> tuple[TrustedRunner, Kernel]:
    folder.mkdir(parents=True, exist_ok=True)
    runner = TrustedRunner(str(folder / "tests.sock"), imports, log)
    runner.wait_ready()
    return runner, Kernel(str(folder / "tests.sock"))


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def gone(pid: int) -> bool:
    """Exited (a zombie counts: it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_forked_runner_runs_test_cells_like_a_started_one(tmp_path):
    runner, kernel = start(tmp_path)
    try:
        assert isinstance(runner.proc, ForkedProcess)
        zygote = zmod._zygotes[tuple(IMPORTS)]
        assert parent_of(runner.proc.pid) == zygote.proc.pid
        ok = kernel.cell(runner, "assert double(21) == 42\nprint(json.dumps(checks.__name__))")
        assert ok == {"stdout": '"gptcore.course.checks.tokenization"\n', "stderr": ""}
        bad = kernel.cell(runner, "assert double(1) == 3, 'double is wrong'")
        assert bad["error"]["ename"] == "AssertionError"
        assert bad["error"]["evalue"] == "double is wrong"
        # warm() ran in the zygote: the runner was forked with GPT-2's tokenizers built.
        cached = kernel.cell(
            runner,
            "from gptcore.tokenizer import pretrained\n"
            "print(pretrained.gpt2.cache_info().currsize,"
            " pretrained.gpt2_encoding.cache_info().currsize)",
        )
        assert cached["stdout"] == "1 1\n"
        # The runner works in the socket's folder, as one started on its own does.
        here = kernel.cell(runner, "import os\nprint(os.getcwd())")
        assert here["stdout"] == f"{tmp_path}\n"
    finally:
        runner.close()
    assert gone(runner.proc.pid)
    assert not (tmp_path / "tests.sock").exists()


def test_two_runners_forked_from_one_zygote_share_no_state(tmp_path):
    a, ka = start(tmp_path / "a")
    b, kb = start(tmp_path / "b")
    try:
        assert a.proc.pid != b.proc.pid
        assert parent_of(a.proc.pid) == parent_of(b.proc.pid)  # the same zygote
        leak = "leaked = 1\nimport gptcore\ngptcore._probe = 1\nchecks._probe = 1\nprint('set')"
        assert ka.cell(a, leak)["stdout"] == "set\n"
        probe = (
            "import gptcore\n"
            "print('leaked' in globals(), hasattr(gptcore, '_probe'), hasattr(checks, '_probe'))"
        )
        assert kb.cell(b, probe)["stdout"] == "False False False\n"
        assert ka.cell(a, probe)["stdout"] == "True True True\n"  # (the probe can see)
    finally:
        a.close()
        b.close()
    # A runner forked after another ran its cells starts clean too.
    c, kc = start(tmp_path / "c")
    try:
        assert kc.cell(c, probe)["stdout"] == "False False False\n"
    finally:
        c.close()


def stuck_in_a_cell(tmp_path):
    """A runner whose test cell waits in the student's function until ``kernel.release``."""
    runner, kernel = start(tmp_path)
    threading.Thread(target=kernel._serve, daemon=True).start()
    runner.run("wait()", "test")
    assert runner.read(1) is None  # still in the student's function
    return runner, kernel


def test_a_runner_killed_mid_cell_gives_a_test_runner_error(tmp_path):
    runner, kernel = stuck_in_a_cell(tmp_path)
    try:
        os.killpg(runner.proc.pid, signal.SIGKILL)
        result = runner.read(20)
        assert result["error"]["ename"] == "TestRunnerError"
    finally:
        kernel.release.set()
        started = time.monotonic()
        runner.close()
    assert time.monotonic() - started < 5  # it was dead: no 5-second wait
    assert gone(runner.proc.pid)


def test_close_kills_a_runner_that_ignores_quit(tmp_path):
    runner, kernel = stuck_in_a_cell(tmp_path)
    try:
        runner.close()  # quit is not read while the cell runs: killed after 5 s
    finally:
        kernel.release.set()
    assert gone(runner.proc.pid)


def test_a_runner_inherits_no_other_descriptors(tmp_path):
    a, _ = start(tmp_path / "a")
    b, _ = start(tmp_path / "b")
    try:
        zygote = zmod._zygotes[tuple(IMPORTS)]
        zygote_sockets = {
            os.readlink(f"/proc/{zygote.proc.pid}/fd/{fd}")
            for fd in os.listdir(f"/proc/{zygote.proc.pid}/fd")
        }
        for runner, other in ((a, b), (b, a)):
            assert runner.proc.stdin is not None and runner.proc.stdout is not None
            own_in = f"pipe:[{os.fstat(runner.proc.stdin.fileno()).st_ino}]"
            own_out = f"pipe:[{os.fstat(runner.proc.stdout.fileno()).st_ino}]"
            assert other.proc.stdout is not None
            others = f"pipe:[{os.fstat(other.proc.stdout.fileno()).st_ino}]"
            fds = {
                int(fd): os.readlink(f"/proc/{runner.proc.pid}/fd/{fd}")
                for fd in os.listdir(f"/proc/{runner.proc.pid}/fd")
            }
            assert fds[0] == own_in
            assert 1 in fds and 2 in fds  # the worker's log
            extra = {fd: link for fd, link in fds.items() if fd > 2}
            assert list(extra.values()).count(own_out) == 1, fds  # the protocol
            sockets = [link for link in extra.values() if link.startswith("socket:")]
            assert len(sockets) == 1, fds  # its listener, and nothing else
            assert not set(sockets) & zygote_sockets  # not the zygote's control channel
            assert len(extra) == 2, fds
            assert others not in fds.values()
    finally:
        a.close()
        b.close()


def test_a_dead_zygote_costs_time_never_grades(tmp_path, monkeypatch):
    imports = ["import json as checks"]
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        first, k1 = start(tmp_path / "1", imports, log)
        assert k1.cell(first, "print(double(2))")["stdout"] == "4\n"
        first.close()
        dead = zmod._zygotes[tuple(imports)]
        dead.proc.kill()
        dead.proc.wait()
        second, k2 = start(tmp_path / "2", imports, log)  # a fresh zygote
        try:
            assert isinstance(second.proc, ForkedProcess)
            assert zmod._zygotes[tuple(imports)].proc.pid != dead.proc.pid
            assert k2.cell(second, "print(double(3))")["stdout"] == "6\n"
        finally:
            second.close()
        # A zygote that cannot start, twice: runners are started directly.
        zmod._zygotes.pop(tuple(imports)).close()

        def broken(*args, **kwargs):
            raise ZygoteError("it could not be started: no such thing")

        monkeypatch.setattr(zmod, "Zygote", broken)
        third, k3 = start(tmp_path / "3", imports, log)
        try:
            assert isinstance(third.proc, subprocess.Popen)
            assert k3.cell(third, "print(double(4))")["stdout"] == "8\n"
        finally:
            third.close()
    text = log_path.read_text()
    assert "it exited" in text or "stopped answering" in text, text
    assert "starting a fresh one" in text
    assert "no such thing; starting runners directly" in text


def test_a_zygote_with_threads_refuses_to_fork(tmp_path):
    imports = ["import threading", "threading.Thread(target=threading.Event().wait).start()"]
    with pytest.raises(ZygoteError, match="threads") as info:
        Zygote(imports)
    assert not info.value.retry
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        assert zmod.fork_runner(str(tmp_path / "x.sock"), imports, log) is None
    assert "thread pool does not survive fork" in log_path.read_text()


def test_the_zygote_exits_when_its_channel_closes():
    zygote = Zygote(["import json"])
    assert zygote.proc.poll() is None
    zygote.ctrl.close()
    assert zygote.proc.wait(timeout=10) == 0


def test_the_zygote_exits_with_the_worker():
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from gptcore.course.classroom.zygote import Zygote\n"
            "z = Zygote(['import json'])\n"
            "print(z.proc.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    pid = int(worker.stdout.readline())
    assert not gone(pid)
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid)
