"""The saved-model file (``graphc train ... --save model.npz``): everything needed to use a
trained model on new raw data, in one ``.npz`` that ``np.load(allow_pickle=False)`` reads.

Contents:

* ``params/<key>/<key>...`` -- the best parameters, one array per leaf, keyed by their
  path in the nested parameter pytree (``params/0/w``), plus the tree itself in the record
  below, so loading gives back the same nested dict;
* ``x_mean``, ``x_std`` (and ``y_mean``, ``y_std`` for regression) -- the standardisation
  statistics of the training split: new data must be scaled exactly as training data was;
* ``graphc_model`` -- one JSON record (a numpy unicode array, no pickle): the model spec
  (name or ``file.py:NAME``, options such as ``widths``, task, input width, classes), the
  class labels, feature names, the training configuration and the metrics.

Written atomically (``atomic.savez_atomic``); ``check_save_path`` runs before training so
a run never ends with "cannot write the model".  Reading validates the record and the
arrays against the rebuilt model and raises ``ModelFileError`` naming the file and what
does not match -- a checkpoint, a dataset or another model's file is refused in one line.
"""
from __future__ import annotations

import datetime
import json
import os
import tempfile
import zipfile

import numpy as np

from .. import pytree
from ..ir import GraphcError
from .atomic import savez_atomic

FORMAT = 1
KIND = "graphc-model"
RECORD = "graphc_model"


class ModelFileError(GraphcError, ValueError):
    """A saved-model file that cannot be written, read, or used with this model/data."""


# ---- before training ----------------------------------------------------------------------
def check_save_path(path: str, avoid=()) -> str:
    """Refuse a ``--save`` path that could not be written, before any training is done."""
    if not str(path).endswith(".npz"):
        raise ModelFileError(f"--save {path}: the model file name must end in .npz")
    if os.path.isdir(path):
        raise ModelFileError(f"--save {path} is a directory; give a file name such as "
                             f"{os.path.join(path, 'model.npz')}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ModelFileError(f"--save {path}: directory {directory} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".graphc-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ModelFileError(f"--save {path}: cannot write in {directory} "
                             f"({e.strerror or e})") from None
    if os.path.exists(path) and not os.path.isfile(path):
        raise ModelFileError(f"--save {path} exists and is not a regular file")
    for other in avoid:
        if other and os.path.exists(other) and os.path.exists(path) \
                and os.path.samefile(other, path):
            raise ModelFileError(f"--save {path} would overwrite the dataset file {other}")
    return path


# ---- the parameter tree as JSON -----------------------------------------------------------
def tree_to_json(td: pytree.TreeDef):
    if td.kind in ("leaf", "none"):
        return {"kind": td.kind}
    out = {"kind": td.kind, "children": [tree_to_json(c) for c in td.children]}
    if td.kind == "dict":
        out["keys"] = list(td.keys)
    return out


def tree_from_json(d) -> pytree.TreeDef:
    kind = d["kind"]
    if kind in ("leaf", "none"):
        return pytree.TreeDef(kind)
    kids = tuple(tree_from_json(c) for c in d["children"])
    return pytree.TreeDef(kind, tuple(d.get("keys", ())), kids)


def leaf_keys(td: pytree.TreeDef, prefix: str = "params") -> list[str]:
    """``params/0/w``: one npz key per leaf, the nesting spelled with slashes."""
    out = []

    def go(t, p):
        if t.kind == "leaf":
            out.append(p)
        elif t.kind == "dict":
            for k, c in zip(t.keys, t.children):
                go(c, f"{p}/{k}")
        elif t.kind in ("list", "tuple"):
            for i, c in enumerate(t.children):
                go(c, f"{p}/{i}")

    go(td, prefix)
    return out


# ---- writing ------------------------------------------------------------------------------
def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else str(x)
    return x


