"""Review flags: what a human should look at in a submission, and what nbgrader undid.

Flags never change a grade; they mark the submission in the gradebook
(``flagged``) and list the code, so that a reviewer finds the trick quickly.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from ..cells import graded_test_sources, nbgrader_meta
from .delegation import delegation_flags, gptcore_names
from .report import cut

__all__ = ["edited_cells", "failure_cause", "nbgrader_warnings", "suspicious_code"]

_SUSPICIOUS = [
    (
        "replaces a gptcore check or helper",
        r"\bchecks\s*\.\s*\w+\s*=(?!=)|\bgptcore(?:\.\w+)*\s*\.\s*\w+\s*=(?!=)|setattr\(\s*(?:checks|gptcore)",
    ),
    ("defines __eq__ (an answer that equals anything?)", r"\b__eq__\b|\b__ne__\b"),
    (
        "changes how IPython runs cells",
        r"input_transformers|ast_transformers|\.events\b|run_cell|run_line_magic|showtraceback"
        r"|\bget_ipython\b|\buser_ns\b|excepthook|displayhook|\bmeta_path\b|\bpath_hooks\b",
    ),
    (
        "rewrites code or traces execution",
        r"__code__|__globals__|__closure__|__defaults__|__kwdefaults__|\bsettrace\b"
        r"|\bsetprofile\b|\baddaudithook\b|\bf_back\b|\bf_globals\b|\bf_locals\b|\btb_frame\b",
    ),
    (
        "scans the interpreter's objects or memory",
        r"\bgc\b|\bget_referrers\b|\bget_referents\b|\bget_objects\b|\bctypes\b|\bcffi\b",
    ),
    # The guard (a per-run name _g<12 hex digits>, its module, its maker).
    ("looks for the test guard", r"guard|\b_g[0-9a-f]{12}\b"),
    (
        "ends or signals the kernel",
        r"\bos\._exit\b|\bsys\.exit\b|(?<![\w.])(?:exit|quit)\(|\bos\.kill|\bsignal\.\w+\(",
    ),
    (
        "touches builtins or the import machinery",
        r"\bbuiltins\b|__builtins__|\bimportlib\b|\bsys\.modules\b|__import__",
    ),
    (
        "reads grading files or the call stack",
        r"gradebook|solutions/|nbgrader|\blinecache\b|inspect\.(?:stack|currentframe|getsource|getouterframes)|sys\._getframe",
    ),
    ("opens a network connection", r"\bsocket\b|\burllib\b|\brequests\.|http\.client|\bhttpx\b"),
    (
        "starts processes",
        r"\bos\.fork\b|\bsubprocess\b|\bmultiprocessing\b|\bos\.system\b|\bos\.exec|\bos\.spawn|\bos\.popen",
    ),
]


def _python(src: str) -> str:
    """A cell's source as the Python IPython runs (magics and ``!`` lines become calls)."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return TransformerManager().transform_cell(src)
    except Exception:  # (IPython's transformers raise on odd input; the raw text will do)
        return src


def suspicious_code(submission: dict[str, Any], source: dict[str, Any]) -> list[str]:
    """What a reviewer should look at: student-written code that matches a known trick,
    or that reaches gptcore's own implementation of an exercise (:mod:`.delegation`)."""
    provided = {
        "".join(c.get("source", "")).strip()
        for c in source.get("cells", [])
        if not nbgrader_meta(c).get("solution")
    }
    grade_ids = [nbgrader_meta(c).get("grade_id") for c in source.get("cells", [])]
    exercises = [g for g in grade_ids if isinstance(g, str)]
    code_cells = [
        _python("".join(c.get("source", "")))
        for c in [*source.get("cells", []), *submission.get("cells", [])]
        if c.get("cell_type") == "code"
    ]
    bound: set[str] = set()
    for text in code_cells:
        try:
            bound |= gptcore_names(ast.parse(text))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
    found: list[str] = []
    for i, cell in enumerate(submission.get("cells", [])):
        meta = nbgrader_meta(cell)
        if cell.get("cell_type") != "code" or (meta.get("grade") and not meta.get("solution")):
            continue  # test cells are restored from the gradebook anyway
        src = "".join(cell.get("source", ""))
        if src.strip() in provided:
            continue
        code = "\n".join(line.split("#", 1)[0] for line in src.splitlines())
        for what, pattern in _SUSPICIOUS:
            m = re.search(pattern, code)
            if m:
                line = code[: m.start()].count("\n")
                snippet = code.splitlines()[line].strip()
                found.append(f"cell {i} {what}: `{cut(snippet, 80)}`")
        found += [f"cell {i} {f}" for f in _assigns_into_gptcore(_python(src), bound)]
        found += [f"cell {i} {f}" for f in delegation_flags(_python(src), exercises, bound)]
    return list(dict.fromkeys(found))


def _assigns_into_gptcore(src: str, bound: set[str]) -> list[str]:
    """Assignments (``=``, ``+=``, ``del``, ``setattr``, ``delattr``) into an attribute or
    item of a name the notebook's imports bind to gptcore (``checks``, a module imported
    under another name): a check's helper replaced, say the training loop a check runs in
    the kernel (``checks.report.drives``). The regular expressions above see only the
    names ``checks`` and ``gptcore`` themselves."""
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    roots = bound | {"checks", "gptcore"}
    found = []
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign | ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("setattr", "delattr") and node.args
        ):  # fmt: skip
            targets = [ast.Attribute(value=node.args[0], attr="", ctx=ast.Store())]
        for t in targets:
            base = t
            while isinstance(base, ast.Attribute | ast.Subscript):
                base = base.value
            if base is not t and isinstance(base, ast.Name) and base.id in roots:
                line = src.splitlines()[node.lineno - 1].strip() if hasattr(node, "lineno") else ""
                found.append(f"replaces a gptcore check or helper: `{cut(line, 80)}`")
    return found


_CHANGED = re.compile(
    r"Attribute '(\w+)' for cell (\S+) has changed! \(should be: (.*?), got: (.*?)\)"
)
_ADDED = re.compile(r"Missing grade cell (\S+) encountered, adding to notebook")


def nbgrader_warnings(log: str) -> list[str]:
    """What nbgrader's autograde undid, from its log."""
    out: list[str] = []
    for attr, cell, should, got in _CHANGED.findall(log):
        # (a "checksum" change is every cell with hidden tests: see edited_cells)
        if attr == "points":
            out.append(f"points of {cell} were changed to {got}; grading used {should}")
        elif attr == "cell_type":
            out.append(f"cell {cell} was changed to {got}; grading used the original {should}")
        elif attr == "locked":
            out.append(f"cell {cell} was unlocked; grading used the original")
    for cell in _ADDED.findall(log):
        out.append(f"test cell {cell} was deleted; it was put back and run")
    return list(dict.fromkeys(out))


def failure_cause(log: str) -> str:
    """The most telling line of a failed nbgrader run's log."""
    lines = [x.strip() for x in log.strip().splitlines() if x.strip()]
    errors = [
        x
        for x in lines
        if re.match(r"^[\w.]*(Error|Exception)\b", x) and "NbGraderException" not in x
    ]
    return (errors or lines or ["no log"])[-1]


def edited_cells(submission: dict[str, Any], released: dict[str, Any]) -> list[str]:
    """Test cells whose source differs from the released lesson's."""
    mine = graded_test_sources(submission)
    return [
        gid
        for gid, src in graded_test_sources(released).items()
        if gid in mine and mine[gid] != src
    ]
