"""Every subcommand through its real entry point (``python -m graphc``), outputs checked."""
import json
import shutil

import networkx as nx
import numpy as np
import pytest

SMALL = ["--backend", "numpy"]


def test_train_reports_epochs_and_test_accuracy(graphc, tmp_path):
    log, curve = tmp_path / "m.jsonl", tmp_path / "c.png"
    r = graphc("train", "logreg", "--epochs", "3", *SMALL, "--json", log, "--plot", curve,
               "--save", tmp_path / "best.npz")
    assert r.returncode == 0, r.stderr
    assert "epoch   3/3" in r.stdout and "samples/s" in r.stdout
    assert "test accuracy" in r.stdout.splitlines()[-1]
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["event"] for x in records] == ["config"] + ["epoch"] * 3 + ["test"]
    assert {"train_loss", "val_loss", "val_accuracy", "samples_per_s", "lr"} <= set(records[1])
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.load(tmp_path / "best.npz", allow_pickle=False)["params/w"].shape == (64, 10)


@pytest.mark.parametrize("model, metric", [("linreg", "R²"), ("svm", "accuracy")])
def test_train_other_builtins(graphc, model, metric):
    r = graphc("train", model, "--epochs", "2", *SMALL)
    assert r.returncode == 0, r.stderr
    assert metric in r.stdout.splitlines()[-1]


def test_train_llvm_default_always_runs(graphc):
    r = graphc("train", "svm", "--epochs", "1")
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout


def test_user_model_file(graphc, tmp_path):
    f = tmp_path / "mymodel.py"
    f.write_text(
        "import graphc as gc\n"
        "def net(n_features, n_classes):\n"
        "    return gc.nn.Sequential(gc.nn.Linear(n_features, 8), gc.nn.Tanh(),\n"
        "                            gc.nn.Linear(8, n_classes))\n"
        "net.dataset = 'digits'\n"
        "net.hparams = {'lr': 0.01, 'epochs': 2}\n"
        "fixed = gc.nn.Linear(30, 1)\n"
        "fixed.task = 'binary'\n"
        "fixed.dataset = 'breast_cancer'\n"
        "fixed.loss = 'hinge'\n"
        "wrong = gc.nn.Linear(5, 10)\n"
        "narrow = gc.nn.Linear(64, 4)\n")
    r = graphc("train", f"{f}:net", *SMALL)
    assert r.returncode == 0, r.stderr
    assert "epoch   2/2" in r.stdout and "test accuracy" in r.stdout
    r = graphc("train", f"{f}:fixed", "--epochs", "2", *SMALL)
    assert r.returncode == 0, r.stderr
    r = graphc("train", f"{f}:wrong", *SMALL)
    assert r.returncode == 1
    assert "expects 5 input features but dataset digits has 64" in r.stderr
    r = graphc("train", f"{f}:narrow", *SMALL)
    assert r.returncode == 1 and "out of range for model narrow, which has 4 classes" in r.stderr
    r = graphc("train", f"{f}:missing", *SMALL)
    assert r.returncode == 1 and "has no attribute 'missing'" in r.stderr
    assert "Traceback" not in r.stderr


