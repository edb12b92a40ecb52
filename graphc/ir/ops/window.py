"""Sliding-window ops on NCHW images: patch extraction for convolutions, and pooling.

A convolution is not a primitive: ``gc.nn.conv2d`` traces to ``im2col`` (patches of the
input as the columns of a matrix) followed by an ordinary ``matmul`` with the weights,
so forward, input-gradient and weight-gradient products all run on the GEMM kernels,
and the patch matrix is an ordinary value the memory planner places.  Every op here
comes with its adjoint, so derivatives of any order stay inside this family:

=====================  ==================================  =============================
op                     what it computes                    VJP (JVP: the op on tangents)
=====================  ==================================  =============================
``im2col(x)``          patches ``(C·kh·kw, N·OH·OW)``      ``col2im`` (scatter-add)
``col2im(cols)``       patches summed back into the image  ``im2col``
``avg_pool2d(x)``      window means (padding counts as 0)  ``avg_pool2d_grad``
``avg_pool2d_grad(g)`` each g/(kh·kw) spread on its window ``avg_pool2d``
``max_pool2d(x)``      window maxima                       ``max_pool2d_grad(x, g)``
``max_pool2d_grad``    g scattered to each window's argmax ``max_pool2d_select`` (in g)
``max_pool2d_select``  t at each window's argmax of x      ``max_pool2d_grad`` (in t)
=====================  ==================================  =============================

Semantics are PyTorch's (``torch.nn.functional``): output size
``floor((H + 2p - d(k-1) - 1) / s) + 1``; max-pool padding is -inf (never the max) and,
as in PyTorch, at most half the kernel; the argmax of a window is its *first* maximum in
row-major order (ties: the earlier element gets the whole gradient; a NaN wins over any
number); average pooling divides by kh·kw including padded elements
(``count_include_pad=True``).  The max-pool ops are piecewise linear: their derivative
in ``x`` (which only moves the argmax) is zero, so ``x`` gets no cotangent from the
``_grad``/``_select`` ops.

Attributes (all pairs of ints, normalised by ``check``): ``kernel``, ``stride``,
``padding``, ``dilation`` (im2col/col2im only), and ``shape`` -- the image shape --
on the ops that produce an image from a smaller operand (``col2im``,
``avg_pool2d_grad``).
"""
from __future__ import annotations

from typing import NamedTuple

from ..errors import ShapeError
from ..graph import TensorType
from ..registry import register
from ._rules import need_float, size


def pair(op, name, v, minimum):
    """An int or a pair of ints as a pair, each >= ``minimum``."""
    try:
        p = (int(v), int(v)) if not isinstance(v, (tuple, list)) else tuple(int(a) for a in v)
    except (TypeError, ValueError):
        raise ShapeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}") from None
    if len(p) != 2 or any(a < minimum for a in p) or \
            (not isinstance(v, (tuple, list)) and int(v) != v):
        raise ShapeError(f"{op}: {name} must be an int or a pair of ints >= {minimum}, "
                         f"got {v!r}")
    return p


def out_size(n, k, s, p, d=1):
    """PyTorch's output length of a window walk (floor mode)."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


class Geometry(NamedTuple):
    """Every size of one window walk over an NCHW image: the image (n, c, h, w), the
    kernel, stride, padding and dilation pairs, and the output size (oh, ow).  The one
    place both backends read a window op's geometry from."""
    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    oh: int
    ow: int


def geometry(attrs, image) -> Geometry:
    """The :class:`Geometry` of a window op with (normalised) ``attrs`` over ``image``."""
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["padding"]
    dh, dw = attrs.get("dilation", (1, 1))
    n, c, h, w = (int(d) for d in image)
    return Geometry(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw,
                    out_size(h, kh, sh, ph, dh), out_size(w, kw, sw, pw, dw))


def node_geometry(node) -> Geometry:
    """The geometry of window node ``node``: its image is the ``shape`` attribute (ops
    that produce an image from a smaller operand) or its first operand."""
    a = node.attrs
    return geometry(a, a["shape"] if "shape" in a else node.inputs[0].shape)


