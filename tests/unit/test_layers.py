"""The layer contract (README, "Layout"): import-linter over the whole code base."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_imports_only_its_layer_or_below():
    tool = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert tool, "lint-imports (PyPI import-linter, a dev dependency) is not installed"
    done = subprocess.run([tool], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_contract_ignores_no_import_and_covers_every_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = config["contracts"]
    assert all("ignore_imports" not in contract for contract in contracts)
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(config["root_packages"])
    (layers,) = [contract["layers"] for contract in contracts if contract["type"] == "layers"]
    assert set(layers) == packages
