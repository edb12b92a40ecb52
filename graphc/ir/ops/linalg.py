"""matmul: ``[..., M, K] @ [..., K, N]`` with equal batch dims (the tracer broadcasts them)."""
from ..errors import ShapeError
from ..graph import TensorType
from ..registry import register
from ._rules import need_float, same_type, size


def _infer(attrs, a, b):
    need_float("matmul", a)
    same_type("matmul", TensorType((), a.dtype), TensorType((), b.dtype))
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise ShapeError(f"matmul: operands must be at least 2-d, got {a.shape} and {b.shape}")
    if a.shape[:-2] != b.shape[:-2]:
        raise ShapeError(f"matmul: batch dims {a.shape[:-2]} and {b.shape[:-2]} differ")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul: contraction dims differ: {a.shape} @ {b.shape} "
                         f"({a.shape[-1]} != {b.shape[-2]})")
    return TensorType(a.shape[:-1] + b.shape[-1:], a.dtype)


def swap_last(E, x):
    """x with its last two axes swapped (a transpose node the LLVM backend folds into GEMM)."""
    perm = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return E.transpose(x, perm=perm)


def _vjp(E, n, g):
    a, b = n.inputs
    return [E.matmul(g, swap_last(E, b)), E.matmul(swap_last(E, a), g)]


def _jvp(E, n, t):
    a, b = n.inputs
    return E.add_maybe(t[0] and E.matmul(t[0], b), t[1] and E.matmul(a, t[1]))


def _flops(attrs, out, a, b):
    return 2 * size(out.shape) * a.shape[-1]


register("matmul", "matmul", _infer, _vjp, _jvp, flops=_flops, doc="batched matrix product")
