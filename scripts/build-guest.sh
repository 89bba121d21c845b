#!/usr/bin/env bash
# Build one guest component:
#
#   scripts/build-guest.sh LANGUAGE NAME SOURCE [OUT.wasm]
#
#   LANGUAGE  rust | python | javascript | go
#   NAME      the component's name (its output is NAME.wasm)
#   SOURCE    rust: the crate directory; python: a directory with app.py;
#             javascript: a directory with app.js; go: a directory with the
#             export_wasi_http_incoming_handler package's .go files
#   OUT       default: target/wasm32-wasip2/release/NAME.wasm (for rust, the
#             crate's own cargo output)
#
# Up-to-date outputs are left alone (inputs: the sources, the language's SDK
# in guests/, and wit/). A failed build names the component and language and
# shows the tail of the tool's output. Missing toolchains are installed
# first by scripts/setup.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -ge 3 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
language="$1" name="$2" src="$(cd "$3" && pwd)"
out="${4:-$root/target/wasm32-wasip2/release/$name.wasm}"
tools="$root/.tools"
work="$root/target/guest-build/$name"
log="$work.log"
mkdir -p "$(dirname "$out")" "$root/target/guest-build"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
# Tool errors, not the tools' own Rust backtraces.
export RUST_BACKTRACE=0

# Run a build step with its output appended to $log; on failure, say which
# component failed in which language, and show what the tool said.
step() { # tool-label, command...
  local label="$1"; shift
  local out_file="$work.step" code=0
  "$@" >"$out_file" 2>&1 || code=$?
  cat "$out_file" >>"$log"
  if [ "$code" -ne 0 ]; then
    {
      echo "error: building component \`$name\` ($language) failed: $label exited with status $code"
      echo "  source: $src"
      echo "  last lines of $label output (full log: $log):"
      tail -n 25 "$out_file" | sed 's/^/    | /'
      # A language's own diagnosis of the failure, given the tool's output.
      [ -z "${on_fail:-}" ] || "$on_fail" "$out_file"
    } >&2
    rm -f "$out_file"
    exit 1
  fi
  rm -f "$out_file"
}

fresh() { # inputs...: true when $out exists and no input file is newer
  [ -f "$out" ] && [ -z "$(find "$@" -newer "$out" -type f -not -path '*/__pycache__/*' -print -quit)" ]
}

# The toolchains are installed by scripts/setup.sh (idempotent): run it when
# what this language needs is missing, so a fresh clone can build directly.
ensure_tools() { # paths...
  local p
  for p in "$@"; do
    if [ ! -e "$p" ]; then
      "$root/scripts/setup.sh" >&2 && "$root/scripts/wit-deps.sh" >&2
      return
    fi
  done
}
case "$language" in
  rust) ensure_tools "$root/wit/deps" ;;
  python) ensure_tools "$root/wit/deps" "$tools/venv/bin/componentize-py" ;;
  javascript) ensure_tools "$root/wit/deps" "$root/tools/node_modules/@bytecodealliance/componentize-js" \
    "$tools/weval/bin/weval" ;;
  go) ensure_tools "$root/wit/deps" "$tools/venv/bin/go" "$tools/cargo/bin/wit-bindgen" "$tools/go/pkg" ;;
esac

