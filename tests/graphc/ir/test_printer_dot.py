"""The text printer and the DOT writer on an MLP loss after reverse-mode AD: forward and
backward nodes are shown, backward nodes marked, saved activations distinguishable."""
from __future__ import annotations

import os
import re

import networkx as nx
import numpy as np
import pydot
import pytest

import graphc as gc
from graphc.ir import (Graph, format_graph, saved_activations, to_dot, to_networkx,
                       verify)
from graphc.passes import autodiff

THIS_FILE = os.path.basename(__file__)

# pydot's parser uses pyparsing names that newer pyparsing deprecates: not our concern.
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning")


def mlp_loss(w1, b1, w2, x, y):
    h = gc.relu(x @ w1 + b1)
    return gc.nn.cross_entropy(h @ w2, y)


@pytest.fixture(scope="module")
def mlp_graphs():
    rng = np.random.default_rng(0)
    args = (rng.standard_normal((4, 8)).astype(np.float32),
            np.zeros(8, np.float32),
            rng.standard_normal((8, 3)).astype(np.float32),
            rng.standard_normal((5, 4)).astype(np.float32),
            np.array([0, 1, 2, 1, 0]))
    fwd = gc.trace(mlp_loss, *args)
    g, grads, vmap = autodiff.backward(fwd, fwd.outputs[0], fwd.inputs[:3])
    g.set_outputs([vmap[fwd.outputs[0]]] + grads)
    g.remove_dead()
    return fwd, verify(g)


def test_autodiff_appends_backward_nodes_after_forward(mlp_graphs):
    fwd, g = mlp_graphs
    roles = [n.role for n in g.nodes]
    first_back = roles.index("backward")
    assert set(roles[:first_back]) == {"forward"}
    assert set(roles[first_back:]) == {"backward"}
    assert [n.op for n in g.nodes[:first_back]] == [n.op for n in fwd.nodes]
    saved = saved_activations(g)
    assert saved and all(v.node.role == "forward" for v in saved)
    assert {v.node.op for v in saved} >= {"relu"}
    assert not any(v.node.op in ("input", "constant") for v in saved)


# ---- printer ------------------------------------------------------------------------------------
NODE_LINE = re.compile(r"^  %(\w+)(\*?) = (\w+)( %[\w.]+(, %[\w.]+)*)?( \{.*\})? : "
                       r"(f32|f64|i32|i64|bool)\[[\d,]*\]( +# .*)?$")
CONST_LINE = re.compile(r"^  %\w+ = constant \S+ : ")


def test_printer_shows_forward_and_backward(mlp_graphs):
    _, g = mlp_graphs
    text = format_graph(g)
    lines = text.splitlines()
    assert lines[0].startswith("graph mlp_loss(%w1: f32[4,8] data, %b1: f32[8] data")
    assert "  ; ---- backward ----" in lines
    sep = lines.index("  ; ---- backward ----")
    body = [ln for ln in lines[1:] if ln.startswith("  %")]
    assert len(body) == len([n for n in g.nodes if n.op != "input"])
    for ln in body:
        assert NODE_LINE.match(ln) or CONST_LINE.match(ln), ln
    for ln in lines[1:sep]:
        assert "# backward" not in ln
    for ln in lines[sep + 1:]:
        if ln.startswith("  %"):
            assert "# backward" in ln, ln
    assert lines[-2].startswith("# * = saved activation") or lines[-1].startswith("# *")
    assert "matmul" in text and "relu" in text and "transpose" in text


def test_printer_stars_exactly_the_saved_activations(mlp_graphs):
    _, g = mlp_graphs
    text = format_graph(g)
    starred = set(re.findall(r"^  %(\w+)\* =", text, re.M))
    assert starred == {v.name for v in saved_activations(g)}
    n = len(starred)
    nbytes = sum(v.nbytes for v in saved_activations(g))
    assert f"# * = saved activation ({n} values, {nbytes} bytes)" in text


