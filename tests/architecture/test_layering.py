"""The package's data flow is one way: each stage imports only stages to its left.

The stages and their order are described in docs/architecture.md: corpus, lm, activations,
dictionaries, analysis, interpret, store, engine, api; `pipeline/` orchestrates the offline job above all of
them but api, and only `cli.py` imports it. Shared modules (errors, devices, atomic files, the atlas
layout) import no stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import saescope

STAGES = ["corpus", "lm", "activations", "dictionaries", "analysis", "interpret", "store", "engine", "api"]
PIPELINE = "pipeline"
SHARED_MODULES = ["errors", "devices", "atlas_layout", "atomic_files"]
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


def _imports_of_folder(folder: str) -> set[tuple[str, str]]:
    return {(str(path.relative_to(PACKAGE)), name) for path in (PACKAGE / folder).rglob("*.py")
            for name in _saescope_imports(path)}


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_never_imports_a_stage_to_its_right(stage: str) -> None:
    allowed_right = STAGES[STAGES.index(stage) + 1 :]
    offenders = {
        f"{path} imports saescope.{name}"
        for path, name in _imports_of_folder(stage)
        if name in allowed_right or name in ("cli", PIPELINE)
    }
    assert not offenders, sorted(offenders)


def test_the_pipeline_imports_every_stage_but_the_api() -> None:
    offenders = {f"{path} imports saescope.{name}" for path, name in _imports_of_folder(PIPELINE)
                 if name in ("api", "cli")}
    assert not offenders, sorted(offenders)


def test_only_the_cli_imports_the_pipeline() -> None:
    importers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if PIPELINE not in path.relative_to(PACKAGE).parts and PIPELINE in _saescope_imports(path)
    }
    assert importers <= {"cli.py"}, sorted(importers)


def test_the_store_is_persistence_only() -> None:
    offenders = {f"{path} imports saescope.{name}" for path, name in _imports_of_folder("store")
                 if name in ("interpret", "analysis", "dictionaries", "activations", "lm", "corpus")}
    assert not offenders, sorted(offenders)


@pytest.mark.parametrize("name", SHARED_MODULES)
def test_shared_modules_import_no_stage(name: str) -> None:
    assert not (_saescope_imports(PACKAGE / f"{name}.py") & set(STAGES + [PIPELINE]))
