"""graphc.ir -- the node/edge IR, the op registry and the tools that read graphs.

Layer 1: imports nothing of graphc above it.
"""
from . import ops  # noqa: F401  (registers every op)
from .analysis import saved_activations, saved_bytes, storage_base, to_networkx
from .dot import to_dot
from .dtypes import as_dtype, bool_, float32, float64, int32, int64
from .emitter import Emitter
from .errors import (ArgumentError, ConfigError, DTypeError, GradCheckError, GraphcError,
                     RangeError, ShapeError, TraceError, VerifyError)
from .fingerprint import fingerprint
from .graph import Graph, Node, TensorType, Value
from .printer import format_graph
from .registry import all_ops, get_op, identity_ops, register, view_ops
from .verify import verify

__all__ = ["Graph", "Node", "Value", "TensorType", "Emitter", "verify", "format_graph",
           "to_dot", "to_networkx", "saved_activations", "saved_bytes", "storage_base", "all_ops", "get_op", "register",
           "view_ops", "identity_ops",
           "GraphcError", "ConfigError", "RangeError", "ShapeError", "DTypeError",
           "TraceError",
           "ArgumentError", "VerifyError", "GradCheckError", "fingerprint", "as_dtype",
           "float32", "float64", "int32", "int64", "bool_"]