def test_printer_shows_user_source_lines(mlp_graphs):
    _, g = mlp_graphs
    line = mlp_loss.__code__.co_firstlineno + 1
    text = format_graph(g)
    relu = next(ln for ln in text.splitlines() if "= relu" in ln)
    assert relu.endswith(f"# {THIS_FILE}:{line}")
    assert f"{THIS_FILE}:{line}" not in format_graph(g, show_source=False)


def test_printer_golden_small_graph():
    def f(x, w):
        return gc.sum(gc.tanh(x @ w))
    fwd = gc.trace(f, np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))
    assert format_graph(fwd, show_source=False) == "\n".join([
        "graph f(%x: f32[2,3] data, %w: f32[3,4] data) {",
        "  %2 = matmul %x, %w : f32[2,4]",
        "  %3 = tanh %2 : f32[2,4]",
        "  %4 = sum %3 {axes=(0,1), keepdims=False} : f32[]",
        "  return %4",
        "}"])
    g, grads, vmap = autodiff.backward(fwd, fwd.outputs[0], [fwd.inputs[1]])
    g.set_outputs([vmap[fwd.outputs[0]]] + grads)
    g.remove_dead()
    text = format_graph(g, show_source=False)
    lines = text.splitlines()
    assert lines[:5] == ["graph f(%x: f32[2,3] data, %w: f32[3,4] data) {",
                         "  %2 = matmul %x, %w : f32[2,4]",
                         "  %3* = tanh %2 : f32[2,4]",
                         "  %4 = sum %3 {axes=(0,1), keepdims=False} : f32[]",
                         "  ; ---- backward ----"]
    assert re.search(r"^  %grad_w = matmul %\d+, %\d+ : f32\[3,4\] +# backward$", text, re.M)
    assert re.search(r"^  return %4, %grad_w$", text, re.M)
    assert lines[-1] == "# * = saved activation (1 value, 32 bytes)"


def test_printer_shows_updates_and_constants():
    g = Graph("step")
    w = g.add_input((2,), np.float64, "w", "param")
    c = g.add("constant", [], {"value": np.array([0.5, 0.25])})
    w2 = g.add("sub", [w, c], role="update")
    g.updates.append((w, w2))
    verify(g)
    text = format_graph(g)
    assert "%w: f64[2] param" in text
    assert "constant [0.5 ,0.25]" in text or "constant [0.5,0.25]" in text
    assert "; ---- update ----" in text and "# update" in text
    assert f"update %w <- %{w2.name}" in text


# ---- DOT -----------------------------------------------------------------------------------------------
def parse_dot(text):
    (graph,) = pydot.graph_from_dot_data(text)
    return graph


def unquote(s):
    return s.strip('"') if isinstance(s, str) else s


def test_dot_parses_and_has_every_node_and_edge(mlp_graphs):
    _, g = mlp_graphs
    dot = parse_dot(to_dot(g))
    names = {unquote(n.get_name()) for n in dot.get_nodes()} - {"node", "edge", "graph"}
    assert names == {n.output.name for n in g.nodes}
    n_edges = sum(len(n.inputs) for n in g.nodes)
    assert len(dot.get_edges()) == n_edges
    for e in dot.get_edges():
        assert re.fullmatch(r"(f32|f64|i32|i64|bool)\[[\d,]*\]", unquote(e.get("label")))


