"""The trusted test runner: test cells run here, never in the student's kernel.

A grading worker (:class:`TrustedRunner`) starts one for each notebook it grades:
a fork of the worker's zygote (:mod:`.zygote`), which made the lesson's imports
once, or else ``python -I -m gptcore.course.classroom.trusted SOCKET``; both run
:func:`runner_main`. It listens on
``SOCKET`` (in the kernel's runtime folder) for exactly one connection, the
kernel's end of the :mod:`.channel`, made before any student code runs, then
closes the listener. It then reads test cells from the worker, one JSON line
each, and runs them:

- the names the lesson's provided cells import (``checks``, ``torch``,
  ``GPTConfig``...) are this process's own imports, made from the lesson's
  source notebook; no student code can rebind them;
- every other name a test cell uses is looked up in the kernel's notebook
  namespace: data comes by value, the student's functions and classes as
  handles that run in the kernel when called;
- the checks compute the expected values and compare here, so nothing the
  student's code does in its own process changes a comparison, and a test
  cell's source, hidden tests included, never enters the kernel: only the
  calls it makes do, as plain data.

What comes back to the worker is the cell's outputs: what it printed and,
if it failed, the error (its traceback through gptcore's checks, never the
cell's source lines).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from .channel import names_used
from .zygote import ForkedProcess, fork_runner, runner_env

__all__ = ["TrustedRunner", "runner_main"]

ACCEPT_SECONDS = 60  # the kernel connected before its first cell ran; this is slack
MAX_TEXT = 1 << 20


def runner_main(argv: list[str]) -> int:
    """Run test cells for one notebook; see the module docstring."""
    from .channel import Peer, Remote

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed outside a cell goes to the worker's log
    path = argv[0]
    # Listen first: the kernel may connect while the lesson's imports (torch) load.
    listener: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    assert listener is not None
    listener.bind(path)
    os.chmod(path, 0o777)  # the kernel runs as a user of its own
    listener.listen(1)
    proto.write(json.dumps({"ready": True}) + "\n")
    setup = json.loads(sys.stdin.readline())
    ns: dict[str, Any] = {"__name__": "__main__"}
    # Each import runs when a test cell first needs a name it binds: lesson 1's tests need
    # `checks`, not the Matplotlib its provided cells import for plots.
    imports = {}
    for statement in setup.get("imports", []):
        for node in ast.parse(statement).body:
            for alias in getattr(node, "names", []):
                imports[(alias.asname or alias.name).split(".")[0]] = statement
    own = set(imports)
    peer = None
    for line in sys.stdin:
        task = json.loads(line)
        if task.get("quit"):
            break
        if listener is not None:  # the kernel connected when its first cell ran
            peer = _accept(listener, path, Peer)
            listener = None
        if peer is None:
            result = _error_result("", "ChannelError", "the kernel never connected to the grader")
        else:
            result = run_cell(peer, ns, str(task["source"]), str(task.get("name", "")), imports)
        # Handles into the kernel die with the cell: keep no name bound to one.
        for k in [k for k, v in ns.items() if k not in own and isinstance(v, Remote)]:
            del ns[k]
        proto.write(json.dumps(result) + "\n")
    return 0


def _accept(listener: socket.socket, path: str, peer_class: Any) -> Any:
    """The kernel's connection (one, then no more), or None."""
    listener.settimeout(ACCEPT_SECONDS)
    try:
        conn, _ = listener.accept()
        conn.settimeout(None)
        return peer_class(conn, trusted=True)
    except OSError as e:
        print(f"trusted runner: the kernel never connected: {e}", file=sys.stderr)
        return None
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)