def _need_image(op, t):
    need_float(op, t)
    if len(t.shape) != 4:
        raise ShapeError(f"{op}: expects an NCHW image (4-d), got shape {t.shape}")


def out_hw(op, attrs, hw):
    """(OH, OW) of an image of spatial size ``hw``; raises when no window fits."""
    (kh, kw), (sh, sw), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["padding"]
    dh, dw = attrs.get("dilation", (1, 1))
    oh, ow = out_size(hw[0], kh, sh, ph, dh), out_size(hw[1], kw, sw, pw, dw)
    if oh < 1 or ow < 1:
        dil = f"dilation {(dh, dw)}, " if (dh, dw) != (1, 1) else ""
        raise ShapeError(f"{op}: a {kh}x{kw} window ({dil}padding {(ph, pw)}) "
                         f"does not fit an image of {hw[0]}x{hw[1]}")
    return oh, ow


def _norm(op, attrs, image_shape, dilation):
    out = {"kernel": pair(op, "kernel_size", attrs["kernel"], 1),
           "stride": pair(op, "stride", attrs.get("stride") or attrs["kernel"], 1),
           "padding": pair(op, "padding", attrs.get("padding", 0), 0)}
    if dilation:
        out["dilation"] = pair(op, "dilation", attrs.get("dilation", 1), 1)
    elif any(2 * p > k for p, k in zip(out["padding"], out["kernel"])):
        raise ShapeError(f"{op}: padding {out['padding']} must be at most half the kernel "
                         f"{out['kernel']} (as in PyTorch)")
    if len(image_shape) != 4:
        raise ShapeError(f"{op}: expects an NCHW image (4-d), got shape {tuple(image_shape)}")
    out_hw(op, out, image_shape[2:])
    return out


def _check(op, dilation, image_attr=False):
    def check(attrs, ins):
        shape = tuple(int(d) for d in attrs["shape"]) if image_attr else ins[0].shape
        out = _norm(op, attrs, shape, dilation)
        if image_attr:
            out["shape"] = shape
        return out
    return check


def cols_shape(attrs, image):
    n, c = image[:2]
    (kh, kw) = attrs["kernel"]
    oh, ow = out_hw("im2col", attrs, image[2:])
    return (c * kh * kw, n * oh * ow)


def pooled_shape(op, attrs, image):
    return tuple(image[:2]) + out_hw(op, attrs, image[2:])


def _attrs(n, *keys):
    return {k: n.attrs[k] for k in keys if k in n.attrs}


_CONV = ("kernel", "stride", "padding", "dilation")
_POOL = ("kernel", "stride", "padding")


def _flops0(attrs, out, *ins):
    return 0


def _flops_window(attrs, out, *ins):
    kh, kw = attrs["kernel"]
    return size(out.shape) * kh * kw


# ---- im2col / col2im -----------------------------------------------------------------------------
def _im2col_infer(attrs, x):
    _need_image("im2col", x)
    return TensorType(cols_shape(attrs, x.shape), x.dtype)


def _col2im_infer(attrs, c):
    need_float("col2im", c)
    want = cols_shape(attrs, attrs["shape"])
    if c.shape != want:
        raise ShapeError(f"col2im: operand {c.shape} is not the patch matrix {want} of an "
                         f"image {attrs['shape']}")
    return TensorType(attrs["shape"], c.dtype)


register("im2col", "other", _im2col_infer,
         lambda E, n, g: [E.col2im(g, shape=n.inputs[0].shape, **_attrs(n, *_CONV))],
         lambda E, n, t: E.im2col(t[0], **_attrs(n, *_CONV)),
         check=_check("im2col", True), linear=True, flops=_flops0,
         doc="patches: row (c, i, j), column (n, oh, ow) = x[n, c, oh·s-p+i·d, ow·s-p+j·d] "
             "(0 outside)")
register("col2im", "other", _col2im_infer,
         lambda E, n, g: [E.im2col(g, **_attrs(n, *_CONV))],
         lambda E, n, t: E.col2im(t[0], shape=n.attrs["shape"], **_attrs(n, *_CONV)),
         check=_check("col2im", True, image_attr=True), linear=True, flops=_flops_window,
         doc="adjoint of im2col: every patch element added back to its pixel")


