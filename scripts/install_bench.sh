#!/usr/bin/env bash
# Installs what the comparison benchmarks need beside saescope's dev extras: sae-lens (already in
# [dev]) and sae-dashboard 0.8. sae-dashboard goes in with --no-deps: its dependency decode-clt pulls
# torchvision/torchaudio builds that break the pinned CPU torch 2.13.0 (see shared MEASURED.md), so
# only the pure-Python packages it imports are added.
set -euo pipefail
source "$(dirname "$0")/_env.sh" "dev"
.venv/bin/python -m pip install -q -c constraints.txt --no-deps "sae-dashboard==0.8.0"
.venv/bin/python -m pip install -q -c constraints.txt dataclasses-json eindex-callum marshmallow typing-inspect \
  mypy-extensions matplotlib
echo "benchmark baselines installed: run e.g. .venv/bin/python benchmarks/bench_precompute.py --threads 1"