def test_dot_marks_backward_and_saved_nodes(mlp_graphs):
    _, g = mlp_graphs
    dot = parse_dot(to_dot(g))
    attrs = {unquote(n.get_name()): n.get_attributes() for n in dot.get_nodes()}
    saved = {v.name for v in saved_activations(g)}
    for n in g.nodes:
        a = attrs[n.output.name]
        label = unquote(a["label"])
        if n.op not in ("input", "constant"):
            assert label.startswith(n.op + "\\n%"), label     # DOT line break, not "\\\\n"
        if n.role == "backward" and n.op != "constant":
            assert unquote(a["fillcolor"]) == "lightblue"
        if n.role == "forward" and n.op not in ("input", "constant"):
            assert unquote(a["fillcolor"]) == "white"
        if n.output.name in saved:
            assert unquote(a["color"]) == "red" and "saved activation" in label
        else:
            assert "saved activation" not in label and unquote(a.get("color")) != "red"
    outs = {v.name for v in g.outputs}
    assert all(unquote(attrs[o]["shape"]) == "doubleoctagon" for o in outs)
    red_edges = [e for e in dot.get_edges() if unquote(e.get("color")) == "red"]
    assert red_edges
    for e in red_edges:
        assert unquote(e.get_source()) in saved


def test_dot_loads_into_networkx(mlp_graphs):
    _, g = mlp_graphs
    nxg = nx.nx_pydot.from_pydot(parse_dot(to_dot(g)))
    nodes = set(nxg.nodes) - {"node", "edge", "graph", "\\n"}
    assert nodes == {n.output.name for n in g.nodes}
    assert nxg.number_of_edges() == sum(len(n.inputs) for n in g.nodes)
    assert nx.is_directed_acyclic_graph(nxg)


def test_dot_input_kinds_and_hidden_constants():
    g = Graph("g")
    w = g.add_input((2, 2), np.float32, "w", "param")
    x = g.add_input((2, 2), np.float32, "x", "data")
    c = g.add("constant", [], {"value": np.float32(2.0)})
    y = g.add("mul", [g.add("matmul", [x, w]), g.add("broadcast_to", [c], {"shape": (2, 2)})])
    g.set_outputs([y])
    dot = parse_dot(to_dot(g))
    attrs = {unquote(n.get_name()): n.get_attributes() for n in dot.get_nodes()}
    assert unquote(attrs["w"]["shape"]) == "box" and unquote(attrs["x"]["shape"]) == "ellipse"
    assert unquote(attrs["w"]["label"]) == "param\\n%w\\nf32[2,2]"
    hidden = parse_dot(to_dot(g, show_constants=False))
    names = {unquote(n.get_name()) for n in hidden.get_nodes()}
    assert c.name not in names
    assert all(unquote(e.get_source()) != c.name for e in hidden.get_edges())


def test_dot_quotes_odd_names():
    g = Graph('we"ird')
    x = g.add_input((1,), np.float64, "a b\\c", "data")
    g.set_outputs([g.add("neg", [x])])
    parse_dot(to_dot(g))


# ---- networkx view and verifier ------------------------------------------------------------------
def test_to_networkx_view(mlp_graphs):
    _, g = mlp_graphs
    nxg = to_networkx(g)
    assert nxg.number_of_nodes() == len(g.nodes)
    assert nxg.number_of_edges() == sum(len(n.inputs) for n in g.nodes)
    assert nx.is_directed_acyclic_graph(nxg)
    order = [n.output.name for n in g.nodes]
    assert list(nx.lexicographical_topological_sort(nxg, key=order.index)) == order
    roles = nx.get_node_attributes(nxg, "role")
    assert set(roles.values()) == {"forward", "backward"}


def test_verify_passes_on_forward_and_backward(mlp_graphs):
    fwd, g = mlp_graphs
    verify(fwd)
    verify(g)


def test_verify_rejects_broken_graphs():
    g = Graph()
    x = g.add_input((2,), np.float32, "x")
    y = g.add("exp", [x])
    g.set_outputs([y])
    y.node.inputs = []                       # an op applied to nothing
    with pytest.raises(gc.VerifyError):
        verify(g)
    g2 = Graph()
    x = g2.add_input((2,), np.float32, "x")
    y = g2.add("exp", [x])
    g2.nodes.reverse()                        # use before definition
    with pytest.raises(gc.VerifyError):
        verify(g2)
