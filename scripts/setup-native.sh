#!/usr/bin/env bash
# Install the native OpenTelemetry SDKs that the interop test talks to and
# the benchmarks compare with, at the versions pinned in tests/native/:
# Python packages (with Flask and gunicorn) in .tools/native-venv, Node
# packages (with Express) in tests/native/node_modules; and build the native
# Go hello service (tests/native/hello_go, standard library only) into
# target/native/hello_go with the Go toolchain scripts/setup.sh installs.
# Idempotent: does nothing when up to date.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
native="$root/tests/native"
venv="$root/.tools/native-venv"
stamp="$venv/.requirements"
if ! cmp -s "$native/requirements.txt" "$stamp" 2>/dev/null; then
  echo "setup: native OpenTelemetry Python SDK (.tools/native-venv)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$native/requirements.txt"
  cp "$native/requirements.txt" "$stamp"
fi
if [ ! -f "$native/node_modules/.package-lock.json" ] ||
   [ "$native/package-lock.json" -nt "$native/node_modules/.package-lock.json" ]; then
  echo "setup: native OpenTelemetry Node SDK (tests/native/node_modules)" >&2
  (cd "$native" && npm ci --no-audit --no-fund --silent)
fi
go="$root/.tools/venv/bin/go"
hello_go="$root/target/native/hello_go"
if [ ! -x "$go" ]; then
  echo "setup: warning: no Go toolchain at .tools/venv/bin/go (scripts/setup.sh installs it): target/native/hello_go not built" >&2
elif [ ! -x "$hello_go" ] || [ -n "$(find "$native/hello_go" -newer "$hello_go" -print -quit)" ]; then
  echo "setup: native Go hello service (target/native/hello_go)" >&2
  mkdir -p "$root/target/native"
  (cd "$native/hello_go" &&
    env -u GOOS -u GOARCH GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=0 \
      GOCACHE="$root/target/go-cache" "$go" build -trimpath -o "$hello_go.tmp" . &&
    mv "$hello_go.tmp" "$hello_go")
fi
