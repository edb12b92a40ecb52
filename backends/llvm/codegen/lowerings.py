"""The LLVM backend's lowering table: one entry per op in the registry.

Each entry says how the op is lowered:

* ``elementwise`` -- ``emit(b, node, *operands) -> value``: scalar IR for one element,
  called inside a loop nest (the loop vectorizer widens it).  Operands and results are
  in register form: float/double, i32/i64, and i1 for bool.
* ``view`` -- no code: the op changes how a buffer is indexed (strides, offset); see
  :mod:`.views`.  broadcast_to becomes stride 0, transpose a stride permutation
  (folded into the GEMM transpose flags when it feeds a matmul).
* ``reduce`` -- ``combine(b, dtype, acc, x)`` and the identity element.
* ``custom`` -- a kernel of its own: ``emit(codegen, b, kernel, ptrs, chunk)`` writes
  its loops (gathers, scatter-adds, random numbers: :mod:`.custom`; patches and pooling:
  :mod:`.window`).
* ``matmul`` / ``copy`` / ``source`` -- handled by the planner (GEMM kernels, copies into
  strided destinations, buffers and module constants).

A test asserts that ``missing_lowerings()`` is empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from llvmlite import ir

from . import mathfn

F32, F64 = ir.FloatType(), ir.DoubleType()
I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)


def reg_type(dtype) -> ir.Type:
    """The register type of one element of ``dtype`` (bool is i1 in registers)."""
    return {np.dtype(np.float32): F32, np.dtype(np.float64): F64,
            np.dtype(np.int32): I32, np.dtype(np.int64): I64,
            np.dtype(np.bool_): I1}[np.dtype(dtype)]


def mem_type(dtype) -> ir.Type:
    """The in-memory type of one element (bool is one byte, as in numpy)."""
    return I8 if np.dtype(dtype) == np.bool_ else reg_type(dtype)


def is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


@dataclass(frozen=True)
class Lowering:
    kind: str                      # elementwise | view | reduce | matmul | copy | source | custom
    emit: Callable | None = None   # elementwise: emit(b, node, *vals); reduce: combine;
    #                                custom: emit(codegen, b, kernel, ptrs, chunk)
    #: elementwise only, and required there (a test checks): whether ``emit`` is also
    #: valid IR on vector operands (register-tile epilogues, :mod:`.smallk`) -- True,
    #: False, or a predicate of the node (e.g. float dtypes only)
    vector: bool | Callable | None = None
    #: the ``llvm.<name>`` intrinsic a float lowering calls: vector code calls its
    #: vector form instead of ``emit``
    intrinsic: str | None = None
    #: custom only: ``chunks(kernel, threads)`` -> the fixed pieces the kernel is cut into
    chunks: Callable | None = None

    def vector_ok(self, node) -> bool:
        """Whether this node may be computed on vectors (see ``vector``)."""
        v = self.vector
        return bool(v(node) if callable(v) else v)


def _float_only(node) -> bool:
    return is_float(node.output.dtype)


def _same_dtype(node) -> bool:
    return np.dtype(node.inputs[0].dtype) == np.dtype(node.output.dtype)


def _const(t, v):
    return ir.Constant(t, v)


def _zero(t):
    return ir.Constant(t, 0.0 if isinstance(t, (ir.FloatType, ir.DoubleType)) else 0)


# ---- arithmetic -------------------------------------------------------------------------
def _arith(fop, iop):
    def emit(b, n, x, y):
        return getattr(b, fop)(x, y) if is_float(n.output.dtype) else getattr(b, iop)(x, y)
    return emit


def _div(b, n, x, y):
    if is_float(n.output.dtype):
        return b.fdiv(x, y)
    # numpy floor division; x // 0 == 0 and MIN // -1 wraps (no SIGFPE in either case)
    t = x.type
    zero, one, m1 = _const(t, 0), _const(t, 1), _const(t, -1)
    y0 = b.icmp_signed("==", y, zero)
    ym1 = b.icmp_signed("==", y, m1)
    ys = b.select(b.or_(y0, ym1), one, y)
    q = b.sdiv(x, ys)
    r = b.srem(x, ys)
    adj = b.and_(b.icmp_signed("!=", r, zero),
                 b.icmp_signed("<", b.xor(r, ys), zero))
    q = b.sub(q, b.zext(adj, t))
    q = b.select(ym1, b.sub(zero, x), q)
    return b.select(y0, zero, q)


def _npy_divmod(b, x, y):
    """numpy's float floor_divide and remainder (npy_divmod): fmod, the remainder moved to
    the divisor's sign, the quotient snapped to an integer; y == 0 gives x / y and
    fmod(x, 0) (inf or nan), as numpy."""
    t = x.type
    zero, one = _zero(t), _const(t, 1.0)
    mod = b.frem(x, y)
    div = b.fdiv(b.fsub(x, mod), y)
    mod_nz = b.fcmp_unordered("!=", mod, zero)                  # C's `if (mod)`: nan is true
    adj = b.and_(mod_nz, b.xor(b.fcmp_ordered("<", y, zero), b.fcmp_ordered("<", mod, zero)))
    mod = b.select(adj, b.fadd(mod, y), mod)
    div = b.select(adj, b.fsub(div, one), div)
    mod = b.select(mod_nz, mod, mathfn.intrinsic(b, "copysign", t, zero, y))
    fl = mathfn.intrinsic(b, "floor", t, div)
    fl = b.select(b.fcmp_ordered(">", b.fsub(div, fl), _const(t, 0.5)), b.fadd(fl, one), fl)
    q = b.fdiv(x, y)
    fl = b.select(b.fcmp_unordered("!=", div, zero), fl,
                  mathfn.intrinsic(b, "copysign", t, zero, q))
    y0 = b.fcmp_ordered("==", y, zero)
    return b.select(y0, q, fl), b.select(y0, b.frem(x, y), mod)


def _floor_divide(b, n, x, y):
    if is_float(n.output.dtype):
        return _npy_divmod(b, x, y)[0]
    return _div(b, n, x, y)


def _remainder(b, n, x, y):
    if is_float(n.output.dtype):
        return _npy_divmod(b, x, y)[1]
    # the sign of y; x % 0 == 0 and x % -1 == 0 (no SIGFPE, no undefined srem)
    t = x.type
    zero, one, m1 = _const(t, 0), _const(t, 1), _const(t, -1)
    y0 = b.icmp_signed("==", y, zero)
    ys = b.select(b.or_(y0, b.icmp_signed("==", y, m1)), one, y)
    r = b.srem(x, ys)
    adj = b.and_(b.icmp_signed("!=", r, zero), b.icmp_signed("<", b.xor(r, ys), zero))
    r = b.select(adj, b.add(r, ys), r)
    return b.select(y0, zero, r)


def _maxmin(which):
    def emit(b, n, x, y):
        if is_float(n.output.dtype):     # NaN-propagating, as numpy
            return mathfn.intrinsic(b, "maximum" if which == "max" else "minimum",
                                    x.type, x, y)
        c = b.icmp_signed(">=" if which == "max" else "<=", x, y)
        return b.select(c, x, y)
    return emit


def _neg(b, n, x):
    return b.fneg(x) if is_float(n.output.dtype) else b.sub(_zero(x.type), x)


def _relu(b, n, x):
    # numpy maximum(x, 0): NaN stays NaN, -0.0 stays -0.0
    if is_float(n.output.dtype):
        return b.select(b.fcmp_ordered("<", x, _zero(x.type)), _zero(x.type), x)
    return b.select(b.icmp_signed("<", x, _zero(x.type)), _zero(x.type), x)


def _abs(b, n, x):
    if is_float(n.output.dtype):
        return mathfn.intrinsic(b, "fabs", x.type, x)
    return b.select(b.icmp_signed("<", x, _zero(x.type)), b.sub(_zero(x.type), x), x)


def _sign(b, n, x):
    t = x.type
    if is_float(n.output.dtype):
        s = b.select(b.fcmp_ordered(">", x, _zero(t)), _const(t, 1.0),
                     b.select(b.fcmp_ordered("<", x, _zero(t)), _const(t, -1.0),
                              b.select(b.fcmp_ordered("==", x, _zero(t)), _zero(t), x)))
        return s
    return b.select(b.icmp_signed(">", x, _zero(t)), _const(t, 1),
                    b.select(b.icmp_signed("<", x, _zero(t)), _const(t, -1), _zero(t)))


_FCMP = {"lt": ("<", True), "le": ("<=", True), "gt": (">", True), "ge": (">=", True),
         "eq": ("==", True), "ne": ("!=", False)}


def _compare(name):
    op, ordered = _FCMP[name]

    def emit(b, n, x, y):
        dt = n.inputs[0].dtype
        if is_float(dt):
            return (b.fcmp_ordered if ordered else b.fcmp_unordered)(op, x, y)
        if dt == np.bool_:
            return b.icmp_unsigned(op, x, y)
        return b.icmp_signed(op, x, y)
    return emit


def _cast(b, n, x):
    src, dst = np.dtype(n.inputs[0].dtype), np.dtype(n.output.dtype)
    st, dt_ = x.type, reg_type(dst)
    if src == dst:
        return x
    if dst == np.bool_:
        return (b.fcmp_unordered("!=", x, _zero(st)) if is_float(src)
                else b.icmp_unsigned("!=", x, _zero(st)))
    if src == np.bool_:
        return b.uitofp(x, dt_) if is_float(dst) else b.zext(x, dt_)
    if is_float(src) and is_float(dst):
        return b.fpext(x, dt_) if dst.itemsize > src.itemsize else b.fptrunc(x, dt_)
    if is_float(src):  # saturating: NaN -> 0, out of range -> min/max (never poison)
        sfx = f"i{dt_.width}.{'f32' if st == F32 else 'f64'}"
        fn = b.module.globals.get(f"llvm.fptosi.sat.{sfx}") or ir.Function(
            b.module, ir.FunctionType(dt_, [st]), f"llvm.fptosi.sat.{sfx}")
        return b.call(fn, [x])
    if is_float(dst):
        return b.sitofp(x, dt_)
    return b.sext(x, dt_) if dt_.width > st.width else b.trunc(x, dt_)


def _unary_math(fn):
    return lambda b, n, x: fn(b, x)


#: op -> Lowering: the scalar emitter and whether it also works on vectors
ELEMENTWISE = {
    "add": Lowering("elementwise", _arith("fadd", "add"), vector=True),
    "sub": Lowering("elementwise", _arith("fsub", "sub"), vector=True),
    "mul": Lowering("elementwise", _arith("fmul", "mul"), vector=True),
    "div": Lowering("elementwise", _div, vector=_float_only),
    "floor_divide": Lowering("elementwise", _floor_divide, vector=False),
    "remainder": Lowering("elementwise", _remainder, vector=False),
    "pow": Lowering("elementwise", lambda b, n, x, y: mathfn.pow_(b, x, y), vector=False),
    "maximum": Lowering("elementwise", _maxmin("max"), vector=_float_only,
                        intrinsic="maximum"),
    "minimum": Lowering("elementwise", _maxmin("min"), vector=_float_only,
                        intrinsic="minimum"),
    "neg": Lowering("elementwise", _neg, vector=True),
    "exp": Lowering("elementwise", _unary_math(mathfn.exp), vector=False),
    "log": Lowering("elementwise", _unary_math(mathfn.log), vector=False),
    "log1p": Lowering("elementwise", _unary_math(mathfn.log1p), vector=False),
    "tanh": Lowering("elementwise", _unary_math(mathfn.tanh), vector=False),
    "erf": Lowering("elementwise", _unary_math(mathfn.erf), vector=False),
    "sigmoid": Lowering("elementwise", _unary_math(mathfn.sigmoid), vector=False),
    "relu": Lowering("elementwise", _relu, vector=True),
    "sqrt": Lowering("elementwise", lambda b, n, x: mathfn.intrinsic(b, "sqrt", x.type, x),
                     vector=_float_only, intrinsic="sqrt"),
    "abs": Lowering("elementwise", _abs, vector=_float_only, intrinsic="fabs"),
    "sign": Lowering("elementwise", _sign, vector=_float_only),
    **{c: Lowering("elementwise", _compare(c), vector=True) for c in _FCMP},
    "logical_and": Lowering("elementwise", lambda b, n, x, y: b.and_(x, y), vector=True),
    "logical_or": Lowering("elementwise", lambda b, n, x, y: b.or_(x, y), vector=True),
    "logical_not": Lowering("elementwise", lambda b, n, x: b.xor(x, _const(I1, 1)),
                            vector=False),
    "where": Lowering("elementwise", lambda b, n, c, x, y: b.select(c, x, y), vector=True),
    "cast": Lowering("elementwise", _cast, vector=_same_dtype),
    "stop_gradient": Lowering("elementwise", lambda b, n, x: x, vector=True),
    # the range itself is checked before the call (graphc.backends.guard strips these
    # nodes in compile); lowered as the identity for lower()/assembly() of a raw graph
    "check_index": Lowering("elementwise", lambda b, n, x: x, vector=True),
}


# ---- reductions -----------------------------------------------------------------------------
def _sum_combine(b, dtype, acc, x):
    return b.fadd(acc, x) if is_float(dtype) else b.add(acc, x)


def _max_combine(b, dtype, acc, x):
    if is_float(dtype):
        return mathfn.intrinsic(b, "maximum", acc.type, acc, x)
    return b.select(b.icmp_signed(">=", acc, x), acc, x)


def reduce_identity(op, dtype):
    dtype = np.dtype(dtype)
    if op == "sum":
        return 0.0 if is_float(dtype) else 0
    if is_float(dtype):
        return float("-inf")
    return int(np.iinfo(dtype).min)


LOWERINGS: dict[str, Lowering] = {
    **ELEMENTWISE,
    "sum": Lowering("reduce", _sum_combine),
    "max": Lowering("reduce", _max_combine),
    "reshape": Lowering("view"),
    "transpose": Lowering("view"),
    "broadcast_to": Lowering("view"),
    "slice": Lowering("view"),
    "unslice": Lowering("copy"),
    "concatenate": Lowering("copy"),
    "matmul": Lowering("matmul"),
    "constant": Lowering("source"),
    "input": Lowering("source"),
}


#: ops with a kernel of their own, by the code-generator module that writes it -- its
#: ``KERNELS`` table, op -> (emit, chunks) -- imported the first time a graph has such a
#: kernel (an MLP never loads the gather, window or attention code generators):
#: gathers and random numbers (custom.py), patches and pooling (window.py), fused
#: attention (attention.py).  A test checks each module's table against this list.
CUSTOM_MODULES = {
    "custom": ("take", "take_add", "philox_uniform"),
    "window": ("im2col", "col2im", "avg_pool2d", "avg_pool2d_grad", "max_pool2d",
               "max_pool2d_select", "max_pool2d_grad"),
    "attention": ("sdpa", "sdpa_grad"),
}


def custom_kernels(module: str) -> dict:
    """The ``KERNELS`` table (op -> (emit, chunks)) of ``codegen/<module>.py``."""
    import importlib
    return importlib.import_module(f"{__package__}.{module}").KERNELS


def _deferred(module: str, op: str) -> Lowering:
    """The ``custom`` entry of ``op``: its emit and chunks functions, looked up in
    ``module``'s table (imported then) when first called."""
    def emit(*args):
        return custom_kernels(module)[op][0](*args)

    def chunks(*args):
        return custom_kernels(module)[op][1](*args)
    return Lowering("custom", emit, chunks=chunks)


LOWERINGS.update({op: _deferred(module, op) for module, ops in CUSTOM_MODULES.items()
                  for op in ops})


def missing_lowerings() -> list[str]:
    from graphc.ir import all_ops
    return [name for name in all_ops() if name not in LOWERINGS]
