"""What the subcommands share: turning parsed arguments into a prepared model."""
from __future__ import annotations

from ..step import build_step_graph
from ..train import prepare, resolve

MODEL_KEYS = ("dataset", "label_column", "batch_size", "widths", "optimizer", "lr", "seed",
              "passes")


def overrides(args, keys=MODEL_KEYS) -> dict:
    return {k: getattr(args, k, None) for k in keys if getattr(args, k, None) is not None}


def prepared_from_args(args, **extra):
    from .lm_cmd import LM_MODELS
    if args.model in LM_MODELS:                 # the character LM: its own corpus
        from .lm_prepared import prepare_lm
        return prepare_lm(args.model, **overrides(args), **extra)
    spec, cfg = resolve(args.model, **overrides(args), **extra)
    return prepare(spec, cfg)


def stages_from_args(args) -> tuple[dict, object]:
    """The step pipeline's recorded graphs (no backend compile needed): every pass of
    the pipeline the backend would get, the user's ``--pass`` ones included."""
    from ..models.user_passes import edit
    p = prepared_from_args(args)
    stages, _ = build_step_graph(p.model.loss, p.params, p.config.make_optimizer(),
                                 p.example_batch(), passes=edit(getattr(args, "passes", None)),
                                 backend=getattr(args, "backend", "llvm"))
    return stages, p


def pipeline_from_args(args):
    """The step pipeline these arguments would run (``--list-passes``)."""
    from ..passes.standard import step_pipeline
    from ..step import resolve_pipeline
    from ..models.user_passes import edit
    return resolve_pipeline(edit(getattr(args, "passes", None)),
                            step_pipeline(getattr(args, "backend", "llvm")))
