"""Fixtures of the distributed tests: a small activation matrix, and the `gpu` marker's skip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture()
def activation_matrix(tmp_path: Path) -> Path:
    """`[3000, 16]` float32 rows of varying norm, as a .npy file."""
    g = np.random.default_rng(0)
    path = tmp_path / "acts.npy"
    np.save(path, (g.standard_normal((3000, 16)) * g.exponential(1.0, (3000, 1))).astype(np.float32))
    return path
