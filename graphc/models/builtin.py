"""The built-in models: linreg, logreg, svm, mlp, lenet (``lenet.py``) -- each a ModelSpec with its default data.

Defaults were chosen by measuring on the bundled data (see README "Built-in models"):
small enough to train in seconds on two cores, tuned enough to reach sensible figures.
"""
from __future__ import annotations

from .. import functions as F
from .. import nn
from .lenet import lenet
from .spec import ModelSpec


def _linear_out(n_features, n_classes, out=None):
    return nn.Linear(n_features, out or n_classes, init="glorot")


def _l2(lam):
    """(lam / 2)·Σ w² over weight matrices (biases are not regularised)."""
    def penalty(params):
        return F.multiply(0.5 * lam, F.sum(F.square(params["w"])))
    penalty.__name__ = f"l2_{lam}"
    return penalty


def linreg() -> ModelSpec:
    return ModelSpec(
        "linreg", "regression", lambda d, k: _linear_out(d, k, 1), "mse",
        dataset="diabetes",
        hparams=dict(epochs=200, batch_size=32, lr=0.01, optimizer="sgd", patience=20),
        description="linear regression, mean squared error (diabetes)")


def logreg() -> ModelSpec:
    return ModelSpec(
        "logreg", "classification", _linear_out, "cross_entropy", dataset="digits",
        hparams=dict(epochs=100, batch_size=32, lr=0.01, optimizer="adam", patience=10),
        description="softmax (multinomial logistic) regression, cross-entropy (digits)")


def svm(l2: float = 1e-3) -> ModelSpec:
    return ModelSpec(
        "svm", "binary", lambda d, k: _linear_out(d, k, 1), "hinge", penalty=_l2(l2),
        dataset="breast_cancer",
        hparams=dict(epochs=100, batch_size=32, lr=0.01, optimizer="sgd", patience=10, l2=l2),
        description="linear SVM, hinge loss + L2 (breast_cancer)")


def mlp(widths=(256, 128), activation="relu") -> ModelSpec:
    widths = tuple(int(w) for w in widths)
    return ModelSpec(
        "mlp", "classification",
        lambda d, k: nn.MLP([d, *widths, k], activation=activation), "cross_entropy",
        dataset="digits",
        hparams=dict(epochs=60, batch_size=32, lr=1e-3, optimizer="adam", patience=8,
                     widths=widths),
        description=f"multi-layer perceptron in-{'-'.join(map(str, widths))}-out, "
                    f"{activation}, cross-entropy (digits)")


BUILTINS = {"linreg": linreg, "logreg": logreg, "svm": svm, "mlp": mlp, "lenet": lenet}
