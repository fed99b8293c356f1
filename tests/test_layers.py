"""The house's layers (pyproject.toml's import-linter contracts) hold, and an upward import breaks them.

`make test` runs `lint-imports` on the checkout; these tests also show that the contracts can fail:
a copy of the package with one forbidden import added is refused, naming the contract and the import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts on the `mmv_zoo` package found in `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree,
                          capture_output=True, text=True, env=env)


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "mmv_zoo", tree / "mmv_zoo", ignore=shutil.ignore_patterns("zoo", "sample_data",
                                                                                       "__pycache__"))
    return tree


def test_the_package_keeps_its_layers(tmp_path):
    done = _lint(_copy(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("nets/sizes.py", "import mmv_zoo.cli", "The library never imports the command line"),
    ("predict/engine.py", "import mmv_zoo.napari.common", "The library never imports the command line or the napari"),
    ("nets/fnet.py", "from mmv_zoo.data import pairs", "A network knows nothing of training, data, files"),
    ("io/read.py", "from mmv_zoo.predict import engine", "Reading and data know nothing of the model"),
])
def test_an_upward_import_breaks_a_contract(tmp_path, module, line, contract):
    tree = _copy(tmp_path)
    path = tree / "mmv_zoo" / module
    path.write_text(path.read_text() + f"\n\ndef _late():\n    {line}  # hidden in a function: still counted\n")
    done = _lint(tree)
    assert done.returncode == 1
    assert any(contract in ln and "BROKEN" in ln for ln in done.stdout.splitlines()), done.stdout
    assert f"mmv_zoo.{module[:-3].replace('/', '.')}" in done.stdout
