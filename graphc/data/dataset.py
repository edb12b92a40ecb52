"""``Dataset``: features X (n, d) float32 and labels y (n,), plus what the task needs.

Labels arrive raw (float64 from files, ints from the bundled sets); ``for_task`` turns
them into what a model trains on -- int32 class indices 0..K-1 for classification,
float32 targets for regression -- and raises a GraphcError that names the offending
row when they cannot be (a label 2.5 for a classifier, a label 3 for a binary SVM).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..ir import GraphcError

TASKS = ("classification", "binary", "regression")
#: labels are class indices; one of 1e9 is a data error, not a billion-class model
MAX_CLASSES = 100_000


@dataclass
class Dataset:
    X: np.ndarray
    y: np.ndarray
    name: str
    task: str | None = None          # None: decided by the model (user files)
    source: str = ""                 # attribution / provenance
    feature_names: list = field(default_factory=list)
    class_names: list = field(default_factory=list)   # what label 0, 1, ... stands for

    def __post_init__(self):
        X, y = np.asarray(self.X), np.asarray(self.y)
        if X.ndim == 1:
            X = X[:, None]
        if X.ndim != 2:
            raise GraphcError(f"dataset {self.name}: features must be a 2-D array (samples, "
                              f"features), got shape {X.shape}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(X):
            raise GraphcError(f"dataset {self.name}: labels must be 1-D with one per sample; "
                              f"got X {X.shape} and y {y.shape}")
        if len(X) == 0:
            raise GraphcError(f"dataset {self.name} is empty")
        if X.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
            raise GraphcError(f"dataset {self.name}: X and y must be numeric, got "
                              f"{X.dtype} and {y.dtype}")
        bad = ~np.isfinite(X.astype(np.float64))
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise GraphcError(f"dataset {self.name}: feature at row {r}, column {c} is "
                              f"{X[r, c]} (features must be finite)")
        self.X, self.y = X.astype(np.float32), y

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def n_classes(self) -> int | None:
        if self.task == "regression" or self.y.dtype.kind not in "iu":
            return None
        return int(self.y.max()) + 1

    def __len__(self):
        return len(self.X)

    def for_task(self, task: str) -> "Dataset":
        """Labels converted for ``task`` (see module docstring); errors name the row."""
        if task not in TASKS:
            raise GraphcError(f"unknown task {task!r}; choose one of {TASKS}")
        y = self.y
        if task == "regression":
            return replace(self, y=y.astype(np.float32), task=task)
        yf = y.astype(np.float64)
        frac = np.flatnonzero(yf != np.round(yf))
        if frac.size:
            r = int(frac[0])
            raise GraphcError(f"dataset {self.name}: label {y[r]} at row {r} is not an integer "
                              f"class index (a classifier needs labels 0..K-1; use a "
                              f"regression model such as linreg for real-valued targets)")
        yi = yf.astype(np.int64)
        if task == "binary":
            values = set(np.unique(yi).tolist())
            if values <= {-1, 1}:
                yi = (yi > 0).astype(np.int64)      # {-1,+1} -> {0,1}
                return replace(self, y=yi.astype(np.int32), task=task,
                               class_names=self.class_names or [-1, 1])
            elif not values <= {0, 1}:
                r = int(np.flatnonzero((yi != 0) & (yi != 1))[0])
                raise GraphcError(f"dataset {self.name}: a binary model needs labels 0/1 (or "
                                  f"-1/+1), found label {yi[r]} at row {r} "
                                  f"({len(values)} distinct labels)")
        neg = np.flatnonzero(yi < 0)
        if neg.size:
            r = int(neg[0])
            raise GraphcError(f"dataset {self.name}: label {yi[r]} at row {r} is out of range "
                              "(class labels must be 0..K-1)")
        r = int(np.argmax(yi))
        if yi[r] >= MAX_CLASSES:
            raise GraphcError(f"dataset {self.name}: label {yi[r]} at row {r} would make "
                              f"{yi[r] + 1} classes (more than {MAX_CLASSES}, "
                              f"{len(np.unique(yi))} distinct labels); class labels must be "
                              "0..K-1: re-index them, e.g. np.unique(y, return_inverse=True)")
        return replace(self, y=yi.astype(np.int32), task=task)

    def check_classes(self, n_outputs: int, model: str):
        """Every label must index one of the model's ``n_outputs`` classes."""
        if self.task != "classification":
            return
        over = np.flatnonzero(self.y >= n_outputs)
        if over.size:
            r = int(over[0])
            raise GraphcError(f"dataset {self.name}: label {self.y[r]} at row {r} is out of "
                              f"range for model {model}, which has {n_outputs} classes "
                              f"(labels must be 0..{n_outputs - 1})")

    def check_features(self, n_features: int | None, model: str):
        if n_features is not None and n_features != self.n_features:
            raise GraphcError(f"model {model} expects {n_features} input features but dataset "
                              f"{self.name} has {self.n_features}")
