"""Ops that move data without arithmetic: reshape, transpose, broadcast, slicing, concat."""
from ..errors import ShapeError
from ..graph import TensorType
from ..registry import register
from ._rules import same_type, size


def _flops0(attrs, out, *ins):
    return 0


def _reshape_check(attrs, ins):
    shape = tuple(int(d) for d in attrs["shape"])
    if size(shape) != size(ins[0].shape) or any(d < 0 for d in shape):
        raise ShapeError(f"reshape: cannot reshape {ins[0].shape} to {shape}")
    return {"shape": shape}


register("reshape", "shape", lambda attrs, x: TensorType(attrs["shape"], x.dtype),
         lambda E, n, g: [E.reshape(g, n.inputs[0].shape)],
         lambda E, n, t: E.reshape(t[0], n.attrs["shape"]),
         check=_reshape_check, linear=True, flops=_flops0, doc="same elements, new shape",
         view="reshape")


def _transpose_check(attrs, ins):
    nd = len(ins[0].shape)
    perm = attrs.get("perm")
    perm = tuple(reversed(range(nd))) if perm is None else tuple(int(p) % nd if nd else 0
                                                                  for p in perm)
    if sorted(perm) != list(range(nd)):
        raise ShapeError(f"transpose: {attrs.get('perm')} is not a permutation of {nd} axes")
    return {"perm": perm}


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


register("transpose", "shape",
         lambda attrs, x: TensorType(tuple(x.shape[p] for p in attrs["perm"]), x.dtype),
         lambda E, n, g: [E.transpose(g, perm=_inverse(n.attrs["perm"]))],
         lambda E, n, t: E.transpose(t[0], perm=n.attrs["perm"]),
         check=_transpose_check, linear=True, flops=_flops0, doc="permute axes",
         view="permute")


def broadcast_shapes(*shapes):
    """numpy's broadcasting rule, with a ShapeError naming both shapes."""
    nd = max(len(s) for s in shapes)
    out = []
    for i in range(nd):
        dims = {s[i - nd + len(s)] for s in shapes if i - nd + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ShapeError("shapes " + " and ".join(str(tuple(s)) for s in shapes)
                             + " cannot be broadcast together")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _bcast_check(attrs, ins):
    shape = tuple(int(d) for d in attrs["shape"])
    x = ins[0].shape
    if len(x) > len(shape) or broadcast_shapes(x, shape) != shape:
        raise ShapeError(f"broadcast_to: cannot broadcast {x} to {shape}")
    return {"shape": shape}


register("broadcast_to", "shape", lambda attrs, x: TensorType(attrs["shape"], x.dtype),
         lambda E, n, g: [E.sum_to(g, n.inputs[0].shape)],
         lambda E, n, t: E.broadcast_to(t[0], shape=n.attrs["shape"]),
         check=_bcast_check, linear=True, flops=_flops0, doc="numpy broadcast (a view)",
         view="broadcast")


def _slice_shape(starts, stops, steps):
    return tuple(max(0, -(-(b - a) // s)) for a, b, s in zip(starts, stops, steps))


def _norm_slice(op, attrs, shape):
    nd = len(shape)
    starts, stops, steps = (tuple(int(v) for v in attrs[k]) for k in ("starts", "stops", "steps"))
    if not len(starts) == len(stops) == len(steps) == nd:
        raise ShapeError(f"{op}: need one start/stop/step per axis of {shape}")
    for a, b, s, d in zip(starts, stops, steps, shape):
        if s <= 0 or not (0 <= a <= d) or not (0 <= b <= d):
            raise ShapeError(f"{op}: bad slice {a}:{b}:{s} of an axis of size {d}")
    return {"starts": starts, "stops": stops, "steps": steps}


def _slice_check(attrs, ins):
    return _norm_slice("slice", attrs, ins[0].shape)


def _unslice_check(attrs, ins):
    shape = tuple(int(d) for d in attrs["shape"])
    out = _norm_slice("unslice", attrs, shape)
    want = _slice_shape(out["starts"], out["stops"], out["steps"])
    if want != ins[0].shape:
        raise ShapeError(f"unslice: operand {ins[0].shape} does not fill the slice {want}")
    return {"shape": shape, **out}


def _slice_attrs(n):
    return {k: n.attrs[k] for k in ("starts", "stops", "steps")}


register("slice", "shape",
         lambda attrs, x: TensorType(_slice_shape(attrs["starts"], attrs["stops"],
                                                  attrs["steps"]), x.dtype),
         lambda E, n, g: [E.unslice(g, shape=n.inputs[0].shape, **_slice_attrs(n))],
         lambda E, n, t: E.slice(t[0], **_slice_attrs(n)),
         check=_slice_check, linear=True, flops=_flops0, doc="x[a:b:s, ...] (steps > 0)",
         view="window")
register("unslice", "shape", lambda attrs, g: TensorType(attrs["shape"], g.dtype),
         lambda E, n, g: [E.slice(g, **_slice_attrs(n))],
         lambda E, n, t: E.unslice(t[0], shape=n.attrs["shape"], **_slice_attrs(n)),
         check=_unslice_check, linear=True, flops=_flops0,
         doc="zeros of `shape` with the operand written at a slice (VJP of slice)")


def _concat_check(attrs, ins):
    nd = len(ins[0].shape)
    axis = int(attrs.get("axis", 0))
    if not -nd <= axis < nd:
        raise ShapeError(f"concatenate: axis {axis} out of range for {nd}-d operands")
    return {"axis": axis % nd}


def _concat_infer(attrs, *xs):
    ax = attrs["axis"]
    t0 = xs[0]
    for t in xs[1:]:
        if (len(t.shape) != len(t0.shape)
                or any(a != b for i, (a, b) in enumerate(zip(t.shape, t0.shape)) if i != ax)):
            raise ShapeError(f"concatenate: shapes {t0.shape} and {t.shape} differ off axis {ax}")
        same_type("concatenate", TensorType(t0.shape, t.dtype), t0)
    shape = list(t0.shape)
    shape[ax] = sum(t.shape[ax] for t in xs)
    return TensorType(tuple(shape), t0.dtype)


def _concat_vjp(E, n, g):
    ax, out, off = n.attrs["axis"], [], 0
    for x in n.inputs:
        starts = [0] * g.ndim
        stops = list(g.shape)
        starts[ax], stops[ax] = off, off + x.shape[ax]
        out.append(E.slice(g, starts=starts, stops=stops, steps=[1] * g.ndim))
        off += x.shape[ax]
    return out


def _concat_jvp(E, n, t):
    if all(v is None for v in t):
        return None
    parts = [tv if tv is not None else E.zeros_like(x) for tv, x in zip(t, n.inputs)]
    return E.concatenate(*parts, axis=n.attrs["axis"])


register("concatenate", "shape", _concat_infer, _concat_vjp, _concat_jvp,
         check=_concat_check, linear=True, flops=_flops0, doc="join along an axis")
