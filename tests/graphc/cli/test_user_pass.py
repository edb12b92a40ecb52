"""``--pass FILE.py:FN[:AFTER]``: a user's pass in the CLI's pipeline (ir, dot, train)."""

PASS = '''
import sys


def mark_update(graph):
    """report the step graph and return it unchanged"""
    print(f"mark_update saw {len(graph.nodes)} nodes", file=sys.stderr)
    return graph
'''


def _pass_file(tmp_path):
    f = tmp_path / "mypasses.py"
    f.write_text(PASS)
    return f


def test_list_passes_shows_the_users_pass_where_asked(graphc, tmp_path):
    f = _pass_file(tmp_path)
    r = graphc("ir", "mlp", "--list-passes")
    assert r.returncode == 0, r.stderr
    assert [ln.split()[0] for ln in r.stdout.splitlines()] == [
        "autodiff", "optimizer", "simplify", "layout", "schedule", "fusion"]
    r = graphc("ir", "mlp", "--pass", f"{f}:mark_update:optimizer", "--list-passes")
    names = [ln.split()[0] for ln in r.stdout.splitlines()]
    assert names[:4] == ["autodiff", "optimizer", "mark_update", "simplify"]


def test_after_shows_the_graph_after_any_pass(graphc, tmp_path):
    f = _pass_file(tmp_path)
    r = graphc("ir", "logreg", "--pass", f"{f}:mark_update", "--after", "mark_update")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("; stage: mark_update") and "mark_update saw" in r.stderr
    r = graphc("ir", "logreg", "--after", "fusion")
    assert "group=" in r.stdout
    r = graphc("ir", "logreg", "--after", "nonsense")
    assert r.returncode == 2 and "fusion" in r.stderr


def test_train_runs_the_users_pass(graphc, tmp_path):
    f = _pass_file(tmp_path)
    r = graphc("train", "linreg", "--epochs", "1", "--pass", f"{f}:mark_update")
    assert r.returncode == 0, r.stderr
    assert "mark_update saw" in r.stderr and "test R²" in r.stdout.splitlines()[-1]


def test_bad_pass_reference_is_one_line(graphc, tmp_path):
    f = _pass_file(tmp_path)
    for ref in (f"{f}:nope", "nosuchmodule_xyz:fn", "justaname"):
        r = graphc("ir", "mlp", "--pass", ref)
        assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr
        assert "--pass" in r.stderr
