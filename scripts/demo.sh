#!/usr/bin/env bash
# The demo: install tools, build guests and host, run examples/hello-rust and
# show its spans. Runs until Ctrl-C (which shuts down gracefully and flushes).
# Spans print on the console unless OTEL_EXPORTER_OTLP_ENDPOINT points at a
# backend (Jaeger, an OpenTelemetry Collector, Uptrace, ...).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/build-guests.sh"
cargo build --release --locked -p polytrace
listen="${POLYTRACE_LISTEN:-127.0.0.1:3000}"
if [ -z "${OTEL_EXPORTER_OTLP_ENDPOINT:-}${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-}" ]; then
  export OTEL_TRACES_EXPORTER="${OTEL_TRACES_EXPORTER:-console}"
fi
export OTEL_BSP_SCHEDULE_DELAY="${OTEL_BSP_SCHEDULE_DELAY:-500}"
"$root/target/release/polytrace" up examples/hello-rust --listen "$listen" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid"' INT TERM
for _ in $(seq 1 600); do
  curl -s -o /dev/null "http://$listen/" && break
  kill -0 "$pid" 2>/dev/null || exit 1
  sleep 0.1
done
url="http://$listen/hello/greet?name=demo&next=http://hello-rust/hello/inner"
traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
echo
echo "demo: GET $url  (with traceparent $traceparent)"
curl -s -H "traceparent: $traceparent" "$url"
echo
echo
echo "demo: the spans of that request follow: SERVER -> hello.work -> CLIENT -> SERVER -> hello.work,"
echo "      all in trace 4bf92f3577b34da6a3ce929d0e0e4736. Try your own:"
echo "        curl '$url'"
echo "      Ctrl-C stops the host (in-flight requests finish, spans are flushed)."
echo
wait "$pid"
