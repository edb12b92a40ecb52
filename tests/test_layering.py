"""Import layering, checked statically (AST scan; nothing is imported):

  graphc.ir  <  graphc tracing  <  graphc.passes  <  graphc.backends  <  API, nn, optim, cli

- graphc/ir imports nothing of graphc above the IR;
- passes/ never imports a backend;
- backends/ never imports the user-facing layer (api, nn, optim, data, cli, ...).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Source directory -> the dotted package it is installed as.
PACKAGES = {"graphc": "graphc", "passes": "graphc.passes", "backends": "graphc.backends"}


def module_name(path: Path) -> tuple[str, bool]:
    top = path.relative_to(ROOT).parts[0]
    rel = path.relative_to(ROOT / top).with_suffix("")
    parts = [p for p in rel.parts]
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join([PACKAGES[top], *parts]), is_pkg


def imports_of(path: Path, text: str | None = None) -> list[tuple[str, int]]:
    """Absolute names of every graphc module ``path`` imports (relative imports resolved)."""
    mod, is_pkg = module_name(path)
    package = mod if is_pkg else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            # `from pkg import x` may import the submodule pkg.x
            out += [(f"{target}.{a.name}", node.lineno) for a in node.names]
    return [(name, line) for name, line in out if name.split(".")[0] == "graphc"]


def sources(top: str, sub: str = "") -> list[Path]:
    base = ROOT / top / sub if sub else ROOT / top
    return sorted(base.rglob("*.py"))


def violations(files, forbidden) -> list[str]:
    bad = []
    for f in files:
        for name, line in imports_of(f):
            if any(name == p or name.startswith(p + ".") for p in forbidden):
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {name}")
    return bad


def test_module_name_mapping():
    assert module_name(ROOT / "passes" / "autodiff.py") == ("graphc.passes.autodiff", False)
    assert module_name(ROOT / "graphc" / "ir" / "__init__.py") == ("graphc.ir", True)


def test_ir_imports_nothing_above_it():
    files = sources("graphc", "ir")
    assert files
    bad = []
    for f in files:
        for name, line in imports_of(f):
            if not (name == "graphc.ir" or name.startswith("graphc.ir.")):
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, "graphc.ir must import nothing of graphc above it:\n" + "\n".join(bad)


def test_passes_never_import_backends():
    files = sources("passes")
    assert files
    bad = violations(files, ["graphc.backends", "graphc.api", "graphc.nn", "graphc.cli",
                             "graphc.optim", "graphc.data", "graphc.step"])
    assert not bad, "a pass never imports a backend or the API:\n" + "\n".join(bad)


def test_backends_never_import_the_user_facing_layer():
    files = sources("backends")
    assert files
    bad = violations(files, ["graphc.api", "graphc.nn", "graphc.cli", "graphc.optim",
                             "graphc.data", "graphc.step", "graphc.distributed"])
    assert not bad, "backends sit below the API layer:\n" + "\n".join(bad)


@pytest.mark.parametrize("path,forbidden", [
    ("graphc/tracing.py", ["graphc.passes", "graphc.backends", "graphc.api"]),
    ("graphc/functions.py", ["graphc.passes", "graphc.backends", "graphc.api"]),
    ("graphc/pytree.py", ["graphc.passes", "graphc.backends", "graphc.api"]),
])
def test_tracing_layer_is_below_passes(path, forbidden):
    assert not violations([ROOT / path], forbidden)


def test_scanner_catches_violations():
    probe = ROOT / "graphc" / "ir" / "_probe.py"
    text = "from ..api import grad\nimport graphc.backends.numpy_backend\nfrom . import graph\n"
    names = [n for n, _ in imports_of(probe, text)]
    assert "graphc.api" in names and "graphc.backends.numpy_backend" in names
    assert "graphc.ir.graph" in names
    init = ROOT / "passes" / "__init__.py"
    assert ("graphc.backends", 1) in imports_of(init, "from ..backends import llvm\n")
