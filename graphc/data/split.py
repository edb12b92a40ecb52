"""Train/validation/test split and standardisation fitted on the training set only.

Statistics come from the training split alone so nothing about the validation or test
samples leaks into training (the usual mistake is standardising before splitting).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..ir import GraphcError
from .dataset import Dataset


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


def split(ds: Dataset, val: float = 0.15, test: float = 0.15, seed: int = 0) -> Splits:
    """A seeded random permutation cut into train / val / test (fractions of the whole).

    Classification sets are stratified (each class spread over the three parts in
    proportion) so small sets such as breast_cancer keep their class balance.
    """
    if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
        raise GraphcError(f"split fractions must be in (0, 1) with val + test < 1, got "
                          f"val={val}, test={test}")
    n = len(ds)
    rng = np.random.default_rng(seed)
    if ds.task in ("classification", "binary"):
        parts = [[], [], []]
        for c in np.unique(ds.y):
            idx = rng.permutation(np.flatnonzero(ds.y == c))
            nt, nv = int(round(len(idx) * test)), int(round(len(idx) * val))
            parts[2].append(idx[:nt])
            parts[1].append(idx[nt:nt + nv])
            parts[0].append(idx[nt + nv:])
        tr, va, te = (rng.permutation(np.concatenate(p)) for p in parts)
    else:
        idx = rng.permutation(n)
        nt, nv = int(round(n * test)), int(round(n * val))
        te, va, tr = idx[:nt], idx[nt:nt + nv], idx[nt + nv:]
    if min(len(tr), len(va), len(te)) == 0:
        raise GraphcError(f"dataset {ds.name} has {n} samples: too few to split into "
                          f"train/val/test with val={val}, test={test}")
    return Splits(*(replace(ds, X=ds.X[i], y=ds.y[i], name=f"{ds.name}[{part}]")
                    for i, part in ((tr, "train"), (va, "val"), (te, "test"))))


class Standardizer:
    """x -> (x - mean) / std with statistics of the training features only.

    Constant features get std 1 (they become 0, not NaN).
    """

    def __init__(self, mean=None, std=None):
        self.mean, self.std = mean, std

    def fit(self, X, per_feature=True):
        """``per_feature=False``: one mean and std over all features (images: every
        pixel scaled alike, as MNIST's usual normalisation), kept per feature."""
        X = np.asarray(X, np.float64)
        if not per_feature:
            self.mean = np.full(X.shape[1], X.mean())
            self.std = np.full(X.shape[1], X.std() if X.std() > 1e-12 else 1.0)
            return self
        self.mean = X.mean(axis=0)
        std = X.std(axis=0)
        self.std = np.where(std > 1e-12, std, 1.0)
        return self

    def transform(self, X):
        return ((np.asarray(X, np.float64) - self.mean) / self.std).astype(np.float32)

    def inverse(self, Z):
        return np.asarray(Z, np.float64) * self.std + self.mean


def standardize(s: Splits, target: bool = False, per_feature: bool = True
                ) -> tuple[Splits, Standardizer, Standardizer | None]:
    """Standardise features (and, for regression, the target) with training statistics."""
    fx = Standardizer().fit(s.train.X, per_feature)
    fy = Standardizer().fit(s.train.y[:, None]) if target else None

    def apply(d: Dataset) -> Dataset:
        y = fy.transform(d.y[:, None])[:, 0] if fy is not None else d.y
        return replace(d, X=fx.transform(d.X), y=y)

    return Splits(apply(s.train), apply(s.val), apply(s.test)), fx, fy
