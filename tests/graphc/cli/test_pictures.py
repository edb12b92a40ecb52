"""The pictures, made as a user makes them (``graphc dot`` / ``graphc memplan``), checked
for content (DOT text: labels, clusters, saved activations, offsets) and for size (PNG
header): the default step drawing must fit a screen."""
import shutil
import struct

import numpy as np
import pytest

from graphc.ir import saved_activations

needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz is not installed (apt-get install -y graphviz)")


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_node_labels_have_type_bytes_and_offset(graphc):
    r = graphc("dot", "mlp", "--graph", "forward")
    assert r.returncode == 0, r.stderr
    # op, value, shape and dtype, bytes, arena offset of the planner's plan
    assert "matmul\\n%8\\nf32[32,256] · 32.0 KiB\\n@ " in r.stdout
    assert "@ = arena offset in bytes" in r.stdout


def test_backward_graph_alone_with_the_saved_activations_it_reads(graphc):
    import graphc as gc
    r = graphc("dot", "mlp", "--graph", "backward", "--detail", "full")
    assert r.returncode == 0, r.stderr
    import pydot
    (g,) = pydot.graph_from_dot_data(r.stdout)
    fills = {n.get_name().strip('"'): (n.get("fillcolor") or "").strip('"')
             for n in g.get_nodes()}
    assert "white" not in fills.values()             # no forward node drawn as such
    saved_drawn = {k for k, v in fills.items() if v == "mistyrose"}
    # exactly the forward values the backward nodes read (from the autodiff stage)
    from graphc.cli.common import stages_from_args
    from graphc.cli.parser import build_parser
    stages, _ = stages_from_args(build_parser().parse_args(["dot", "mlp"]))
    saved = {v.name for v in saved_activations(stages["autodiff"])}
    assert saved_drawn == saved and len(saved) >= 4
    assert r.stdout.count("(saved activation)") == len(saved)
    assert sum(v == "lightblue" for v in fills.values()) > 20


def test_step_summary_fits_a_screen_and_names_layers(graphc, tmp_path):
    r = graphc("dot", "mlp")                          # the default: summary of the step
    assert r.returncode == 0, r.stderr
    for box in ("0: Linear 64→256 · forward", "2: Linear 256→128 · backward",
                "4: Linear 128→10 · update", "loss · forward", "optimizer state"):
        assert box in r.stdout, box
    assert 'color="red"' in r.stdout                  # saved activations cross to backward
    assert "saves 1: 32.0 KiB @ " in r.stdout         # ... with their bytes and offsets
    r = graphc("dot", "mlp", "--detail", "clusters", "--hide-constants")
    assert r.returncode == 0, r.stderr
    assert 'subgraph "cluster_params.0_backward"' in r.stdout
    if shutil.which("dot"):
        out = tmp_path / "step.png"
        r = graphc("dot", "mlp", "-o", out)
        assert r.returncode == 0, r.stderr
        w, h = png_size(out)
        assert w <= 3000 and h <= 1400, (w, h)        # was 8248 x 4089 before summaries


@needs_dot
def test_forward_and_backward_pngs_render(graphc, tmp_path):
    for which in ("forward", "backward"):
        out = tmp_path / f"{which}.png"
        r = graphc("dot", "logreg", "--graph", which, "-o", out)
        assert r.returncode == 0, r.stderr
        w, h = png_size(out)
        assert 200 < w < 4000 and 200 < h < 5000


def test_llvm_memory_plot_uses_kernel_order(graphc, tmp_path):
    import graphc as gc
    from graphc.cli.common import prepared_from_args
    from graphc.cli.parser import build_parser
    from graphc.train import compile_step
    p = prepared_from_args(build_parser().parse_args(["memplan", "mlp"]))
    step, backend = compile_step(p, "llvm")
    assert backend == "llvm"
    rep = step.memory_report()
    kernels = rep.kernel_axis["kernels"]
    assert len(kernels) == len(step._run.plan.kernels)
    spans = rep.kernel_axis["storages"]
    assert max(last for *_, last in spans) == len(kernels) - 1   # the whole axis is used
    assert max(last for *_, last in spans) > max(r.end for r in rep.rows)  # not levels
    for name, off, nbytes, first, last in spans:
        assert 0 <= first <= last and 0 <= off and off + nbytes <= rep.planned_bytes
    out = tmp_path / "mem.png"
    r = graphc("memplan", "mlp", "--plot", out)
    assert r.returncode == 0, r.stderr
    w, h = png_size(out)
    assert w > 800 and h > 400


@pytest.mark.parametrize("model", ["mlp", "logreg"])
def test_memory_figure_joins_graph_and_arena(graphc, tmp_path, model):
    out = tmp_path / "fig.png"
    r = graphc("memplan", model, "--figure", out, "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    assert "memory figure written" in r.stdout
    w, h = png_size(out)
    assert w >= 1200 and h >= 800


def test_memory_figure_content():
    """What the figure draws: a box per layer and role spanning its steps, every saved
    activation with an offset inside the arena."""
    import graphc as gc
    from graphc.passes.memfigure import boxes, plot_training_memory
    from graphc.passes.memreport import memory_report
    rng = np.random.default_rng(0)
    params = {"l0": {"w": rng.normal(size=(8, 16)).astype(np.float32)},
              "l1": {"w": rng.normal(size=(16, 4)).astype(np.float32)}}
    x, y = rng.normal(size=(5, 8)).astype(np.float32), rng.integers(0, 4, 5)

    def loss(p, x, y):
        return gc.nn.cross_entropy(gc.tanh(x @ p["l0"]["w"]) @ p["l1"]["w"], y)

    step = gc.compile_step(loss, params, gc.optim.SGD(0.1), (x, y), backend="numpy")
    rep = memory_report(step.graph)
    bs = {(b["layer"], b["role"]): b for b in boxes(step.graph, rep)}
    for layer in ("p.l0", "p.l1"):         # named after the loss function's argument
        for role in ("forward", "backward", "update"):
            assert (layer, role) in bs, (layer, role)
    assert bs[("p.l0", "forward")]["start"] < bs[("p.l0", "backward")]["start"]
    rows = {r.name: r for r in rep.rows}
    for v in saved_activations(step.graph):
        assert rows[v.name].saved and rows[v.name].end >= rows[v.name].start
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f.png")
        plot_training_memory(step.graph, rep, path)
        assert os.path.getsize(path) > 10_000
