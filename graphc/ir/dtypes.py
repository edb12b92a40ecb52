"""The dtypes graphc supports, as numpy dtypes, with short names for printing."""
import numpy as np

from .errors import DTypeError

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)

SHORT = {float32: "f32", float64: "f64", int32: "i32", int64: "i64", bool_: "bool"}
SUPPORTED = tuple(SHORT)
FLOATS = (float32, float64)
INTS = (int32, int64)


def as_dtype(d) -> np.dtype:
    """Normalise anything numpy understands to one of the supported dtypes."""
    try:
        dt = np.dtype(d)
    except TypeError as e:
        raise DTypeError(f"not a dtype: {d!r}") from e
    if dt not in SHORT:
        raise DTypeError(f"dtype {dt} is not supported; graphc supports "
                         + ", ".join(str(x) for x in SUPPORTED))
    return dt


def unsigned_to_signed(arr: np.ndarray, dtype, what: str) -> np.ndarray | None:
    """An unsigned integer array (uint8 images, uint labels) as the signed ``dtype`` a
    graph input has (tracing makes unsigned arguments int64 inputs), or None if ``arr``
    is not unsigned or ``dtype`` not signed.  Values that do not fit (uint64 >= 2**63)
    raise DTypeError naming ``what`` and the value, instead of wrapping around."""
    dtype = np.dtype(dtype)
    if arr.dtype.kind != "u" or dtype.kind != "i":
        return None
    if not np.can_cast(arr.dtype, dtype, "safe") and arr.size:
        top = int(arr.max())
        if top > np.iinfo(dtype).max:
            raise DTypeError(f"{what} has {arr.dtype} value {top}, which does not fit in "
                             f"the graph's {dtype}")
    return arr.astype(dtype)


def is_float(dt) -> bool:
    return np.dtype(dt) in FLOATS


def short(dt) -> str:
    return SHORT.get(np.dtype(dt), str(dt))


def type_str(shape, dtype) -> str:
    """``f32[128,512]`` -- the form used by the printer, DOT and error messages."""
    return f"{short(dtype)}[{','.join(str(d) for d in shape)}]"
