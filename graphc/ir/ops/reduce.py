"""Reductions over ``axes`` (a sorted tuple) with ``keepdims``."""
from ..errors import ShapeError
from ..graph import TensorType
from ..registry import register
from ._rules import need_numeric, norm_axes, size


def _check(name):
    def check(attrs, ins):
        return {"axes": norm_axes(name, attrs.get("axes"), len(ins[0].shape)),
                "keepdims": bool(attrs.get("keepdims", False))}
    return check


def _infer(name):
    def infer(attrs, x):
        need_numeric(name, x)
        axes, keep = attrs["axes"], attrs["keepdims"]
        if name == "max" and any(x.shape[a] == 0 for a in axes):
            raise ShapeError(f"max over an empty axis (axes {axes} of shape {x.shape}) has "
                             "no value (numpy raises too)")
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)
                      if keep or i not in axes)
        return TensorType(shape, x.dtype)
    return infer


def kept_shape(n):
    """The output shape with reduced axes kept as 1 (to broadcast back over the input)."""
    x = n.inputs[0]
    return tuple(1 if i in n.attrs["axes"] else d for i, d in enumerate(x.shape))


def spread(E, n, v):
    """Broadcast a reduced value back to the input's shape."""
    return E.broadcast(E.reshape(v, kept_shape(n)), n.inputs[0].shape)


def _flops(attrs, out, x):
    return size(x.shape)


register("sum", "reduce", _infer("sum"),
         lambda E, n, g: [spread(E, n, g)],
         lambda E, n, t: E.sum(t[0], axes=n.attrs["axes"], keepdims=n.attrs["keepdims"]),
         check=_check("sum"), linear=True, flops=_flops, doc="sum over axes")


def _argmax_mask(E, n):
    """Where x attains its max, as a float weight that splits ties evenly."""
    x = n.inputs[0]
    hit = E.cast(E.eq(x, spread(E, n, n.output)), dtype=x.dtype)
    count = E.sum(hit, axes=n.attrs["axes"], keepdims=True)
    return E.div(hit, E.broadcast(count, x.shape))


def _max_jvp(E, n, t):
    w = _argmax_mask(E, n)
    return E.sum(E.mul(w, t[0]), axes=n.attrs["axes"], keepdims=n.attrs["keepdims"])


register("max", "reduce", _infer("max"),
         lambda E, n, g: [E.mul(spread(E, n, g), _argmax_mask(E, n))], _max_jvp,
         check=_check("max"), flops=_flops, doc="max over axes (ties share the gradient)")
