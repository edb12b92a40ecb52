"""``graphc predict`` and ``graphc eval``: use a model saved by ``graphc train --save``.

Both load the file with ``gc.load_model`` (the model rebuilt from its spec, parameters
checked against it, forward compiled) and scale raw features with the training split's
statistics stored in the file.
"""
from __future__ import annotations

import csv
import json
import sys

import numpy as np

from .. import data as gdata
from ..train.inference import LoadedModel
from ..train.metrics import headline


def _load(args) -> LoadedModel:
    return LoadedModel(args.model_file, args.backend, args.threads,
                       notice=lambda s: print(s, file=sys.stderr))


def _label_text(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.9g}"
    return str(v)


def run_predict(args) -> int:
    m = _load(args)
    X, note = gdata.load_features(args.data, m.n_features, args.label_column)
    if note:
        print(f"note: {note}", file=sys.stderr)
    pred = m.predict(X)
    header, cols = ["prediction"], [[_label_text(v) for v in pred]]
    if m.task != "regression":
        proba = m.predict_proba(X)
        names = m.classes or list(range(proba.shape[1]))
        for k, name in enumerate(names):
            header.append(f"p_{name}")
            cols.append([f"{p:.6g}" for p in proba[:, k]])
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        w = csv.writer(out)
        w.writerow(header)
        w.writerows(zip(*cols))
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"wrote {len(pred)} predictions of {m.name} to {args.out}", file=sys.stderr)
    return 0


def run_eval(args) -> int:
    m = _load(args)
    cfg = m.config
    if args.dataset:
        ds = gdata.load_dataset(args.dataset, args.label_column)
        where = args.dataset
    else:                                  # the run's own test split, recomputed
        ds = gdata.load_dataset(cfg["dataset"], cfg.get("label_column")).for_task(m.task)
        ds = gdata.split(ds, cfg["val"], cfg["test"], cfg["seed"]).test
        where = f"{cfg['dataset']} (the training run's test split, seed {cfg['seed']})"
    res = m.evaluate(ds, "eval")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"model_file": args.model_file, "dataset": where, **res}, f,
                      sort_keys=True)
            f.write("\n")
    print(f"eval {m.name} on {where}: loss {res['eval_loss']:.4f}, n {len(ds)}")
    print(f"eval {headline(res, 'eval')} -- {m.name} from {args.model_file}")
    return 0
