"""The numpy-style array functions (``gc.exp``, ``gc.sum``, ``gc.matmul`` ...).

On Tracers they record IR nodes, inserting the explicit ``cast`` and ``broadcast_to``
nodes that numpy's promotion and broadcasting imply (IR elementwise ops take operands of
one shape and dtype).  On plain arrays they simply call numpy, so the same model code
runs eagerly.  ``dispatch_ufunc``/``dispatch_function`` route numpy's own functions
(``np.tanh(t)``, ``np.sum(t, axis=1)``) here.

One module a family, each importing only those before it: ``operands`` (promotion,
broadcasting, the eager path), ``elementwise``, ``shapes``, ``creation``, ``reductions``,
``indexing`` (basic indexing and gathers), ``linalg`` and ``numpy_dispatch``.  Every
function is re-exported here: ``graphc.functions.X`` (and ``gc.X``) as before.
"""
from .operands import apply, result_dtype  # noqa: F401
from .elementwise import (abs, add, astype, cast, clip, divide, equal, erf, exp,  # noqa: F401
                          expm1, floor_divide, greater, greater_equal, less, less_equal,
                          log, log1p, logical_and, logical_not, logical_or, maximum,
                          minimum, mod, multiply, negative, not_equal, power, reciprocal,
                          relu, remainder, sigmoid, sign, sqrt, square, stop_gradient,
                          subtract, tanh, where)
from .shapes import (broadcast_to, concatenate, expand_dims, reshape, squeeze,  # noqa: F401
                     stack, swapaxes, transpose)
from .creation import full, one_hot, ones_like, zeros_like  # noqa: F401
from .reductions import amax, amin, logsumexp, max, mean, min, sum, var  # noqa: F401
from .indexing import getitem, take  # noqa: F401
from .linalg import dot, matmul  # noqa: F401
from .numpy_dispatch import FUNCTIONS, UFUNCS, dispatch_function, dispatch_ufunc  # noqa: F401