: >"$log"
case "$language" in
  rust)
    # cargo decides what is stale; --message-format would be noisier.
    step cargo cargo build --release --target wasm32-wasip2 \
      --manifest-path "$src/Cargo.toml" --target-dir "$root/target"
    ;;
  python)
    fresh "$src" "$root/guests/python" "$root/wit" "$root/scripts/python-guest.py" && exit 0
    echo "build: $name (componentize-py)" >&2
    # componentize-py writes __pycache__ next to the sources: build from a copy.
    rm -rf "$work" && mkdir -p "$work" && cp -R "$src/." "$work/"
    helper="$root/scripts/python-guest.py"
    # requirements.txt beside app.py: its packages, installed once per content
    # of the file (native extensions removed and named).
    deps="" site=""
    if [ -f "$src/requirements.txt" ]; then
      deps="$root/target/python-deps/$name" site="$deps/site"
      python3 "$helper" deps "$src/requirements.txt" "$deps" "$tools/venv/bin/pip" || {
        echo "error: building component \`$name\` (python) failed: its requirements.txt could not be installed" >&2
        exit 1
      }
    fi
    # The entry module: app.py itself, or a generated one that bundles the
    # requirements' modules and serves a WSGI app (Flask).
    entry="$(python3 "$helper" entry "$work" $site)" || {
      echo "error: building component \`$name\` (python) failed: see above" >&2; exit 1; }
    explain() { [ -z "$deps" ] || python3 "$helper" explain "$1" "$deps"; }
    on_fail=explain step componentize-py bash -c 'cd "$1" && exec "$2" -d "$3" -w polytrace:telemetry/service \
      componentize -p . -p "$4" ${6:+-p "$6"} "$7" -o "$5"' _ \
      "$work" "$tools/venv/bin/componentize-py" "$root/wit" "$root/guests/python" "$out.tmp" "$site" "$entry"
    mv "$out.tmp" "$out"
    ;;
  javascript)
    # Ahead-of-time compilation (componentize-js --aot): weval specializes
    # StarlingMonkey's interpreter for the component's own functions at
    # build time (docs/benchmarks.md: ~1.3-1.6x on JavaScript-bound work).
    # POLYTRACE_JS_AOT=0 builds the plain interpreter instead.
    weval="$tools/weval/bin/weval" aot=()
    if [ "${POLYTRACE_JS_AOT:-1}" != 0 ]; then
      aot=(--aot --weval-bin "$weval")
    fi
    fresh "$src" "$root/guests/js" "$root/wit" "$root/scripts/js-guest.mjs" "$root/tools/package.json" \
      ${aot[0]:+"$weval"} && [ "$(cat "$work.mode" 2>/dev/null)" = "aot=${#aot[@]}" ] && exit 0
    echo "build: $name (componentize-js${aot[0]:+, ahead-of-time})" >&2
    # The SDK sits next to the entry module: StarlingMonkey resolves relative
    # imports from the entry module's directory while it pre-initializes.
    rm -rf "$work" && mkdir -p "$work" && cp -R "$src/." "$work/"
    cp "$root/guests/js/polytrace.js" "$work/polytrace.js"
    if grep -q "addEventListener(['\"]fetch" "$work/app.js"; then
      echo "note: component \`$name\` is a fetch listener (addEventListener('fetch', ...)): StarlingMonkey" \
        "answers only one request per instance that way, so set isolation = \"per-request\" for it, or" \
        "export incomingHandler = serve(handler) from polytrace.js to keep its instances warm" >&2
    fi
    # componentize-js reports a syntax error without saying where; node does.
    step "node --check" node --experimental-default-type=module --check "$work/app.js"
    # npm packages: the component's own package.json, installed once per
    # content of package.json and its lock; without one, imports resolve
    # from the tools' node_modules (@opentelemetry/api, hono).
    if [ -f "$src/package.json" ]; then
      deps="$root/target/js-deps/$name"
      key="$({ cat "$src/package.json"; cat "$src/package-lock.json" 2>/dev/null || true; } | sha256sum | cut -c1-32)"
      if [ "$(cat "$deps/.complete" 2>/dev/null)" != "$key" ]; then
        echo "build: installing $src/package.json (npm)" >&2
        rm -rf "$deps" && mkdir -p "$deps"
        cp "$src/package.json" "$deps/" && { cp "$src/package-lock.json" "$deps/" 2>/dev/null || true; }
        step "npm install" bash -c 'cd "$1" && exec npm install --omit=dev --no-audit --no-fund --ignore-scripts' _ "$deps"
        echo "$key" >"$deps/.complete"
      fi
      rm -rf "$work/node_modules" && ln -s "$deps/node_modules" "$work/node_modules"
    fi
    cp "$root/guests/js/polytrace-otel.js" "$work/polytrace-otel.js"
    plan="$(node "$root/scripts/js-guest.mjs" entry "$work")" || {
      echo "error: building component \`$name\` (javascript) failed: see above" >&2; exit 1; }
    entry="${plan%% *}"
    if [ "${plan#* }" = bundle ]; then
      # One module for componentize-js: the component's code, its npm
      # packages and the SDK, with the WIT imports left to the component.
      step esbuild env NODE_PATH="$root/tools/node_modules" "$root/tools/node_modules/.bin/esbuild" \
        "$work/$entry" --bundle --format=esm --platform=neutral --main-fields=module,main \
        --target=es2022 --external:'polytrace:*' --external:'wasi:*' --log-level=warning \
        --outfile="$work/bundle.js"
      entry=bundle.js
    fi
    step componentize-js node "$root/tools/node_modules/@bytecodealliance/componentize-js/src/cli.js" \
      "$work/$entry" -w "$root/wit" -n polytrace:telemetry/service "${aot[@]}" -o "$out.tmp"
    mv "$out.tmp" "$out"
    echo "aot=${#aot[@]}" >"$work.mode"
    ;;
  go)
    fresh "$src" "$root/guests/go" "$root/wit" && exit 0
    echo "build: $name (go $("$tools/venv/bin/go" env GOVERSION))" >&2
    # One module: the wit-bindgen bindings, the SDK as wit_component/polytrace,
    # and the component's handler package.
    rm -rf "$work" && mkdir -p "$work/export_wasi_http_incoming_handler"
    step "wit-bindgen go" bash -c 'cd "$1" && exec "$2" go -w polytrace:telemetry/service "$3"' _ \
      "$work" "$tools/cargo/bin/wit-bindgen" "$root/wit"
    cp -R "$root/guests/go/polytrace" "$work/polytrace"
    cp "$src"/*.go "$work/export_wasi_http_incoming_handler/"
    export GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOOS=wasip1 GOARCH=wasm
    export GOCACHE="$root/target/go-cache"
    step "go mod edit" bash -c 'cd "$1" && exec "$2" mod edit -replace "go.bytecodealliance.org/pkg=$3"' _ \
      "$work" "$tools/venv/bin/go" "$tools/go/pkg"
    step "go build" bash -c 'cd "$1" && exec "$2" build -o core.wasm -buildmode=c-shared -ldflags=-checklinkname=0' _ \
      "$work" "$tools/venv/bin/go"
    step "wasm-tools component embed" "$tools/venv/bin/wasm-tools" component embed \
      -w polytrace:telemetry/service "$root/wit" "$work/core.wasm" -o "$work/embedded.wasm"
    step "wasm-tools component new" "$tools/venv/bin/wasm-tools" component new "$work/embedded.wasm" \
      --adapt "wasi_snapshot_preview1=$tools/go/wasi_snapshot_preview1.reactor.wasm" -o "$out.tmp"
    mv "$out.tmp" "$out"
    ;;
  *)
    echo "error: component \`$name\`: unknown language \`$language\` (expected rust, python, javascript or go)" >&2
    exit 2
    ;;
esac
