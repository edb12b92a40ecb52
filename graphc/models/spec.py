"""What a trainable model is for graphc's trainer and CLI: ``ModelSpec`` and ``Model``.

A ``ModelSpec`` is data-independent (name, task, default dataset and hyper-parameters,
how to build the network for a given input width and class count, the loss); calling
``spec.bind(n_features, n_classes)`` gives a ``Model`` with the three functions the
trainer needs, each traceable:

* ``model.init(seed)`` -> parameter pytree;
* ``model.apply(params, x)`` -> outputs (logits (n, K); scores (n,); predictions (n,));
* ``model.loss(params, x, y)`` -> scalar = criterion(outputs, y) + penalty(params).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import functions as F
from .. import nn
from ..ir import GraphcError

TASK_METRIC = {"classification": "accuracy", "binary": "accuracy", "regression": "r2"}

CRITERIA = {
    "cross_entropy": nn.cross_entropy,
    "mse": nn.mse,
    "hinge": nn.hinge,
    "bce": lambda s, y: nn.binary_cross_entropy_with_logits(s, y),
}
DEFAULT_CRITERION = {"classification": "cross_entropy", "binary": "bce", "regression": "mse"}

# Defaults shared by every model unless its spec overrides them.
BASE_HPARAMS = dict(epochs=100, batch_size=32, lr=0.01, optimizer="adam", patience=10,
                    tol=1e-4, val=0.15, test=0.15)


def criterion(name_or_fn) -> Callable:
    if callable(name_or_fn):
        return name_or_fn
    try:
        return CRITERIA[name_or_fn]
    except KeyError:
        raise GraphcError(f"unknown loss {name_or_fn!r}; choose one of {sorted(CRITERIA)} "
                          "or give a function (outputs, y) -> scalar") from None


@dataclass
class ModelSpec:
    name: str
    task: str                                    # classification | binary | regression
    build: Callable                              # (n_features, n_classes) -> nn.Module
    loss: object = None                          # name or (outputs, y) -> scalar
    penalty: Callable | None = None              # params -> scalar (e.g. L2), optional
    dataset: str = "digits"
    hparams: dict = field(default_factory=dict)
    description: str = ""
    #: feature standardisation: "per_feature" (tabular data) or "global" (images: one
    #: mean and std for every pixel, so the image keeps its shape)
    scaling: str = "per_feature"
    #: (channels, height, width) of one row of features, for image models (None: not an
    #: image model; ``--augment shift`` then assumes a square one-channel image)
    image: tuple | None = None

    def defaults(self) -> dict:
        return {**BASE_HPARAMS, **self.hparams}

    @property
    def metric(self) -> str:
        return TASK_METRIC[self.task]

    def bind(self, n_features: int, n_classes: int | None) -> "Model":
        module = self.build(n_features, n_classes)
        if not isinstance(module, nn.Module):
            raise GraphcError(f"model {self.name}: build() returned a "
                              f"{type(module).__name__}, expected a gc.nn.Module")
        return Model(self, module, criterion(self.loss or DEFAULT_CRITERION[self.task]))


@dataclass
class Model:
    spec: ModelSpec
    module: nn.Module
    criterion: Callable

    @property
    def name(self):
        return self.spec.name

    def init(self, seed):
        return self.module.init(seed)

    def _apply(self, params, x):
        out = self.module(params, x)
        if self.spec.task != "classification" and len(np.shape(out)) == 2 \
                and np.shape(out)[1] == 1:
            out = F.reshape(out, (np.shape(out)[0],))      # (n, 1) scores -> (n,)
        return out

    def __post_init__(self):
        # Traced graphs are named after the function: "mlp_loss" / "mlp_loss_step" read
        # better in IR text and DOT than a generic "loss".
        def loss(params, x, y):
            value = self.criterion(self.apply(params, x), y)
            if self.spec.penalty is not None:
                value = F.add(value, self.spec.penalty(params))
            return value
        def forward(params, x):
            return self._apply(params, x)
        name = "".join(c if c.isalnum() else "_" for c in self.spec.name)
        loss.__name__ = loss.__qualname__ = f"{name}_loss"
        forward.__name__ = forward.__qualname__ = f"{name}_forward"
        self.loss, self.apply = loss, forward

    def predict(self, outputs: np.ndarray) -> np.ndarray:
        """Labels (or regression predictions) from ``apply``'s numpy outputs."""
        if self.spec.task == "classification":
            return np.argmax(outputs, axis=-1)
        if self.spec.task == "binary":
            return (np.asarray(outputs) > 0).astype(np.int32)
        return np.asarray(outputs)

    @property
    def in_features(self):
        return self.module.in_features

    @property
    def out_features(self):
        return self.module.out_features
