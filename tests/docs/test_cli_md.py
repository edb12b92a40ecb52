"""docs/cli.md's user-model example runs as written (``graphc train mymodel.py:net``)."""
import pathlib
import re
import subprocess
import sys

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def test_cli_md_user_model_example_trains(tmp_path):
    src = (DOCS / "cli.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", src, re.S) if "# mymodel.py" in b]
    (tmp_path / "mymodel.py").write_text(block)
    r = subprocess.run([sys.executable, "-m", "graphc", "train", "mymodel.py:net",
                        "--epochs", "2", "--backend", "numpy"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout.splitlines()[-1]
    for img in re.findall(r"\]\((img/[^)]+)\)", src):
        assert (DOCS / img).is_file(), img
