#!/usr/bin/env bash
# Build every guest component in the repository (idempotent: cargo only
# rebuilds what changed). Outputs go to target/wasm32-wasip2/release/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
"$root/scripts/wit-deps.sh"
for manifest in examples/hello-rust/Cargo.toml tests/guests/faults/Cargo.toml; do
  cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$manifest" --target-dir "$root/target"
done
