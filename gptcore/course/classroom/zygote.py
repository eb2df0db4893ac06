"""A fork server ("zygote") for trusted runners: a worker pays the lesson's imports once.

Starting a trusted runner (:mod:`.trusted`) on its own costs a Python, PyTorch,
the lesson's checks and the reference objects they build (GPT-2's tokenizer):
seconds of CPU for every student. A zygote pays that once per grading worker
and lesson: ``python -I -m gptcore.course.classroom.zygote`` runs the import
statements of the lesson's provided cells, calls the ``warm()`` hook of the
checks modules they bind, and from then on only forks. Each notebook's runner
is a fresh fork of that clean process, which has run no test cell and never
talked to a kernel, so no two students share state; the child runs
:func:`.trusted.runner_main`, as a runner started on its own does.

The zygote's control channel is a Unix socket pair (its standard input). The
worker sends the lesson's imports, waits for ``ready``, then asks for one runner
at a time, passing the runner's two protocol pipes as file descriptors
(``SCM_RIGHTS``) with the socket path; the zygote answers with the child's pid
and reaps its children. It exits when the channel closes, that is when the
worker exits or closes its end: no orphans.

Fork is only safe from a process with one thread (a thread pool does not
survive it: PyTorch's OpenMP pool can hang a child), so the zygote runs no
PyTorch computation, and checks that it has a single thread before every fork.
If it has more, or cannot be started, or dies, the worker starts a fresh one
once and otherwise starts runners directly (:class:`.trusted.TrustedRunner`
falls back to that when :func:`fork_runner` returns None): slower, never wrong.
``GPTCORE_TRUSTED_ZYGOTE=0`` turns the zygote off.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, Any

__all__ = ["ForkedProcess", "Zygote", "ZygoteError", "fork_runner", "runner_env", "zygote_main"]

START_SECONDS = 180  # imports and warm-up on a busy grading machine
FORK_SECONDS = 30
MAX_MESSAGE = 1 << 16


def runner_env() -> dict[str, str]:
    """The environment of a trusted runner: the worker's, without Jupyter's secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JPY")}
    env["PYTHONHASHSEED"] = "0"
    # One thread: the checks' own tensors are small, and the runner takes turns with the
    # kernel on every call; an OpenMP pool spinning between calls would take the cores the
    # kernels (this student's and the other workers') are waiting for.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    return env


