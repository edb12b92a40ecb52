"""Everything a run needs before its first update: data, model, parameters, compiled step.

Shared by ``graphc train`` and by ``dot``/``ir``/``memplan``/``bench``, which need the same
model bound to the same data shapes.  The order matters for reproducibility: the split,
the scalers and the initial parameters are pure functions of the config's seed.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from .. import data as gdata
from .. import step as gstep
from ..ir import ConfigError, GraphcError
from ..models import Model, ModelSpec, get_model
from .config import TrainConfig, from_model_defaults


@dataclass
class Prepared:
    config: TrainConfig
    spec: ModelSpec
    model: Model
    splits: gdata.Splits
    x_scaler: gdata.Standardizer
    y_scaler: gdata.Standardizer | None
    params: dict

    def example_batch(self, batch_size=None):
        return first_batch(self.splits.train, batch_size or self.config.batch_size,
                           "samples")


def first_batch(train, batch_size, what: str):
    """The first ``batch_size`` rows of the training split (what a step is compiled
    for), or a clear error naming the split's size."""
    bs = int(batch_size)
    if bs > len(train):
        raise GraphcError(f"batch size {bs} is larger than the {len(train)} training "
                          f"{what}; use --batch-size {len(train)} or less")
    return train.X[:bs], train.y[:bs]


def resolve(model_name: str, **overrides) -> tuple[ModelSpec, TrainConfig]:
    widths = overrides.get("widths")
    spec = get_model(model_name, **({"widths": widths} if widths else {}))
    return spec, from_model_defaults(spec, model=model_name, **overrides)


def prepare(spec: ModelSpec, config: TrainConfig, dataset: gdata.Dataset | None = None
            ) -> Prepared:
    ds = dataset or gdata.load_dataset(config.dataset, config.label_column)
    ds = ds.for_task(spec.task)
    n_classes = ds.n_classes if spec.task == "classification" else None
    model = spec.bind(ds.n_features, n_classes)
    ds.check_features(model.in_features, spec.name)
    out = model.out_features
    if spec.task == "classification" and out is not None:
        ds.check_classes(out, spec.name)
    if spec.task in ("binary", "regression") and out not in (None, 1):
        raise GraphcError(f"model {spec.name} is a {spec.task} model but has {out} outputs "
                          "(needs 1)")
    splits = gdata.split(ds, config.val, config.test, config.seed)
    splits, fx, fy = gdata.standardize(splits, target=spec.task == "regression",
                                       per_feature=spec.scaling != "global")
    params = model.init(config.seed)
    return Prepared(config, spec, model, splits, fx, fy, params)


def backend_options(backend: str, threads) -> dict:
    return {"threads": int(threads)} if threads and backend == "llvm" else {}


def compile_step(p: Prepared, backend: str, threads=None, notice=None, batch_size=None,
                 loss=None, params=None):
    """``gc.compile_step`` on the prepared model (or on ``loss``/``params`` given in its
    place: the same model written another way, as ``graphc bench --layout`` does); falls
    back from llvm to numpy (with a one-line notice) when the llvm backend cannot
    compile, so training always runs."""
    from ..models.user_passes import edit
    example = p.example_batch(batch_size)
    opt = p.config.make_optimizer(len(p.splits.train) // len(example[0]))
    mem = {"memory_budget": p.config.memory_budget} if p.config.memory_budget else {}
    passes = edit(p.config.passes)
    loss = p.model.loss if loss is None else loss
    params = p.params if params is None else params
    try:
        return gstep.compile_step(loss, params, opt, example, backend=backend,
                                  passes=passes, **mem,
                                  **backend_options(backend, threads)), backend
    except Exception as e:              # noqa: BLE001  (any llvm failure -> reference path)
        if backend != "llvm" or isinstance(e, ConfigError):
            raise                       # a bad setting is the user's to fix, not a fallback
        llvm_error = e
    # If numpy fails too, the problem is the model or data: that error propagates.
    step = gstep.compile_step(loss, params, opt, example, backend="numpy",
                              passes=passes, **mem)
    first = (str(llvm_error).splitlines() or [""])[0][:120]
    (notice or (lambda s: print(s, file=sys.stderr)))(
        f"note: the llvm backend could not compile this step ({type(llvm_error).__name__}: "
        f"{first}); using the numpy backend")
    return step, "numpy"


def param_arrays(tree) -> dict:
    """Flat ``{path: array}`` view of a parameter pytree (live arrays, not copies)."""
    from .. import pytree
    leaves, td = pytree.flatten(tree)
    return dict(zip(pytree.paths(td), leaves))


def copy_arrays(d: dict) -> dict:
    return {k: np.array(v, copy=True) for k, v in d.items()}
