"""Mirrors: the student's ``nn.Module`` as a real module in the trusted runner.

Lessons 3, 5 and 6 check modules the student wrote: the checks look at their
sub-modules and parameters, copy weights in, train them with the runner's own
optimizer, call ``backward()`` and read gradients. When the kernel sends a
handle to one of its modules, the runner builds a *mirror* of it (:func:`build`):

- the same tree of sub-modules, each an instance of a class named like the
  student's (a subclass of the torch class itself for ``nn.Embedding``,
  ``nn.Linear``..., so ``isinstance`` answers as it would), holding real
  ``nn.Parameter``s (tied ones tied) and buffers, in the same order, with the
  same names;
- its values kept in step with the kernel's module by the channel: every
  message carries what changed since the last one, both ways (``channel._Sync``),
  so an optimizer built here steps the student's weights, and what the student's
  ``train_step`` did there shows here;
- ``forward`` runs in the kernel. With gradients on, the kernel keeps the graph
  and the output here is connected to the mirror's parameters (and to inputs
  that need gradients) by :class:`_KernelGraph`, whose backward asks the kernel
  for those gradients: ``loss.backward()`` here fills ``p.grad`` here, as it
  would in one process;
- any other attribute (``model.config``, a method) is read from the kernel.

Everything that comes back is plain data (tensors, bools, names), checked to fit
the mirror; nothing of the kernel's runs here.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from .channel import ChannelError, tensors_in

__all__ = ["build", "rebuild"]

_TYPES: dict[tuple[str, str], type] = {}


class Mirror(nn.Module):
    """A sub-module of a mirror (see the module docstring); its class is made per
    student class by :func:`_mirror_type`."""

    def __init__(self, peer: Any, rid: int, path: str) -> None:
        nn.Module.__init__(self)
        object.__setattr__(self, "_gptcore_at", (peer, rid, path))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        peer = self._gptcore_at[0]
        params = dict(_unique_params(self))  # named from this sub-module, as the kernel's
        names = [n for n, p in params.items() if p.requires_grad]
        needs = [t for t in tensors_in((args, kwargs)) if t.requires_grad]
        if not torch.is_grad_enabled() or not (names or needs):
            return peer.request("call", self, args, kwargs)
        answer = peer.request("fwd", self, args, kwargs, names)
        if type(answer) is not dict or "o" not in answer:
            raise ChannelError("a malformed forward")
        out, gid = answer["o"], answer.get("g")
        leaves = tensors_in(out)
        diff = [t.requires_grad for t in leaves]
        if gid is None or not any(diff):
            return _rebuild(out, iter([t.detach() for t in leaves]))
        inputs = [*needs, *(params[n] for n in names)]
        linked = _KernelGraph.apply((peer, gid, diff, leaves), *inputs)
        if isinstance(linked, torch.Tensor):
            linked = (linked,)
        return _rebuild(out, iter(linked))

    def gptcore_run(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call ``fn`` (marked ``checks.report.drives``) in the kernel, where the student's
        module is (see ``channel.Remote.gptcore_run``)."""
        return self._gptcore_at[0].request("call", fn, tuple(args), dict(kwargs))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("__") or name.startswith("_gptcore"):
                raise
        peer = self.__dict__["_gptcore_at"][0]
        return peer.request("getattr", self, name)


