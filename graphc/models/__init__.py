"""graphc.models -- built-in models and user models behind one ``get_model`` lookup."""
from __future__ import annotations

from ..ir import GraphcError
from .builtin import BUILTINS, lenet, linreg, logreg, mlp, svm
from .spec import BASE_HPARAMS, CRITERIA, Model, ModelSpec
from .user import load_user_model


class UnknownModel(GraphcError, ValueError):
    """A model name that is neither a built-in nor a path:NAME reference."""


def get_model(name: str, **options) -> ModelSpec:
    """A built-in by name (``options`` go to its constructor, e.g. ``widths``) or a user
    model ``path/to/file.py:NAME``."""
    if name in BUILTINS:
        return BUILTINS[name](**{k: v for k, v in options.items() if v is not None})
    if ":" in name and name.rpartition(":")[0].endswith(".py"):
        return load_user_model(name)
    raise UnknownModel(f"unknown model {name!r}; built-in models are "
                       f"{', '.join(BUILTINS)}, or give path/to/file.py:NAME")


__all__ = ["BUILTINS", "Model", "ModelSpec", "get_model", "load_user_model", "linreg",
           "logreg", "mlp", "svm", "lenet", "CRITERIA", "BASE_HPARAMS", "UnknownModel"]
