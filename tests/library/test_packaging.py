"""Packaging and set-up: pyproject.toml and environment.yml agree; README and CI agree."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from ..conftest import ROOT

# conda-forge names that differ from PyPI's.
CONDA_TO_PYPI = {"pytorch": "torch"}


def _split(req: str) -> tuple[str, str]:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", req)
    assert m, f"cannot parse requirement {req!r}"
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("course", "dev"):
        reqs += project["optional-dependencies"][extra]
    return dict(_split(r) for r in reqs)


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            out.update(_split(r) for r in dep["pip"] if not r.startswith("-e"))
        else:
            name, spec = _split(dep)
            if name not in ("python", "pip"):
                out[CONDA_TO_PYPI.get(name, name)] = spec
    return out


def test_environment_yml_matches_pyproject():
    pyproject, env = _pyproject(), _environment()
    assert set(pyproject) == set(env), (
        f"only in pyproject.toml: {sorted(set(pyproject) - set(env))}; "
        f"only in environment.yml: {sorted(set(env) - set(pyproject))}"
    )
    differing = {k: (pyproject[k], env[k]) for k in pyproject if pyproject[k] != env[k]}
    assert not differing, f"version specifiers differ (pyproject, environment.yml): {differing}"


def test_drift_check_would_notice_a_missing_package():
    env = _environment()
    env.pop("tiktoken")
    assert set(_pyproject()) != set(env)


def test_python_requirement():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.10"
    assert project["scripts"]["gptcore"] == "gptcore.cli:main"


def test_readme_has_exactly_the_two_fresh_machine_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- fresh-machine -->\s*```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert block, "README needs the fenced block after <!-- fresh-machine -->"
    commands = [
        ln for ln in block.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    assert commands == ["make lab", "make test"]


def test_ci_runs_the_readme_test_command_and_pins_cpu_torch():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in makefile, "CI must install the local CPU wheel, never a CUDA build"


def test_import_has_no_side_effects():
    # Importing gptcore must not import torch, nbgrader or read any file.
    code = (
        "import sys, gptcore, gptcore.tokenizer, gptcore.data, gptcore.cli; "
        "heavy = [m for m in ('torch', 'nbgrader', 'matplotlib') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