# ---- average pooling --------------------------------------------------------------------------------
def _avg_infer(attrs, x):
    _need_image("avg_pool2d", x)
    return TensorType(pooled_shape("avg_pool2d", attrs, x.shape), x.dtype)


def _avg_grad_infer(attrs, g):
    need_float("avg_pool2d_grad", g)
    want = pooled_shape("avg_pool2d_grad", attrs, attrs["shape"])
    if g.shape != want:
        raise ShapeError(f"avg_pool2d_grad: operand {g.shape} is not the pooled shape {want} "
                         f"of an image {attrs['shape']}")
    return TensorType(attrs["shape"], g.dtype)


register("avg_pool2d", "other", _avg_infer,
         lambda E, n, g: [E.avg_pool2d_grad(g, shape=n.inputs[0].shape, **_attrs(n, *_POOL))],
         lambda E, n, t: E.avg_pool2d(t[0], **_attrs(n, *_POOL)),
         check=_check("avg_pool2d", False), linear=True, flops=_flops_window,
         doc="window means, padding counted as zeros (count_include_pad=True)")
register("avg_pool2d_grad", "other", _avg_grad_infer,
         lambda E, n, g: [E.avg_pool2d(g, **_attrs(n, *_POOL))],
         lambda E, n, t: E.avg_pool2d_grad(t[0], shape=n.attrs["shape"], **_attrs(n, *_POOL)),
         check=_check("avg_pool2d_grad", False, image_attr=True), linear=True,
         flops=_flops_window, doc="adjoint of avg_pool2d")


# ---- max pooling ----------------------------------------------------------------------------------
def _max_infer(attrs, x):
    _need_image("max_pool2d", x)
    return TensorType(pooled_shape("max_pool2d", attrs, x.shape), x.dtype)


def _max_grad_infer(attrs, x, g):
    _need_image("max_pool2d_grad", x)
    want = pooled_shape("max_pool2d_grad", attrs, x.shape)
    if g.shape != want or g.dtype != x.dtype:
        raise ShapeError(f"max_pool2d_grad: cotangent {g.type} does not match the pooled "
                         f"output {TensorType(want, x.dtype)} of {x.type}")
    return x


def _select_infer(attrs, x, t):
    _need_image("max_pool2d_select", x)
    if t.shape != x.shape or t.dtype != x.dtype:
        raise ShapeError(f"max_pool2d_select: tangent {t.type} does not match {x.type}")
    return TensorType(pooled_shape("max_pool2d_select", attrs, x.shape), x.dtype)


register("max_pool2d", "other", _max_infer,
         lambda E, n, g: [E.max_pool2d_grad(n.inputs[0], g, **_attrs(n, *_POOL))],
         lambda E, n, t: E.max_pool2d_select(n.inputs[0], t[0], **_attrs(n, *_POOL)),
         check=_check("max_pool2d", False), flops=_flops_window,
         doc="window maxima (padding is -inf)")
register("max_pool2d_grad", "other", _max_grad_infer,
         lambda E, n, g: [None, E.max_pool2d_select(n.inputs[0], g, **_attrs(n, *_POOL))],
         lambda E, n, t: None if t[1] is None else
         E.max_pool2d_grad(n.inputs[0], t[1], **_attrs(n, *_POOL)),
         check=_check("max_pool2d_grad", False), flops=_flops_window,
         doc="g added at the first maximum of each window of x (VJP of max_pool2d)")
register("max_pool2d_select", "other", _select_infer,
         lambda E, n, g: [None, E.max_pool2d_grad(n.inputs[0], g, **_attrs(n, *_POOL))],
         lambda E, n, t: None if t[1] is None else
         E.max_pool2d_select(n.inputs[0], t[1], **_attrs(n, *_POOL)),
         check=_check("max_pool2d_select", False), flops=_flops_window,
         doc="t at the first maximum of each window of x (JVP of max_pool2d)")
