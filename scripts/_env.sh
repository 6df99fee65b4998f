# Shared by scripts/demo.sh and scripts/test.sh: create .venv and install saescope into it with the
# pinned constraints (torch==2.13.0 CPU wheel and versions that co-install with sae-lens).
# Re-installs only when pyproject.toml, constraints.txt or the requested extras change.
# Usage: source scripts/_env.sh EXTRAS   (EXTRAS: "" or "dev")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[saescope] creating virtual environment in .venv"
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    # Debian's python without python3-venv has no ensurepip: fall back to virtualenv from PyPI.
    echo "[saescope] the venv module is unavailable; using virtualenv instead"
    rm -rf .venv
    "$PYTHON" -m pip install --disable-pip-version-check -q virtualenv \
      || "$PYTHON" -m pip install --disable-pip-version-check -q --break-system-packages virtualenv
    "$PYTHON" -m virtualenv -q .venv
  fi
fi
SPEC="."
[ -n "$EXTRAS" ] && SPEC=".[${EXTRAS}]"
STAMP=".venv/.saescope-install-${EXTRAS:-base}"
WANT="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[saescope] installing saescope${EXTRAS:+ with [$EXTRAS]} (torch pinned by constraints.txt)"
  .venv/bin/python -m pip install --disable-pip-version-check -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --disable-pip-version-check -c constraints.txt -e "$SPEC"
  echo "$WANT" > "$STAMP"
fi
