#!/usr/bin/env bash
# The demo (README command 1): install the toolchains, build every guest and
# the host, then run examples/checkout — four services in three languages —
# send it a handful of checkouts and print each one's trace as a tree. The
# app keeps serving until Ctrl-C (which shuts down gracefully and flushes).
#
# With OTEL_EXPORTER_OTLP_ENDPOINT set (Jaeger, a Collector, ...), the spans
# also go there. Arguments pass to scripts/demo.py (--once: stop after the
# traces; --listen ADDR).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/build-guests.sh"
cargo build --release --locked -p polytrace
exec python3 "$root/scripts/demo.py" --polytrace "$root/target/release/polytrace" "$@"
