"""The docs' code runs: every ```python block of docs/ir.md executes, in order, in a fresh
interpreter (the add-an-op example registers a demo op; it must not leak into the
registry-coverage tests of this process)."""
import pathlib
import re
import subprocess
import sys

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def run_python_blocks(name: str, tmp_path, min_blocks: int, timeout: int) -> str:
    """Every ```python block of docs/NAME, in order, in a fresh interpreter; its stdout."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), re.S)
    assert len(blocks) >= min_blocks
    script = tmp_path / (name.replace(".", "_") + ".py")
    script.write_text("\n".join(blocks))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_ir_md_examples_run(tmp_path):
    assert "pow" in run_python_blocks("ir.md", tmp_path, 2, 120)


def test_tutorial_runs(tmp_path):
    """docs/tutorial.md: an op with both lowerings and a pass inside compile_step."""
    out = run_python_blocks("tutorial.md", tmp_path, 3, 300)
    assert "softsign" in out and "loss" in out
    assert "tanh_to_softsign -> autodiff" in out
