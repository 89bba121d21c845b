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
# The Python SDK (guests/python) is on the path of every Python component.
build_python() { # name, source dir, module
  local name="$1" dir="$2" module="$3" wasm="$out/$1.wasm"
  if [ -f "$wasm" ] && [ -z "$(find "$dir" wit guests/python -newer "$wasm" -type f -not -path '*/__pycache__/*' -print -quit)" ]; then
    return
  fi
  echo "build: $name (componentize-py)" >&2
  mkdir -p "$out"
  (cd "$dir" && "$root/.tools/venv/bin/componentize-py" -d "$root/wit" -w polytrace:telemetry/service \
    componentize -p . -p "$root/guests/python" "$module" -o "$wasm.tmp" >/dev/null)
  mv "$wasm.tmp" "$wasm"
}
build_python smoke_python tests/guests/smoke-python app
build_python hello_python examples/hello-python app

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

# Go: wit-bindgen go bindings + the component's package, built for wasip1 as
# a reactor, then embedded and adapted into a component with wasm-tools.
build_go() { # name, source dir (the export_wasi_http_incoming_handler package)
  local name="$1" dir="$2" wasm="$out/$1.wasm"
  if [ -f "$wasm" ] && [ -z "$(find "$dir" wit -newer "$wasm" -type f -print -quit)" ]; then
    return
  fi
  echo "build: $name (go $("$root/.tools/venv/bin/go" env GOVERSION))" >&2
  local work="$root/target/go-build/$name"
  rm -rf "$work"; mkdir -p "$work/export_wasi_http_incoming_handler"
  (cd "$work" && "$root/.tools/cargo/bin/wit-bindgen" go -w polytrace:telemetry/service "$root/wit" \
    >bindgen.log 2>&1) || { cat "$work/bindgen.log" >&2; exit 1; }
  cp "$dir"/*.go "$work/export_wasi_http_incoming_handler/"
  (
    cd "$work"
    export GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOOS=wasip1 GOARCH=wasm
    "$root/.tools/venv/bin/go" mod edit -replace "go.bytecodealliance.org/pkg=$root/.tools/go/pkg"
    "$root/.tools/venv/bin/go" build -o core.wasm -buildmode=c-shared -ldflags=-checklinkname=0
    "$root/.tools/venv/bin/wasm-tools" component embed -w polytrace:telemetry/service "$root/wit" core.wasm -o embedded.wasm
    "$root/.tools/venv/bin/wasm-tools" component new embedded.wasm \
      --adapt "wasi_snapshot_preview1=$root/.tools/go/wasi_snapshot_preview1.reactor.wasm" -o "$wasm.tmp"
  )
  mv "$wasm.tmp" "$wasm"
}
build_go smoke_go tests/guests/smoke-go
