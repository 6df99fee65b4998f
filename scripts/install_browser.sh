#!/usr/bin/env bash
# Installs Debian's chromium (used by the headless browser tests in tests/frontend/) when
# /usr/bin/chromium is absent. Needs root (or sudo) and access to the Debian package mirror.
# Idempotent: does nothing when chromium is already installed.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_browser.sh: /usr/bin/chromium is missing and we are not root; run as root:" >&2
        echo "  apt-get update && apt-get install -y chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version