class _KernelGraph(torch.autograd.Function):
    """Outputs computed in the kernel, connected here to what they were computed from."""

    @staticmethod
    def forward(ctx: Any, box: Any, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        peer, gid, diff, leaves = box
        ctx.gptcore = (peer, gid, diff, [(t.shape, t.dtype) for t in inputs])
        outs = tuple(t.detach() for t in leaves)
        ctx.mark_non_differentiable(*(t for t, d in zip(outs, diff) if not d))
        return outs

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> Any:  # type: ignore[override]
        peer, gid, diff, shapes = ctx.gptcore
        wanted = [g for g, d in zip(grads, diff) if d]
        got = peer.request("bwd", gid, wanted)
        if type(got) is not list or len(got) != len(shapes):
            raise ChannelError("a malformed backward")
        for g, (shape, dtype) in zip(got, shapes):
            if g is not None and not (isinstance(g, torch.Tensor) and g.shape == shape and g.dtype == dtype):
                raise ChannelError("a gradient that does not fit its tensor")
        return (None, *got)


def _rebuild(v: Any, tensors: Any) -> Any:
    """``v`` with its tensors (in ``channel.tensors_in`` order) replaced from ``tensors``."""
    if isinstance(v, torch.Tensor):
        return next(tensors)
    if type(v) in (tuple, list):
        return type(v)(_rebuild(x, tensors) for x in v)
    if type(v) is dict:
        return {k: _rebuild(x, tensors) for k, x in v.items()}
    return v


def _unique_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    seen: set[int] = set()
    out = []
    for n, p in module.named_parameters(remove_duplicate=False):
        if id(p) not in seen:
            seen.add(id(p))
            out.append((n, p))
    return out


def _mirror_type(module: str, qualname: str) -> type:
    """A class named like the student's; for torch's own layers, a subclass of the layer
    (``isinstance(m, nn.Embedding)`` holds), with forward and the rest going to the kernel."""
    key = (module[:200], qualname[:200])
    if key in _TYPES:
        return _TYPES[key]
    bases: tuple[type, ...] = (Mirror,)
    if key[0].startswith("torch.nn.") and "<" not in key[1]:
        found: Any = importlib.import_module(key[0])
        for part in key[1].split("."):
            found = getattr(found, part, None)
        if isinstance(found, type) and issubclass(found, nn.Module):
            bases = (Mirror, found)
    name = key[1].rsplit(".", 1)[-1] or "Module"
    cls = type(name, bases, {"__module__": key[0]})
    cls.__qualname__ = key[1]
    if len(_TYPES) < 1000:
        _TYPES[key] = cls
    return cls


def _dtype(name: Any) -> torch.dtype:
    dt = getattr(torch, str(name), None)
    if not isinstance(dt, torch.dtype):
        raise ChannelError("an unknown dtype")
    return dt


def build(peer: Any, rid: int, info: dict[str, Any]) -> nn.Module:
    """The mirror of the kernel's module ``rid`` (layout ``info``, see ``channel._module_info``);
    its values come with the same message."""
    mods = info["mod"].get("mods") if isinstance(info.get("mod"), dict) else None
    if not (type(mods) is list and mods and type(mods[0]) is list and mods[0][:1] == [""]):
        raise ChannelError("a malformed module layout")
    root = _mirror_type(str(mods[0][1]), str(mods[0][2]))(peer, rid, "")
    rebuild(root, info["mod"])
    return root


def rebuild(root: nn.Module, layout: Any) -> None:
    """Give ``root`` the sub-modules, parameters and buffers ``layout`` lists (as built,
    or after the student's code changed them)."""
    if not (isinstance(layout, dict) and all(type(layout.get(k)) is list for k in ("mods", "params", "buffers"))):
        raise ChannelError("a malformed module layout")
    peer, rid, _ = root._gptcore_at
    nodes: dict[str, nn.Module] = {"": root}
    for item in layout["mods"][1:]:
        path, module, qualname = (str(x) for x in item[:3])
        parent, _, name = path.rpartition(".")
        if parent not in nodes or not name:
            raise ChannelError("a malformed module layout")
        node = nodes[parent]._modules.get(name)
        if not isinstance(node, Mirror):
            node = _mirror_type(module, qualname)(peer, rid, path)
            nodes[parent]._modules[name] = node
        nodes[path] = node
    for node in nodes.values():
        node._parameters.clear()
        node._buffers.clear()
        node._non_persistent_buffers_set.clear()
    made: dict[str, nn.Parameter] = {}
    refs = peer.mirror_refs
    refs.update({id(n): ("m", rid, p) for p, n in nodes.items()})
    for name, first, shape, dtype, trains in (item[:5] for item in layout["params"]):
        parent, _, leaf = str(name).rpartition(".")
        if first not in made:
            made[first] = nn.Parameter(torch.zeros([int(x) for x in shape], dtype=_dtype(dtype)),
                                       requires_grad=bool(trains))  # fmt: skip
            refs[id(made[first])] = ("p", rid, str(first))
        if parent not in nodes:
            raise ChannelError("a parameter of no sub-module")
        nodes[parent]._parameters[leaf] = made[first]
    for name, shape, dtype, persistent in (item[:4] for item in layout["buffers"]):
        parent, _, leaf = str(name).rpartition(".")
        if parent not in nodes:
            raise ChannelError("a buffer of no sub-module")
        # (not register_buffer: its hasattr() would ask the kernel, in the middle of a reply)
        nodes[parent]._buffers[leaf] = torch.zeros([int(x) for x in shape], dtype=_dtype(dtype))
        if not persistent:
            nodes[parent]._non_persistent_buffers_set.add(leaf)
