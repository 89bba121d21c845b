#!/usr/bin/env bash
# Install the native OpenTelemetry SDKs that the interop test talks to and
# the span-cost benchmark compares with, at the versions pinned in
# tests/native/: Python packages in .tools/native-venv, Node packages in
# tests/native/node_modules. Idempotent: does nothing when up to date.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
native="$root/tests/native"
venv="$root/.tools/native-venv"
stamp="$venv/.requirements"
if ! cmp -s "$native/requirements.txt" "$stamp" 2>/dev/null; then
  echo "setup: native OpenTelemetry Python SDK (.tools/native-venv)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$native/requirements.txt"
  cp "$native/requirements.txt" "$stamp"
fi
if [ ! -f "$native/node_modules/.package-lock.json" ] ||
   [ "$native/package-lock.json" -nt "$native/node_modules/.package-lock.json" ]; then
  echo "setup: native OpenTelemetry Node SDK (tests/native/node_modules)" >&2
  (cd "$native" && npm ci --no-audit --no-fund --silent)
fi
