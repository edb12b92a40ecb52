"""The argparse definition of ``graphc``: one subcommand per job (see docs/cli.md).

``OneLineParser`` turns argparse's usage dump into a single ``graphc CMD: error: ...``
line with exit status 2, so a scripted caller sees one clear reason.
"""
from __future__ import annotations

import argparse
import sys

from ..models import BUILTINS

MODEL_HELP = (f"a built-in model ({', '.join(BUILTINS)}, transformer) or path/to/file.py:NAME "
              "(see docs/cli.md, 'User models')")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        message = message.splitlines()[0]
        if "required: MODEL" in message:
            message += f" (built-in models: {', '.join(BUILTINS)}; or path/to/file.py:NAME)"
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _number(convert, ok, what):
    """An argparse type: ``convert`` the text, then require ``ok``; errors say ``what``."""
    def parse(text):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v
    parse.__name__ = what
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0 and v != float("inf"), "a positive number")
nonneg_float = _number(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
fraction = _number(float, lambda v: 0 < v < 1, "a fraction between 0 and 1")
budget = _number(float, lambda v: 0 < v < float("inf") and (v <= 1 or v == int(v)),
                 "a byte count or a fraction in (0, 1]")


def widths(text):
    try:
        ws = tuple(int(w) for w in text.replace("-", ",").split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"widths must be integers like 256,128; got "
                                         f"{text!r}") from None
    if not ws or min(ws) <= 0:
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return ws


def _common(p, backend=True):
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--dataset", help="digits, diabetes, breast_cancer, synth-cls:..., "
                   "synth-reg:..., or a .npz/.csv file (default: the model's own)")
    p.add_argument("--label-column", help="CSV label column, name or index (default: last)")
    p.add_argument("--batch-size", type=positive_int, help="mini-batch size")
    p.add_argument("--widths", type=widths, help="mlp hidden widths, e.g. 256,128")
    p.add_argument("--optimizer", choices=("sgd", "momentum", "adam", "adamw"))
    p.add_argument("--lr", type=positive_float, help="learning rate (the schedule's peak)")
    p.add_argument("--seed", type=int, help="seed for split, init and shuffling (default 0)")
    p.add_argument("--pass", dest="passes", action="append", metavar="FILE.py:FN[:AFTER]",
                   help="insert a user's pass FN(graph) -> graph into the step pipeline, "
                   "after pass AFTER (default: before fusion); repeatable")
    if backend:
        _backend(p, debug=False)
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")


def _distributed(t):
    """``graphc train`` options of data parallel runs (docs/distributed.md)."""
    g = t.add_argument_group("data parallel (run under mpiexec; docs/distributed.md)")
    g.add_argument("--distributed", choices=("sync", "async"),
                   help="sync: all-reduce gradients every step; async: rank 0 is a "
                        "parameter server, the other ranks workers")
    g.add_argument("--buckets", type=positive_int, default=1,
                   help="sync: all-reduce calls per step (default 1: the whole region; "
                        "more than 1 implies --reduce allreduce)")
    g.add_argument("--reduce", choices=("auto", "allreduce", "shared", "sharded"),
                   default=None,
                   help="sync: how gradients are summed: sharded (one machine: parameters, "
                        "optimizer state and gradients in a shared-memory MPI window, each "
                        "rank sums and updates 1/N of them), shared (one machine: every rank "
                        "sums all gradients in place from the window), allreduce "
                        "(MPI_Allreduce, any machines), auto (sharded on one machine, shared "
                        "when the optimizer clips by global norm; the default, or "
                        "$GRAPHC_SYNC_REDUCE)")
    g.add_argument("--comm-timeout", type=positive_float, default=None,
                   help="seconds before a stuck rank is an error (default 60)")
    g.add_argument("--staleness", type=nonneg_int, default=None,
                   help="async: a worker more than K versions behind waits (default: "
                        "unbounded)")
    g.add_argument("--respawn", type=nonneg_int, default=2,
                   help="async: replacement workers the server may spawn for lost ones "
                        "(default 2; needs mpiexec --with-ft ulfm)")


def _backend(p, debug=True):
    p.add_argument("--backend", choices=("llvm", "numpy"), default="llvm",
                   help="llvm (default; falls back to numpy if it cannot compile) or numpy")
    p.add_argument("--threads", type=positive_int, help="worker threads (llvm backend)")
    if debug:
        p.add_argument("--debug", action="store_true", help="show Python tracebacks")


