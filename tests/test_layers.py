"""The package's layers: ``sersic_runtime`` below ``simulate`` below ``fitnet``; the simulator
never loads the network or PyTorch; no module imports one that imports it back (function-level
imports included); ``--help`` loads none of the heavy libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sersic_runtime", "simulate", "fitnet")
COMMANDS = ("simulate", "simulate.examples", "fitnet.train", "fitnet.evaluate", "fitnet.calibrate",
            "fitnet.predict", "fitnet.baseline", "fitnet.pretrained", "fitnet.build", "fitnet.merge")  # fmt: skip
HEAVY = ("torch", "galsim", "astropy", "photutils", "matplotlib", "scipy")


def imported_modules(code: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(sorted(sys.modules))"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    return set(eval(result.stdout.strip().splitlines()[-1]))  # noqa: S307 - our own print


def test_the_simulator_loads_neither_the_network_nor_pytorch():
    modules = imported_modules("import simulate, simulate.pipeline, simulate.examples")
    assert not {m for m in modules if m.split(".")[0] in ("torch", "fitnet")}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_loads_no_heavy_library(command):
    code = (f"import runpy, sys, contextlib, io\nsys.argv = ['{command}', '--help']\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    runpy.run_module('{command}', run_name='__main__')")  # fmt: skip
    modules = imported_modules(code)
    assert not {m.split(".")[0] for m in modules} & set(HEAVY)


def project_imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its body (function level too)."""
    graph = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            is_package = parts[-1] == "__init__"
            graph[name] = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    base = resolve(name, is_package, node.module, node.level)
                    # ``from .x import y``: module x, or submodule x.y; a package's own __init__
                    # (which every submodule's import runs) is not an edge of its own
                    targets = [f"{base}.{a.name}" for a in node.names]
                    targets += [base] if node.module else []
                elif isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                else:
                    continue
                graph[name] |= {t for t in targets if t.split(".")[0] in PACKAGES}
    return {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}


def resolve(module: str, is_package: bool, target: str | None, level: int) -> str:
    if level == 0:
        return target or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def test_no_module_imports_one_that_imports_it_back():
    graph = project_imports()

    def reaches(start, goal, seen):
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, set()))
    assert not cycles, cycles


def test_the_runtime_is_below_both_packages_and_the_simulator_below_the_network():
    graph = project_imports()
    for module, targets in graph.items():
        tops = {t.split(".")[0] for t in targets}
        if module.startswith("sersic_runtime"):
            assert tops <= {"sersic_runtime"}, module
        if module.startswith("simulate"):
            assert "fitnet" not in tops, module


def test_the_packages_state_their_version():
    import fitnet
    import simulate

    assert fitnet.__version__ == simulate.__version__ == version("sersic-fitnet")
