"""The docs' code runs: every ```python block of docs/ir.md executes, in order, in a fresh
interpreter (the add-an-op example registers a demo op; it must not leak into the
registry-coverage tests of this process)."""
import pathlib
import re
import subprocess
import sys

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def test_ir_md_examples_run(tmp_path):
    src = (DOCS / "ir.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", src, re.S)
    assert len(blocks) >= 2
    script = tmp_path / "ir_md.py"
    script.write_text("\n".join(blocks))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "pow" in res.stdout


def test_tutorial_runs(tmp_path):
    """docs/tutorial.md: an op with both lowerings and a pass inside compile_step."""
    src = (DOCS / "tutorial.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", src, re.S)
    assert len(blocks) >= 3
    script = tmp_path / "tutorial.py"
    script.write_text("\n".join(blocks))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "softsign" in res.stdout and "loss" in res.stdout
    assert "tanh_to_softsign -> autodiff" in res.stdout
