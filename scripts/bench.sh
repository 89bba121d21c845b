#!/usr/bin/env bash
# Run the benchmarks with everything they need installed first:
#
#   scripts/bench.sh              every benchmark
#   scripts/bench.sh span_cost    one (overhead | span_cost)
#
# Besides the guests and the host, span_cost compares against the native
# OpenTelemetry SDKs, installed here at the versions pinned in
# tests/benches/native/ (a venv in .tools/bench-venv, node_modules beside
# the scripts). Figures go to stdout; docs/benchmarks.md records them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/build-guests.sh"
cargo build --release --locked -p polytrace --quiet

native="$root/tests/benches/native"
venv="$root/.tools/bench-venv"
stamp="$venv/.requirements"
if ! cmp -s "$native/requirements.txt" "$stamp" 2>/dev/null; then
  echo "setup: native Python OpenTelemetry SDK" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$native/requirements.txt"
  cp "$native/requirements.txt" "$stamp"
fi
if [ ! -f "$native/node_modules/.package-lock.json" ] ||
   [ "$native/package-lock.json" -nt "$native/node_modules/.package-lock.json" ]; then
  echo "setup: native Node OpenTelemetry SDK" >&2
  (cd "$native" && npm ci --no-audit --no-fund --silent)
fi

export RUST_BACKTRACE=0
if [ $# -gt 0 ]; then
  for bench in "$@"; do cargo bench --locked -p polytrace-tests --bench "$bench"; done
else
  cargo bench --locked -p polytrace-tests
fi
