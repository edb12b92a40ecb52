"""graphc.data -- datasets, splits, standardisation and mini-batches.

``load_dataset(spec)`` accepts a bundled name (``digits``, ``diabetes``,
``breast_cancer``, ``digits28``: the digits resized to 28x28), ``mnist:DIR`` (IDX files), a synthetic spec (``synth-cls:n=5000,d=20,classes=4,seed=1``,
``synth-reg:n=1000,d=8,noise=0.5``) or a path to a ``.npz`` / ``.csv`` file.
"""
from __future__ import annotations

import os

from ..ir import GraphcError
from . import augment
from .batches import Batches
from .bundled import (BUNDLED, SYNTHETIC, breast_cancer, diabetes, digits,
                      synthetic_classification, synthetic_regression)
from .dataset import Dataset
from .files import load_csv, load_features, load_npz
from .images import digits28, mnist
from .split import Splits, Standardizer, split, standardize

ALIASES = {"breast-cancer": "breast_cancer", "cancer": "breast_cancer"}


def _parse_options(text: str) -> dict:
    opts = {}
    for item in filter(None, text.split(",")):
        if "=" not in item:
            raise GraphcError(f"bad synthetic option {item!r}: expected key=value")
        k, v = item.split("=", 1)
        try:
            opts[k.strip()] = float(v) if "." in v or "e" in v.lower() else int(v)
        except ValueError:
            raise GraphcError(f"bad synthetic option {item!r}: value must be a number") from None
    return opts


def load_dataset(spec: str, label_column=None) -> Dataset:
    """A Dataset from a name, a synthetic spec or a file path (see module docstring)."""
    name = ALIASES.get(spec, spec)
    if name in BUNDLED:
        return BUNDLED[name]()
    if name == "digits28":
        return digits28()
    kind, _, opts = name.partition(":")
    if kind == "mnist":
        if not opts:
            raise GraphcError("mnist needs a directory: --dataset mnist:DIR (the IDX files "
                              "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], ...)")
        return mnist(os.path.expanduser(opts))
    if kind in SYNTHETIC:
        try:
            return SYNTHETIC[kind](**_parse_options(opts))
        except TypeError as e:
            raise GraphcError(f"bad options for {kind}: {e}") from None
    ext = os.path.splitext(spec)[1].lower()
    if ext in (".npz", ".csv"):
        if not os.path.exists(spec):
            raise GraphcError(f"dataset file {spec} does not exist")
        return load_npz(spec) if ext == ".npz" else load_csv(spec, label_column)
    raise GraphcError(f"unknown dataset {spec!r}: use one of {sorted(BUNDLED) + ['digits28']}, "
                      "mnist:DIR, "
                      f"{sorted(SYNTHETIC)} (e.g. synth-cls:n=5000,d=20,classes=4) or a "
                      ".npz/.csv file")


__all__ = ["Dataset", "Splits", "Standardizer", "Batches", "load_dataset", "load_csv",
           "load_features", "load_npz", "split", "standardize", "digits", "diabetes",
           "breast_cancer", "synthetic_classification", "synthetic_regression", "digits28",
           "mnist"]
