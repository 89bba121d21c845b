#!/usr/bin/env bash
# The whole test suite, from a fresh clone: tools, guests, host, then every
# unit and integration test (real binary, real components, real OTLP receiver).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/build-guests.sh"
cargo build --release --locked -p polytrace
cargo test --release --locked --workspace
