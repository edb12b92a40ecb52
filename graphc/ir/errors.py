"""Errors graphc raises on bad input.

Every error a user can provoke is a ``GraphcError``; subclasses also derive from the
builtin that fits (ValueError for shapes, TypeError for dtypes and structure), so
``except ValueError`` in user code keeps working.
"""


class GraphcError(Exception):
    """Base class of every error graphc raises on bad input."""


class ShapeError(GraphcError, ValueError):
    """Operand shapes that an op cannot accept."""


class DTypeError(GraphcError, TypeError):
    """Operand dtypes that an op cannot accept."""


class TraceError(GraphcError, TypeError):
    """Something a traced function did that a static graph cannot record."""


class ArgumentError(GraphcError, TypeError):
    """Arguments of the wrong structure, shape or dtype at call time."""


class GradCheckError(GraphcError, AssertionError):
    """``gc.check_grads``: a derivative disagrees with finite differences."""


class ConfigError(GraphcError, ValueError):
    """A bad setting: an environment variable or an option value (GRAPHC_NUM_THREADS=0)."""


class RangeError(GraphcError, IndexError):
    """A value outside the range an op accepts (a class label, an index), found at run time."""


class VerifyError(GraphcError, AssertionError):
    """A graph that breaks an IR invariant (a bug in a pass, not in user code)."""


def where_(op, shapes=(), source=None):
    """Format the 'op, shapes, user source line' suffix every error carries."""
    parts = [f"in op '{op}'"]
    if shapes:
        parts.append("with operands " + ", ".join(shapes))
    text = " ".join(parts)
    if source:
        text += f"\n  at {source}"
    return text
