#!/usr/bin/env bash
# Run the benchmarks with everything they need installed first:
#
#   scripts/bench.sh              every benchmark
#   scripts/bench.sh span_cost    one (overhead | span_cost | vs_native | sql_cost)
#
# Besides the guests and the host, span_cost compares against the native
# OpenTelemetry SDKs, installed by scripts/setup-native.sh at the versions
# pinned in tests/native/; sql_cost also a PostgreSQL server
# (scripts/setup-databases.sh) and psycopg. Figures go to stdout; docs/benchmarks.md records
# them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/build-guests.sh"
# The host as it runs in production: the `dist` profile (whole-program LTO,
# Cargo.toml); POLYTRACE_BIN set by the caller wins.
cargo build --profile dist --locked -p polytrace --quiet
export POLYTRACE_BIN="${POLYTRACE_BIN:-$root/target/dist/polytrace}"

"$root/scripts/setup-native.sh"
# sql_cost starts a PostgreSQL server of its own.
"$root/scripts/setup-databases.sh"
# The native axum service of vs_native and overhead: its own workspace, built here only.
if [ $# -eq 0 ] || [[ " $* " == *" vs_native "* ]] || [[ " $* " == *" overhead "* ]]; then
  cargo build --profile dist --locked --quiet --manifest-path "$root/tests/native/hello_axum/Cargo.toml"
fi

export RUST_BACKTRACE=0
if [ $# -gt 0 ]; then
  for bench in "$@"; do cargo bench --locked -p polytrace-tests --bench "$bench"; done
else
  cargo bench --locked -p polytrace-tests
fi
