"""``gc.nn.Module``: a functional layer -- it describes a computation and holds no arrays.

Why functional: graphc traces ``loss_fn(params, *batch)``, so parameters must be explicit
arguments (graph inputs of kind ``param``), never hidden state on an object.  A Module
therefore has two jobs only:

* ``init(seed)`` -> a dict pytree of fresh numpy parameters (submodules nested by name);
* ``module(params, x)`` -> the forward computation on that pytree (traceable).

Submodules assigned as attributes are registered in assignment order, so
``init`` draws from one seeded Generator in a fixed order: same seed, same parameters.
"""
from __future__ import annotations

import numpy as np

from .. import pytree
from ..ir import ShapeError
from .init import as_rng


class Module:
    """Base class: override ``init_own`` (this layer's arrays) and ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_modules", {})

    def __setattr__(self, name, value):
        if isinstance(value, Module):
            if "_modules" not in self.__dict__:
                object.__setattr__(self, "_modules", {})
            self._modules[name] = value
        object.__setattr__(self, name, value)

    # ---- parameters ----------------------------------------------------------------------
    def init_own(self, rng: np.random.Generator) -> dict:
        """This module's own parameters (not its submodules'); none by default."""
        return {}

    def init(self, seed=0) -> dict:
        """Fresh parameters: an int seed or a shared ``numpy.random.Generator``."""
        rng = as_rng(seed)
        try:
            params = dict(self.init_own(rng))
        except ShapeError as e:         # say which layer asked for it
            raise ShapeError(f"{type(self).__name__}: {e}") from None
        for name, m in self.named_children():
            sub = m.init(rng)
            if sub:
                params[name] = sub
        return params

    def named_children(self):
        return list(self.__dict__.get("_modules", {}).items())

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, params, *args):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def __call__(self, params, *args):
        return self.forward(params, *args)

    # ---- shape metadata used by the trainer to check data against the model --------------
    @property
    def in_features(self):
        """Input width if the module knows it (Linear, Sequential starting with one)."""
        return None

    @property
    def out_features(self):
        return None

    def __repr__(self):
        kids = self.named_children()
        if not kids:
            return f"{type(self).__name__}()"
        inner = "\n".join(f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in kids)
        return f"{type(self).__name__}(\n{inner}\n)"


def num_params(params) -> int:
    """Total number of scalars in a parameter pytree."""
    return int(sum(np.size(x) for x in pytree.flatten(params)[0]))