class ZygoteError(Exception):
    """The zygote cannot give a runner; ``retry`` says whether a fresh one might."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


# ----------------------------------------------------------------- the zygote process
def zygote_main() -> int:
    """The zygote: import, warm up, then fork one runner per request; see the module docstring."""
    ctrl_fd = os.dup(0)
    # Nothing reads standard input here; a child gets its own.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # what the imports print goes to the worker's log
    ctrl = socket.socket(fileno=ctrl_fd)
    setup = _recv_json(ctrl)
    if setup is None:
        return 0
    ns: dict[str, Any] = {"__name__": "__zygote__"}
    for statement in setup.get("imports", []):
        try:
            exec(compile(str(statement), "<lesson imports>", "exec"), ns)
        except Exception as e:  # the runner reports the same failure when a cell needs it
            print(f"trusted runner zygote: {statement!r} failed: {e}", file=sys.stderr)
    from . import trusted  # noqa: F401  (what every child runs, loaded once)

    _warm(ns)
    _warm_torch()
    why = _threads()
    ctrl.sendall(json.dumps({"ready": not why, "why": why}).encode())
    if why:
        return 0
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(ctrl, MAX_MESSAGE, 2)
        except OSError:
            return 0
        if not data:  # the worker closed the channel (or exited)
            return 0
        try:
            request = json.loads(data)
            why = _threads()
            if len(fds) != 2 or not isinstance(request.get("fork"), str):
                reply: dict[str, Any] = {"error": "a malformed request"}
            elif why:
                reply = {"error": why}
            else:
                reply = {"pid": _fork(ctrl, fds, request["fork"])}
        except Exception as e:
            reply = {"error": f"{type(e).__name__}: {e}"}
        finally:
            for fd in fds:  # the child has them; another student's runner must not
                os.close(fd)
        try:
            ctrl.sendall(json.dumps(reply).encode())
        except OSError:  # the worker is gone; the child's pipes closed with it
            return 0


def _warm(ns: dict[str, Any]) -> None:
    """Call ``warm()`` of the checks modules the imports bound: the reference objects
    they build lazily (GPT-2's tokenizer) are then built once, here."""
    seen: set[str] = set()
    for value in list(ns.values()):
        name = getattr(value, "__name__", "")
        if type(value) is not type(sys) or not name.startswith("gptcore.course.checks"):
            continue
        warm = getattr(value, "warm", None)
        if callable(warm) and name not in seen:
            seen.add(name)
            try:
                warm()
            except Exception as e:  # a cell that needs it builds it, and fails there
                print(f"trusted runner zygote: {name}.warm() failed: {e}", file=sys.stderr)


def _warm_torch() -> None:
    """PyTorch's lazy imports, made here once rather than in every runner: an optimizer's
    first step() imports torch._dynamo, a backward with a given gradient the symbolic
    shapes, gradient clipping the distributed tensors (seconds, per student, in the
    lessons that train)."""
    if "torch" not in sys.modules:
        return
    import torch

    try:  # (what a check's reference training step does, on a 3-number model)
        p = torch.nn.Parameter(torch.ones(3))
        for opt in (torch.optim.SGD([p], lr=0.1), torch.optim.AdamW([p], lr=0.1)):
            (p * 2).sum().backward()
            torch.nn.utils.clip_grad_norm_([p], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.autograd.grad((p * 2).sum(), p, torch.ones(()))
    except Exception as e:  # a runner that needs it imports it, or fails, there
        print(f"trusted runner zygote: warming up PyTorch failed: {e}", file=sys.stderr)


def _threads() -> str:
    """Why forking now would be unsafe ("" when this process has one thread)."""
    tasks = len(os.listdir("/proc/self/task"))
    if threading.active_count() == 1 and tasks == 1:
        return ""
    return (
        f"the zygote has {tasks} threads ({threading.active_count()} Python threads) and a "
        "thread pool does not survive fork; an import of the lesson started it"
    )


def _reap(signum: int, frame: Any) -> None:
    with contextlib.suppress(ChildProcessError):
        while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if code != 0:  # (os.write: a print here could land inside another print)
                os.write(2, f"trusted runner {pid} exited with status {code}\n".encode())


def _fork(ctrl: socket.socket, fds: list[int], path: str) -> int:
    """Fork a runner whose protocol is ``fds`` (its stdin, its stdout), listening at ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()  # a group of its own: the worker kills it (and what it started) as one
        ctrl.close()
        os.dup2(fds[0], 0)
        os.dup2(fds[1], 1)
        # The passed pipes (now 0 and 1) and whatever an import left open: a runner holds
        # nothing but its protocol, the worker's log (2) and the sockets it makes itself.
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.chdir(Path(path).parent)
        random.seed()  # as a freshly started Python would be
        from .trusted import runner_main

        code = runner_main([path])
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _recv_json(sock: socket.socket) -> dict[str, Any] | None:
    data = sock.recv(MAX_MESSAGE)
    if not data:
        return None
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("a control message is not a JSON object")
    return value


# ------------------------------------------------------------------- the worker's side
class ForkedProcess:
    """A runner the zygote forked, with the part of ``Popen``'s interface that
    :class:`.trusted.TrustedRunner` uses. It is not the worker's child (the zygote
    reaps it, and logs a failing exit status), so its end is seen through a pidfd."""

    def __init__(self, pid: int, stdin_fd: int, stdout_fd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # already gone, and reaped
            self._pidfd = None
            self.returncode = 0
        self.stdin: IO[bytes] | None = os.fdopen(stdin_fd, "wb")
        self.stdout: IO[bytes] | None = os.fdopen(stdout_fd, "rb")

    def poll(self) -> int | None:
        """None while it runs; then 0 (its exit status is the zygote's to see)."""
        if self.returncode is None and self._pidfd is not None:
            if select.select([self._pidfd], [], [], 0)[0]:
                self._ended()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and self._pidfd is not None:
            if not select.select([self._pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(f"trusted runner {self.pid}", timeout or 0)
            self._ended()
        return self.returncode or 0

    def _ended(self) -> None:
        self.returncode = 0
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class Zygote:
    """The worker's end of a zygote for one lesson's ``imports``."""

    def __init__(self, imports: list[str], log: Any = None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # (runner_env's single thread also keeps NumPy's OpenBLAS from starting a thread pool
        # when imported: a process with threads cannot fork safely.)
        env = runner_env()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "gptcore.course.classroom.zygote"],
                stdin=theirs,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
                cwd="/",  # it outlives every student's folder
                close_fds=True,
                start_new_session=True,
            )
        except OSError as e:
            ours.close()
            raise ZygoteError(f"it could not be started: {e}") from e
        finally:
            theirs.close()
        self.ctrl = ours
        try:
            ours.settimeout(START_SECONDS)
            ours.sendall(json.dumps({"imports": list(imports)}).encode())
            ready = _recv_json(ours)
        except (OSError, ValueError) as e:
            self.close()
            raise ZygoteError(f"it did not start: {e}") from e
        if not ready or not ready.get("ready"):
            self.close()
            why = (ready or {}).get("why") or "it exited while importing (the log says why)"
            raise ZygoteError(str(why), retry=not (ready or {}).get("why"))

    def fork(self, socket_path: str) -> ForkedProcess:
        """A fresh runner that will listen at ``socket_path``."""
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            self.ctrl.settimeout(FORK_SECONDS)
            socket.send_fds(self.ctrl, [json.dumps({"fork": socket_path}).encode()], [in_r, out_w])
            reply = _recv_json(self.ctrl)
            if reply is None:
                raise ZygoteError("it exited (the log says why)")
            if not isinstance(reply.get("pid"), int):
                raise ZygoteError(f"it could not fork: {reply.get('error')}")
            return ForkedProcess(reply["pid"], in_w, out_r)
        except BaseException as e:
            os.close(in_w)
            os.close(out_r)
            if isinstance(e, OSError | ValueError):
                raise ZygoteError(f"it stopped answering: {e}") from e
            raise
        finally:  # the runner's ends: only the runner may hold them
            os.close(in_r)
            os.close(out_w)

    def close(self) -> None:
        """Close the channel: the zygote exits (its runners do not)."""
        self.ctrl.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_zygotes: dict[tuple[str, ...], Zygote] = {}
_failures: dict[tuple[str, ...], int] = {}
_lock = threading.Lock()


def fork_runner(socket_path: str, imports: list[str], log: Any = None) -> ForkedProcess | None:
    """A runner forked from this worker's zygote for ``imports`` (started on first use),
    or None when there is none to fork from (the log says why): start one directly.

    The zygote and its runners write to the ``log`` of the call that started it.
    """
    if os.environ.get("GPTCORE_TRUSTED_ZYGOTE", "1") == "0" or not hasattr(os, "pidfd_open"):
        return None
    key = tuple(imports)
    with _lock:
        while _failures.get(key, 0) < 2:
            zygote = _zygotes.get(key)
            try:
                if zygote is None:
                    zygote = _zygotes[key] = Zygote(list(imports), log)
                runner = zygote.fork(socket_path)
                _failures[key] = 0
                return runner
            except ZygoteError as e:
                _zygotes.pop(key, None)
                if zygote is not None:
                    with contextlib.suppress(Exception):
                        zygote.close()
                _failures[key] = _failures.get(key, 0) + (1 if e.retry else 2)
                then = "starting a fresh one" if _failures[key] < 2 else "starting runners directly"
                print(f"trusted runner zygote: {e}; {then}", file=log or sys.stderr, flush=True)
        return None


def close_zygotes() -> None:
    """End this process's zygotes now (tests). A worker needs no call: its exit closes
    their channels, and a zygote exits when its channel closes."""
    with _lock:
        for zygote in _zygotes.values():
            with contextlib.suppress(Exception):
                zygote.close()
        _zygotes.clear()
        _failures.clear()


if __name__ == "__main__":
    sys.exit(zygote_main())