def save_model(path: str, prepared, params, metrics: dict, extra: dict | None = None) -> str:
    """Write the trained model ``params`` (a pytree) of run ``prepared`` to ``path``."""
    from ..nn import num_params
    p, cfg = prepared, prepared.config
    leaves, td = pytree.flatten(params)
    keys = leaf_keys(td)
    payload = {k: np.asarray(v, order="C") for k, v in zip(keys, leaves)}
    payload["x_mean"] = np.asarray(p.x_scaler.mean, np.float64)
    payload["x_std"] = np.asarray(p.x_scaler.std, np.float64)
    if p.y_scaler is not None:
        payload["y_mean"] = np.asarray(p.y_scaler.mean, np.float64)
        payload["y_std"] = np.asarray(p.y_scaler.std, np.float64)
    tr = p.splits.train
    n_classes = p.model.out_features if p.spec.task == "classification" else None
    ref = cfg.model
    record = {
        "kind": KIND, "format": FORMAT, "graphc_version": _version(),
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": ref, "spec_name": p.spec.name, "task": p.spec.task,
            "description": p.spec.description,
            "file": os.path.abspath(ref.rpartition(":")[0]) if ":" in ref else None,
            "options": {"widths": list(cfg.widths)} if cfg.widths else {},
            "n_features": int(tr.X.shape[1]),
            "n_classes": int(n_classes) if n_classes else None,
            "num_params": num_params(params),
            "param_tree": tree_to_json(td),
            "param_types": {k: [str(v.dtype), list(v.shape)] for k, v in payload.items()
                            if k.startswith("params/")},
        },
        "classes": _jsonable(_classes(p)),
        "feature_names": list(getattr(tr, "feature_names", []) or []),
        "label_column": cfg.label_column,
        "dataset": cfg.dataset,
        "config": _jsonable({k: v for k, v in vars(cfg).items() if k != "extra"}),
        "metrics": _jsonable(metrics),
        **_jsonable(extra or {}),
    }
    payload[RECORD] = np.array(json.dumps(record, sort_keys=True))
    return savez_atomic(path, payload, prefix=f".{os.path.basename(path)}-")


def _classes(p) -> list | None:
    """The label each output class stands for (what ``predict`` prints)."""
    task = p.spec.task
    if task == "regression":
        return None
    names = list(getattr(p.splits.train, "class_names", []) or [])
    k = 2 if task == "binary" else int(p.model.out_features or 0)
    return names if len(names) == k else list(range(k))


def _version() -> str:
    import graphc
    return graphc.__version__


# ---- reading ------------------------------------------------------------------------------
def read_model_file(path: str) -> tuple[dict, dict]:
    """(record, arrays) of a saved model; ModelFileError for anything else."""
    if not os.path.isfile(path):
        raise ModelFileError(f"model file {path} does not exist")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ModelFileError(f"{path} is not a graphc model file (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise ModelFileError(f"model file {path} is corrupt or truncated ({e})") from None
    if RECORD not in arrays:
        if "meta" in arrays:
            raise ModelFileError(f"{path} is a training checkpoint, not a saved model; write "
                                 "one with graphc train ... --save model.npz")
        raise ModelFileError(f"{path} is not a graphc model file (it holds "
                             f"{', '.join(sorted(arrays)[:6]) or 'nothing'}; a model file is "
                             "written by graphc train ... --save model.npz)")
    try:
        record = json.loads(str(arrays.pop(RECORD)))
    except ValueError as e:
        raise ModelFileError(f"model file {path}: unreadable record ({e})") from None
    if record.get("kind") != KIND or record.get("format") != FORMAT:
        raise ModelFileError(f"model file {path} has kind {record.get('kind')!r} format "
                             f"{record.get('format')!r}; this graphc reads {KIND!r} format "
                             f"{FORMAT}")
    return record, arrays


def params_from(path: str, record: dict, arrays: dict, expected):
    """The saved parameter pytree, checked leaf by leaf against ``expected`` (a fresh
    ``init`` of the rebuilt model): same structure, names, shapes and dtypes."""
    td = tree_from_json(record["model"]["param_tree"])
    keys = leaf_keys(td)
    e_leaves, e_td = pytree.flatten(expected)
    e_keys = leaf_keys(e_td)
    name = record["model"]["name"]
    if keys != e_keys:
        missing = sorted(set(e_keys) - set(keys))[:4]
        extra = sorted(set(keys) - set(e_keys))[:4]
        raise ModelFileError(f"model file {path} does not match model {name} as built now: "
                             + (f"missing {missing} " if missing else "")
                             + (f"unexpected {extra}" if extra else "").strip())
    leaves = []
    for k, ref in zip(keys, e_leaves):
        if k not in arrays:
            raise ModelFileError(f"model file {path} lacks the array {k}")
        a = arrays[k]
        if a.shape != np.shape(ref) or a.dtype != np.asarray(ref).dtype:
            raise ModelFileError(f"model file {path}: {k} is {a.dtype}{list(a.shape)} but model "
                                 f"{name} as built now has {np.asarray(ref).dtype}"
                                 f"{list(np.shape(ref))} (a file from another model?)")
        leaves.append(np.ascontiguousarray(a))
    return pytree.unflatten(td, leaves)
