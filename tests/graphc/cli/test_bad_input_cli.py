"""What a user sees from bad input on the command line: one line, exit 1 or 2, no
traceback (issue 15, item 5)."""
from __future__ import annotations

import pytest

SMALL = ("--epochs", "1", "--batch-size", "64")


def one_line(r, code=1):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_syntax_error_in_a_user_model(graphc, tmp_path):
    f = tmp_path / "broken.py"
    f.write_text("import graphc as gc\n\ndef net(d, k)\n    return gc.nn.Linear(d, k)\n")
    line = one_line(graphc("train", f"{f}:net", *SMALL))
    assert "broken.py:3" in line and "syntax" in line.lower()


def test_failing_import_in_a_user_model(graphc, tmp_path):
    f = tmp_path / "imports.py"
    f.write_text("import graphc as gc\nimport no_such_module_xyz\nnet = None\n")
    line = one_line(graphc("train", f"{f}:net", *SMALL))
    assert "imports.py:2" in line and "no_such_module_xyz" in line
    g = tmp_path / "raises.py"
    g.write_text("x = 1\nraise RuntimeError('boom at import')\n")
    line = one_line(graphc("ir", f"{g}:x"))
    assert "raises.py:2" in line and "RuntimeError: boom at import" in line


def test_non_utf8_csv(graphc, tmp_path):
    f = tmp_path / "latin1.csv"
    f.write_bytes("caf\u00e9,y\n1.5,0\n2.5,1\n3.5,0\n4.5,1\n".encode("latin-1"))
    line = one_line(graphc("train", "logreg", "--dataset", f, *SMALL))
    assert "UTF-8" in line


@pytest.mark.parametrize("spec", ["synth-reg:n=-5", "synth-cls:n=-5"])
def test_bad_synthetic_dataset(graphc, spec):
    line = one_line(graphc("train", "linreg" if "reg" in spec else "logreg", "--dataset",
                           spec, *SMALL))
    assert "n=-5" in line


def test_sparse_labels(graphc, tmp_path):
    f = tmp_path / "sparse.csv"
    f.write_text("a,y\n" + "".join(f"{i}.5,{0 if i % 2 else 1000000000}\n"
                                   for i in range(40)))
    line = one_line(graphc("train", "logreg", "--dataset", f, *SMALL))
    assert "1000000000" in line and "classes" in line


@pytest.mark.parametrize("value", ["0", "-1", "abc", "100000"])
def test_bad_thread_count(graphc, value):
    r = graphc("train", "logreg", *SMALL, env_extra={"GRAPHC_NUM_THREADS": value})
    line = one_line(r)
    assert f"GRAPHC_NUM_THREADS={value}" in line
    assert "numpy" not in r.stdout + r.stderr      # no silent fallback


def test_layer_bigger_than_memory(graphc):
    line = one_line(graphc("train", "mlp", "--widths", "100000000", *SMALL))
    assert "Linear: initialising a parameter of shape (64, 100000000)" in line
    assert "51200000000 bytes" in line


def test_memory_error_is_one_line(monkeypatch, capsys):
    """The safety net under what graphc foresees: numpy's MemoryError is one line too."""
    from graphc import cli
    from graphc.cli import train_cmd

    def oom(args):
        raise MemoryError("Unable to allocate 37.3 GiB for an array with shape (10, 10)")
    monkeypatch.setattr(train_cmd, "run", oom)
    assert cli.main(["train", "logreg"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("graphc train: error: out of memory: Unable to allocate 37.3 GiB")