def test_csv_dataset_errors_are_one_line(graphc, tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("a,b,y\n1,2,0\n3,x,1\n")
    r = graphc("train", "logreg", "--dataset", f, *SMALL)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "row 3, column 2 ('b')" in r.stderr
    r = graphc("train", "logreg", "--dataset", f, *SMALL, "--debug")
    assert "Traceback" in r.stderr


def _dot_graph(text):
    import pydot
    (g,) = pydot.graph_from_dot_data(text)
    return g, nx.nx_pydot.from_pydot(g)


@pytest.mark.parametrize("which", ["forward", "backward", "step"])
def test_dot_parses_and_marks_backward_nodes(graphc, which):
    r = graphc("dot", "mlp", "--graph", which, "--detail", "full")
    assert r.returncode == 0, r.stderr
    g, nxg = _dot_graph(r.stdout)
    assert nxg.number_of_nodes() > 10 and nxg.number_of_edges() > 10
    fills = {n.get_name(): (n.get("fillcolor") or "").strip('"') for n in g.get_nodes()}
    backward = [n for n, c in fills.items() if c == "lightblue"]
    update = [n for n, c in fills.items() if c == "orange"]
    params = [n for n, c in fills.items() if c == "gold"]
    assert params
    if which == "forward":
        assert not backward and not update
    else:
        assert len(backward) > 5
        assert bool(update) == (which == "step")
    assert "f32[32,64]" in r.stdout                     # edges carry shape and dtype
    if which != "forward":
        assert "saved activation" in r.stdout


def test_dot_after_stage_and_file_output(graphc, tmp_path):
    out = tmp_path / "g.dot"
    r = graphc("dot", "logreg", "--after", "autodiff", "-o", out)
    assert r.returncode == 0, r.stderr
    _dot_graph(out.read_text())
    r = graphc("dot", "mlp", "--after", "fusion")
    if r.returncode == 0:
        assert "cluster_" in r.stdout
    r = graphc("dot", "mlp", "--after", "nosuch")
    assert r.returncode == 2 and "stages are forward, autodiff" in r.stderr


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG\r\n\x1a\n"), ("svg", b"<?xml")])
def test_dot_renders_images_with_graphviz(graphc, tmp_path, fmt, magic):
    out = tmp_path / f"g.{fmt}"
    r = graphc("dot", "logreg", "--graph", "backward", "-o", out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes().startswith(magic)


def test_dot_without_graphviz_says_how_to_install(graphc, tmp_path):
    import os
    import sys
    path = os.path.dirname(sys.executable)          # a PATH with no Graphviz on it
    r = graphc("dot", "logreg", "-o", tmp_path / "g.png", env_extra={"PATH": path})
    assert r.returncode == 1 and "apt-get install -y graphviz" in r.stderr
    assert "Traceback" not in r.stderr


def test_ir_at_each_stage(graphc):
    r = graphc("ir", "logreg", "--list-stages")
    stages = r.stdout.split()
    assert stages[:3] == ["forward", "autodiff", "optimizer"]
    r = graphc("ir", "logreg", "--graph", "forward")
    assert r.returncode == 0 and "matmul" in r.stdout and "backward" not in r.stdout
    r = graphc("ir", "logreg", "--after", "optimizer", "--no-source")
    assert "; ---- backward ----" in r.stdout and "; ---- update ----" in r.stdout
    assert "update %params.w <- " in r.stdout


def test_memplan_prints_the_report_and_plots(graphc, tmp_path):
    out = tmp_path / "mem.png"
    r = graphc("memplan", "logreg", "--backend", "numpy", "--plot", out)
    if r.returncode == 1 and "not available" in r.stderr:
        pytest.skip("memory planner not in this build")
    assert r.returncode == 0, r.stderr
    assert "arena" in r.stdout and "saved activations" in r.stdout
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_bench_reports_median_and_ratios(graphc):
    r = graphc("bench", "logreg", "--backend", "numpy", "--repeats", "3", "--steps", "5",
               "--vs", "numpy,torch")
    assert r.returncode == 0, r.stderr
    assert "graphc (numpy)" in r.stdout and "numpy (hand-written)" in r.stdout
    assert "samples/s" in r.stdout and "1.00x" in r.stdout
    assert "torch" in r.stdout                      # a row, timed or "not installed"
    r = graphc("bench", "logreg", "--vs", "tensorflow")
    assert r.returncode == 1 and "unknown peer" in r.stderr


def test_bench_times_both_weight_layouts(graphc):
    r = graphc("bench", "mlp", "--widths", "32", "--repeats", "2", "--steps", "2",
               "--layout", "both", "--vs", "numpy")
    assert r.returncode == 0, r.stderr
    assert "graphc (llvm, x @ W)" in r.stdout and "graphc (llvm, x @ W.T)" in r.stdout


def test_torch_layout_trains_like_the_native_layout():
    """``graphc bench --layout torch``'s model: weights stored (out, in), read as
    ``x @ W.T`` -- the same training as the model it was made from."""
    import copy

    import graphc as gc
    from graphc.cli.bench_cmd import torch_layout
    rng = np.random.default_rng(0)
    mlp = gc.nn.MLP([12, 9, 4])
    params = mlp.init(0)
    x = rng.standard_normal((6, 12)).astype(np.float32)
    y = rng.integers(0, 4, 6)

    def loss(p, x, y):
        return gc.nn.cross_entropy(mlp(p, x), y)
    loss_t, params_t = torch_layout(loss, copy.deepcopy(params))
    ws = [k for k in params_t if "w" in params_t[k]]
    assert ws and all(params_t[k]["w"].shape == params[k]["w"].shape[::-1] for k in ws)
    a = gc.compile_step(loss, params, gc.optim.SGD(0.1), (x, y), backend="llvm")
    b = gc.compile_step(loss_t, params_t, gc.optim.SGD(0.1), (x, y), backend="llvm")
    for _ in range(3):
        np.testing.assert_allclose(b(x, y), a(x, y), rtol=1e-5)
    for k in ws:
        np.testing.assert_allclose(b.params[k]["w"].T, a.params[k]["w"], rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("args, reason", [
    (["train"], "required: MODEL (built-in models: linreg, logreg, svm, mlp"),
    (["train", "mlp", "--epochs", "0"], "expected a positive integer"),
    (["train", "mlp", "--optimizer", "rmsprop"], "invalid choice"),
    (["train", "mlp", "--lr", "abc"], "expected a positive number"),
    (["dot", "mlp", "--graph", "sideways"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    ([], "required: COMMAND"),
    (["train", "nosuchmodel"], "built-in models are linreg, logreg, svm, mlp"),
])
def test_bad_arguments_exit_2_with_one_line(graphc, args, reason):
    r = graphc(*args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert reason in r.stderr and "Traceback" not in r.stderr


def test_resume_needs_a_checkpoint_dir(graphc):
    r = graphc("train", "svm", "--resume", *SMALL)
    assert r.returncode == 1 and "--checkpoint-dir" in r.stderr


def test_default_mlp_reaches_95_percent_on_digits(graphc):
    """The README's main job: ``graphc train mlp`` with no options (accuracy only; tests
    never assert wall-clock time)."""
    import re
    r = graphc("train", "mlp", "--progress", "lines")
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    m = re.match(r"test accuracy ([\d.]+)% \((\d+)/(\d+)\) -- mlp on digits", last)
    assert m, last
    assert float(m.group(1)) >= 95.0 and int(m.group(3)) == 269
