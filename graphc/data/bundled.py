"""Real datasets that ship inside scikit-learn (no network needed) and seeded synthetic ones.

* digits  -- 1,797 8x8 handwritten digits, 64 features, 10 classes (UCI ML hand-written
  digits, Alpaydin & Kaynak 1998; via sklearn.datasets.load_digits).
* diabetes -- 442 patients, 10 features, a disease-progression target (Efron et al. 2004,
  "Least Angle Regression"; via sklearn.datasets.load_diabetes).
* breast_cancer -- 569 tumours, 30 features, malignant/benign (UCI Breast Cancer Wisconsin
  (Diagnostic), Wolberg, Street & Mangasarian 1995; via sklearn.datasets.load_breast_cancer).
"""
from __future__ import annotations

import numpy as np

from ..ir import GraphcError
from .dataset import Dataset


def digits() -> Dataset:
    from sklearn.datasets import load_digits
    d = load_digits()
    return Dataset(d.data, d.target.astype(np.int32), "digits", "classification",
                   "UCI ML hand-written digits (Alpaydin & Kaynak 1998), via scikit-learn")


def diabetes() -> Dataset:
    from sklearn.datasets import load_diabetes
    d = load_diabetes(scaled=False)
    return Dataset(d.data, d.target.astype(np.float32), "diabetes", "regression",
                   "Diabetes (Efron et al. 2004), via scikit-learn", list(d.feature_names))


def breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer
    d = load_breast_cancer()
    return Dataset(d.data, d.target.astype(np.int32), "breast_cancer", "binary",
                   "Breast Cancer Wisconsin (Diagnostic), UCI, via scikit-learn",
                   list(d.feature_names), [str(c) for c in d.target_names])


def synthetic_classification(n=2000, d=20, classes=3, seed=0, informative=None) -> Dataset:
    """Gaussian clusters (sklearn's make_classification), any size, seeded."""
    from sklearn.datasets import make_classification
    n, d, classes = int(n), int(d), int(classes)
    informative = int(informative or max(2, min(d, d // 2)))
    if classes < 2 or d < 1 or n < classes:
        raise GraphcError(f"synthetic classification needs classes >= 2, d >= 1, n >= classes; "
                          f"got n={n}, d={d}, classes={classes}")
    _check_size("synth-cls", n, d)
    if classes * 2 > 2 ** informative:
        informative = min(d, int(np.ceil(np.log2(classes * 2))))
    X, y = make_classification(n_samples=n, n_features=d, n_informative=informative,
                               n_redundant=0, n_classes=classes, random_state=int(seed))
    task = "binary" if classes == 2 else "classification"
    return Dataset(X, y.astype(np.int32), f"synth-cls(n={n},d={d},classes={classes})", task,
                   "synthetic (sklearn.datasets.make_classification)")


def _check_size(kind, n, d):
    from ..ir.limits import too_big
    why = too_big(8 * n * d)
    if why:
        raise GraphcError(f"{kind}: n={n} samples of d={d} features {why}")


def synthetic_regression(n=1000, d=10, noise=0.1, seed=0) -> Dataset:
    """y = X·w + noise with a seeded random w."""
    n, d, noise = int(n), int(d), float(noise)
    if n < 1 or d < 1 or not (np.isfinite(noise) and noise >= 0):
        raise GraphcError(f"synth-reg needs n >= 1, d >= 1 and a finite noise >= 0; got "
                          f"n={n}, d={d}, noise={noise}")
    _check_size("synth-reg", n, d)
    rng = np.random.default_rng(int(seed))
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    y = X @ w + float(noise) * rng.standard_normal(n)
    return Dataset(X, y.astype(np.float32), f"synth-reg(n={n},d={d})", "regression",
                   "synthetic linear regression")


BUNDLED = {"digits": digits, "diabetes": diabetes, "breast_cancer": breast_cancer}
SYNTHETIC = {"synth-cls": synthetic_classification, "synth-reg": synthetic_regression}
