"""The API benchmark (`benchmarks/bench_api.py`, whose figures the README reports) runs end to end at
toy sizes: it builds its atlas, serves it with real uvicorn, measures every load without an error
and prints both floors, the per-request overhead beyond the raw forward and the target lines. Speed
itself is never asserted here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_bench_api_runs_every_load_without_errors(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = ["--work", str(tmp_path), "--d-sae", "64", "--contexts", "24", "--requests", "20",
            "--inference-requests", "10", "--clients", "1", "2"]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_api.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    rows = re.findall(r"^(\w[\w +,]*?)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", out, flags=re.M)
    loads = {name.strip() for name, *_ in rows}
    assert loads == {"health", "feature detail", "examples", "detail + examples", "feature page, plain",
                     "feature page, gzip", "inference 128 tok"}, out
    assert len(rows) == 2 * len(loads) and all(errors == "0" for *_, errors in rows), out
    assert all(float(rps) > 0 for *_, rps, _ in rows)
    assert re.search(r"raw model\+SAE forward [\d.]+ ms", out), out
    assert re.search(r"live inference p50 at 1 client: [\d.]+ ms, -?[\d.]+ ms beyond the raw forward", out), out
    assert re.search(r"live inference p50 at 1 client / raw forward: [\d.]+x", out), out
    assert re.search(r"p50 / paced raw forward [\d.]+x", out), out
