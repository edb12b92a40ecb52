"""Elementwise ops: same-shape operands (the tracer inserts explicit broadcast_to/cast).

Each entry: shape rule, VJP (cotangent g -> one cotangent per input), JVP
(tangents -> output tangent), written with IR ops through the Emitter ``E``.
"""
from .. import dtypes as dt
from ..errors import DTypeError
from ..graph import TensorType
from ..registry import register
from ._rules import need_float, need_numeric, same_type, size


def _flops(attrs, out, *ins):
    return size(out.shape)


def _unary(name, vjp, jvp, float_only=True, linear=False, doc=""):
    def infer(attrs, x):
        (need_float if float_only else need_numeric)(name, x)
        return x
    register(name, "elementwise", infer, vjp, jvp, linear=linear, flops=_flops, doc=doc)


def _binary(name, vjp, jvp, linear=False, doc=""):
    def infer(attrs, x, y):
        t = same_type(name, x, y)
        need_numeric(name, t)
        return t
    register(name, "elementwise", infer, vjp, jvp, linear=linear, flops=_flops, doc=doc)


def _compare(name, doc):
    def infer(attrs, x, y):
        t = same_type(name, x, y)
        return TensorType(t.shape, dt.bool_)
    register(name, "elementwise", infer, None, None, flops=_flops, doc=doc)


# ---- arithmetic ---------------------------------------------------------------------------
_binary("add", lambda E, n, g: [g, g],
        lambda E, n, t: E.add_maybe(t[0], t[1]), linear=True, doc="x + y")
_binary("sub", lambda E, n, g: [g, E.neg(g)],
        lambda E, n, t: t[0] if t[1] is None else (E.neg(t[1]) if t[0] is None
                                                    else E.sub(t[0], t[1])),
        linear=True, doc="x - y")
_binary("mul", lambda E, n, g: [E.mul(g, n.inputs[1]), E.mul(g, n.inputs[0])],
        lambda E, n, t: E.add_maybe(t[0] and E.mul(t[0], n.inputs[1]),
                                    t[1] and E.mul(n.inputs[0], t[1])), doc="x * y")


def _div_vjp(E, n, g):
    x, y = n.inputs
    gx = E.div(g, y)
    return [gx, E.neg(E.mul(gx, n.output))]          # d(x/y)/dy = -(x/y)/y


def _div_jvp(E, n, t):
    x, y = n.inputs
    a = t[0] and E.div(t[0], y)
    b = t[1] and E.neg(E.div(E.mul(t[1], n.output), y))
    return E.add_maybe(a, b)


_binary("div", _div_vjp, _div_jvp, doc="x / y (true division; floats)")


# numpy's floor_divide and remainder (Python's // and %): piecewise constant / linear, so
# x // y has a zero derivative and d(x % y) = dx - dy * (x // y).
register("floor_divide", "elementwise",
         lambda attrs, x, y: (need_numeric("floor_divide", same_type("floor_divide", x, y)),
                              x)[1],
         None, None, flops=_flops, doc="x // y (numpy floor_divide; int x // 0 == 0)")


def _rem_vjp(E, n, g):
    x, y = n.inputs
    return [g, E.neg(E.mul(g, E.floor_divide(x, y)))]


def _rem_jvp(E, n, t):
    x, y = n.inputs
    return E.add_maybe(t[0], t[1] and E.neg(E.mul(t[1], E.floor_divide(x, y))))


_binary("remainder", _rem_vjp, _rem_jvp, doc="x % y (numpy remainder: the sign of y)")


def _pow_partials(E, n, which):
    """d(x**y)/dx = y*x**(y-1); d(x**y)/dy = x**y*log(x) (0 where x <= 0)."""
    x, y = n.inputs
    if which == 0:
        return E.mul(y, E.pow(x, E.sub(y, E.full_like(y, 1))))
    pos = E.gt(x, E.zeros_like(x))
    safe = E.where(pos, x, E.full_like(x, 1))
    return E.where(pos, E.mul(n.output, E.log(safe)), E.zeros_like(x))


def _pow_vjp(E, n, g):
    # The autodiff pass prunes cotangents nobody reads, so x**3 keeps no log branch.
    return [E.mul(g, _pow_partials(E, n, 0)), E.mul(g, _pow_partials(E, n, 1))]


def _pow_jvp(E, n, t):
    a = t[0] and E.mul(t[0], _pow_partials(E, n, 0))
    b = t[1] and E.mul(t[1], _pow_partials(E, n, 1))
    return E.add_maybe(a, b)


register("pow", "elementwise",
         lambda attrs, x, y: (need_float("pow", same_type("pow", x, y)), x)[1],
         _pow_vjp, _pow_jvp, flops=_flops, doc="x ** y (floats)")


def _max_min(name, cmp):
    def vjp(E, n, g):
        x, y = n.inputs
        m = getattr(E, cmp)(x, y)                      # ties go to x
        z = E.zeros_like(g)
        return [E.where(m, g, z), E.where(m, z, g)]

    def jvp(E, n, t):
        x, y = n.inputs
        m = getattr(E, cmp)(x, y)
        tx = t[0] if t[0] is not None else E.zeros_like(x)
        ty = t[1] if t[1] is not None else E.zeros_like(y)
        return E.where(m, tx, ty)
    _binary(name, vjp, jvp, doc=f"elementwise {name}")


_max_min("maximum", "ge")
_max_min("minimum", "le")

_unary("neg", lambda E, n, g: [E.neg(g)], lambda E, n, t: E.neg(t[0]),
       float_only=False, linear=True, doc="-x")
