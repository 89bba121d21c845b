#!/usr/bin/env bash
# Populate wit/deps with the WASI 0.2 WIT packages shipped inside the
# `wasip2` crate from crates.io, renumbered to 0.2.10 (the version the
# `polytrace:telemetry/service` world includes), and wasi:keyvalue
# 0.2.0-draft as wasmtime ships it (the `wasmtime-wasi-keyvalue` crate,
# named in tools/go-assets/Cargo.toml). Generated, never committed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/wit/deps"
manifest="$root/guests/rust/Cargo.toml"
src="$(cargo metadata --quiet --format-version 1 --manifest-path "$manifest" \
  | python3 -c 'import json,sys,os
m=json.load(sys.stdin)
p=[p for p in m["packages"] if p["name"]=="wasip2"]
print(os.path.join(os.path.dirname(p[0]["manifest_path"]),"wit","deps"))')"
kv="$(cargo metadata --quiet --format-version 1 --manifest-path "$root/tools/go-assets/Cargo.toml" \
  | python3 -c 'import json,sys,os
m=json.load(sys.stdin)
p=[p for p in m["packages"] if p["name"]=="wasmtime-wasi-keyvalue"]
print(os.path.join(os.path.dirname(p[0]["manifest_path"]),"wit","deps","keyvalue"))')"
if [ -f "$out/.source" ] && [ "$(cat "$out/.source")" = "$src $kv" ]; then exit 0; fi
rm -rf "$out"; mkdir -p "$out"
# Renumber to 0.2.10 and leave out what was added after 0.2.10 (items marked
# `@since(version = 0.2.11)` or later, all single-line declarations today).
python3 - "$src" "$out" <<'PY'
import pathlib, re, sys
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
later = re.compile(r"^\s*@since\(version = 0\.2\.(\d+)\)\s*$")
for f in sorted(src.glob("*.wit")):
    lines, kept, skip = f.read_text().splitlines(), [], False
    for i, line in enumerate(lines):
        if skip:
            if not line.rstrip().endswith(";"):
                sys.exit(f"{f}:{i+1}: cannot drop a multi-line item added after 0.2.10")
            skip = False
            continue
        m = later.match(line)
        if m and int(m.group(1)) > 10:
            skip = True
            continue
        kept.append(re.sub(r"@0\.2\.\d+", "@0.2.10", line))
    (out / f.stem).mkdir(parents=True, exist_ok=True)
    (out / f.stem / f"{f.stem}.wit").write_text("\n".join(kept) + "\n")
PY
mkdir -p "$out/keyvalue"
cp "$kv"/*.wit "$out/keyvalue/"
echo "$src $kv" > "$out/.source"
