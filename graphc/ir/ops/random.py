"""``philox_uniform``: counter-based random numbers (Philox4x32-10, Salmon et al. 2011,
"Parallel random numbers: as easy as 1, 2, 3") -- the source of dropout masks.

Element ``i`` of the output is a pure function of ``(seed, step, salt, i)``: the key is
``(lo32(seed), hi32(seed) ^ salt)``, the counter ``(lo32(i), hi32(i), lo32(step),
hi32(step))``, and the first output word(s) become a float in ``[0, 1)``.  So the same
node computed again (in the backward pass, or rematerialised) gives the same numbers,
any thread split gives the same numbers, and a new ``step`` gives new ones.  The
operand is an ``int64[2]`` ``(seed, step)`` that ``compile_step`` feeds every step.

``philox_bits`` (below) is the reference implementation, in numpy with uint64
arithmetic; the numpy backend runs it and the LLVM lowering must match it bit for bit.
"""
import numpy as np

from .. import dtypes as dt
from ..errors import DTypeError, ShapeError
from ..graph import TensorType
from ..registry import register

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10
MASK32 = 0xFFFFFFFF


def philox_bits(seed: int, step: int, salt: int, n: int):
    """The four 32-bit output words (uint64 arrays) for counters ``0..n-1``."""
    seed, step = int(seed) & 0xFFFFFFFFFFFFFFFF, int(step) & 0xFFFFFFFFFFFFFFFF
    i = np.arange(n, dtype=np.uint64)
    c0, c1 = i & MASK32, i >> np.uint64(32)
    c2 = np.full(n, step & MASK32, np.uint64)
    c3 = np.full(n, step >> 32, np.uint64)
    k0, k1 = seed & MASK32, ((seed >> 32) ^ int(salt)) & MASK32
    for r in range(ROUNDS):
        p0, p1 = np.uint64(M0) * c0, np.uint64(M1) * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & np.uint64(MASK32),
                          (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & np.uint64(MASK32))
        k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
    return c0, c1, c2, c3


def uniform(seed, step, salt, shape, dtype):
    """Floats in [0, 1): 24 random bits for float32, 53 for float64."""
    n = int(np.prod(shape, dtype=np.int64))
    c0, c1, _, _ = philox_bits(seed, step, salt, n)
    if np.dtype(dtype) == np.float32:
        u = (c0 >> np.uint64(8)).astype(np.float32) * np.float32(2.0 ** -24)
    else:
        u = (((c0 << np.uint64(21)) ^ (c1 >> np.uint64(11))) & np.uint64((1 << 53) - 1)
             ).astype(np.float64) * 2.0 ** -53
    return u.astype(dtype).reshape(shape)


def _check(attrs, ins):
    (key,) = ins
    if key.dtype != dt.int64 or key.shape != (2,):
        raise DTypeError(f"philox_uniform: the key must be int64[2] (seed, step), got "
                         f"{dt.type_str(key.shape, key.dtype)}")
    shape = tuple(int(d) for d in attrs["shape"])
    if any(d < 0 for d in shape):
        raise ShapeError(f"philox_uniform: bad shape {shape}")
    dtype = dt.as_dtype(attrs.get("dtype", dt.float32))
    if not dt.is_float(dtype):
        raise DTypeError(f"philox_uniform: dtype must be a float, got {dtype}")
    return {"shape": shape, "dtype": dtype, "salt": int(attrs.get("salt", 0)) & MASK32}


register("philox_uniform", "other",
         lambda attrs, key: TensorType(attrs["shape"], attrs["dtype"]), check=_check,
         flops=lambda attrs, out, key: 40 * int(np.prod(out.shape, dtype=np.int64)),
         doc="counter-based uniform [0, 1) floats of (seed, step, salt, index)")
