"""The graphc command line:
``graphc train|predict|eval|dot|ir|memplan|bench|launch|sample|cache|tune``
(see docs/cli.md).

Errors a user can cause -- a bad model file, a corrupt checkpoint, a CSV with a text cell,
a missing file -- print one ``graphc CMD: error: ...`` line and exit 1 (2 for bad
arguments), with no traceback unless ``--debug`` is given.
"""
from __future__ import annotations

import sys

from ..ir import GraphcError


def _command(name):
    if name == "launch":
        from ..distributed.cli import run_launch
        return run_launch
    if name == "cache":
        from .cache_cmd import run
        return run
    if name == "tune":
        from .tune_cmd import run
        return run
    from . import bench_cmd, graph_cmds, lm_cmd, memplan_cmd, model_cmds, train_cmd
    return {"train": train_cmd.run, "predict": model_cmds.run_predict,
            "eval": model_cmds.run_eval, "dot": graph_cmds.run_dot, "ir": graph_cmds.run_ir,
            "memplan": memplan_cmd.run, "bench": bench_cmd.run,
            "sample": lm_cmd.run_sample}[name]


def _one_line_warnings() -> None:
    """graphc's own warnings (an untrusted cache directory) as one ``graphc: ...`` line
    on stderr, not Python's file:line + source-line format."""
    import warnings
    plain = warnings.formatwarning
    if getattr(plain, "graphc", False):
        return

    def fmt(message, category, filename, lineno, line=None):
        if str(message).startswith("graphc: "):
            return f"{message}\n"
        return plain(message, category, filename, lineno, line)
    fmt.graphc = True
    warnings.formatwarning = fmt


def main(argv=None) -> int:
    from ..models import UnknownModel
    from .parser import build_parser
    from .stages import UsageError
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or "--debug" in argv
    prog = f"graphc {args.command}"
    _one_line_warnings()
    try:
        return _command(args.command)(args)
    except BrokenPipeError:                 # `graphc ir ... | head`: not an error
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UnknownModel, UsageError) as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except (GraphcError, OSError) as e:
        if debug:
            raise
        msg = str(e).strip().replace("\n", " | ")
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 1
    except MemoryError as e:               # a safety net: graphc refuses what it can foresee
        if debug:
            raise
        print(f"{prog}: error: out of memory: {e or 'an allocation failed'} (use smaller "
              "shapes, batches or layers)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = ""
        if getattr(args, "checkpoint_dir", None):
            hint = "; continue with the same command plus --resume"
        print(f"{prog}: interrupted{hint}", file=sys.stderr)
        return 130


def entry():
    sys.exit(main())
