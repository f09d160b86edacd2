#!/usr/bin/env bash
# Headless Chromium from Debian's packages, for the console's browser tests (tests/console/).
# Idempotent: does nothing when `chromium` is already on PATH. Needs root (or sudo) and apt.
# No driver is installed: the tests run `chromium --headless --dump-dom|--screenshot` directly.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "chromium present: $(chromium --version 2>/dev/null || echo unknown version)"
  exit 0
fi

as_root=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then as_root=(sudo); else
    echo "install-chromium: not root and no sudo; install Debian's 'chromium' package by hand" >&2; exit 1
  fi
fi

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium
echo "chromium installed in $(( $(date +%s) - start )) s: $(chromium --version 2>/dev/null || echo unknown version)"
