"""User data files: ``.npz`` (arrays X/y or x/y) and ``.csv`` (features + a label column).

Loaded with no pickle (``allow_pickle=False``); every malformed input is a GraphcError
that names the file and, for CSV, the row and column, because "could not convert string
to float" with no position is useless on a 10,000-line file.
"""
from __future__ import annotations

import csv
import io
import os
import zipfile

import numpy as np

from ..ir import GraphcError
from .dataset import Dataset


def load_npz(path: str) -> Dataset:
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":           # np.load would try unpickling anything else
            raise GraphcError(f"{path}: not a valid .npz file (no zip header)")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            for xk, yk in (("X", "y"), ("x", "y"), ("X", "Y"), ("data", "target")):
                if xk in keys and yk in keys:
                    return Dataset(z[xk], z[yk], os.path.basename(path), None, path)
    except (zipfile.BadZipFile, EOFError) as e:
        raise GraphcError(f"{path}: not a valid .npz file ({e})") from None
    except ValueError as e:
        raise GraphcError(f"{path}: cannot read ({e}); object arrays are not accepted") from None
    raise GraphcError(f"{path}: expected arrays 'X' and 'y' (or 'x'/'y'), found {keys}")


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_csv_table(path: str) -> tuple[list | None, np.ndarray]:
    """(header or None, float64 cells) of a numeric CSV; errors name the row and column.

    The first row is a header when none of its cells is a number; a first row mixing
    numbers and text is reported as a bad cell, not silently dropped.
    """
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise GraphcError(f"{path}: not UTF-8 text: byte 0x{raw[e.start]:02x} at offset "
                          f"{e.start} (line {line}); save the CSV as UTF-8 (e.g. iconv -f "
                          "latin1 -t utf-8)") from None
    rows = [r for r in csv.reader(io.StringIO(text, newline=""))
            if r and any(c.strip() for c in r)]
    if not rows:
        raise GraphcError(f"{path}: the CSV file is empty")
    header = None
    if not any(_is_number(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise GraphcError(f"{path}: the CSV file has a header but no data rows")
    width = len(header) if header else len(rows[0])
    first_line = 2 if header else 1
    data = np.empty((len(rows), width), np.float64)
    for i, r in enumerate(rows):
        line = i + first_line
        if len(r) != width:
            raise GraphcError(f"{path}: row {line} has {len(r)} columns, expected {width}")
        for j, c in enumerate(r):
            try:
                data[i, j] = float(c)
            except ValueError:
                col = f"{j + 1} ({header[j]!r})" if header else f"{j + 1}"
                raise GraphcError(f"{path}: row {line}, column {col}: {c.strip()!r} is not a "
                                  "number") from None
    return header, data


def load_csv(path: str, label_column=None) -> Dataset:
    """Features and a label column (the last unless ``label_column`` names/indexes one)."""
    header, data = read_csv_table(path)
    width = data.shape[1]
    if width < 2:
        raise GraphcError(f"{path}: need at least one feature column and a label column")
    li = _label_index(path, label_column, header, width)
    X = np.delete(data, li, axis=1)
    names = [h for k, h in enumerate(header) if k != li] if header else []
    return Dataset(X, data[:, li], os.path.basename(path), None, path, names)


def load_features(path: str, n_features: int, label_column=None) -> tuple[np.ndarray, str]:
    """Features for a model of ``n_features`` inputs from a .csv or .npz file (new data).

    A CSV may hold exactly the feature columns, or those plus a label column (dropped:
    ``label_column``, else the last); an .npz holds ``X`` (or ``x``/``data``).  Returns
    (X, a note about what was dropped or '').
    """
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise GraphcError(f"data file {path} does not exist")
    if ext == ".npz":
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                raise GraphcError(f"{path}: not a valid .npz file (no zip header)")
        try:
            with np.load(path, allow_pickle=False) as z:
                for k in ("X", "x", "data"):
                    if k in z.files:
                        return np.asarray(z[k]), ""
                keys = list(z.files)
                if "graphc_model" in keys:
                    raise GraphcError(f"{path} is a saved model, not data: give the data "
                                      "file second (graphc predict MODEL.npz DATA.csv)")
        except (zipfile.BadZipFile, EOFError) as e:
            raise GraphcError(f"{path}: not a valid .npz file ({e})") from None
        except ValueError as e:
            raise GraphcError(f"{path}: cannot read ({e}); object arrays are not "
                              "accepted") from None
        raise GraphcError(f"{path}: expected an array 'X' (or 'x'), found {keys}")
    if ext != ".csv":
        raise GraphcError(f"{path}: data must be a .csv or .npz file")
    header, data = read_csv_table(path)
    width = data.shape[1]
    if width == n_features and label_column is None:
        return data, ""
    if width == n_features + 1 or (label_column is not None and width > 1):
        li = _label_index(path, label_column, header, width)
        what = repr(header[li]) if header else str(li + 1)
        return np.delete(data, li, axis=1), f"ignored label column {what} of {path}"
    raise GraphcError(f"{path} has {width} columns; the model expects {n_features} features "
                      f"(or {n_features} features plus a label column)")


def _label_index(path, label_column, header, width) -> int:
    if label_column is None:
        return width - 1
    if header and label_column in header:
        return header.index(label_column)
    try:
        k = int(label_column)
    except (TypeError, ValueError):
        raise GraphcError(f"{path}: no label column {label_column!r}"
                          + (f"; columns are {header}" if header else "")) from None
    if not -width <= k < width:
        raise GraphcError(f"{path}: label column {k} out of range for {width} columns")
    return k % width
