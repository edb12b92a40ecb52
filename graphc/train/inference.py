"""A saved model, loaded and callable: ``gc.load_model("model.npz")``.

The model is rebuilt from its spec (a built-in by name, or the user's ``file.py:NAME``
imported again), its parameters checked against that build and loaded into the same
nested pytree, and its forward compiled with ``gc.jit`` (llvm by default, one compile per
input shape).  Raw features go in: the training split's standardisation is applied here,
so ``model(X)`` on new data gives what training-time evaluation gave.
"""
from __future__ import annotations

import os

import numpy as np

from .. import data as gdata
from ..ir import GraphcError
from .metrics import Evaluator
from .modelfile import ModelFileError, params_from, read_model_file


def _rebuild_spec(path: str, record: dict):
    from ..models import get_model
    m = record["model"]
    name = m["name"]
    if ":" in name and m.get("file"):
        file_part, _, attr = name.rpartition(":")
        if not os.path.isfile(file_part) and os.path.isfile(m["file"]):
            name = f"{m['file']}:{attr}"        # saved from another working directory
        elif not os.path.isfile(file_part):
            raise ModelFileError(f"model file {path} was trained from {name}, and neither "
                                 f"{file_part} nor {m['file']} exists now")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in m["options"].items()}
    return get_model(name, **options)


class LoadedModel:
    """A trained model: ``model(X)`` -> outputs, ``predict``, ``predict_proba``, ``evaluate``.

    ``X`` is raw features, shape (n, n_features) (one sample: (n_features,)).  Outputs are
    logits (classification), scores (binary) or predictions in the target's units
    (regression).  ``params`` is the nested parameter pytree; ``record`` everything else
    the file holds (spec, config, metrics).
    """

    def __init__(self, path: str, backend: str = "llvm", threads=None, notice=None):
        self.path = str(path)
        self.record, arrays = read_model_file(self.path)
        m = self.record["model"]
        self.spec = _rebuild_spec(self.path, self.record)
        if self.spec.task != m["task"]:
            raise ModelFileError(f"model file {path}: {m['name']} is now a {self.spec.task} "
                                 f"model, the file holds a {m['task']} model")
        self.model = self.spec.bind(m["n_features"], m["n_classes"])
        self.params = params_from(self.path, self.record, arrays,
                                  self.model.init(0))
        self.x_scaler = gdata.Standardizer(arrays["x_mean"], arrays["x_std"])
        self.y_scaler = (gdata.Standardizer(arrays["y_mean"], arrays["y_std"])
                         if "y_mean" in arrays else None)
        self.classes = self.record.get("classes")
        self.metrics = self.record.get("metrics", {})
        self.config = self.record.get("config", {})
        options = {"threads": int(threads)} if threads and backend == "llvm" else {}
        self.evaluator = Evaluator(self.model, backend, self.y_scaler, notice, **options)

    # ---- what the model is -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.record["model"]["name"]

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def n_features(self) -> int:
        return int(self.record["model"]["n_features"])

    def __repr__(self):
        m = self.record["model"]
        return (f"LoadedModel({m['name']!r}, {m['task']}, {m['n_features']} features, "
                f"{m['num_params']:,} parameters, from {self.path})")

    # ---- using it ----------------------------------------------------------------------------
    def _features(self, X, what="X") -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ModelFileError(f"model {self.name} expects {self.n_features} features per "
                                 f"sample; {what} has shape {X.shape}")
        if X.dtype.kind not in "biuf":
            raise GraphcError(f"{what}: features must be numeric, got {X.dtype}")
        if len(X) == 0:
            raise GraphcError(f"{what} has no samples")
        bad = ~np.isfinite(X.astype(np.float64))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise GraphcError(f"{what}: feature at row {r}, column {c} is {X[r, c]} "
                              "(features must be finite)")
        return self.x_scaler.transform(X)

    def __call__(self, X) -> np.ndarray:
        out = self.evaluator.outputs(self.params, self._features(X))
        if self.y_scaler is not None:
            out = self.y_scaler.inverse(out[:, None])[:, 0]
        return out

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n, K) (binary: (n, 2)); not for regression."""
        if self.task == "regression":
            raise GraphcError(f"model {self.name} is a regression model: no probabilities")
        out = np.asarray(self(X), np.float64)
        if self.task == "binary":
            p1 = 1.0 / (1.0 + np.exp(-out))
            return np.stack([1.0 - p1, p1], axis=1)
        z = np.exp(out - out.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """Class labels (as in ``classes``) or regression predictions (target units)."""
        out = self(X)
        if self.task == "regression":
            return out
        idx = self.model.predict(out)
        classes = np.asarray(self.classes if self.classes else range(int(idx.max()) + 1))
        return classes[idx]

    def evaluate(self, dataset: gdata.Dataset, prefix: str = "eval") -> dict:
        """Loss and metric on a whole dataset of raw features and labels."""
        ds = dataset.for_task(self.task)
        ds.check_features(self.n_features, self.name)
        if self.task == "classification":
            ds.check_classes(int(self.record["model"]["n_classes"]), self.name)
        from dataclasses import replace
        y = ds.y
        if self.y_scaler is not None:
            y = self.y_scaler.transform(ds.y[:, None])[:, 0]
        return self.evaluator(self.params, replace(ds, X=self._features(ds.X, ds.name), y=y),
                              prefix)


def load_model(path, backend: str = "llvm", threads=None) -> LoadedModel:
    """A saved model (``graphc train ... --save path``) as a callable; see LoadedModel."""
    return LoadedModel(path, backend, threads)