def run_cell(
    peer: Any, ns: dict[str, Any], source: str, name: str, imports: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one test cell in ``ns``: the lesson's imports (``imports``: name -> statement)
    made here, every other name looked up in the kernel as it is needed."""
    out, err = io.StringIO(), io.StringIO()
    error = None
    fetched: dict[str, Any] = {}
    imports = imports or {}
    try:
        code = compile(source, f"<test cell {name}>", "exec")
        used = set(names_used(code))
        for n in sorted(used & set(imports)):
            if n not in ns:
                try:
                    exec(compile(imports[n], "<lesson imports>", "exec"), ns)
                except Exception as e:  # the lesson's own imports: the worker's log says why
                    print(f"trusted runner: {imports[n]!r} failed: {e}", file=sys.stderr)
        wanted = sorted(
            n for n in used if n not in ns and n not in imports and not hasattr(builtins, n)
        )
        found = peer.lookup(wanted) if wanted else {}
        ns.update(found)
        fetched.update(found)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the kernel's own cells decide about warnings
                exec(code, ns)
    except BaseException as e:
        error = e
    finally:
        with contextlib.suppress(Exception):
            peer.request("end")
        peer.release()
        # The kernel's names are looked up again by the next cell: its cells may change them.
        for k, v in fetched.items():
            if ns.get(k) is v:
                del ns[k]
    result = _error_result(out.getvalue(), *(_describe(error) if error else ("", "")))
    result["stderr"] = err.getvalue()[:MAX_TEXT]
    return result


def _describe(e: BaseException) -> tuple[str, str, list[str]]:
    ename = type(e).__name__
    evalue = str(e)
    render = getattr(e, "_render_traceback_", None)
    if callable(render):
        return ename, evalue, [str(x) for x in render()]
    # The runner's and the channel's own frames say nothing to a learner: leave them out.
    frames = [
        f
        for f in traceback.extract_tb(e.__traceback__)
        if Path(f.filename).name not in ("trusted.py", "channel.py")
        or "gptcore/course/classroom" not in f.filename.replace("\\", "/")
    ]
    lines = ["Traceback (most recent call last):", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(e), e)
    return ename, evalue, [line.rstrip("\n") for line in lines][-60:]


def _error_result(stdout: str, ename: str = "", evalue: str = "", tb: list[str] | None = None):
    result: dict[str, Any] = {"stdout": stdout[:MAX_TEXT]}
    if ename:
        result["error"] = {"ename": ename[:200], "evalue": evalue[:20_000], "traceback": tb or []}
    return result


class TrustedRunner:
    """The worker's side of a trusted runner: start it, hand it cells, read its results."""

    def __init__(self, socket_path: str, imports: list[str], log: Any = None) -> None:
        self.socket_path = socket_path
        # A fork of this worker's zygote, which made the lesson's imports once (.zygote);
        # without one, a runner of its own, as before.
        forked = fork_runner(socket_path, imports, log)
        self.proc: subprocess.Popen[bytes] | ForkedProcess = forked or subprocess.Popen(
            [sys.executable, "-I", "-m", "gptcore.course.classroom.trusted", socket_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log if log is not None else None,
            env=runner_env(),
            cwd=str(Path(socket_path).parent),
            close_fds=True,
            start_new_session=True,
        )
        self._buf = b""
        self._ready = False
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"imports": imports}) + "\n").encode())
        self.proc.stdin.flush()

    def wait_ready(self, timeout: float = ACCEPT_SECONDS) -> None:
        """Wait until the runner listens (the kernel's first cell connects to it)."""
        if not self._ready:
            ready = self.read(timeout)
            if not (isinstance(ready, dict) and ready.get("ready")):
                raise RuntimeError("the trusted test runner did not start")
            self._ready = True

    def run(self, source: str, name: str) -> None:
        self.wait_ready()
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"source": source, "name": name}) + "\n").encode())
        self.proc.stdin.flush()

    def read(self, timeout: float) -> Any:
        """The next JSON line from the runner, or None if none came in ``timeout`` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:  # the runner is gone: every test cell left fails, and says why
                why = "the trusted test runner stopped (the worker's log says why)"
                return _error_result("", "TestRunnerError", why, [f"TestRunnerError: {why}"])
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(b'{"quit": true}\n')
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)


if __name__ == "__main__":
    sys.exit(runner_main(sys.argv[1:]))