def build_parser() -> argparse.ArgumentParser:
    top = OneLineParser(prog="graphc", description="graphc: a static-graph compiler for "
                        "training neural networks on the CPU")
    top.add_argument("--version", action="version", version="graphc 0.1.0")
    top.add_argument("--debug", action="store_true", help="show Python tracebacks")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True

    t = sub.add_parser("train", help="train a model and report validation/test metrics")
    _common(t)
    t.add_argument("--epochs", type=positive_int, help="maximum epochs")
    t.add_argument("--momentum", type=float, help="momentum for --optimizer momentum (0.9)")
    t.add_argument("--nesterov", action="store_true", default=None,
                   help="Nesterov momentum (with --optimizer momentum)")
    t.add_argument("--weight-decay", type=nonneg_float,
                   help="weight decay (0; L2 in the gradient, decoupled for adamw: 0.01)")
    t.add_argument("--lr-schedule", choices=("constant", "step", "cosine"),
                   help="learning-rate schedule over the run (default constant); the lr is a "
                        "runtime input of the compiled step, so it changes with no recompile")
    t.add_argument("--warmup", type=nonneg_int, help="linear lr warm-up over N updates (0)")
    t.add_argument("--lr-step", type=positive_int,
                   help="step schedule: multiply the lr by --lr-gamma every N epochs")
    t.add_argument("--lr-gamma", type=positive_float, help="step schedule's factor (0.1)")
    t.add_argument("--min-lr", type=nonneg_float, help="cosine schedule's final lr (0)")
    t.add_argument("--clip-grad-norm", type=positive_float, metavar="MAX",
                   help="clip the gradients to global L2 norm MAX (inside the compiled step)")
    t.add_argument("--val-fraction", dest="val", type=fraction,
                   help="validation share of the data (0.15)")
    t.add_argument("--test-fraction", dest="test", type=fraction,
                   help="test share of the data (0.15)")
    t.add_argument("--memory-budget", type=budget, metavar="BYTES|FRACTION",
                   help="rematerialise activations to keep saved bytes under this budget "
                        "(bytes, or a fraction in (0, 1] of the saved activations)")
    t.add_argument("--augment", metavar="none|shift:N",
                   help="training-batch augmentation: shift:N moves each training image by "
                        "up to N pixels (edge-filled); lenet's default is shift:2, others' none")
    t.add_argument("--patience", type=nonneg_int,
                   help="early stopping: epochs without val-loss improvement (0 = off)")
    t.add_argument("--tol", type=float, help="minimum val-loss improvement (1e-4)")
    t.add_argument("--checkpoint-dir", help="directory for checkpoints (last two kept)")
    t.add_argument("--checkpoint-every", type=nonneg_int, default=1,
                   help="epochs between checkpoints (default 1; 0 = only the final one)")
    t.add_argument("--checkpoint-steps", type=nonneg_int, default=0,
                   help="also checkpoint every N updates (default 0 = off)")
    t.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="continue from the latest checkpoint in --checkpoint-dir "
                        "(or from the file given)")
    t.add_argument("--json", dest="json_log", metavar="FILE",
                   help="write per-epoch metrics as JSON lines")
    t.add_argument("--plot", metavar="FILE.png", help="loss/accuracy curves (matplotlib)")
    t.add_argument("--save", metavar="FILE.npz", help="save the best parameters")
    t.add_argument("--progress", choices=("auto", "bar", "lines", "none"), default="auto")
    t.add_argument("--text", metavar="FILE", help="transformer: train on this UTF-8 text "
                   "(default: the standard library's pydoc_data.topics)")
    t.add_argument("--steps", type=positive_int, help="transformer: updates (default 1500)")
    t.add_argument("--dropout", type=float, help="transformer: dropout probability (0)")

    _distributed(t)

    c = sub.add_parser("cache", help="the disk compile cache: where it is, its entries, size "
                       "and cap (info), or empty it (clear)")
    c.add_argument("action", choices=("info", "clear"))
    c.add_argument("--json", action="store_true", help="info: print the figures as JSON")
    c.add_argument("--debug", action="store_true", help="show Python tracebacks")

    tu = sub.add_parser("tune", help="time the GEMM kernel candidates on this CPU, print "
                        "their GFLOP/s and keep the fastest for later compiles")
    tu.add_argument("--budget", type=positive_float, default=None,
                    help="seconds the search may take (default 5)")
    tu.add_argument("--show", action="store_true",
                    help="print the choice in use (cached or the table's) without timing")
    tu.add_argument("--json", action="store_true", help="print the figures as JSON")
    tu.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    tu.add_argument("--debug", action="store_true", help="show Python tracebacks")

    la = sub.add_parser("launch", help="run a command under mpiexec, restarting it from its "
                        "last checkpoint when a rank dies")
    la.add_argument("-n", "--np", type=positive_int, default=2, help="ranks (default 2)")
    la.add_argument("--max-restarts", type=nonneg_int, default=0,
                    help="restarts after a failed job (default 0)")
    la.add_argument("--mpiexec", default="mpiexec",
                    help="the launcher and its options (default 'mpiexec'; e.g. "
                         "'mpiexec --hostfile hosts')")
    la.add_argument("rest", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                    help="the graphc command, e.g. -- train mlp --distributed sync ...")

    pr = sub.add_parser("predict", help="predictions of a saved model (train --save) on new "
                        "data")
    pr.add_argument("model_file", metavar="MODEL.npz", help="a model saved by graphc train "
                    "--save")
    pr.add_argument("data", metavar="DATA", help="a .csv (feature columns, optionally a label "
                    "column) or .npz (array X) of raw features")
    pr.add_argument("--out", metavar="FILE.csv", help="write predictions here (default: stdout)")
    pr.add_argument("--label-column", help="CSV column to ignore as the label (name or index)")
    _backend(pr)

    ev = sub.add_parser("eval", help="loss and accuracy/R² of a saved model on a dataset")
    ev.add_argument("model_file", metavar="MODEL.npz", help="a model saved by graphc train "
                    "--save")
    ev.add_argument("--dataset", help="a bundled name, synth-... spec or .npz/.csv file "
                    "(default: the training run's own test split)")
    ev.add_argument("--label-column", help="CSV label column, name or index (default: last)")
    ev.add_argument("--json", dest="json_out", metavar="FILE", help="write the metrics as JSON")
    _backend(ev)

    s = sub.add_parser("sample", help="generate text from a trained language model")
    s.add_argument("model", metavar="MODEL", help="transformer")
    s.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="the --checkpoint-dir of `graphc train transformer`")
    s.add_argument("--prompt", default="", help="text to continue")
    s.add_argument("--tokens", type=positive_int, default=200, help="characters to generate")
    s.add_argument("--temperature", type=positive_float, default=1.0)
    s.add_argument("--top-k", type=positive_int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--backend", choices=("llvm", "numpy"), default="llvm")
    s.add_argument("--debug", action="store_true", help="show Python tracebacks")

    d = sub.add_parser("dot", help="the IR as Graphviz DOT (or SVG/PNG through Graphviz)")
    _common(d, backend=False)
    d.add_argument("--graph", choices=("forward", "backward", "step"), default=None,
                   help="forward pass, the backward nodes alone (with the saved activations "
                        "they read), or the whole training step (default)")
    d.add_argument("--after", metavar="PASS", help="the step graph after this pass "
                   "(--list-passes shows them)")
    d.add_argument("--list-passes", action="store_true", help="list the pipeline's passes")
    d.add_argument("-o", "--output", metavar="FILE", help="output file (default: stdout)")
    d.add_argument("--format", choices=("dot", "svg", "png"),
                   help="default: from the -o extension, else dot")
    d.add_argument("--hide-constants", action="store_true", help="omit constant nodes")
    d.add_argument("--detail", choices=("full", "clusters", "summary"),
                   help="full: every node; clusters: every node, grouped by layer and role; "
                        "summary: one box per layer and role (default for the step graph)")

    i = sub.add_parser("ir", help="the text IR at any pipeline stage")
    _common(i, backend=False)
    i.add_argument("--graph", choices=("forward", "backward", "step"), default=None)
    i.add_argument("--after", metavar="PASS", help="the step graph after this pass "
                   "(--list-passes shows them)")
    i.add_argument("--list-passes", action="store_true", help="list the pipeline's passes")
    i.add_argument("--no-source", action="store_true", help="omit source-line comments")
    i.add_argument("--list-stages", action="store_true", help="list the pipeline stages")

    m = sub.add_parser("memplan", help="the memory report (and timeline plot)")
    _common(m)
    m.add_argument("--plot", metavar="FILE.png", help="arena timeline plot (the backend's own "
                   "kernel order on the llvm backend)")
    m.add_argument("--figure", metavar="FILE.png", help="the step graph by layer beside the "
                   "arena on one time axis: saved activations, offsets and live intervals")

    b = sub.add_parser("bench", help="time the compiled training step against peers")
    _common(b)
    b.add_argument("--vs", default="numpy", metavar="PEERS",
                   help="comma-separated peers: numpy, torch, jax (default: numpy)")
    b.add_argument("--layout", choices=("native", "torch", "both"), default="native",
                   help="weight layout of graphc's step: native (W (in, out), x @ W), "
                        "torch (W (out, in), x @ W.T, as PyTorch stores it) or both "
                        "(default: native)")
    b.add_argument("--repeats", type=positive_int, default=7, help="timed repeats (median)")
    b.add_argument("--steps", type=positive_int, default=20, help="steps per repeat")
    return top
