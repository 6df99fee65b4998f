#!/usr/bin/env bash
# One command for the whole test suite: install saescope with its dev extras into .venv, make sure
# Debian's chromium is present for the browser tests, then run pytest. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/_env.sh" "dev"
bash scripts/install_browser.sh || echo "[saescope] chromium could not be installed: browser tests will skip"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
