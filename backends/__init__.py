"""graphc.backends -- executors of the IR.

``numpy``: the reference interpreter (every op; the oracle for every other backend).
``llvm``: the whole graph lowered to one JIT-compiled native function.
"""
import importlib

_BACKENDS = {"numpy": "graphc.backends.numpy_backend", "llvm": "graphc.backends.llvm"}


def get_backend(name: str):
    """The backend module ``name``; each has ``compile(graph, **options) -> callable``."""
    from graphc.ir import GraphcError
    if name not in _BACKENDS:
        raise GraphcError(f"unknown backend {name!r}; choose one of {sorted(_BACKENDS)}")
    return importlib.import_module(_BACKENDS[name])
