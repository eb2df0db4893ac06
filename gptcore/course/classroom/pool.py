"""The worker pool: long-lived grading processes, one student at a time each.

Each worker is ``python -I -m gptcore.course.classroom --worker CONFIG`` (see
:mod:`.worker`). It answers one JSON line per student on stdout; the pool
kills a worker that runs past the notebook's time limit, with its process
group and every process of its sandbox user, and starts a new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..sandbox import kill_user_processes, sandbox_uid

__all__ = ["Pool", "Task", "read_line"]


@dataclass
class Task:
    """One student to grade: their submission, and where the worker leaves its files."""

    student: str
    submission: Path
    result_dir: Path


class Pool:
    """``workers`` long-lived grading processes; each grades one student at a time.

    A worker that runs past ``deadline`` seconds on one student is killed with
    its process group and every process of its sandbox user, and replaced.
    """

    def __init__(self, workers: int, setup: dict[str, Any], tmp: Path, limit: int, grace: int):
        self.workers, self.setup, self.tmp = workers, setup, tmp
        self.limit, self.deadline = limit, limit + grace
        self.procs: dict[int, subprocess.Popen[bytes] | None] = {}
        self.ready: dict[int, bool] = {}

    def start(self, tasks: list[Task]) -> None:
        """Start every worker and hand out ``tasks``; collect them with :meth:`results`."""
        self.todo: queue.Queue[Task | None] = queue.Queue()
        self.done: queue.Queue[tuple[Task, dict[str, Any]]] = queue.Queue()
        self.count = len(tasks)
        for t in tasks:
            self.todo.put(t)
        for _ in range(self.workers):
            self.todo.put(None)
        for k in range(self.workers):
            self.procs[k] = self._spawn(k)
        self.threads = [
            threading.Thread(target=self._slot, args=(k, self.todo, self.done), daemon=True)
            for k in range(self.workers)
        ]
        for th in self.threads:
            th.start()

    def results(self) -> Iterator[tuple[Task, dict[str, Any]]]:
        for _ in range(self.count):
            yield self.done.get()
        for th in self.threads:
            th.join()

    def _slot(self, k: int, todo: queue.Queue, done: queue.Queue) -> None:
        while True:
            task = todo.get()
            if task is None:
                self._stop(k)
                return
            try:
                done.put((task, self._grade(k, task)))
            except Exception as e:  # the pool itself must never lose a student
                done.put((task, {"status": "error", "message": f"grader failure: {e!r}"}))

    def _spawn(self, k: int) -> subprocess.Popen[bytes]:
        self.ready[k] = False
        cfg = dict(self.setup, slot=k, uid=sandbox_uid(k))
        path = self.tmp / f"worker-{k}.json"
        path.write_text(json.dumps(cfg))
        log = open(self.tmp / f"worker-{k}.log", "ab")
        # The worker's temporary files live in the run's folder: a killed worker
        # leaves nothing behind once the run is over.
        scratch = Path(tempfile.mkdtemp(prefix=f"w{k}-", dir=self.tmp))
        proc = subprocess.Popen(
            # -I: the same gptcore as this process, never one in the current folder.
            [sys.executable, "-I", "-m", "gptcore.course.classroom", "--worker", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            close_fds=True,  # (the default, relied on: no other descriptor of ours)
            start_new_session=True,
            env={**os.environ, "TMPDIR": str(scratch)},
        )
        log.close()
        return proc

    def _wait_ready(self, k: int, proc: subprocess.Popen[bytes]) -> None:
        line = read_line(proc, time.monotonic() + 600)
        if line is None or json.loads(line).get("ready") is not True:
            self._kill(k, proc)
            self.procs[k] = None
            log = (self.tmp / f"worker-{k}.log").read_text(errors="replace").strip()
            last = log.splitlines()[-1] if log else "no log"
            raise RuntimeError(f"grading worker {k} did not start: {last}")
        self.ready[k] = True

    def _grade(self, k: int, task: Task) -> dict[str, Any]:
        proc = self.procs.get(k)
        if proc is None or proc.poll() is not None:
            proc = self.procs[k] = self._spawn(k)
        if not self.ready[k]:
            self._wait_ready(k, proc)
        assert proc.stdin is not None
        t0 = time.monotonic()
        proc.stdin.write(
            (
                json.dumps(
                    {
                        "student": task.student,
                        "submission": str(task.submission),
                        "result_dir": str(task.result_dir),
                    }
                )
                + "\n"
            ).encode()
        )
        proc.stdin.flush()
        line = read_line(proc, t0 + self.deadline)
        if line is not None:
            return json.loads(line)
        seconds = time.monotonic() - t0
        alive = proc.poll() is None
        code = proc.returncode
        self._kill(k, proc)
        self.procs[k] = None
        if alive:
            return {
                "status": "timed out",
                "message": f"the notebook ran past its time limit ({self.limit} s); "
                "the grading worker and its kernel were killed (far too slow, or stuck)",
                "seconds": seconds,
            }
        return {
            "status": "error",
            "message": f"the grading worker died (exit code {code}); "
            f"see its log in {self.tmp}/worker-{k}.log",
            "seconds": seconds,
        }

    def _kill(self, k: int, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        if self.setup["sandbox"]["user"]:
            kill_user_processes(sandbox_uid(k))

    def _stop(self, k: int) -> None:
        proc = self.procs.pop(k, None)
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._kill(k, proc)
        if self.setup["sandbox"]["user"]:
            kill_user_processes(sandbox_uid(k))

    def close(self) -> None:
        for k, proc in list(self.procs.items()):
            if proc is not None and proc.poll() is None:
                self._kill(k, proc)


def read_line(proc: subprocess.Popen[bytes], deadline: float) -> str | None:
    """One line from the worker before ``deadline``, or None (timed out or it died)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            if proc.poll() is not None:
                return None
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None
        buf += chunk
        if b"\n" in buf:
            return buf.split(b"\n", 1)[0].decode()
