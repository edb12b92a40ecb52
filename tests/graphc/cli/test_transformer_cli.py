"""``graphc dot|ir|memplan|bench transformer``: the character LM through the graph
commands, as the built-ins go (its training and sampling: tests/graphc/test_charlm.py)."""
from __future__ import annotations


def test_transformer_graph_commands(graphc):
    r = graphc("ir", "transformer", "--graph", "forward", "--no-source")
    assert r.returncode == 0, r.stderr
    assert "graph transformer_loss" in r.stdout
    for op in ("take", "sdpa", "matmul"):
        assert op in r.stdout
    r = graphc("ir", "transformer", "--after", "optimizer", "--no-source", "--optimizer", "sgd")
    assert r.returncode == 0 and "sdpa_grad" in r.stdout, r.stderr
    r = graphc("dot", "transformer", "--graph", "backward")
    assert r.returncode == 0 and r.stdout.lstrip().startswith("digraph"), r.stderr
    r = graphc("memplan", "transformer", "--batch-size", "4")
    assert r.returncode == 0 and "lower bound" in r.stdout, r.stderr
    assert "(model transformer, batch 4, adam" in r.stdout
    r = graphc("bench", "transformer", "--batch-size", "4", "--repeats", "2", "--steps", "2",
               "--vs", "numpy")
    assert r.returncode == 0 and "samples/s" in r.stdout, r.stderr
    assert "bench/transformer_step.py" in r.stdout


def test_transformer_rejects_a_dataset(graphc):
    r = graphc("ir", "transformer", "--dataset", "digits")
    assert r.returncode == 1 and "--dataset does not apply" in r.stderr
