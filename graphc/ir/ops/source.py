"""Nodes with no operands: graph inputs and constants."""
import numpy as np

from .. import dtypes as dt
from ..graph import TensorType
from ..registry import register


def _const_check(attrs, ins):
    v = np.asarray(attrs["value"])
    if v.dtype == np.float16:
        v = v.astype(np.float32)
    v = np.array(v, dtype=dt.as_dtype(v.dtype), order="C")  # a private copy
    v.setflags(write=False)
    return {"value": v}


register("input", "source", lambda attrs: None, doc="a graph input bound at run time")
register("constant", "source",
         lambda attrs: TensorType(attrs["value"].shape, attrs["value"].dtype),
         check=_const_check, doc="a literal array (read-only)")
