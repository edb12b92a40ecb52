"""Import layering, checked statically (AST scan; nothing is imported).

An allow-list: every module belongs to one layer (``LAYERS``, bottom first) and may import
exactly the layers ``ALLOWED`` names for its own -- anything else fails, including a
module no layer claims.  Plus: no import cycle between modules anywhere in the package.
Imports under ``if TYPE_CHECKING:`` are annotations only and are not counted; a module
importing its own ancestor package (``from . import x`` names the package too) is
namespace access, not an edge.
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


def _runtime_nodes(tree):
    """Every AST node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(path: Path, text: str | None = None) -> list[tuple[str, int]]:
    """Absolute names of every graphc module ``path`` imports (relative imports resolved)."""
    mod, is_pkg = module_name(path)
    package = mod if is_pkg else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    out = []
    for node in _runtime_nodes(tree):
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


def all_sources() -> list[Path]:
    return sources("graphc") + sources("passes") + sources("backends")


#: layers, bottom first: module-name prefixes
LAYERS = {
    "base": ["graphc.source", "graphc.pytree", "graphc.gcpause"],
    "ir": ["graphc.ir"],
    "tracing": ["graphc.symbolic", "graphc.functions", "graphc.tracing"],
    "passes": ["graphc.passes"],
    "backends": ["graphc.backends"],
    "api": ["graphc.api", "graphc.step", "graphc.livetree", "graphc.checking", "graphc.optim",
            "graphc.schedules"],
    "library": ["graphc.nn", "graphc.data", "graphc.models", "graphc.lm"],
    "apps": ["graphc.train", "graphc.distributed", "graphc.cli", "graphc.__main__",
             "graphc"],           # the package itself (exactly: not its submodules)
}
#: what each layer may import (its own layer included explicitly)
ALLOWED = {
    "base": {"base"},
    "ir": {"ir"},
    "tracing": {"base", "ir", "tracing"},
    "passes": {"ir", "passes"},
    "backends": {"base", "ir", "passes", "backends"},
    "api": {"base", "ir", "tracing", "passes", "backends", "api"},
    "library": {"base", "ir", "tracing", "passes", "api", "library"},
    "apps": set(LAYERS),
}
#: single modules allowed beyond their layer, and why
EXCEPTIONS = {
    # eager array functions run the oracle's own implementation of each op (no copy);
    # numpy_backend itself imports only graphc.ir (test below)
    ("graphc.functions.operands", "graphc.backends.numpy_backend"),
}


def layer_of(mod: str) -> str | None:
    best = None
    for layer, prefixes in LAYERS.items():
        for p in prefixes:
            inside = mod == p or (p != "graphc" and mod.startswith(p + "."))
            if inside and (best is None or len(p) > best[1]):
                best = (layer, len(p))
    return best and best[0]


def _is_ancestor(pkg: str, mod: str) -> bool:
    return mod.startswith(pkg + ".")


def violations(files, allowed=ALLOWED) -> list[str]:
    bad = []
    for f in files:
        mod = module_name(f)[0]
        layer = layer_of(mod)
        if layer is None:
            bad.append(f"{f.relative_to(ROOT)}: module {mod} belongs to no layer")
            continue
        for name, line in imports_of(f):
            if _is_ancestor(name, mod) or (mod, name) in EXCEPTIONS or \
                    any((mod, e) in EXCEPTIONS and name.startswith(e + ".") for _, e in EXCEPTIONS):
                continue
            target = layer_of(name)
            if target not in allowed[layer]:
                bad.append(f"{f.relative_to(ROOT)}:{line} ({layer}) imports {name} ({target})")
    return bad


def test_module_name_mapping():
    assert module_name(ROOT / "passes" / "autodiff.py") == ("graphc.passes.autodiff", False)
    assert module_name(ROOT / "graphc" / "ir" / "__init__.py") == ("graphc.ir", True)


def test_every_import_is_allowed():
    bad = violations(all_sources())
    assert not bad, "imports outside the allow-list:\n" + "\n".join(bad)


def test_numpy_backend_depends_on_nothing_above_the_backends():
    """The exception above adds no upward dependency: everything numpy_backend imports,
    transitively, is in the IR, passes or backends layers."""
    graph = _module_graph(all_sources())
    seen, stack = set(), ["graphc.backends.numpy_backend"]
    while stack:
        m = stack.pop()
        if m not in seen:
            seen.add(m)
            stack.extend(graph.get(m, ()))
    above = sorted(m for m in seen if layer_of(m) not in ("ir", "passes", "backends"))
    assert not above, above


def _module_graph(files) -> dict:
    mods = {module_name(f)[0]: f for f in files}
    graph = {}
    for m, f in mods.items():
        deps = set()
        for name, _ in imports_of(f):
            parts = name.split(".")
            for k in range(len(parts), 0, -1):
                cand = ".".join(parts[:k])
                if cand in mods:
                    if cand != m and not _is_ancestor(cand, m):
                        deps.add(cand)
                    break
        graph[m] = deps
    return graph


def cycles(graph: dict) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycles():
    found = cycles(_module_graph(all_sources()))
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


# ---- tests of the test -------------------------------------------------------------------------
@pytest.mark.parametrize("path,text", [
    ("backends/llvm/_probe.py", "from graphc.api import jit\n"),
    ("backends/llvm/_probe.py", "from graphc.train import loop\n"),
    ("backends/llvm/_probe.py", "from graphc.tracing import Tracer\n"),
    ("passes/_probe.py", "from graphc.models import builtin\n"),
    ("graphc/ir/_probe.py", "from ..passes import fusion\n"),
    ("graphc/_probe_unknown.py", "import numpy\n"),
])
def test_probe_imports_are_caught(path, text, tmp_path, monkeypatch):
    probe = ROOT / path
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: text if self == probe
                        else Path.read_bytes(self).decode())
    assert violations([probe]), f"{path}: {text.strip()} passed the allow-list"


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_type_checking_imports_are_not_edges():
    probe = ROOT / "graphc" / "ir" / "_probe.py"
    text = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from graphc.api import x\n"
    assert [n for n, _ in imports_of(probe, text)] == []


def test_scanner_catches_violations():
    probe = ROOT / "graphc" / "ir" / "_probe.py"
    text = "from ..api import grad\nimport graphc.backends.numpy_backend\nfrom . import graph\n"
    names = [n for n, _ in imports_of(probe, text)]
    assert "graphc.api" in names and "graphc.backends.numpy_backend" in names
    assert "graphc.ir.graph" in names
    init = ROOT / "passes" / "__init__.py"
    assert ("graphc.backends", 1) in imports_of(init, "from ..backends import llvm\n")
