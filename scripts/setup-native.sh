#!/usr/bin/env bash
# Install the native OpenTelemetry SDKs that the interop test talks to and
# the benchmarks compare with, at the versions pinned in tests/native/:
# Python packages (with Flask and gunicorn) in .tools/native-venv, Node
# packages (with Express and node-postgres) in tests/native/node_modules;
# and build the native Go programs (tests/native/hello_go, standard library
# only; tests/native/pg_cost_go, with Debian's lib/pq) into target/native/
# with the Go toolchain scripts/setup.sh installs.
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
# The Go PostgreSQL driver the SQL benchmark's native Go side uses: there is
# no Go module proxy here, so Debian's package of lib/pq.
pq=/usr/share/gocode/src/github.com/lib/pq
if [ ! -f "$pq/go.mod" ]; then
  echo "setup: Go PostgreSQL driver (Debian's golang-github-lib-pq-dev)" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  install() {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      golang-github-lib-pq-dev > /dev/null
  }
  install || { $sudo apt-get update -q > /dev/null && install; }
fi
# The native Go programs: tests/native/NAME → target/native/NAME.
for name in hello_go pg_cost_go; do
  binary="$root/target/native/$name"
  if [ ! -x "$go" ]; then
    echo "setup: warning: no Go toolchain at .tools/venv/bin/go (scripts/setup.sh installs it): target/native/$name not built" >&2
  elif [ ! -x "$binary" ] || [ -n "$(find "$native/$name" -newer "$binary" -print -quit)" ]; then
    echo "setup: native Go program (target/native/$name)" >&2
    mkdir -p "$root/target/native"
    (cd "$native/$name" &&
      env -u GOOS -u GOARCH GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=0 \
        GOCACHE="$root/target/go-cache" "$go" build -trimpath -o "$binary.tmp" . &&
      mv "$binary.tmp" "$binary")
  fi
done
