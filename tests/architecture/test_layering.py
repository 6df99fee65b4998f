"""The package's data flow is one way: each stage imports only stages to its left (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import saescope

STAGES = ["corpus", "lm", "activations", "dictionaries", "analysis", "store", "engine", "api"]
PACKAGE = Path(saescope.__file__).parent


def _saescope_imports(path: Path) -> set[str]:
    """Top-level saescope sub-packages/modules that `path` imports (including lazy imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("saescope."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("saescope."))
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_never_imports_a_stage_to_its_right(stage: str) -> None:
    allowed_right = STAGES[STAGES.index(stage) + 1 :]
    offenders = {
        f"{path.relative_to(PACKAGE)} imports saescope.{name}"
        for path in (PACKAGE / stage).rglob("*.py")
        for name in _saescope_imports(path)
        if name in allowed_right or name in ("cli", "builtin_atlas")
    }
    assert not offenders, sorted(offenders)


def test_shared_modules_import_no_stage() -> None:
    for name in ("errors", "devices", "atlas_layout"):
        assert not (_saescope_imports(PACKAGE / f"{name}.py") & set(STAGES)), name
