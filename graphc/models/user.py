"""Load a user's model from ``path/to/file.py:NAME``.

``NAME`` in that file may be any of:

1. a ``graphc.models.ModelSpec`` -- full control (task, build, loss, penalty, dataset,
   hyper-parameters);
2. a ``gc.nn.Module`` instance -- e.g. ``model = gc.nn.MLP([64, 32, 10])``;
3. a function ``NAME(n_features, n_classes) -> gc.nn.Module`` -- a factory sized from the
   data (``n_classes`` is None for regression).

For 2 and 3, optional attributes on the object set the rest (defaults in brackets):
``task`` ["classification"; or "binary", "regression"], ``loss`` [by task: cross_entropy,
bce, mse; a name or a function ``(outputs, y) -> scalar``], ``penalty`` [None; a function
``params -> scalar``], ``dataset`` ["digits"], ``hparams`` [{}; e.g. ``{"lr": 0.01,
"epochs": 20}``].
"""
from __future__ import annotations

import importlib.util
import os
import sys

from .. import nn
from ..ir import GraphcError
from .spec import ModelSpec


def import_file(path: str):
    if not os.path.isfile(path):
        raise GraphcError(f"model file {path} does not exist")
    name = "graphc_user_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise GraphcError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        text = f": {e.text.strip()}" if e.text and e.text.strip() else ""
        raise GraphcError(f"{path}:{e.lineno}: syntax error in the model file: "
                          f"{e.msg}{text}") from None
    except Exception as e:               # noqa: BLE001 -- any failure of the user's code
        sys.modules.pop(name, None)
        raise GraphcError(f"{path}:{_failing_line(e, path)}: importing the model file "
                          f"failed: {type(e).__name__}: {e}") from None
    return module


def _failing_line(e: BaseException, path: str):
    """The line of ``path`` that the exception passed through last (the import, the raise)."""
    import traceback
    want = os.path.realpath(path)
    line = "?"
    for fr in traceback.extract_tb(e.__traceback__):
        if os.path.realpath(fr.filename) == want:
            line = fr.lineno
    return line


def load_user_model(ref: str) -> ModelSpec:
    path, _, attr = ref.rpartition(":")
    if not path or not attr:
        raise GraphcError(f"user model must be given as path/to/file.py:NAME, got {ref!r}")
    module = import_file(path)
    if not hasattr(module, attr):
        public = [k for k in vars(module) if not k.startswith("_")]
        raise GraphcError(f"{path} has no attribute {attr!r} (it defines {public})")
    obj = getattr(module, attr)
    if isinstance(obj, ModelSpec):
        return obj
    if isinstance(obj, nn.Module):
        build = lambda d, k, m=obj: m            # noqa: E731  (fixed-size module)
    elif callable(obj):
        build = obj
    else:
        raise GraphcError(f"{ref}: expected a ModelSpec, a gc.nn.Module or a function "
                          f"(n_features, n_classes) -> Module; got {type(obj).__name__}")
    return ModelSpec(attr, getattr(obj, "task", "classification"), build,
                     getattr(obj, "loss", None), getattr(obj, "penalty", None),
                     getattr(obj, "dataset", "digits"), dict(getattr(obj, "hparams", {})),
                     f"user model {ref}")
