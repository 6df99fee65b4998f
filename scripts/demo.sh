#!/usr/bin/env bash
# One command for a new user: install saescope into .venv, build the built-in atlas (a small
# transformer trained on the Python standard library, its SAEs and every feature record) into ./atlas,
# and serve the dashboard at http://127.0.0.1:8000. A second run reuses the atlas and serves in seconds.
# Extra arguments go to `saescope demo` (e.g. --port 8001, --no-serve, --atlas DIR).
set -euo pipefail
source "$(dirname "$0")/_env.sh" ""
exec .venv/bin/saescope demo "$@"
