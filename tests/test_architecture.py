"""The architecture contracts of ../shared/DESIGN.md, checked on the code as it is.

Imports only go down (CLI leaf > review > detect | train > models > tiles > foundation), tiles and
review never import torch, detect never imports train (the contracts in ``pyproject.toml``, run
by ``lint-imports``), and no two modules import each other, directly or through others.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sitewatch", "tiles", "models", "train", "detect", "review")


def test_import_contracts_hold():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[test]'")
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "broken" not in result.stdout.split("Contracts:")[-1].lower().replace("0 broken", "")


def test_no_module_cycles():
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*PACKAGES)
    cycles = set()
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported in graph.modules and graph.chain_exists(importer=imported, imported=module):
                cycles.add(tuple(sorted((module, imported))))
    assert not cycles, f"modules that import each other (directly or through others): {sorted(cycles)}"


def test_the_cli_leaf_is_imported_by_nothing_below_it():
    graph = grimp.build_graph(*PACKAGES)
    leaf = {m for m in graph.modules if m.startswith(("sitewatch.cli", "sitewatch.commands", "sitewatch.jobs", "sitewatch.__main__"))}
    for module in sorted(graph.modules - leaf):
        imported = graph.find_modules_directly_imported_by(module) & leaf
        assert not imported, f"{module} imports the CLI leaf: {sorted(imported)}"
