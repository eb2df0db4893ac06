"""The plain-data channel between a grading kernel and the trusted test runner.

When a class is graded, the student's code runs in a sandboxed kernel and the
test cells run in another process, the trusted runner (:mod:`.trusted`), which
never runs student code. The runner reaches the student's functions and
classes through this channel: a Unix socket in the kernel's runtime folder,
one :class:`Peer` at each end, speaking in requests and replies.

Only plain data crosses it by value: None, bool, int, float, str, bytes,
lists, tuples, dicts and sets of them, slices, tensors (their bytes with a
dtype and a shape, the big ones in safetensors), ``torch.Generator`` states, dtypes, devices, and gptcore's
dataclasses (rebuilt from their fields). The student's ``nn.Module``s become
*mirrors* in the runner (:mod:`.mirror`): real modules whose parameters,
gradients, buffers and train/eval flags go both ways by value with every
message, as what changed (``_Sync``), whose forward runs in the kernel
("fwd") and whose backward asks the kernel for gradients ("bwd"). Anything
else of the kernel's stays there and the runner gets a *handle*, a
:class:`Remote` it can call and read attributes and items from. Nothing the kernel sends is ever unpickled: the
runner's decoder builds only the types above, so the kernel can only answer
with values, never with code. The runner's own objects that a check passes
to the student's code (a model, an optimizer, a KV cache) go the other way
as pickled copies (the kernel may run anything anyway); what the student's
code did to them comes back as plain data (weights, gradients, train/eval
modes, optimizer state, plain attributes) and is put into the originals.

What the kernel may ask of the runner is narrow too: it can only *call* the
callables the runner passed it (a model's ``next_token_probs``, a spy), with
plain data; it cannot read their attributes, so it can never reach the
runner's checks, their modules or their globals.

Semantics kept from running in one process, so that a check reads the same:

- arguments that the callee changes in place (a list, a dict, a tensor, a
  generator's state, the runner's copied objects) are written back into the
  caller's objects;
- an exception is raised again on the caller's side as the same built-in
  class (a ``ValueError`` stays a ``ValueError``, a student's own class named
  after its nearest built-in base), with its message, and, for
  ``NotImplementedError``, the name of the unwritten function;
- the caller's PyTorch and Python random states and its gradient mode go with
  every call from the runner, so that a seeded check draws the same numbers,
  and the states the student's code left come back;
- a generator argument arrives as a generator (of the items it gives);
- an optimizer passed to call after call (a training loop's) is kept by the
  kernel: after the first call only its number travels, while the runner's
  copy stays as the last call left it (``_kept_key``);
- the watchers a check has on (``checks.report.watching``: how the student's
  code works, which no result shows) and the runner's objects marked
  ``gptcore_in_kernel`` (a spy, a recorder of hooks) are copied into the
  kernel and run there, around the call; what they recorded comes back.

This module is sent to the kernel by source (as the guard is): it needs only
the standard library, and PyTorch and safetensors once a tensor crosses.
"""

# Over 600 lines on purpose: the kernel gets this module as one piece of source (it never
# imports gptcore.course), and both ends must run the same encoder, decoder and protocol.

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import importlib
import io
import itertools
import json
import math
import pickle
import random
import socket
import struct
import sys
import types
from typing import Any

__all__ = ["ChannelError", "Peer", "Remote", "RemoteGlobals", "names_used", "tensors_in"]

MAX_MESSAGE = 512 << 20  # bytes: the kernel cannot make the runner hold more
MAX_DEPTH = 48  # nesting of containers in one value
MAX_ITEMS = 1_000_000  # items of one container
MAX_MODULES = 10_000  # sub-modules of one mirrored module
INLINE_BYTES = 1 << 16  # tensors up to this size travel inline, bigger ones in safetensors
BIG_ITEMS = 256  # the runner's containers this long go pickled, once (see _Encoder._big)
REPR_CHARS = 300
GROWING = 32  # int lists this long are sent as what they add to the last one, when they extend it
_JSON_SCALARS = frozenset({int, float, str, bool, type(None)})  # what JSON carries as it is
_BUILTIN_ERRORS = {
    n: c
    for n, c in vars(__import__("builtins")).items()
    if isinstance(c, type) and issubclass(c, BaseException)
}


class ChannelError(Exception):
    """The other side broke the protocol, or a value cannot cross."""


# ------------------------------------------------------------------ framing
def _send(sock: socket.socket, header: dict[str, Any], blob: bytes = b"") -> None:
    head = json.dumps(header, allow_nan=False, separators=(",", ":")).encode()
    sock.sendall(struct.pack("<QQ", len(head), len(blob)) + head + blob)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if not k:
            raise ChannelError("the other side closed the channel")
        got += k
    return bytes(buf)


