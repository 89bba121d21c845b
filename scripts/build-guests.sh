#!/usr/bin/env bash
# Build every guest component in the repository. Idempotent: cargo rebuilds
# only what changed, and Python components are rebuilt only when their
# sources or the WIT change. Outputs go to target/wasm32-wasip2/release/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
"$root/scripts/wit-deps.sh"
out="$root/target/wasm32-wasip2/release"

for manifest in examples/hello-rust/Cargo.toml tests/guests/faults/Cargo.toml; do
  cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$manifest" --target-dir "$root/target"
done

# componentize-py: rebuild when any input is newer than the output.
build_python() { # name, source dir, module
  local name="$1" dir="$2" module="$3" wasm="$out/$1.wasm"
  if [ -f "$wasm" ] && [ -z "$(find "$dir" wit -newer "$wasm" -type f -print -quit)" ]; then
    return
  fi
  echo "build: $name (componentize-py)" >&2
  mkdir -p "$out"
  (cd "$dir" && "$root/.tools/venv/bin/componentize-py" -d "$root/wit" -w polytrace:telemetry/service \
    componentize "$module" -o "$wasm.tmp" >/dev/null)
  mv "$wasm.tmp" "$wasm"
}
build_python smoke_python tests/guests/smoke-python app

# componentize-js, called directly (jco componentize cannot read this WIT).
build_js() { # name, source file
  local name="$1" src="$2" wasm="$out/$1.wasm"
  if [ -f "$wasm" ] && [ -z "$(find "$src" wit -newer "$wasm" -type f -print -quit)" ]; then
    return
  fi
  echo "build: $name (componentize-js)" >&2
  node "$root/tools/node_modules/@bytecodealliance/componentize-js/src/cli.js" "$src" \
    -w "$root/wit" -n polytrace:telemetry/service -o "$wasm.tmp" >/dev/null
  mv "$wasm.tmp" "$wasm"
}
build_js smoke_js tests/guests/smoke-js/app.js
