"""graphc: a static-graph compiler for training neural networks on the CPU.

Trace numpy-style Python into a node/edge IR, append the backward pass as a graph pass,
plan memory, and lower the whole training step to LLVM-JIT code.
"""
import os as _os

# In a source checkout, passes/ and backends/ sit beside graphc/ (an install maps them to
# graphc.passes and graphc.backends).  When this package was imported from the checkout
# itself -- `python -m graphc` run in the repository root -- let the submodule search look
# there too, so the checkout behaves like the installed package.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if (not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "passes"))
        and _os.path.isfile(_os.path.join(_root, "passes", "__init__.py"))
        and _os.path.isfile(_os.path.join(_root, "pyproject.toml"))):
    __path__.append(_root)

from . import ir, nn, optim  # noqa: E402
from .api import grad, jit, jvp, trace, value_and_grad
from .checking import check_grads
from .functions import (abs, add, amax, amin, broadcast_to, cast, clip, concatenate, divide,
                        dot, equal, erf, exp, expand_dims, expm1, floor_divide, full,
                        getitem, greater, greater_equal, less, less_equal, log, log1p,
                        logical_and, logical_not, logical_or, logsumexp, matmul, max,
                        maximum, mean, min, minimum, mod, multiply, negative, not_equal,
                        one_hot, ones_like, power, reciprocal, relu, remainder, reshape,
                        sigmoid, sign, sqrt, square, squeeze, stack, stop_gradient,
                        subtract, sum, swapaxes, take, tanh, transpose, var, where,
                        zeros_like)
from .ir import (ArgumentError, ConfigError, DTypeError, GradCheckError, Graph, GraphcError,
                 RangeError, ShapeError, TraceError, VerifyError, bool_, float32, float64,
                 int32, int64)
from .step import CompiledStep, compile_step
from .tracing import Tracer

__version__ = "0.1.0"


def load_model(path, backend="llvm", threads=None):
    """A model saved by ``graphc train ... --save path``, callable on raw features:
    ``m = gc.load_model("model.npz"); m.predict(X)`` (see graphc.train.inference)."""
    from .train.inference import load_model as _load
    return _load(path, backend, threads)


def __getattr__(name):
    """``gc.data``, ``gc.train``, ``gc.models`` load on first use (they pull in
    scikit-learn's datasets and tqdm, which plain tracing does not need)."""
    if name in ("data", "train", "models"):
        import importlib
        return importlib.import_module(f"graphc.{name}")
    raise AttributeError(f"module 'graphc' has no attribute {name!r}")
