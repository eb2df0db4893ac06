"""How a worker runs a notebook: nbgrader's ``Execute`` with the guard, capped output
and partial credit when the kernel dies.

nbgrader builds its preprocessors from configuration, so :class:`GradingExecute`
is configured, not called: ``guard_code`` gives its ``setup_code`` and
``guard_call``, and it reports what happened to the :class:`RunLog` in its
``run_log`` setting, which the worker reads once nbgrader is done.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import new_output
from nbgrader.preprocessors import Execute
from traitlets import Instance, Integer, List, Unicode

from . import channel, guard
from .trusted import TrustedRunner

__all__ = ["GradingExecute", "RunLog", "channel_code", "guard_code"]

MiB = 1 << 20


@dataclass
class RunLog:
    """What happened while one notebook ran, beyond its outputs."""

    stopped: tuple[str, str] | None = None  # (status, message) when the kernel gave out
    restored: set[str] = field(default_factory=set)  # what the guard put back
    output_limited: list[int] = field(default_factory=list)  # cells whose output was cut
    setup_errors: list[str] = field(default_factory=list)
    guard_errors: list[str] = field(default_factory=list)

    def __deepcopy__(self, memo: dict[int, Any]) -> RunLog:
        # traitlets deep-copies configured values; this one is where the
        # preprocessor reports to the worker, so a copy must be the log itself.
        return self


def guard_code(settings: dict[str, Any], name: str) -> tuple[str, str]:
    """(setup code, per-test-cell expression) for the kernel; ``name`` is a per-run secret.

    The setup runs :mod:`.guard`'s source in a namespace of its own and binds
    its guard to ``name``. Both run silently (no history, no output), the
    expression as a ``user_expressions`` entry of an empty execute request:
    one round trip.
    """
    setup = (
        "def _gptcore_guard_boot(source, aliases, protected):\n"
        "    ns = {'__name__': 'gptcore_guard'}\n"
        "    exec(compile(source, '<gptcore guard>', 'exec'), ns)\n"
        "    return ns['make_guard'](aliases, protected)\n"
        f"{name} = _gptcore_guard_boot({inspect.getsource(guard)!r}, "
        f"{settings['aliases']!r}, {tuple(settings['protected'])!r})\n"
        "del _gptcore_guard_boot\n"
    )
    return setup, f"{name}()"


def channel_code(socket_path: str, name: str) -> tuple[str, str]:
    """(setup code, per-test-cell code) for the kernel's end of the :mod:`.channel`.

    The setup connects to the trusted runner's socket before any student code
    runs (retrying while the runner starts); the per-cell code answers the
    runner's requests until it says the test cell is over.
    """
    setup = (
        "def _gptcore_channel_boot(source, path):\n"
        "    import socket, time\n"
        "    ns = {'__name__': 'gptcore_channel'}\n"
        "    exec(compile(source, '<gptcore channel>', 'exec'), ns)\n"
        "    for _ in range(600):\n"
        "        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "        try:\n"
        "            s.connect(path)\n"
        "            break\n"
        "        except OSError:\n"
        "            s.close()\n"
        "            time.sleep(0.1)\n"
        "    return ns['Peer'](s, trusted=False, namespace=get_ipython().user_ns)\n"
        f"{name} = _gptcore_channel_boot({inspect.getsource(channel)!r}, {socket_path!r})\n"
        "del _gptcore_channel_boot\n"
    )
    return setup, f"{name}.serve()"


def _error(ename: str, evalue: str) -> Any:
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 20] + " ...[truncated]"


# Every output costs at least this much: a million empty outputs is a bomb too.
OUTPUT_OVERHEAD = 256


def _content_size(content: dict[str, Any]) -> int:
    """What an output message adds to the notebook, about (every output type)."""
    size = OUTPUT_OVERHEAD + len(str(content.get("text", "")))
    size += len(str(content.get("ename", ""))) + len(str(content.get("evalue", "")))
    size += sum(len(str(t)) for t in content.get("traceback") or [])
    for v in (content.get("data") or {}).values():
        size += len(v) if isinstance(v, str) else len(json.dumps(v))
    return size


# What stops a kernel: (status, error name, what the message says happened).
_STOPS = {
    DeadKernelError: (
        "kernel died",
        "DeadKernelError",
        "the kernel died while running cell {index} (the notebook called os._exit or "
        "exit(), crashed, or ran out of memory or CPU time); later cells were not run",
        "the kernel died in cell {index}",
    ),
    CellTimeoutError: (
        "timed out",
        "CellTimeoutError",
        "cell {index} ran past the time limit and the kernel ignored the interrupt; "
        "later cells were not run",
        "the kernel stopped responding in cell {index}",
    ),
}


class GradingExecute(Execute):
    """nbgrader's Execute with capped output, the guard, and partial credit on a dead kernel."""

    setup_code = Unicode("").tag(config=True)
    guard_call = Unicode("").tag(config=True)
    max_output_bytes = Integer(1 * MiB).tag(config=True)
    # For the whole notebook: many cells each just under the per-cell cap add up.
    max_notebook_output_bytes = Integer(4 * MiB).tag(config=True)
    run_log = Instance(RunLog, allow_none=True).tag(config=True)
    # How long to wait for a cell's last outputs after its reply (nbclient's 4 s): on a busy
    # grading machine thousands of outputs take longer. Not much longer: a kernel that ignores
    # the interrupt after a timeout never goes idle, and this wait comes on top of the cell's.
    iopub_timeout = Integer(10).tag(config=True)
    # Test cells run in a trusted runner (see .trusted) when a socket path is given.
    trusted_socket = Unicode("").tag(config=True)
    trusted_imports = List(Unicode()).tag(config=True)

    def preprocess(self, nb, resources=None, km=None):  # type: ignore[override]
        self._used: dict[int, int] = {}
        self._total = 0
        self._stopped = ""  # why the kernel can run no more cells
        self._started = False
        if self.run_log is None:
            self.run_log = RunLog()
        self._runner: TrustedRunner | None = None
        self._serve = ""
        setup = self.setup_code
        if self.trusted_socket:
            name = f"_c{os.urandom(6).hex()}"
            boot, self._serve = channel_code(self.trusted_socket, name)
            self._runner = TrustedRunner(self.trusted_socket, list(self.trusted_imports), sys.stderr)
            self._runner.wait_ready()
            setup = boot + setup
        self._setup = setup
        try:
            return super().preprocess(nb, resources, km)
        finally:
            if self._runner is not None:
                self._runner.close()

    def _silent(self, code: str, expression: str = "") -> None:
        """Run ``code`` (and evaluate ``expression``) silently; note what the guard says."""
        assert self.kc is not None
        log = self.run_log
        exprs = {"guard": expression} if expression else {}
        msg_id = self.kc.execute(
            code, silent=True, store_history=False, user_expressions=exprs, stop_on_error=False
        )
        reply = self.wait_for_reply(msg_id)
        errors = log.guard_errors if expression else log.setup_errors
        if reply is None:
            errors.append("no reply from the kernel")
            return
        content = reply.get("content", {})
        results = [content, *(content.get("user_expressions") or {}).values()]
        for r in results:
            if r.get("status") == "error":
                errors.append(f"{r.get('ename')}: {r.get('evalue')}")
        value = (content.get("user_expressions") or {}).get("guard", {})
        text = str(value.get("data", {}).get("text/plain", "")).strip("'\"")
        if value.get("status") == "ok" and text:
            log.restored.update(x.strip() for x in text.split(","))

    def preprocess_cell(self, cell, resources, index):  # type: ignore[override]
        if self._stopped:
            if cell.cell_type == "code" and cell.source.strip():
                cell.outputs = [_error("NotRun", f"this cell was not run: {self._stopped}")]
            return cell, self.resources
        try:
            if not self._started and self._setup:
                self._started = True
                self._silent(self._setup)
            meta = cell.metadata.get("nbgrader", {})
            test = meta.get("grade") and cell.cell_type == "code"
            if test and self.guard_call:
                self._silent("", self.guard_call)
            self._used[index] = 0
            if test and self._runner is not None:
                cell.outputs = self._run_trusted(cell, index)
                return cell, self.resources
            return super().preprocess_cell(cell, resources, index)
        except (DeadKernelError, CellTimeoutError) as e:
            status, ename, message, stopped = next(
                v for k, v in _STOPS.items() if isinstance(e, k)
            )
            self._stopped = stopped.format(index=index)
            self.run_log.stopped = (status, message.format(index=index))
            out = _error(ename, self.run_log.stopped[1])
        cell.outputs = [*cell.get("outputs", []), out]
        self.nb.cells[index] = cell
        return cell, self.resources

    def _run_trusted(self, cell: Any, index: int) -> list[Any]:
        """Run a test cell in the trusted runner while the kernel answers its requests."""
        assert self.kc is not None and self._runner is not None
        msg_id = self.kc.execute(
            self._serve, silent=True, store_history=False, stop_on_error=False
        )
        self._runner.run(cell.source, cell.metadata.get("nbgrader", {}).get("grade_id", ""))
        timeout = self.timeout if self.timeout and self.timeout > 0 else 3600
        result = self._runner.read(timeout)
        if result is None:
            # The student's code is stuck in a call: interrupt it, as nbclient would.
            if self.km is not None:
                run_sync(self.km.interrupt_kernel)()
            result = self._runner.read(30)
            if result is None:
                raise CellTimeoutError.error_from_timeout_and_cell(
                    "the test cell timed out", timeout, cell
                )
            why = f"cell {index} ran past the time limit ({timeout} s) and was interrupted"
            result["error"] = {"ename": "CellTimeoutError", "evalue": why, "traceback": [why]}
        reply = self.wait_for_reply(msg_id)
        if reply is None or reply.get("content", {}).get("status") != "ok":
            # The kernel's end of the channel broke: the runner's result says what happened.
            self.run_log.setup_errors.append("the kernel stopped answering the test runner")
        outputs = []
        limit = self.max_output_bytes
        for stream in ("stdout", "stderr"):
            text = str(result.get(stream) or "")
            if text:
                outputs.append(new_output("stream", name=stream, text=_clip(text, limit)))
        err = result.get("error")
        if isinstance(err, dict):
            tb = [_clip(str(t), 4000) for t in err.get("traceback") or []][-60:]
            outputs.append(
                new_output(
                    "error",
                    ename=_clip(str(err.get("ename", "Error")), 200),
                    evalue=_clip(str(err.get("evalue", "")), 4000),
                    traceback=tb,
                )
            )
        self._total += sum(_content_size(o) for o in outputs)
        return outputs

    def output(self, outs, msg, display_id, cell_index):  # type: ignore[override]
        """Keep an output while the cell and the notebook are under their caps.

        Every output type counts, and each output costs at least
        ``OUTPUT_OVERHEAD``. An error is never dropped (nbgrader scores a test
        cell by whether it raised), only cut to its name once over the cap.
        """
        content = msg.get("content", {})
        if msg.get("msg_type") == "error":
            content["ename"] = _clip(str(content.get("ename", "Error")), 200)
            content["evalue"] = _clip(str(content.get("evalue", "")), 4000)
            tb = [_clip(str(t), 4000) for t in content.get("traceback", [])]
            content["traceback"] = tb if len(tb) <= 60 else [*tb[:30], "...", *tb[-29:]]
        size = _content_size(content)
        used = self._used.get(cell_index, 0) + size
        self._used[cell_index] = used
        self._total += size
        over = used > self.max_output_bytes or self._total > self.max_notebook_output_bytes
        if not over:
            return super().output(outs, msg, display_id, cell_index)
        limited = self.run_log.output_limited
        if cell_index not in limited and len(limited) < 100:
            self.run_log.output_limited.append(cell_index)
            cap = f"more than {self.max_output_bytes // 1024} KiB in this cell or " + (
                f"{self.max_notebook_output_bytes // MiB} MiB in the notebook"
            )
            # stdout: nbgrader scores a test cell with any stderr output 0.
            outs.append(
                new_output(
                    "stream",
                    name="stdout",
                    text=f"\n[output limit exceeded: {cap}; the rest was dropped]\n",
                )
            )
        if msg.get("msg_type") == "error":
            content["evalue"] = "[output limit exceeded: message dropped]"
            content["traceback"] = []
            return super().output(outs, msg, display_id, cell_index)
        return None

    def _update_display_id(self, display_id, msg):  # type: ignore[override]
        size = _content_size(msg.get("content", {}))
        self._total += size
        if size > self.max_output_bytes or self._total > self.max_notebook_output_bytes:
            return
        return super()._update_display_id(display_id, msg)
