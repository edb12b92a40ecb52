"""Evaluation metrics and the compiled evaluator for a model on a whole split.

Evaluation runs ``gc.jit`` of the model's forward (and loss) on the entire split in one
call -- a second static shape, compiled once and cached -- so no sample is dropped.
Regression figures (MSE, R²) are reported in the target's original units: the model
trains on a standardised target, and the scaler is undone here.
"""
from __future__ import annotations

import numpy as np

from .. import api


def accuracy(pred, y) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(y)))


def mse(pred, y) -> float:
    d = np.asarray(pred, np.float64) - np.asarray(y, np.float64)
    return float(np.mean(d * d))


def r2(pred, y) -> float:
    y = np.asarray(y, np.float64)
    ss_res = np.sum((np.asarray(pred, np.float64) - y) ** 2)
    ss_tot = np.sum((y - y.mean()) ** 2)
    return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


class Evaluator:
    """Loss and task metric of ``model`` on a split, with compiled forward/loss.

    Like the training step, evaluation falls back from llvm to the numpy backend (with
    a one-line notice) if the llvm backend cannot compile the forward graph.
    """

    def __init__(self, model, backend: str, target_scaler=None, notice=None, **options):
        self.model, self.target_scaler, self.notice = model, target_scaler, notice
        self.backend, self.options = backend, options
        self._build(backend, options)

    def _build(self, backend, options):
        self.forward = api.jit(self.model.apply, backend=backend, **options)
        self.loss = api.jit(self.model.loss, backend=backend, **options)

    def _run(self, params, split):
        return (np.asarray(self.forward(params, split.X)),
                float(self.loss(params, split.X, split.y)))

    def _fallback(self, e):
        """llvm could not compile: say so once, then use the numpy backend."""
        if self.backend != "llvm":
            raise e
        first = (str(e).splitlines() or [""])[0][:120]
        (self.notice or print)(f"note: the llvm backend could not compile the evaluation "
                               f"graph ({type(e).__name__}: {first}); evaluating with "
                               "numpy")
        self.backend, self.options = "numpy", {}
        self._build("numpy", {})

    def outputs(self, params, X) -> np.ndarray:
        """The model's outputs on ``X`` (already standardised), compiled."""
        try:
            return np.asarray(self.forward(params, X))
        except Exception as e:          # noqa: BLE001  (llvm failure -> reference path)
            self._fallback(e)
            return np.asarray(self.forward(params, X))

    def __call__(self, params, split, prefix: str) -> dict:
        try:
            out, loss = self._run(params, split)
        except Exception as e:          # noqa: BLE001  (llvm failure -> reference path)
            self._fallback(e)
            out, loss = self._run(params, split)
        res = {f"{prefix}_loss": loss}
        if self.model.spec.task == "regression":
            pred, y = out, split.y
            if self.target_scaler is not None:
                pred = self.target_scaler.inverse(pred[:, None])[:, 0]
                y = self.target_scaler.inverse(y[:, None])[:, 0]
            res[f"{prefix}_mse"] = mse(pred, y)
            res[f"{prefix}_r2"] = r2(pred, y)
        else:
            pred = self.model.predict(out)
            res[f"{prefix}_accuracy"] = accuracy(pred, split.y)
            res[f"{prefix}_correct"] = int(np.sum(pred == split.y))
            res[f"{prefix}_n"] = int(len(split.y))
        return res


def headline(metrics: dict, prefix: str) -> str:
    """``accuracy 98.1% (264/269)`` or ``R² 0.482, MSE 2931.2`` for a printed summary."""
    if f"{prefix}_accuracy" in metrics:
        return (f"accuracy {100 * metrics[prefix + '_accuracy']:.1f}% "
                f"({metrics[prefix + '_correct']}/{metrics[prefix + '_n']})")
    return f"R² {metrics[prefix + '_r2']:.3f}, MSE {metrics[prefix + '_mse']:.5g}"
