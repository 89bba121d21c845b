#!/usr/bin/env bash
# The whole test suite, from a fresh clone: tools, guests, host, then every
# unit and integration test (real binary, real components, real OTLP receiver).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/build-guests.sh"
# The native OpenTelemetry services of the interop test.
"$root/scripts/setup-native.sh"
# Chromium and playwright-core for the viewer's browser test.
"$root/scripts/setup-browser.sh"
# The PostgreSQL server the SQL tests start for themselves.
"$root/scripts/setup-databases.sh"
cargo build --release --locked -p polytrace
log="$root/target/test-output.log"
set +e
cargo test --release --locked --no-fail-fast --workspace --lib --bins --tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run, summed over every test binary.
# A failing binary's own summary line can be lost in a panic's output, so
# its "error: test failed" line is counted too.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     /error: test failed, to rerun/ { b++ }
     END { printf "tests: %d passed, %d failed", p, f; if (b) printf " (%d test binaries failed)", b; printf "\n" }' "$log"
exit "$status"
