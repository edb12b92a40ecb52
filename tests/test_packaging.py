"""Every package directory is listed in pyproject.toml (passes/ and backends/ are mapped
into the graphc namespace, so setuptools cannot discover them by itself)."""
from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"graphc": "graphc", "passes": "graphc.passes", "backends": "graphc.backends"}


def config():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def package_dirs() -> set[str]:
    found = set()
    for top, name in MAPPING.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            if "__pycache__" in rel:
                continue
            found.add(".".join([name, *rel]))
    return found


def test_package_dir_mapping():
    assert config()["package-dir"] == {"graphc": "graphc", "graphc.passes": "passes",
                                       "graphc.backends": "backends"}


def test_every_package_directory_is_listed():
    listed = set(config()["packages"])
    missing = sorted(package_dirs() - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_exists():
    stale = sorted(set(config()["packages"]) - package_dirs())
    assert not stale, f"listed in pyproject.toml but no such package directory: {stale}"


def test_installed_names_resolve():
    import graphc.backends.numpy_backend
    import graphc.passes.autodiff
    assert Path(graphc.passes.autodiff.__file__).parent.name == "passes"
    assert Path(graphc.backends.numpy_backend.__file__).parent.name == "backends"