def _recv(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    nh, nb = struct.unpack("<QQ", _recv_exact(sock, 16))
    if nh > MAX_MESSAGE or nb > MAX_MESSAGE:
        raise ChannelError(f"a message of {nh + nb} bytes is over the limit")
    header = json.loads(_recv_exact(sock, nh), parse_constant=_no_constant)
    if not isinstance(header, dict):
        raise ChannelError("a message is not an object")
    return header, _recv_exact(sock, nb) if nb else b""


def _no_constant(name: str) -> Any:
    raise ChannelError(f"{name} is not JSON")


def _torch() -> Any:
    return sys.modules.get("torch")


# ------------------------------------------------------------------ handles
class Remote:
    """An object that lives on the other side of the channel.

    Calling it, reading an attribute or an item asks the other side; the
    answer is plain data or another handle. Comparisons are by identity, so a
    student's object whose ``__eq__`` always says True is just a handle here,
    equal to nothing.
    """

    __slots__ = ("__weakref__", "_info", "_peer", "_rid")

    def __init__(self, peer: Peer, rid: int, info: dict[str, Any]) -> None:
        object.__setattr__(self, "_peer", peer)
        object.__setattr__(self, "_rid", rid)
        object.__setattr__(self, "_info", info)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # (probes like __array__, __torch_function__)
        return self._peer.request("getattr", self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._peer.request("setattr", self, name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._peer.request("call", self, args, kwargs)

    def __getitem__(self, key: Any) -> Any:
        return self._peer.request("getitem", self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._peer.request("setitem", self, key, value)

    def __len__(self) -> int:
        n = self._peer.request("len", self)
        if type(n) is not int:
            raise TypeError("len() of the object is not an int")
        return n

    def __iter__(self) -> Any:
        items = self._peer.request("iter", self)
        if type(items) is not list:
            raise TypeError("the object did not iterate to a list")
        return iter(items)

    def __repr__(self) -> str:
        return str(self._info.get("r", "<remote object>"))

    def gptcore_run(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call ``fn``, a function of the checks marked ``checks.report.drives``, in the
        kernel this object lives in (``fn`` goes by name, ``args`` as for any call)."""
        return self._peer.request("call", fn, tuple(args), dict(kwargs))

    def gptcore_replay(self, args: tuple[Any, ...], kwargs: dict[str, Any], times: int) -> list[Any]:
        """Call this function ``times`` times in one request, each with fresh copies of the
        arguments (as ``checks.report.call`` passes them); return one stand-in per call
        made, each giving back that call's result (or raising its error, or changing its
        copies as that call changed them) when ``call`` calls it; a call that simply
        returned also carries its result as ``gptcore_result``, a 1-tuple. The kernel stops
        at the first error or change to an argument, as ``call`` would fail there."""
        outcomes = self._peer.request("repeat", self, args, kwargs, times)
        if type(outcomes) is not list or len(outcomes) > times:
            raise ChannelError("a malformed answer to repeated calls")
        return [_stand_in(o) for o in outcomes]

    @property
    def __name__(self) -> str:  # type: ignore[override]
        return str(self._info.get("n") or type(self).__qualname__)

    @property
    def __code__(self) -> Any:
        """Enough of a code object for the checks to see which names the function uses."""

        class _Code:
            co_names = tuple(str(x) for x in self._info.get("names") or ())
            co_consts = ()

        return _Code()

    @property
    def __globals__(self) -> RemoteGlobals:
        """The namespace the function was defined in, read by name from the other side."""
        return RemoteGlobals(self._peer)


class RemoteGlobals:
    """The kernel's notebook namespace, read one name at a time (``get`` only)."""

    def __init__(self, peer: Peer) -> None:
        self._peer = peer

    def get(self, name: str, default: Any = None) -> Any:
        found = self._peer.lookup([name])
        return found.get(name, default)

    def __getitem__(self, name: str) -> Any:
        found = self._peer.lookup([name])
        if name not in found:
            raise KeyError(name)
        return found[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._peer.lookup([name])

    def keys(self) -> list[str]:
        return []

    def __iter__(self) -> Any:
        return iter(())


_PROXY_TYPES: dict[tuple[str, str], type] = {}


def _proxy_type(module: str, qualname: str) -> type:
    """A subclass of Remote named like the remote object's type, for messages
    ("got numpy.int64"); never one of the types a check accepts."""
    key = (module[:100], qualname[:100])
    if key not in _PROXY_TYPES and len(_PROXY_TYPES) < 1000:
        name = key[1].rsplit(".", 1)[-1] or "object"
        _PROXY_TYPES[key] = type(name, (Remote,), {"__slots__": (), "__module__": key[0]})
        _PROXY_TYPES[key].__qualname__ = key[1]
    return _PROXY_TYPES.get(key, Remote)


def _stand_in(outcome: Any) -> Any:
    if type(outcome) is not dict:
        raise ChannelError("a malformed outcome")

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        if "err" in outcome:
            raise _exception(outcome["err"] if isinstance(outcome["err"], dict) else {})
        for where, new in outcome.get("wb") or []:
            target = args[where] if isinstance(where, int) else kwargs[where]
            if _holds_remote(new):
                raise ChannelError("a write-back holding the notebook's objects")
            _assign(target, new)
        return outcome.get("ok")

    if "err" not in outcome and not outcome.get("wb"):
        stand_in.gptcore_result = (outcome.get("ok"),)  # type: ignore[attr-defined]
    return stand_in


def _exception(err: dict[str, Any]) -> BaseException:
    """The other side's exception, raised here as its nearest built-in class."""
    name = str(err.get("name", "Exception"))[:200]
    base: type[BaseException] = Exception
    for n in err.get("mro") or ():
        if n in _BUILTIN_ERRORS:
            base = _BUILTIN_ERRORS[n]
            break
    if name == base.__name__:
        cls = base
    else:
        try:
            cls = type(name, (base,), {"__module__": str(err.get("module", ""))[:200]})
        except TypeError:  # a base that cannot be subclassed (bool's kin)
            cls = base
    try:
        e = cls(str(err.get("msg", ""))[:20_000])
    except Exception:
        e = Exception(str(err.get("msg", ""))[:20_000])
    if err.get("stub"):
        e.stub_name = str(err["stub"])[:200]  # type: ignore[attr-defined]
    return e


def _stub(e: BaseException) -> str:
    """The innermost function of the notebook in ``e``'s traceback (the unwritten stub)."""
    tb, stub = e.__traceback__, ""
    while tb is not None:
        code = tb.tb_frame.f_code
        if tb.tb_frame.f_globals.get("__name__") == "__main__":
            stub = getattr(code, "co_qualname", code.co_name)
        tb = tb.tb_next
    return stub.rsplit("<locals>.", 1)[-1].split(".")[0] if stub else ""


def names_used(code: Any) -> list[str]:
    """The global names a code object uses, nested code (comprehensions, lambdas) included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= set(names_used(const))
    return sorted(names)


# ------------------------------------------------------------------ the peer
class Peer:
    """One end of the channel. ``trusted`` is the runner's end: it decodes no
    pickle and only lets the other side call the callables it was given."""

    def __init__(self, sock: socket.socket, *, trusted: bool, namespace: dict | None = None):
        self.sock = sock
        self.trusted = trusted
        self.namespace = namespace if namespace is not None else {}
        self.objects: dict[int, Any] = {}  # handles we gave out: id -> object
        self._ids: dict[int, int] = {}  # id(object) -> handle id
        self._proxies: dict[int, Remote] = {}  # the other side's handles
        self._next_msg = 0
        self._sent_rng: tuple[bytes, Any] | None = None
        self.sent_big: set[str] = set()  # (the runner's end) digests the kernel keeps
        self.big: dict[str, bytes] = {}  # (the kernel's end) digest -> pickle
        self.big_kept: dict[str, Any] = {}  # (the kernel's end) digest -> one never handed out
        # A list of ints that grows by a few items per call (the history a generation loop
        # passes back for every token) goes as its new items after the first time.
        self.ints_out: tuple[int, list[int]] | None = None  # the last one sent: serial, copy
        self.ints_in: dict[int, list[int]] = {}  # the last few received, by serial
        self._ints_serial = 0
        self.ending = False
        # The student's nn.Modules the runner holds a mirror of (.mirror): their state goes
        # both ways with every message, as what changed since the last one (_Sync).
        self.synced: dict[int, _Sync] = {}  # handle id -> the module's sync state
        self.graphs: dict[int, tuple[list, list]] = {}  # (the kernel's end) see "fwd"
        self.mirror_refs: dict[int, tuple[str, int, str]] = {}  # (the runner's end) id -> ref
        self.rng_given: Any = None  # (the kernel's end) the random states a call started from
        # An optimizer the runner passes again and again (a training loop's): the kernel
        # keeps its copy between calls, and while the runner's stays as the last call left
        # it (_kept_key), only the copy's number travels, not a pickle of it.
        self.kept_out: dict[int, tuple[Any, int, Any]] = {}  # (the runner's end) id -> obj, n, key
        self.kept_drop: list[int] = []  # (the runner's end) copies the kernel may now forget
        self.kept_in: dict[int, Any] = {}  # (the kernel's end) n -> its copy
        self._kept_serial = 0

    # ------------------------------------------------------ asking the other side
    def request(self, op: str, *parts: Any) -> Any:
        self._next_msg += 1
        msg_id = self._next_msg
        enc = _Encoder(self)
        header: dict[str, Any] = {"op": op, "id": msg_id, "p": [enc.value(p) for p in parts]}
        if self.trusted:
            if op in ("call", "repeat", "fwd"):  # (what the kernel takes on before a call only)
                self._add_state(header, enc)
            self._sync_out(header, enc)
        _send(self.sock, header, enc.finish(header))
        while True:
            msg, blob = _recv(self.sock)
            if "op" in msg:
                self._answer(msg, blob)
                continue
            if msg.get("re") != msg_id:
                raise ChannelError("a reply to a request that was not made")
            dec = _Decoder(self, blob, msg, sent=enc.pickled)
            if "err" in msg:
                self._keep(enc, [])  # what the kernel's copies became is unknown: sent anew
                self._sync_in(msg, dec)
                self._rng_back(msg, dec)
                raise _exception(msg["err"] if isinstance(msg["err"], dict) else {})
            result = dec.value(msg.get("ok"))
            self._sync_in(msg, dec)
            self._rng_back(msg, dec)
            if op in ("call", "repeat", "fwd"):
                restored = self._write_back(parts, msg.get("wb") or [], dec)
                self._watched_back(msg.get("wv"), enc, dec)
                self._keep(enc, restored)
            return result

    def lookup(self, names: list[str]) -> dict[str, Any]:
        """The kernel's notebook names that exist, by value or as handles."""
        found = self.request("names", names)
        if type(found) is not dict:
            raise ChannelError("the kernel's names are not a dict")
        return {k: v for k, v in found.items() if type(k) is str}

    def release(self) -> None:
        """Forget every handle, both ways (the end of a test cell)."""
        self._proxies.clear()
        self.objects.clear()
        self._ids.clear()
        self.synced.clear()
        self.graphs.clear()
        self.mirror_refs.clear()
        self.kept_out.clear()

    def _sync_out(self, header: dict[str, Any], enc: _Encoder) -> None:
        """What changed in the mirrored modules since the last message, into ``header``."""
        changes = {}
        for rid, sync in list(self.synced.items()):
            ch = sync.changes(shape=not self.trusted)
            if ch:
                changes[rid] = ch
        if changes:
            header["ms"] = enc.value(changes)

    def _sync_in(self, msg: dict[str, Any], dec: _Decoder) -> None:
        """Put the other side's changes to the mirrored modules into ours."""
        if "ms" not in msg:
            return
        changes = dec.value(msg["ms"])
        if type(changes) is not dict:
            raise ChannelError("malformed module changes")
        for rid, ch in changes.items():
            sync = self.synced.get(rid)
            if sync is None or type(ch) is not dict:
                raise ChannelError("changes to a module that is not mirrored")
            if self.trusted and "s" in ch:  # (the kernel's copies hold the parameters it had)
                self.kept_drop += [kept[1] for kept in self.kept_out.values()]
                self.kept_out.clear()
                importlib.import_module("gptcore.course.classroom.mirror").rebuild(sync.module, ch["s"])
            sync.apply(ch)

    def _watched_back(self, states: Any, enc: _Encoder, dec: _Decoder) -> None:
        """What the watchers sent with a call recorded in the kernel (see ``_watchers``),
        and what became of the runner's objects marked to run there, put into ours."""
        if not states:
            return
        sent = enc.pickled + enc.in_kernel
        if type(states) is not list:
            raise ChannelError("malformed watcher states")
        for item in states[:1000]:
            if not (type(item) is list and len(item) == 2 and type(item[0]) is int):
                raise ChannelError("malformed watcher states")
            if not 0 <= item[0] < len(sent):
                raise ChannelError("a state of an object that was not sent")
            _restore(sent[item[0]], dec.value(item[1]))

    def _add_state(self, header: dict[str, Any], enc: _Encoder) -> None:
        """The runner's random states (when they changed) and gradient mode go with a call."""
        torch = _torch()
        py = random.getstate()
        state = torch.get_rng_state().numpy().tobytes() if torch is not None else b""
        watchers = _active_watchers()
        if watchers:
            header["wt"] = [enc.value(w) for w in watchers]
        if self._sent_rng is None or self._sent_rng != (state, py):
            header["rng"] = {"py": enc.value(py)}
            if torch is not None:
                header["rng"]["torch"] = enc.value(torch.get_rng_state())
            self._sent_rng = (state, py)
        if torch is not None:
            header["grad"] = bool(torch.is_grad_enabled())

    def _rng_back(self, msg: dict[str, Any], dec: _Decoder) -> None:
        """(the runner's end) The random states the kernel's call left, taken on, as one
        process would have them: a check that seeds again before the next call sends that
        seed, one that does not carries on from where the student's code stopped. (A
        check's own inputs come from generators it seeds itself, never from this state.)"""
        rng = msg.get("rng")
        if rng is None:
            return
        torch = _torch()
        try:
            py = dec.value(rng["py"])
            random.setstate(py)
            if torch is not None:
                state = dec.value(rng["torch"])
                if not (isinstance(state, torch.Tensor) and state.dtype == torch.uint8):
                    raise TypeError("not a generator state")
                torch.set_rng_state(state)
        except (TypeError, ValueError, KeyError, RuntimeError) as e:
            raise ChannelError(f"a malformed random state: {e}") from e
        now = torch.get_rng_state().numpy().tobytes() if torch is not None else b""
        self._sent_rng = (now, random.getstate())

    def _write_back(self, parts: tuple[Any, ...], wb: list[Any], dec: _Decoder) -> list[Any]:
        """Put what the callee did to our arguments into them (we passed copies); return
        the copied objects whose state came back."""
        restored: list[Any] = []
        if len(parts) < 3 or not isinstance(wb, list):
            return restored
        args, kwargs = parts[1], parts[2]
        for item in wb[:1000]:
            if not (isinstance(item, list) and len(item) in (2, 3)):
                raise ChannelError("a malformed write-back")
            where, raw, *kind = item
            if isinstance(where, int) and 0 <= where < len(args):
                target = args[where]
            elif isinstance(where, str) and where in kwargs:
                target = kwargs[where]
            else:
                raise ChannelError("a write-back to no argument")
            new = dec.value(raw)
            if kind:
                _restore(target, new)
                restored.append(target)
            elif _holds_remote(new):
                raise ChannelError("a write-back holding the notebook's objects")
            else:
                _assign(target, new)
        return restored

    def _keep(self, enc: _Encoder, restored: list[Any]) -> None:
        """(the runner's end) After a call: the optimizers it sent whose state came back
        are now the same as the kernel's copies of them, which the kernel keeps."""
        for i, n in enc.kept.items():
            o = enc.pickled[i]
            if any(o is r for r in restored):
                self.kept_out[id(o)] = (o, n, _kept_key(o))
            else:
                self.kept_out.pop(id(o), None)
                self.kept_drop.append(n)

    # ------------------------------------------------------ answering the other side
    def serve(self) -> None:
        """Answer requests until the other side says the cell is over (the kernel's end)."""
        self.ending = False
        while not self.ending:
            msg, blob = _recv(self.sock)
            if "op" not in msg:
                raise ChannelError("a reply when no request was made")
            self._answer(msg, blob)

    def _answer(self, msg: dict[str, Any], blob: bytes) -> None:
        msg_id = msg.get("id")
        op = msg.get("op")
        enc = _Encoder(self)
        calls = not self.trusted and op in ("call", "fwd", "repeat")
        self.rng_given = _rng_now() if calls else None  # (_caller_state: what it took on)
        try:
            if op == "end" and not self.trusted:
                self.ending = True
                self.objects.clear()
                self._ids.clear()
                self._proxies.clear()
                self.synced.clear()
                self.graphs.clear()
                self.kept_in.clear()
                _send(self.sock, {"re": msg_id, "ok": None})
                return
            dec = _Decoder(self, blob, msg)
            if not self.trusted:
                self._sync_in(msg, dec)
            parts = [dec.value(p) for p in msg.get("p") or []]
            enc.runner_objects = dec.unpickled
            result, wb = self._do(str(op), parts, msg, dec, enc)
            header = {"re": msg_id, "ok": enc.value(result)}
            if wb:
                header["wb"] = wb
            if calls:
                states = self._watcher_states(msg, dec, enc)
                if states:
                    header["wv"] = states
        except BaseException as e:
            if isinstance(e, ChannelError) and self.trusted:
                raise
            enc = _Encoder(self)
            header = {"re": msg_id, "err": _describe(e)}
            if isinstance(e, (SystemExit, GeneratorExit)):
                header["err"]["name"] = "SystemExit"
        if calls and _rng_now() != self.rng_given:  # the student's code drew random numbers
            header["rng"] = _rng_state(enc)
        if not self.trusted:
            try:
                self._sync_out(header, enc)
            except Exception as e:  # a module whose state cannot be read: the call fails
                header = {"re": msg_id, "err": _describe(e)}
                enc = _Encoder(self)
        _send(self.sock, header, enc.finish(header))

    def _watcher_states(self, msg: dict[str, Any], dec: _Decoder, enc: _Encoder) -> list[Any]:
        """(the kernel's end) The state of each watcher and runner object marked to run here
        after a call, by its place among the copies the request sent."""
        out = []
        for i, obj in enumerate(dec.unpickled):
            if getattr(type(obj), "gptcore_in_kernel", False) is True:
                out.append([i, enc.value(_state(obj))])
        return out

    def _do(
        self, op: str, parts: list[Any], msg: dict[str, Any], dec: _Decoder, enc: _Encoder
    ) -> tuple[Any, list[Any]]:
        if self.trusted and op != "call":
            raise PermissionError(f"the grader's objects cannot be asked {op!r}, only called")
        if op == "names":
            names = parts[0] if parts and type(parts[0]) is list else []
            ns = self.namespace
            return {n: ns[n] for n in names if type(n) is str and n in ns}, []
        if op == "release":
            return None, []
        target = parts[0] if parts else None
        if op == "call":
            args, kwargs = parts[1], parts[2]
            if type(args) is not tuple or type(kwargs) is not dict:
                raise ChannelError("a malformed call")
            if self.trusted and not (callable(target) and id(target) in self._ids):
                raise PermissionError("only the callables the grader passed can be called")
            return self._call(target, args, kwargs, msg, dec, enc)
        if op == "repeat":
            return self._repeat(target, parts, msg, dec, enc)
        if op == "fwd":
            return self._forward(target, parts, msg, dec, enc)
        if op == "bwd":
            return self._backward(parts), []
        if op == "getattr":
            return getattr(target, str(parts[1])), []
        if op == "setattr":
            setattr(target, str(parts[1]), parts[2])
            return None, []
        if op == "getitem":
            return target[parts[1]], []
        if op == "setitem":
            target[parts[1]] = parts[2]
            return None, []
        if op == "len":
            return len(target), []
        if op == "iter":
            out = []
            for x in target:
                out.append(x)
                if len(out) > MAX_ITEMS:
                    raise ValueError("too many items to send")
            return out, []
        raise ChannelError(f"unknown request {op!r}")

    def _call(
        self,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        msg: dict[str, Any],
        dec: _Decoder,
        enc: _Encoder,
    ) -> tuple[Any, list[Any]]:
        self._caller_state(msg, dec)
        before = {
            k: _snapshot(v, shallow=any(v is o for o in dec.shallow))
            for k, v in [*enumerate(args), *kwargs.items()]
        }
        with _grad_mode(msg), _watchers(dec):
            result = fn(*args, **kwargs)
        wb = []
        for k, v in [*enumerate(args), *kwargs.items()]:
            snap = before[k]
            if any(v is o for o in dec.unpickled):  # the runner's object, copied here
                wb.append([k, enc.value(_state(v)), 1])
            elif snap is not None and not _same(snap, _snapshot(v, shallow=snap[0] == "c")):
                wb.append([k, enc.value(v)])
        return result, wb

    def _caller_state(self, msg: dict[str, Any], dec: _Decoder) -> None:
        """Take on the runner's random states, sent with its call (the kernel's end)."""
        rng = msg.get("rng")
        torch = _torch()
        if isinstance(rng, dict) and not self.trusted:
            if "py" in rng:
                random.setstate(dec.value(rng["py"]))
            if "torch" in rng and torch is not None:
                torch.set_rng_state(dec.value(rng["torch"]))
            self.rng_given = _rng_now()

    def _repeat(
        self, fn: Any, parts: list[Any], msg: dict[str, Any], dec: _Decoder, enc: _Encoder
    ) -> tuple[Any, list[Any]]:
        """``fn`` called again and again on fresh copies (see ``Remote.gptcore_replay``)."""
        args, kwargs, times = parts[1], parts[2], parts[3]
        if type(args) is not tuple or type(kwargs) is not dict or type(times) is not int:
            raise ChannelError("a malformed repeat")
        outcomes: list[dict[str, Any]] = []
        shared = {k: v for k, v in [*enumerate(args), *kwargs.items()] if _fresh(v) is v}
        self._caller_state(msg, dec)  # once: the random state carries on from call to call
        for _ in range(times):
            fresh = {k: _fresh(v) for k, v in [*enumerate(args), *kwargs.items()]}
            before = {k: _snapshot(v) for k, v in fresh.items() if k not in shared}
            call_args = tuple(fresh[i] for i in range(len(args)))
            call_kwargs = {k: fresh[k] for k in kwargs}
            try:
                with _grad_mode(msg), _watchers(dec):
                    result = fn(*call_args, **call_kwargs)
            except BaseException as e:
                outcomes.append({"err": _describe(e)})
                break
            changed = [
                [k, v] for k, v in fresh.items()
                if k in before and before[k] is not None and not _same(before[k], _snapshot(v))
            ]  # fmt: skip
            outcomes.append({"ok": result, "wb": changed})
            if changed:
                break
        wb = []
        for k, v in shared.items():  # generators and the like: the state they end in
            snap = _snapshot(v)
            if snap is not None and snap[0] == "g":
                wb.append([k, enc.value(v)])
        return outcomes, wb

    def _forward(
        self, module: Any, parts: list[Any], msg: dict[str, Any], dec: _Decoder, enc: _Encoder
    ) -> tuple[Any, list[Any]]:
        """(the kernel's end) A mirrored module called with gradients on: the outputs, and
        the graph kept, so that the runner's backward can ask for the gradients ("bwd")
        of the inputs it sent and of the parameters it names."""
        torch = _torch()
        args, kwargs, names = parts[1], parts[2], parts[3]
        if type(args) is not tuple or type(kwargs) is not dict or type(names) is not list:
            raise ChannelError("a malformed forward")
        result, wb = self._call(module, args, kwargs, {**msg, "grad": True}, dec, enc)
        outs = [t for t in tensors_in(result) if t.requires_grad]
        if not outs or torch is None:
            return {"o": result, "g": None}, wb
        params = dict(module.named_parameters(remove_duplicate=False))
        found = [params[n] for n in names if n in params]
        if len(found) != len(names):
            raise ChannelError("the module's parameters changed names during the call")
        inputs = [t for t in tensors_in((args, kwargs)) if t.requires_grad] + found
        gid = max(self.graphs, default=0) + 1
        self.graphs[gid] = (outs, inputs)
        for old in sorted(self.graphs)[:-8]:  # the few latest: a check backpropagates at once
            del self.graphs[old]
        return {"o": result, "g": gid}, wb

    def _backward(self, parts: list[Any]) -> list[Any]:
        """(the kernel's end) The gradients of a kept graph's inputs (see ``_forward``)."""
        torch = _torch()
        gid, grads = parts[0], parts[1]
        if gid not in self.graphs or type(grads) is not list:
            raise ChannelError("a backward through a graph that is not kept")
        outs, inputs = self.graphs[gid]
        if len(grads) != len(outs):
            raise ChannelError("a backward with the wrong number of gradients")
        # A scalar's gradient of one goes as None, which autograd fills in with ones: the
        # same, without the import a given gradient costs the first time (a second).
        pairs = [(o, None if _one(o, g) else g) for o, g in zip(outs, grads) if g is not None]
        wanted = [i for i, t in enumerate(inputs) if t.requires_grad]
        got = torch.autograd.grad(
            [o for o, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
            allow_unused=True, retain_graph=True,
        )  # fmt: skip
        out: list[Any] = [None] * len(inputs)
        for i, g in zip(wanted, got):
            out[i] = g
        return out

    # ------------------------------------------------------ handles we give out
    def handle(self, obj: Any) -> int:
        key = id(obj)
        if key not in self._ids:
            rid = len(self.objects) + 1
            self.objects[rid] = obj
            self._ids[key] = rid
        return self._ids[key]

    def proxy(self, rid: int, info: dict[str, Any]) -> Any:
        if rid not in self._proxies:
            if self.trusted and "mod" in info and _torch() is not None:
                # A module of the student's: a real nn.Module here, kept in step (.mirror).
                mirror = importlib.import_module("gptcore.course.classroom.mirror")
                root = mirror.build(self, rid, info)
                self.synced[rid] = _Sync(root, by_version=True)
                self._proxies[rid] = root  # type: ignore[assignment]
            else:
                cls = _proxy_type(str(info.get("m", "")), str(info.get("q", "object")))
                self._proxies[rid] = cls(self, rid, info)
        return self._proxies[rid]


# ------------------------------------------------------------------ mirrored modules
_UNSEEN = object()


class _Sync:
    """A mirrored module's state as last sent or received (parameters, their gradients,
    buffers, train/eval flags), so that each message carries only what changed. The
    same on both ends: the kernel's module is the student's, the runner's its mirror.
    The kernel's end compares by value: ``p.data -= ...`` in the student's code changes
    a parameter without a version bump. The runner's end compares tensors by object and
    version (``by_version``): only the checks change its mirrors, and never through
    ``.data`` (tests/grading/test_mirror.py holds the checks to that)."""

    def __init__(self, module: Any, by_version: bool = False) -> None:
        self.module = module
        self.by_version = by_version
        self.seen: dict[tuple[str, str], Any] = {}
        self.shape: Any = None

    def changes(self, shape: bool) -> dict[str, Any]:
        walk = _Walk(self.module)
        out: dict[str, Any] = {}
        if shape:  # (the kernel's end) the module's layout, when it changed
            info = walk.info()
            if info != self.shape:
                out["s"] = self.shape = info
                self.seen.clear()  # the rebuilt mirror's values: every one of them
        for n, p in walk.params.items():
            self._diff(out, "p", n, p.detach(), p)
            self._diff(out, "g", n, None if p.grad is None else p.grad.detach(), p.grad)
        for n, b in walk.buffers.items():
            self._diff(out, "b", n, b.detach(), b)
        for n, m in walk.modules:
            if self.seen.get(("t", n), _UNSEEN) is not bool(m.training):
                self.seen[("t", n)] = bool(m.training)
                out.setdefault("t", {})[n] = bool(m.training)
        return out

    def _seen(self, value: Any, obj: Any) -> Any:
        if value is None:
            return None
        return (obj, obj._version) if self.by_version else value.clone()

    def _diff(self, out: dict[str, Any], kind: str, name: str, value: Any, obj: Any) -> None:
        old = self.seen.get((kind, name), _UNSEEN)
        if old is not _UNSEEN:
            if self.by_version:
                if (old is None and obj is None) or (
                    old is not None and old[0] is obj and old[1] == obj._version
                ):
                    return
            elif _equal(old, value):
                return
        self.seen[(kind, name)] = self._seen(value, obj)
        out.setdefault(kind, {})[name] = value

    def apply(self, ch: dict[str, Any]) -> None:
        torch = _torch()
        walk = _Walk(self.module)
        params, buffers, modules = walk.params, walk.buffers, dict(walk.modules)
        with torch.no_grad():
            for kind, where in (("p", params), ("b", buffers), ("g", params)):
                for n, t in dict(ch.get(kind) or {}).items():
                    target = where.get(n)
                    if target is None or not ((t is None and kind == "g") or _fits(t, target)):
                        raise ChannelError(f"a change to {n!r} that does not fit the module")
                    if kind == "g":
                        target.grad = None if t is None else t.clone()
                        self.seen[(kind, n)] = self._seen(target.grad, target.grad)
                    else:
                        target.copy_(t)
                        self.seen[(kind, n)] = self._seen(t, target)
        for n, flag in dict(ch.get("t") or {}).items():
            if n not in modules or type(flag) is not bool:
                raise ChannelError("a train/eval flag of no sub-module")
            modules[n].training = self.seen[("t", n)] = flag


class _Walk:
    """One pass over a module's tree, in ``named_modules`` order: its sub-modules, its
    parameters (each tied one once, by its first name), its buffers, and its layout
    (``info``). One pass instead of one per ``named_*`` call: this runs for every
    mirrored module with every message."""

    def __init__(self, root: Any) -> None:
        self.modules: list[tuple[str, Any]] = []
        stack = [("", root)]
        while stack and len(self.modules) < MAX_MODULES:
            path, m = stack.pop()
            self.modules.append((path, m))
            children = [(f"{path}.{n}" if path else n, c) for n, c in m._modules.items() if c is not None]
            stack.extend(reversed(children))
        self.params: dict[str, Any] = {}  # first name -> parameter
        self._params: list[list[Any]] = []
        self.buffers: dict[str, Any] = {}
        self._buffers: list[list[Any]] = []
        firsts: dict[int, str] = {}
        for path, m in self.modules:
            for n, p in m._parameters.items():
                if p is None:
                    continue
                full = f"{path}.{n}" if path else n
                first = firsts.setdefault(id(p), full)
                if first == full:
                    self.params[full] = p
                self._params.append([full, first, p])
            for n, b in m._buffers.items():
                if b is not None:
                    full = f"{path}.{n}" if path else n
                    self.buffers[full] = b
                    self._buffers.append([full, b, n not in m._non_persistent_buffers_set])

    def info(self) -> dict[str, Any]:
        """The layout, for a mirror: the sub-modules (path, class), the parameters (name,
        the first name of the one it is tied to, shape, dtype, whether it trains) and the
        buffers (name, shape, dtype, whether state_dict holds it)."""
        mods = [[p, type(s).__module__, type(s).__qualname__] for p, s in self.modules]
        params = [
            [n, first, list(p.shape), str(p.dtype).removeprefix("torch."), bool(p.requires_grad)]
            for n, first, p in self._params
        ]
        buffers = [
            [n, list(b.shape), str(b.dtype).removeprefix("torch."), persistent]
            for n, b, persistent in self._buffers
        ]
        return {"mods": mods, "params": params[:100_000], "buffers": buffers[:100_000]}


def _one(out: Any, grad: Any) -> bool:
    """``grad`` is the gradient ``backward()`` gives a scalar ``out`` by default."""
    torch = _torch()
    return (
        isinstance(grad, torch.Tensor) and out.numel() == 1 and grad.shape == out.shape
        and grad.dtype == out.dtype and not grad.requires_grad and bool(grad.eq(1).all())
    )  # fmt: skip


def _fits(t: Any, target: Any) -> bool:
    torch = _torch()
    return isinstance(t, torch.Tensor) and t.shape == target.shape and t.dtype == target.dtype


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return _same(("t", a), ("t", b))


def _module_info(m: Any) -> dict[str, Any]:
    """A module's layout, for its mirror (see ``_Walk.info``)."""
    return _Walk(m).info()


def _mirror_target(root: Any, kind: Any, path: Any) -> Any:
    """(the kernel's end) What a mirror stands for: the module at ``path``, or a parameter."""
    torch = _torch()
    if torch is None or not isinstance(root, torch.nn.Module) or type(path) is not str:
        raise ChannelError("a reference to no module")
    try:
        if kind == "m":
            return root.get_submodule(path) if path else root
        if kind == "p":
            return dict(root.named_parameters(remove_duplicate=False))[path]
        if kind == "b":
            return dict(root.named_buffers(remove_duplicate=False))[path]
    except (AttributeError, KeyError) as e:
        raise ChannelError(f"no {path!r} in the module") from e
    raise ChannelError("a reference to no module")


def tensors_in(v: Any, depth: int = 0) -> list[Any]:
    """The tensors in a value, in order (tuples, lists and dict values looked into)."""
    torch = _torch()
    if torch is not None and isinstance(v, torch.Tensor):
        return [v]
    if depth > MAX_DEPTH:
        return []
    if type(v) in (tuple, list):
        return [t for x in v for t in tensors_in(x, depth + 1)]
    if type(v) is dict:
        return [t for x in v.values() for t in tensors_in(x, depth + 1)]
    return []


# ------------------------------------------------------------------ watchers
def _active_watchers() -> list[Any]:
    """(the runner's end) The watchers a check has on (``checks.report.watching``)."""
    report = sys.modules.get("gptcore.course.checks.report")
    return list(getattr(report, "WATCHING", ()))


@contextlib.contextmanager
def _watchers(dec: _Decoder) -> Any:
    """(the kernel's end) The runner's watchers, copies of them, on around the call."""
    raw = dec.header.get("wt")
    found = [dec.value(w) for w in raw] if type(raw) is list and not dec.peer.trusted else []
    with contextlib.ExitStack() as stack:
        for w in found:
            if getattr(type(w), "gptcore_in_kernel", False) is not True:
                raise ChannelError("a watcher that is not one")
            stack.enter_context(w)
        yield


def _describe(e: BaseException) -> dict[str, Any]:
    t = type(e)
    try:
        msg = str(e)
    except Exception:
        msg = "<the message could not be shown>"
    out = {
        "name": str(getattr(t, "__name__", "Exception"))[:200],
        "module": str(getattr(t, "__module__", ""))[:200],
        "mro": [str(getattr(c, "__name__", "")) for c in getattr(t, "__mro__", ())][:50],
        "msg": msg[:20_000],
    }
    if isinstance(e, NotImplementedError):
        out["stub"] = getattr(e, "stub_name", "") or _stub(e)
    return out


def _rng_now() -> tuple[bytes, Any]:
    torch = _torch()
    return (torch.get_rng_state().numpy().tobytes() if torch is not None else b"", random.getstate())


def _rng_state(enc: _Encoder) -> dict[str, Any]:
    """(the kernel's end) Its random states, for the runner to take on (``_rng_back``)."""
    torch = _torch()
    out = {"py": enc.value(random.getstate())}
    if torch is not None:
        out["torch"] = enc.value(torch.get_rng_state())
    return out


def _grad_mode(msg: dict[str, Any]) -> Any:
    """The caller's gradient mode, sent with its call, for the duration of the call."""
    torch = _torch()
    grad = msg.get("grad")
    if torch is not None and isinstance(grad, bool):
        return torch.set_grad_enabled(grad)
    return contextlib.nullcontext()


def _fresh(v: Any) -> Any:
    """The copy ``checks.report.call`` passes: lists, dicts and tensors (not ones that need
    gradients, which autograd must see as they are); anything else as it is."""
    torch = _torch()
    if type(v) in (list, dict):
        return type(v)(v)
    if torch is not None and isinstance(v, torch.Tensor) and not v.requires_grad:
        return v.clone()
    return v


def _snapshot(v: Any, shallow: bool = False) -> Any:
    """What to compare after a call to see whether an argument changed (None: cannot).
    ``shallow``: ``v`` is known to hold nothing that can change (see ``_shallow``), so a
    shallow copy is a full one (GPT-2's 50,000 merges: a copy, not a pickle)."""
    if shallow and type(v) in (list, dict, set):
        return ("c", type(v)(v))
    torch = _torch()
    if torch is not None and isinstance(v, torch.Tensor):
        return ("t", v.detach().clone())
    if torch is not None and isinstance(v, torch.Generator):
        return ("g", v.get_state().clone())
    if type(v) in (list, dict):
        try:
            return ("v", pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:
            return ("r", repr(v))
    return None


def _same(a: Any, b: Any) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] in ("t", "g"):
        x, y = a[1], b[1]
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        torch = _torch()
        return bool(torch.equal(x, y) or (x.is_floating_point() and ((x == y) | (x.isnan() & y.isnan())).all()))
    return a[1] == b[1]


def _assign(target: Any, new: Any) -> None:
    """Make ``target`` (our argument) hold ``new`` (what the callee left in its copy)."""
    torch = _torch()
    if torch is not None and isinstance(target, torch.Tensor) and isinstance(new, torch.Tensor):
        with torch.no_grad():
            if target.shape != new.shape:
                target.resize_(new.shape)
            target.copy_(new.to(target.dtype))
    elif torch is not None and isinstance(target, torch.Generator) and isinstance(new, torch.Generator):
        target.set_state(new.get_state())
    elif type(target) is list and type(new) is list:
        target[:] = new
    elif type(target) is dict and type(new) is dict:
        target.clear()
        target.update(new)
    else:
        raise ChannelError("a write-back of another type")


def _state(obj: Any) -> dict[str, Any]:
    """What became of one of the runner's objects the kernel got a copy of, as plain data."""
    torch = _torch()
    if torch is not None and isinstance(obj, torch.nn.Module):
        return {
            "kind": "module",
            "sd": dict(obj.state_dict()),
            "grad": {n: p.grad for n, p in obj.named_parameters()},
            "train": {n: m.training for n, m in obj.named_modules()},
        }
    if torch is not None and isinstance(obj, torch.optim.Optimizer):
        return {"kind": "optimizer", "sd": obj.state_dict()}
    if getattr(type(obj), "gptcore_in_kernel", False) is True:
        # A watcher says what it sends back (a hook it holds, the threads it restores: not).
        state = obj.__getstate__()
        return {"kind": "vars", "vars": dict(state) if isinstance(state, dict) else {}}
    return {"kind": "vars", "vars": dict(vars(obj))}


def _restore(target: Any, state: Any) -> None:
    """Make the runner's ``target`` what the kernel's copy of it became (``_state``)."""
    torch = _torch()
    kind = state.get("kind") if type(state) is dict else None
    if kind in ("module", "optimizer") and _holds_remote(state):
        raise ChannelError("a write-back holding the notebook's objects")
    if kind == "module" and isinstance(target, torch.nn.Module):
        with torch.no_grad():
            target.load_state_dict(state["sd"])
        params = dict(target.named_parameters())
        for name, g in dict(state.get("grad") or {}).items():
            if name in params and (g is None or g.shape == params[name].shape):
                params[name].grad = None if g is None else g.detach().to(params[name].dtype)
        flags = dict(state.get("train") or {})
        for name, m in target.named_modules():
            if type(flags.get(name)) is bool:
                m.training = flags[name]
    elif kind == "optimizer" and isinstance(target, torch.optim.Optimizer):
        target.load_state_dict(state["sd"])
    elif kind == "vars" and type(state.get("vars")) is dict:
        mine = vars(target)
        for k, new in state["vars"].items():
            if k not in mine or str(k).startswith("__") or _holds_remote(new):
                continue  # only plain values it had: nothing of the kernel's gets in here
            old = mine[k]
            if torch is not None and isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor):
                if old.shape == new.shape and old.dtype == new.dtype:
                    with torch.no_grad():
                        old.copy_(new)
                    continue
            setattr(target, k, new)
    else:
        raise ChannelError("a write-back of another kind of object")


def _holds_remote(v: Any, depth: int = 0) -> bool:
    if isinstance(v, Remote):
        return True
    if depth > MAX_DEPTH:
        return True
    if type(v) in (list, tuple, set, frozenset):
        return any(_holds_remote(x, depth + 1) for x in v)
    if type(v) is dict:
        return any(_holds_remote(k, depth + 1) or _holds_remote(x, depth + 1) for k, x in v.items())
    return False


def _kept_key(opt: Any) -> Any:
    """(the runner's end) What an optimizer is now, cheaply: its hyperparameters, which
    parameters it updates, and its state tensors as objects at a version (a check that
    changes the state, in place or not, changes the key)."""
    groups = tuple(
        tuple(sorted((k, tuple(map(id, v)) if k == "params" else repr(v)) for k, v in g.items()))
        for g in opt.param_groups
    )
    torch = _torch()
    state = tuple(
        (id(p), k, _Same(t) if isinstance(t, torch.Tensor) else repr(t))
        for p, st in opt.state.items()
        for k, t in st.items()
    )
    return groups, state


class _Same:
    """A tensor in a key: equal to another only if the same object at the same version
    (and held, so that its id is not given to another)."""

    def __init__(self, t: Any) -> None:
        self.t, self.version = t, t._version

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.t is self.t and other.version == self.version

    __hash__ = None  # type: ignore[assignment]


def _called_back(v: Any) -> bool:
    """Which of the runner's objects the kernel gets as a handle to call (functions, spies);
    every other one goes as a copy (modules, optimizers, caches, tokenizers). A function
    the checks mark as only feeding inputs (``checks.report.input_only``) is imported there
    by name and runs in the kernel."""
    if getattr(v, "gptcore_input_only", False) is True and _by_name(v):
        return False
    # A watcher or recorder of how the student's code works runs where that code does;
    # what it recorded comes back as plain data (see Peer._watched_back).
    owner = v.__self__ if isinstance(v, types.MethodType) else v
    if getattr(type(owner), "gptcore_in_kernel", False) is True:
        return False
    if isinstance(v, (types.FunctionType, types.MethodType, types.BuiltinFunctionType,
                      types.BuiltinMethodType, functools.partial)):  # fmt: skip
        return True
    torch = _torch()
    if torch is not None and isinstance(v, (torch.nn.Module, torch.optim.Optimizer)):
        return False
    return callable(v) and not isinstance(v, type)


# ------------------------------------------------------------------ values
class _Encoder:
    """One message's values as JSON, its tensors in one safetensors blob."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.tensors: dict[str, Any] = {}
        self.pickled: list[Any] = []  # the runner's objects sent as copies, in one pickle
        self.runner_objects: list[Any] = []  # (the kernel's end) the copies it was sent
        self.big: dict[str, str] = {}  # (the runner's end) digest -> pickle, first sending
        self.ints: tuple[int, list[int]] | None = None  # (see _ints)
        self.in_kernel: list[Any] = []  # objects marked to run in the kernel, in the copies
        self.kept: dict[int, int] = {}  # (the runner's end) place in .pickled -> kept copy's n
        self.reused: dict[int, int] = {}  # (the runner's end) id -> n, the kernel's copy used

    def _big(self, v: Any) -> dict[str, Any]:
        """A big container of the runner's (GPT-2's 50,000 merges, a million token ids):
        pickled (C speed), and sent once; after that only its digest travels, and every
        use in the kernel gets a fresh copy (unpickled again, or, for one of plain values,
        a copy of the one it keeps unpickled)."""
        if _plain(v):  # no object of anyone's inside: skip the per-object hook
            raw = pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            buf = io.BytesIO()
            _Pickler(buf, self).dump(v)
            raw = buf.getvalue()
        digest = hashlib.blake2b(raw, digest_size=16).hexdigest()
        if digest not in self.peer.sent_big:
            self.big[digest] = base64.b64encode(raw).decode()
            self.peer.sent_big.add(digest)
        return {"$c": digest}

    def _ints(self, v: list[int]) -> dict[str, Any]:
        """A list of ints: whole, or, when it extends the last one this side sent, only
        the items it adds (the other side keeps the last few it got, by serial)."""
        peer = self.peer
        peer._ints_serial += 1
        serial = peer._ints_serial
        self.ints = (serial, list(v))  # the base from now on, once the message is sent
        last = peer.ints_out
        if last is not None and len(last[1]) <= len(v) and v[: len(last[1])] == last[1]:
            return {"$x": [last[0], len(last[1]), serial, v[len(last[1]) :]]}
        return {"$il": [serial, list(v)]}

    def finish(self, header: dict[str, Any]) -> bytes:
        """Add the pickled copies to ``header``; return the tensors' blob."""
        if self.ints is not None:
            self.peer.ints_out = self.ints
        if self.big:
            header["big"] = self.big
        peer = self.peer
        if peer.kept_drop:
            header["kd"], peer.kept_drop = peer.kept_drop, []
        if self.pickled:
            torch = _torch()
            copies: list[Any] = []
            for i, o in enumerate(self.pickled):
                kept = peer.kept_out.get(id(o))
                if kept is not None and kept[0] is o and kept[2] == _kept_key(o):
                    self.kept[i] = kept[1]  # the kernel's copy is as this one: its number
                    self.reused[id(o)] = kept[1]
                    header.setdefault("kp", []).append([i, kept[1]])
                    copies.append(None)
                    continue
                if kept is not None:  # changed here since: a new copy
                    del peer.kept_out[id(o)]
                    header.setdefault("kd", []).append(kept[1])
                if torch is not None and isinstance(o, torch.optim.Optimizer) and all(
                    id(p) in peer.mirror_refs for g in o.param_groups for p in g["params"]
                ):  # (one over the runner's own modules would update last call's copies)
                    peer._kept_serial += 1
                    self.kept[i] = peer._kept_serial
                    header.setdefault("kn", []).append([i, peer._kept_serial])
                copies.append(o)
            buf = io.BytesIO()
            pickler = _Pickler(buf, self)
            pickler.dump(copies)
            if pickler.in_kernel:  # listed too, so that the kernel can say what became of them
                self.in_kernel = pickler.in_kernel
                buf = io.BytesIO()
                _Pickler(buf, self).dump(copies + self.in_kernel)
            header["pk"] = base64.b64encode(buf.getvalue()).decode()
        return self.blob()

    def blob(self) -> bytes:
        if not self.tensors:
            return b""
        from safetensors.torch import save

        return save(self.tensors)

    def _tensor(self, t: Any) -> Any:
        """A small tensor inline (its bytes, dtype and shape), a bigger one in the blob."""
        t = t.detach().to("cpu")
        if t.numel() * t.element_size() <= INLINE_BYTES:
            raw = t.contiguous().reshape(-1).view(_torch().uint8).numpy().tobytes()
            dtype = str(t.dtype).removeprefix("torch.")
            return {"b": base64.b64encode(raw).decode(), "dt": dtype, "sh": list(t.shape)}
        key = str(len(self.tensors))
        self.tensors[key] = t.contiguous().clone()
        return key

    def value(self, v: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError("a value nested too deeply to send")
        t = type(v)
        if v is None or t is bool or t is int or t is str:
            return v
        if t is float:
            return v if math.isfinite(v) else {"$f": repr(v)}
        if self.peer.trusted and t in (list, tuple, dict, set) and len(v) >= BIG_ITEMS:
            return self._big(v)
        if t is list:
            kinds = set(map(type, v))  # (C speed: histories of thousands of tokens, per call)
            if kinds == {int} and len(v) >= GROWING:
                return self._ints(v)
            if kinds <= _JSON_SCALARS and (
                float not in kinds or all(map(math.isfinite, (x for x in v if type(x) is float)))
            ):
                return list(v)
            return [self.value(x, depth + 1) for x in v]
        if t is tuple:
            return {"$t": [self.value(x, depth + 1) for x in v]}
        if t is dict:
            return {"$d": [[self.value(k, depth + 1), self.value(x, depth + 1)] for k, x in v.items()]}
        if t is set or t is frozenset:
            return {"$s" if t is set else "$fs": [self.value(x, depth + 1) for x in v]}
        if t is bytes:
            return {"$b": base64.b64encode(v).decode()}
        if t is slice:
            return {"$sl": [self.value(x, depth + 1) for x in (v.start, v.stop, v.step)]}
        if v is Ellipsis:
            return {"$e": 1}
        if isinstance(v, Remote) and v._peer is self.peer:
            return {"$y": v._rid}  # the other side's own object, back to it
        torch = _torch()
        if torch is not None:
            ref = self.peer.mirror_refs.get(id(v)) if self.peer.trusted else None
            if ref is not None:  # a mirror, or its parameter: the student's own, back to it
                return {"$ym": list(ref)}
            if isinstance(v, torch.Tensor) and v.dtype not in (torch.complex64, torch.complex128):
                return {"$T": self._tensor(v), "g": bool(v.requires_grad)}
            if isinstance(v, torch.Generator):
                return {"$G": self._tensor(v.get_state()), "dev": str(v.device)}
            if isinstance(v, torch.dtype):
                return {"$dt": str(v).removeprefix("torch.")}
            if isinstance(v, torch.device):
                return {"$dv": str(v)}
            if isinstance(v, torch.Size):
                return {"$z": [int(x) for x in v]}
        if dataclasses.is_dataclass(v) and not isinstance(v, type) and _gptcore_class(t):
            fields = {f.name: self.value(getattr(v, f.name), depth + 1) for f in dataclasses.fields(v)}
            return {"$dc": f"{t.__module__}:{t.__qualname__}", "f": fields}
        if self.peer.trusted:
            if isinstance(v, types.GeneratorType):  # a generator there, of what this one gives
                return {"$gn": [self.value(x, depth + 1) for x in itertools.islice(v, MAX_ITEMS)]}
            if _called_back(v):
                return self._handle(v)
            for i, o in enumerate(self.pickled):
                if o is v:
                    return {"$pk": i}
            self.pickled.append(v)
            return {"$pk": len(self.pickled) - 1}
        for i, o in enumerate(self.runner_objects):
            if o is v:
                return {"$yp": i}  # the runner's own object (its copy here), back to it
        return self._handle(v)

    def _handle(self, v: Any) -> dict[str, Any]:
        t = type(v)
        try:
            r = repr(v)
        except Exception:
            r = f"<{t.__qualname__} whose repr raised>"
        info = {
            "m": str(getattr(t, "__module__", "")),
            "q": str(getattr(t, "__qualname__", "object")),
            "r": r[:REPR_CHARS],
        }
        torch = _torch()
        if not self.peer.trusted and torch is not None and isinstance(v, torch.nn.Module):
            info["mod"] = _module_info(v)  # the runner builds a mirror of it (.mirror)
            rid = self.peer.handle(v)
            if rid not in self.peer.synced:
                self.peer.synced[rid] = _Sync(v)
                self.peer.synced[rid].shape = info["mod"]
        name = getattr(v, "__name__", None) if not self.peer.trusted else None
        if isinstance(name, str):
            info["n"] = name[:200]
            code = getattr(v, "__code__", None)
            if code is not None and hasattr(code, "co_names"):
                info["names"] = names_used(code)[:500]
        return {"$h": self.peer.handle(v), "i": info}


class _Pickler(pickle.Pickler):
    """The runner's copies for the kernel. Inside them, the kernel's own objects (the
    student's function a cache calls) go back as references, and the runner's functions
    that cannot be pickled by name (lambdas, bound methods, spies) as handles to call."""

    def __init__(self, file: Any, enc: _Encoder) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.enc = enc
        self.in_kernel: list[Any] = []

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Remote) and obj._peer is self.enc.peer:
            return ("y", obj._rid)
        ref = self.enc.peer.mirror_refs.get(id(obj))
        if ref is not None:  # a mirror's parameter in an optimizer: the student's own there
            return ("m", *ref)
        if id(obj) in self.enc.reused:  # inside another copy, an optimizer the kernel keeps
            return ("k", self.enc.reused[id(obj)])
        if any(obj is o for o in self.enc.pickled):
            return None
        if getattr(type(obj), "gptcore_in_kernel", False) is True:
            if not any(obj is o for o in self.in_kernel):
                self.in_kernel.append(obj)
            return None
        if _by_name(obj):
            return None
        if _called_back(obj):
            ref = self.enc._handle(obj)
            return ("h", ref["$h"], ref["i"])
        return None


def _plain(v: Any, depth: int = 0) -> bool:
    """Only scalars in lists, tuples, sets and dicts (a million token ids, 50,000 merges)."""
    t = type(v)
    if t in _PICKLE_SCALARS:
        return True
    if depth > 4 or t not in (list, tuple, set, frozenset, dict):
        return False
    return all(
        _flat(items, _PICKLE_SCALARS) or all(_plain(x, depth + 1) for x in items)
        for items in _items(v)
    )


def _shallow(v: Any) -> bool:
    """A list, dict or set whose items (keys and values) are ints, strings, bytes or tuples
    of them: a shallow copy shares nothing that can change, and ``==`` compares it exactly
    (no float: NaN is not equal to itself)."""
    return type(v) in (list, dict, set) and all(_flat(items, _EXACT_SCALARS) for items in _items(v))


def _items(v: Any) -> tuple[Any, ...]:
    return (v.keys(), v.values()) if type(v) is dict else (v,)


def _flat(items: Any, scalars: frozenset[type]) -> bool:
    """Every item one of ``scalars`` or a tuple of them, checked at C speed."""
    kinds = set(map(type, items))
    if tuple in kinds:
        kinds.discard(tuple)
        tuples = (x for x in items if type(x) is tuple) if kinds else items  # (all: C speed)
        if not set(map(type, itertools.chain.from_iterable(tuples))) <= scalars:
            return False
    return kinds <= scalars


_PICKLE_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})
_EXACT_SCALARS = frozenset({int, str, bytes, bool, type(None)})


def _by_name(obj: Any) -> bool:
    """A function pickle can name (module-level): it is imported, not called back."""
    if isinstance(obj, types.FunctionType | types.BuiltinFunctionType | type):
        qual = getattr(obj, "__qualname__", "") or ""
        return "<" not in qual
    return False


class _Unpickler(pickle.Unpickler):
    """The kernel's end of ``_Pickler``."""

    def __init__(self, file: Any, peer: Peer) -> None:
        super().__init__(file)
        self.peer = peer

    def persistent_load(self, pid: Any) -> Any:
        if pid[0] == "y":
            return self.peer.objects[pid[1]]
        if pid[0] == "m":
            return _mirror_target(self.peer.objects.get(pid[2]), pid[1], pid[3])
        if pid[0] == "k":
            if pid[1] not in self.peer.kept_in:
                raise ChannelError("a copy this side does not keep")
            return self.peer.kept_in[pid[1]]
        return self.peer.proxy(pid[1], pid[2])


def _gptcore_class(t: type) -> bool:
    module = getattr(t, "__module__", "") or ""
    return module.split(".")[0] == "gptcore" and not module.startswith("gptcore.course")


class _Decoder:
    """Values from the other side: plain data, tensors, handles, nothing else
    (and, for the kernel only, the runner's pickled modules)."""

    def __init__(
        self, peer: Peer, blob: bytes, header: dict[str, Any], sent: list[Any] | None = None
    ) -> None:
        self.peer = peer
        self.header = header
        self._blob = blob
        self._tensors: dict[str, Any] | None = None
        self._sent = sent or []  # (the runner's end) the objects its request sent as copies
        self.unpickled: list[Any] = []
        self.shallow: list[Any] = []  # (the kernel's end) fresh copies of _shallow containers
        if "big" in header:
            if peer.trusted or type(header["big"]) is not dict:
                raise ChannelError("the runner never unpickles what the kernel sends")
            for digest, raw in header["big"].items():
                peer.big[str(digest)] = base64.b64decode(str(raw))
        if "pk" in header:
            if peer.trusted:
                raise ChannelError("the runner never unpickles what the kernel sends")
            raw = io.BytesIO(base64.b64decode(str(header["pk"])))
            self.unpickled = _Unpickler(raw, peer).load()
            for i, n in header.get("kp") or []:  # copies this side kept from earlier calls
                if n not in peer.kept_in:
                    raise ChannelError("a copy this side does not keep")
                self.unpickled[i] = peer.kept_in[n]
            for i, n in header.get("kn") or []:
                peer.kept_in[n] = self.unpickled[i]
        if not peer.trusted:  # copies the runner says it will not name again
            for n in header.get("kd") or []:
                peer.kept_in.pop(n, None)

    def _tensor(self, key: Any) -> Any:
        if type(key) is dict:
            return self._inline(key)
        if self._tensors is None:
            if not self._blob:
                raise ChannelError("a tensor in a message without tensors")
            from safetensors.torch import load

            self._tensors = load(self._blob)
        if not isinstance(key, str) or key not in self._tensors:
            raise ChannelError("a reference to a tensor the message does not hold")
        return self._tensors[key]

    def _inline(self, spec: dict[str, Any]) -> Any:
        torch = importlib.import_module("torch")
        dtype = getattr(torch, str(spec.get("dt")), None)
        shape = spec.get("sh")
        if not isinstance(dtype, torch.dtype) or type(shape) is not list:
            raise ChannelError("a malformed tensor")
        if not all(type(n) is int and n >= 0 for n in shape) or len(shape) > 32:
            raise ChannelError("a malformed tensor shape")
        raw = base64.b64decode(str(spec.get("b", "")), validate=True)
        numel = math.prod(shape)
        if len(raw) != numel * torch.empty((), dtype=dtype).element_size():
            raise ChannelError("a tensor whose bytes do not fit its shape")
        if not raw:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)

    def value(self, v: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise ChannelError("a value nested too deeply")
        if v is None or type(v) in (bool, int, float, str):
            return v
        if type(v) is list:
            if set(map(type, v)) <= _JSON_SCALARS:
                return v  # (a fresh list from this message's JSON, nothing to convert)
            return [self.value(x, depth + 1) for x in v]
        if type(v) is not dict or len(v) > 2:
            raise ChannelError("an unknown value")
        (tag, body), *rest = v.items()
        if tag in ("$il", "$x"):
            return self._ints(tag, body)
        if tag == "$t":
            return tuple(self._list(body, depth))
        if tag == "$d":
            out = {}
            for pair in self._list(body, depth, raw=True):
                if not (type(pair) is list and len(pair) == 2):
                    raise ChannelError("a malformed dict")
                out[self.value(pair[0], depth + 1)] = self.value(pair[1], depth + 1)
            return out
        if tag == "$s":
            return set(self._list(body, depth))
        if tag == "$fs":
            return frozenset(self._list(body, depth))
        if tag == "$f":
            if body not in ("nan", "inf", "-inf"):
                raise ChannelError("a malformed float")
            return float(body)
        if tag == "$b":
            return base64.b64decode(str(body), validate=True)
        if tag == "$sl":
            return slice(*self._list(body, depth)[:3])
        if tag == "$e":
            return Ellipsis
        if tag == "$y":
            if body not in self.peer.objects:
                raise ChannelError("a handle this side never gave")
            return self.peer.objects[body]
        if tag == "$pk" and not self.peer.trusted:
            if type(body) is not int or not 0 <= body < len(self.unpickled):
                raise ChannelError("a copy the message does not hold")
            return self.unpickled[body]
        if tag == "$c" and not self.peer.trusted:
            if body not in self.peer.big:
                raise ChannelError("a container this side was never sent")
            kept = self.peer.big_kept.get(body)
            if kept is None:
                kept = _Unpickler(io.BytesIO(self.peer.big[body]), self.peer).load()
                if not _shallow(kept):
                    return kept  # (unpickled afresh for every use)
                self.peer.big_kept[body] = kept
            fresh = type(kept)(kept)  # a copy, as fresh as unpickling it again, at C speed
            self.shallow.append(fresh)
            return fresh
        if tag == "$ym" and not self.peer.trusted:
            if not (type(body) is list and len(body) == 3 and body[1] in self.peer.synced):
                raise ChannelError("a malformed reference to a module")
            return _mirror_target(self.peer.objects.get(body[1]), body[0], body[2])
        if tag == "$gn" and not self.peer.trusted:
            return (x for x in self._list(body, depth))
        if tag == "$yp":
            if not self.peer.trusted or type(body) is not int or not 0 <= body < len(self._sent):
                raise ChannelError("a reference to an object that was not sent")
            return self._sent[body]
        if tag == "$h":
            info = dict(rest)["i"] if rest else {}
            if type(body) is not int or not isinstance(info, dict):
                raise ChannelError("a malformed handle")
            return self.peer.proxy(body, info)
        torch = importlib.import_module("torch") if tag in _TORCH_TAGS else None
        if tag == "$T":
            t = self._tensor(body)
            g = dict(rest).get("g", False) is True
            return t.requires_grad_(True) if g and t.is_floating_point() else t
        if tag == "$G":
            state = self._tensor(body)
            gen = torch.Generator()
            gen.set_state(state)
            return gen
        if tag == "$dt":
            dt = getattr(torch, str(body), None)
            if not isinstance(dt, torch.dtype):
                raise ChannelError("an unknown dtype")
            return dt
        if tag == "$dv":
            return torch.device(str(body))
        if tag == "$z":
            return torch.Size([int(x) for x in self._list(body, depth)])
        if tag == "$dc":
            return self._dataclass(str(body), dict(rest).get("f"), depth)
        raise ChannelError(f"an unknown value tag {tag!r}")

    def _ints(self, tag: str, body: Any) -> list[int]:
        """A list of ints sent whole (``$il``) or as what it adds to one sent before (``$x``)."""
        if type(body) is not list or len(body) != (2 if tag == "$il" else 4):
            raise ChannelError("a malformed list of ints")
        *ref, serial, items = body
        if type(serial) is not int or type(items) is not list or set(map(type, items)) - {int}:
            raise ChannelError("a malformed list of ints")
        if ref:
            base = self.peer.ints_in.get(ref[0])
            if base is None or len(base) != ref[1]:
                raise ChannelError("an addition to a list of ints this side never got")
            items = base + items
        keep = self.peer.ints_in
        keep[serial] = list(items)  # (a copy: the callee may change the list it gets)
        for old in sorted(keep)[:-4]:
            del keep[old]
        return items

    def _list(self, body: Any, depth: int, raw: bool = False) -> list[Any]:
        if type(body) is not list:
            raise ChannelError("a malformed container")
        return body if raw else [self.value(x, depth + 1) for x in body]

    def _dataclass(self, path: str, fields: Any, depth: int) -> Any:
        module, _, qualname = path.partition(":")
        if module.split(".")[0] != "gptcore" or module.startswith("gptcore.course"):
            raise ChannelError(f"{path} is not one of gptcore's dataclasses")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)) or type(fields) is not dict:
            raise ChannelError(f"{path} is not a dataclass")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: self.value(x, depth + 1) for k, x in fields.items() if k in names})


_TORCH_TAGS = {"$T", "$G", "$dt", "$dv", "$z"}
