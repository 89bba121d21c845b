#!/usr/bin/env bash
# Install what the viewer's browser test needs: Debian's chromium (apt) and
# playwright-core (npm, pinned in tests/browser/) to drive it. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v chromium >/dev/null 2>&1; then
  echo "setup: chromium (apt)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null ||
    { $sudo apt-get update >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null; }
fi
browser="$root/tests/browser"
if [ ! -f "$browser/node_modules/.package-lock.json" ] ||
   [ "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]; then
  echo "setup: playwright-core (tests/browser/node_modules)" >&2
  (cd "$browser" && npm ci --no-audit --no-fund --silent)
fi
