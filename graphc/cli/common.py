"""What the subcommands share: turning parsed arguments into a prepared model."""
from __future__ import annotations

from ..step import build_step_graph
from ..train import prepare, resolve

MODEL_KEYS = ("dataset", "label_column", "batch_size", "widths", "optimizer", "lr", "seed")


def overrides(args, keys=MODEL_KEYS) -> dict:
    return {k: getattr(args, k, None) for k in keys if getattr(args, k, None) is not None}


def prepared_from_args(args, **extra):
    spec, cfg = resolve(args.model, **overrides(args), **extra)
    return prepare(spec, cfg)


def stages_from_args(args) -> tuple[dict, object]:
    """The step pipeline's recorded graphs (no backend compile needed)."""
    p = prepared_from_args(args)
    stages, _, _ = build_step_graph(p.model.loss, p.params, p.config.make_optimizer(),
                                    p.example_batch())
    return stages, p
