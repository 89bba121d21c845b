#!/usr/bin/env bash
# Populate wit/deps with the WASI 0.2 WIT packages shipped inside the
# `wasip2` crate from crates.io, renumbered to 0.2.10 (the version the
# `polytrace:telemetry/service` world includes). Generated, never committed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/wit/deps"
manifest="$root/guests/rust/Cargo.toml"
src="$(cargo metadata --quiet --format-version 1 --manifest-path "$manifest" \
  | python3 -c 'import json,sys,os
m=json.load(sys.stdin)
p=[p for p in m["packages"] if p["name"]=="wasip2"]
print(os.path.join(os.path.dirname(p[0]["manifest_path"]),"wit","deps"))')"
if [ -f "$out/.source" ] && [ "$(cat "$out/.source")" = "$src" ]; then exit 0; fi
rm -rf "$out"; mkdir -p "$out"
for f in "$src"/*.wit; do
  name="$(basename "$f" .wit)"
  mkdir -p "$out/$name"
  sed -E 's/@0\.2\.[0-9]+/@0.2.10/g' "$f" > "$out/$name/$name.wit"
done
echo "$src" > "$out/.source"
