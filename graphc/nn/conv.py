"""Convolution, pooling and flatten with ``torch.nn.functional``'s signatures (NCHW).

``conv2d`` is not one op: it traces to ``im2col`` (the patch matrix, rows (c, i, j),
columns (n, oh, ow)) and one ``matmul`` with the weights reshaped to
``(out, in/groups·kh·kw)`` -- per group, on row blocks of both (views, no copies) --
then the bias and a reshape/transpose back to NCHW.  Autodiff then gives the weight
gradient as ``g @ cols^T`` and the input gradient as ``col2im(w^T @ g)``: all three
products are GEMMs.  The output of the product is laid out (out, n, oh, ow); the
transpose to NCHW is a view the next op reads through (no copy on the LLVM backend).

On plain numpy arrays these functions compute eagerly with the numpy reference kernels.
Semantics (output size, max-pool ties and padding, average-pool divisor): see
``graphc.ir.ops.window``.
"""
from __future__ import annotations

import numpy as np

from .. import functions as F
from ..ir import DTypeError, ShapeError
from ..ir.ops.window import out_hw, pair
from ..source import user_source
from ..tracing import Tracer, deepest_context


def _window(op, x, **attrs):
    """Window op ``op`` on ``x`` (recorded when tracing, computed eagerly otherwise)."""
    return F.apply(op, x, **attrs)


def _batched(op, x):
    """(x as NCHW, whether a batch axis was added): 3-d CHW images are one-image batches."""
    nd = np.ndim(x)
    if nd == 3:
        return F.reshape(x, (1,) + tuple(np.shape(x))), True
    if nd != 4:
        raise ShapeError(f"{op}: expects an NCHW (4-d) or CHW (3-d) image, got shape "
                         f"{tuple(np.shape(x))} (at {user_source()})")
    return x, False


def _unbatch(y, added):
    return F.reshape(y, tuple(np.shape(y))[1:]) if added else y


def _float_dtype(op, *xs):
    dtype = F.result_dtype(*[x for x in xs if x is not None], floating=True)
    for x in xs:
        if x is not None and np.dtype(x.dtype if isinstance(x, Tracer)
                                      else np.asarray(x).dtype).kind not in "f":
            raise DTypeError(f"{op}: operands must be float arrays, got "
                             + ", ".join(str(np.dtype(getattr(x, "dtype", type(x))))
                                         for x in xs if x is not None)
                             + f" (at {user_source()})")
    return dtype


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """2-d convolution (cross-correlation, as PyTorch): x (N, C, H, W), w (O, C/groups,
    kh, kw), b (O,) -> (N, O, OH, OW); ``stride``/``padding``/``dilation`` ints or pairs."""
    op = "conv2d"
    x, added = _batched(op, x)
    dtype = _float_dtype(op, x, w, b)
    x, w = F.cast(x, dtype), F.cast(w, dtype)
    if b is not None:
        b = F.cast(b, dtype)
    xs, ws = tuple(np.shape(x)), tuple(np.shape(w))
    groups = int(groups)
    if isinstance(padding, str):
        raise ShapeError(f"{op}: padding={padding!r} is not supported; give an int or a "
                         f"pair (at {user_source()})")
    if len(ws) != 4:
        raise ShapeError(f"{op}: weights must be 4-d (out, in/groups, kh, kw), got shape {ws} "
                         f"(at {user_source()})")
    n, c = xs[:2]
    o, cg, kh, kw = ws
    if groups < 1 or c % groups or o % groups or cg * groups != c:
        raise ShapeError(f"{op}: input {xs} with {c} channels, weights {ws} and groups="
                         f"{groups} do not fit (need in/groups = {ws[1]} and out divisible "
                         f"by groups) (at {user_source()})")
    if b is not None and tuple(np.shape(b)) != (o,):
        raise ShapeError(f"{op}: bias of shape {tuple(np.shape(b))} does not match {o} output "
                         f"channels (at {user_source()})")
    try:
        attrs = dict(kernel=(kh, kw), stride=pair(op, "stride", stride, 1),
                     padding=pair(op, "padding", padding, 0),
                     dilation=pair(op, "dilation", dilation, 1))
    except ShapeError as e:
        raise ShapeError(f"{e} (at {user_source()})") from None
    ctx = deepest_context(x, w, b)
    if ctx is not None and not isinstance(x, Tracer):
        x = Tracer(ctx.lift(x), ctx)
    cols = _window("im2col", x, **attrs)                 # (c·kh·kw, n·oh·ow)
    w2 = F.reshape(w, (o, cg * kh * kw))
    if groups == 1:
        y = F.matmul(w2, cols)
    else:
        og, kg = o // groups, cg * kh * kw
        y = F.concatenate([F.matmul(w2[j * og:(j + 1) * og], cols[j * kg:(j + 1) * kg])
                           for j in range(groups)], axis=0)
    if b is not None:
        y = F.add(y, F.reshape(b, (o, 1)))
    oh, ow = out_hw(op, attrs, xs[2:])
    y = F.transpose(F.reshape(y, (o, n, oh, ow)), (1, 0, 2, 3))
    return _unbatch(y, added)


def _pool(op, x, kernel_size, stride, padding):
    x, added = _batched(op, x)
    _float_dtype(op, x)
    y = _window(op, x, kernel=kernel_size, stride=stride, padding=padding)
    return _unbatch(y, added)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Window maxima; ``stride`` defaults to ``kernel_size``; padding is -inf (at most half
    the kernel); the gradient goes to each window's first maximum (PyTorch's rule)."""
    return _pool("max_pool2d", x, kernel_size, stride, padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Window means; padded elements count as zeros (PyTorch's count_include_pad=True)."""
    return _pool("avg_pool2d", x, kernel_size, stride, padding)


def flatten(x, start_dim=1, end_dim=-1):
    """Axes ``start_dim..end_dim`` merged into one (a reshape), as ``torch.flatten``."""
    shape = tuple(np.shape(x))
    nd = len(shape)
    if nd == 0:
        return F.reshape(x, (1,))
    s, e = int(start_dim), int(end_dim)
    if not (-nd <= s < nd and -nd <= e < nd) or s % nd > e % nd:
        raise ShapeError(f"flatten: dims {start_dim}..{end_dim} are not a range of the axes "
                         f"of shape {shape} (at {user_source()})")
    s, e = s % nd, e % nd
    merged = int(np.prod(shape[s:e + 1], dtype=np.int64))
    return F.reshape(x, shape[:s] + (merged,) + shape[e + 1:])