_unary("exp", lambda E, n, g: [E.mul(g, n.output)],
       lambda E, n, t: E.mul(t[0], n.output), doc="e**x")
_unary("log", lambda E, n, g: [E.div(g, n.inputs[0])],
       lambda E, n, t: E.div(t[0], n.inputs[0]), doc="natural log")
_unary("log1p", lambda E, n, g: [E.div(g, E.add(n.inputs[0], E.full_like(n.inputs[0], 1)))],
       lambda E, n, t: E.div(t[0], E.add(n.inputs[0], E.full_like(n.inputs[0], 1))),
       doc="log(1 + x), accurate near 0")


def _dtanh(E, n):
    y = n.output
    return E.sub(E.full_like(y, 1), E.mul(y, y))


_unary("tanh", lambda E, n, g: [E.mul(g, _dtanh(E, n))],
       lambda E, n, t: E.mul(t[0], _dtanh(E, n)), doc="hyperbolic tangent")


def _dsigmoid(E, n):
    y = n.output
    return E.mul(y, E.sub(E.full_like(y, 1), y))


_unary("sigmoid", lambda E, n, g: [E.mul(g, _dsigmoid(E, n))],
       lambda E, n, t: E.mul(t[0], _dsigmoid(E, n)), doc="1 / (1 + e**-x), stable")


def _relu_mask(E, n):
    # Read the output, not the input: x > 0 iff relu(x) > 0, and the backward pass then
    # keeps one activation alive instead of two.
    y = n.output
    return E.gt(y, E.zeros_like(y))


_unary("relu", lambda E, n, g: [E.where(_relu_mask(E, n), g, E.zeros_like(g))],
       lambda E, n, t: E.where(_relu_mask(E, n), t[0], E.zeros_like(t[0])),
       float_only=False, doc="max(x, 0)")


def _dsqrt(E, n, g):
    y = n.output
    return E.div(g, E.mul(E.full_like(y, 2), y))


_unary("sqrt", lambda E, n, g: [_dsqrt(E, n, g)], lambda E, n, t: _dsqrt(E, n, t[0]),
       doc="square root")
def _derf(E, n, g):
    """d erf(x)/dx = 2/sqrt(pi) * exp(-x**2)."""
    x = n.inputs[0]
    return E.mul(g, E.mul(E.full_like(x, 1.1283791670955126), E.exp(E.neg(E.mul(x, x)))))


_unary("erf", lambda E, n, g: [_derf(E, n, g)], lambda E, n, t: _derf(E, n, t[0]),
       doc="the error function (float32: within a few ulp)")

_unary("abs", lambda E, n, g: [E.mul(g, E.sign(n.inputs[0]))],
       lambda E, n, t: E.mul(t[0], E.sign(n.inputs[0])), float_only=False, doc="|x|")
_unary("sign", None, None, float_only=False, doc="-1, 0 or 1 (zero derivative)")


# ---- comparisons, selection, casts -----------------------------------------------------------
for _name, _doc in [("lt", "x < y"), ("le", "x <= y"), ("gt", "x > y"), ("ge", "x >= y"),
                    ("eq", "x == y"), ("ne", "x != y")]:
    _compare(_name, _doc)


def _logic_infer(name):
    def infer(attrs, *ts):
        t = same_type(name, *ts)
        if t.dtype != dt.bool_:
            raise DTypeError(f"{name} needs bool operands, got {t.dtype}")
        return t
    return infer


register("logical_and", "elementwise", _logic_infer("logical_and"), flops=_flops, doc="a & b")
register("logical_or", "elementwise", _logic_infer("logical_or"), flops=_flops, doc="a | b")
register("logical_not", "elementwise", _logic_infer("logical_not"), flops=_flops, doc="~a")


def _where_infer(attrs, c, x, y):
    t = same_type("where", x, y)
    if c.dtype != dt.bool_:
        raise DTypeError(f"where: condition must be bool, got {c.dtype}")
    same_type("where", TensorType(c.shape, t.dtype), t)
    return t


def _where_vjp(E, n, g):
    c = n.inputs[0]
    z = E.zeros_like(g)
    return [None, E.where(c, g, z), E.where(c, z, g)]


def _where_jvp(E, n, t):
    c, x, y = n.inputs
    if t[1] is None and t[2] is None:
        return None
    tx = t[1] if t[1] is not None else E.zeros_like(x)
    ty = t[2] if t[2] is not None else E.zeros_like(y)
    return E.where(c, tx, ty)


register("where", "elementwise", _where_infer, _where_vjp, _where_jvp, linear=True,
         flops=_flops, doc="c ? x : y")


def _cast_check(attrs, ins):
    return {"dtype": dt.as_dtype(attrs["dtype"])}


def _cast_vjp(E, n, g):
    x = n.inputs[0]
    if not dt.is_float(x.dtype):
        return [None]
    return [E.cast(g, dtype=x.dtype)]


def _cast_jvp(E, n, t):
    if not dt.is_float(n.output.dtype):
        return None
    return E.cast(t[0], dtype=n.output.dtype)


register("cast", "elementwise", lambda attrs, x: TensorType(x.shape, attrs["dtype"]),
         _cast_vjp, _cast_jvp, check=_cast_check, linear=True, flops=_flops,
         doc="convert dtype (float->int truncates toward zero)")

register("stop_gradient", "elementwise", lambda attrs, x: x, None, None, flops=_flops,
         doc="identity whose derivative is zero", identity=True)
