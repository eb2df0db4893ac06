"""The test guard: runs inside a grading kernel and undoes tampering before each test cell.

This module's source is sent to the kernel (see ``guard_code`` in
:mod:`.execute`) and run there, silently, before the notebook's first cell, in
a namespace of its own: the kernel never imports ``gptcore.course``. It then
needs nothing but the standard library and IPython.

``make_guard`` snapshots, while no student code has run yet, the functions
and classes of the protected modules (gptcore, PyTorch, NumPy, ``regex``,
builtins, ...), the classes of gptcore and PyTorch's ``Tensor`` and
``nn.Module``, the objects the lesson's ``checks`` aliases name, and IPython's
input and AST transformers. The guard it returns puts back whatever changed
and returns what it restored (``""`` when nothing did). It runs after the
student's code, so it holds its own references to every builtin it calls
(``_getattr`` and the like): replacing ``builtins.getattr`` cannot blind it.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["make_guard"]

# ipykernel and IPython rebind these in builtins as they run cells.
_VOLATILE = {
    "input",
    "raw_input",
    "getpass",
    "_",
    "__",
    "___",
    "display",
    "get_ipython",
    "exit",
    "quit",
    "help",
    "__IPYTHON__",
}
_HOOKS = ("input_transformers_cleanup", "input_transformers_post", "ast_transformers")

# (module, exact, {name: value}): exact means any change is tampering.
Snapshot = dict[str, tuple[Any, bool, dict[str, Any]]]


def make_guard(
    aliases: dict[str, list[str | None]], protected: tuple[str, ...]
) -> Callable[[], str]:
    """The guard for this kernel: ``aliases`` maps a notebook name (``checks``) to
    ``[module, attribute or None]``; ``protected`` names the top-level modules to keep."""
    from IPython import get_ipython

    for module, attr in aliases.values():
        for candidate in ([f"{module}.{attr}"] if attr else []) + [module]:
            try:
                importlib.import_module(candidate)
            except Exception:
                pass
    snap = _snapshot_modules(protected)
    targets = {}
    for alias, (module, attr) in aliases.items():
        m = sys.modules.get(f"{module}.{attr}") if attr else None
        if m is None and module in sys.modules:
            m = getattr(sys.modules[module], attr) if attr else sys.modules[module]
        if m is not None:
            targets[alias] = m
    ip = get_ipython()
    saved = {k: list(getattr(ip, k)) for k in _HOOKS if isinstance(getattr(ip, k, None), list)}
    return _guard(snap, _snapshot_classes(snap), targets, ip, saved)


def _plain(v: Any) -> bool:
    """What the guard keeps: functions, classes, modules and descriptors, not data."""
    return callable(v) or type(v) is type(sys) or isinstance(v, staticmethod | classmethod | property)


def _strict(name: str) -> bool:
    # Any change here is tampering; elsewhere (PyTorch rebinds torch.manual_seed
    # when it loads dynamo, for one) only a replacement written in the notebook.
    return name == "builtins" or name.startswith("gptcore")


def _snapshot_modules(protected: tuple[str, ...]) -> Snapshot:
    snap: Snapshot = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (looking at deprecated attributes warns)
        for n, m in list(sys.modules.items()):
            if m is not None and n.split(".")[0] in protected:
                try:
                    kept = {
                        k: v
                        for k, v in vars(m).items()
                        if _plain(v) and not (n == "builtins" and k in _VOLATILE)
                    }
                except TypeError:
                    continue
                snap[n] = (m, _strict(n), kept)
    return snap


def _snapshot_classes(snap: Snapshot) -> dict[type, tuple[bool, dict[str, Any]]]:
    """gptcore's classes (exact), PyTorch's Tensor and nn.Module: their methods."""
    torch = sys.modules.get("torch")
    extra = [(getattr(torch, "Tensor", None), False)]
    extra.append((getattr(getattr(torch, "nn", None), "Module", None), False))
    for _m, _exact, d in snap.values():
        for v in list(d.values()):
            if isinstance(v, type) and (v.__module__ or "").startswith("gptcore"):
                extra.append((v, True))
    classes: dict[type, tuple[bool, dict[str, Any]]] = {}
    for cls, exact in extra:
        if isinstance(cls, type) and cls not in classes:
            classes[cls] = (exact, {k: v for k, v in vars(cls).items() if _plain(v)})
    return classes


def _guard(
    snap: Snapshot,
    classes: dict[type, tuple[bool, dict[str, Any]]],
    targets: dict[str, Any],
    ip: Any,
    saved: dict[str, list[Any]],
) -> Callable[[], str]:
    """The guard itself; every builtin it calls is bound here, before student code runs."""
    missing = object()
    modules = sys.modules
    _getattr, _type, _isinstance, _setattr, _vars = getattr, type, isinstance, setattr, vars
    _sorted, _list, _type_setattr = sorted, list, type.__setattr__
    _settrace, _setprofile = sys.settrace, sys.setprofile

    def made_here(v: Any) -> bool:
        for x in (v, _type(v), _getattr(v, "func", None), _getattr(v, "__func__", None)):
            try:
                if x is not None and _getattr(x, "__module__", None) == "__main__":
                    return True
            except Exception:
                return True
        return False

    def put_back(
        obj: Any, kept: dict[str, Any], exact: bool, assign: Callable[..., None], name: str
    ) -> list[str]:
        """Restore ``obj``'s attributes from ``kept``; the names of those restored."""
        done = []
        cur = _vars(obj)
        for k, v in kept.items():
            new = cur.get(k, missing)
            if new is not v and (exact or made_here(new)):
                try:
                    assign(obj, k, v)
                    done.append(name + "." + k)
                except Exception:
                    pass
        return done

    def guard() -> str:
        restored = []
        for n, (m, exact, d) in snap.items():
            now = modules.get(n, m)
            if now is not m and (exact or made_here(now) or _type(now) is not _type(m)):
                modules[n] = m
                restored.append(f"sys.modules[{n!r}]")
            restored += put_back(m, d, exact, _setattr, n)
        for cls, (exact, d) in classes.items():
            name = cls.__module__ + "." + cls.__qualname__
            restored += put_back(cls, d, exact, _type_setattr, name)
        ns = ip.user_ns
        for alias, obj in targets.items():
            if ns.get(alias, missing) is not obj:
                ns[alias] = obj
                restored.append(alias)
        for k, v in saved.items():
            cur = _getattr(ip, k, None)
            if _isinstance(cur, list) and _list(cur) != v:
                cur[:] = v
                restored.append("IPython " + k)
        _settrace(None)
        _setprofile(None)
        return ", ".join(_sorted(set(restored)))

    return guard
