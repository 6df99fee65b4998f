"""Smoke test of benchmarks/bench_mixed_load.py at a tiny size: every phase runs and serves each class."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_the_mixed_load_benchmark_runs_every_phase_on_a_tiny_atlas(random_sae_atlas, tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_mixed_load
    finally:
        sys.path.remove(str(BENCHMARKS))

    results = bench_mixed_load.main([
        "--atlas", str(random_sae_atlas.root), "--dictionary", "mlp-sae", "--seconds", "1",
        "--inference-clients", "2", "--steer-clients", "2", "--page-clients", "2", "--overload-clients", "4",
        "--text-tokens", "12", "--prompt-tokens", "10", "--n-tokens", "8", "--json-out", str(tmp_path / "out.json"),
    ])
    assert set(results) == {"inference alone", "steer alone", "mixed", "overload"}
    assert set(results["mixed"]) == {"inference", "steer", "page"}
    for per in results.values():
        for row in per.values():
            assert row["served"] > 0 and row["errors"] == 0
    assert (tmp_path / "out.json").is_file()
