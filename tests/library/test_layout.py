"""The layout holds: the library (gptcore/) never imports the course machinery
(gptcore/course/), and the course uses only the public names of other modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

PACKAGE = ROOT / "gptcore"
COURSE = PACKAGE / "course"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(path: Path, source: str | None = None) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, names) of every import in ``path``, at any depth,
    relative ones resolved against the module's package."""
    source = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(source, filename=str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target, names))
            # ``from gptcore import course`` imports the package gptcore.course
            found += [(node.lineno, f"{target}.{n}", []) for n in names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
                found.append((node.lineno, str(first.value), []))
    return found


def _library_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if COURSE not in p.parents)


def _is_course(module: str) -> bool:
    return module == "gptcore.course" or module.startswith("gptcore.course.")


def test_the_resolver_sees_every_way_of_importing_the_course():
    # A library module (never written to disk) spelling the import five ways; each is caught.
    fake = PACKAGE / "model" / "probe.py"
    source = (
        "import gptcore.course.grade\n"
        "from gptcore.course import cli\n"
        "from gptcore import course\n"
        "def f():\n"
        "    from ..course.checks import report\n"
        "    import importlib; importlib.import_module('gptcore.course.sandbox')\n"
        "from . import attention\n"
    )
    lines = sorted({line for line, mod, _ in _imported_modules(fake, source) if _is_course(mod)})
    assert lines == [1, 2, 3, 5, 6]


def test_library_modules_never_import_the_course():
    modules = _library_modules()
    assert PACKAGE / "train" / "loop.py" in modules and PACKAGE / "cli.py" in modules
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in modules
        for line, module, _ in _imported_modules(path)
        if _is_course(module)
    ]
    assert not offenders, (
        "the library must not import gptcore.course (the course depends on the library, "
        "never the reverse; reach course code through an entry point):\n" + "\n".join(offenders)
    )


def test_importing_the_library_loads_no_course_module():
    code = (
        "import gptcore.train, gptcore.sample, gptcore.model, gptcore.tokenizer, gptcore.cli, "
        "gptcore.ngram, gptcore.data, gptcore.checkpoint, gptcore.device; import sys; "
        "course = sorted(m for m in sys.modules if m.startswith('gptcore.course')); "
        "assert not course, course"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_imports(path: Path, source: str | None = None) -> list[str]:
    """Private names ``path`` takes from gptcore's other modules: ``from m import _x``
    and ``m._x`` where ``m`` names a gptcore module the file imported. (A private
    name of the standard library, e.g. an annotation, is that library's business.)"""
    source = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(source, filename=str(path))
    ours = {line: module for line, module, _ in _imported_modules(path, source)}
    out = []
    modules: set[str] = set()  # local names that may be bound to a gptcore module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(
                a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("gptcore")
            )
        elif isinstance(node, ast.ImportFrom) and ours[node.lineno].startswith("gptcore"):
            for alias in node.names:
                if _private(alias.name):
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name}")
                modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            out.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    return out


def test_the_private_name_finder_sees_both_spellings():
    source = (
        "from __future__ import annotations\n"
        "import argparse\n"
        "import gptcore.tokenizer.bpe as bpe\n"
        "from gptcore.train import get_batch as _ref_get_batch\n"  # a private alias: fine
        "from gptcore.tokenizer.bpe import _IDENTITY\n"
        "from ..checks import report\n"
        "x = bpe._splitter\n"
        "y = bpe.__name__\n"
        "z = argparse._SubParsersAction\n"  # the standard library's own business
        "w = report._hint\n"
    )
    found = _private_imports(COURSE / "probe.py", source)
    assert [f.split(":")[1] for f in found] == [
        "5 imports _IDENTITY",
        "7 uses bpe._splitter",
        "10 uses report._hint",
    ], found


@pytest.mark.parametrize(
    "path", sorted(COURSE.rglob("*.py")), ids=lambda p: str(p.relative_to(COURSE))
)
def test_course_modules_import_no_private_names(path):
    found = _private_imports(path)
    assert not found, (
        "a private name is an implementation detail of its module; make it public there "
        "(and document it), or move the shared helper into a module both use:\n"
        + "\n".join(found)
    )


def test_lesson_one_checks_run_without_torch():
    """A grading kernel for lesson 1 stays small: its checks (and the framework) never import
    torch. With torch loaded a kernel needs ~800 MB more address space, over the class-grading
    memory cap the hostile-submission suite uses."""
    code = (
        "import sys, gptcore.course.checks.tokenization, gptcore.course.checks.report; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
