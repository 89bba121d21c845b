#!/usr/bin/env bash
# Build every guest component in the repository with scripts/build-guest.sh.
# Idempotent: each build is skipped when its output is newer than its inputs
# (cargo decides for Rust). Outputs go to target/wasm32-wasip2/release/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
"$root/scripts/wit-deps.sh"
build() { "$root/scripts/build-guest.sh" "$@"; }

# language   component name      source
build rust       hello_rust          examples/hello-rust
build python     hello_python        examples/hello-python
build javascript hello_js            examples/hello-js
build go         hello_go            examples/hello-go
build rust       faults              tests/guests/faults
build rust       conformance_rust    tests/conformance/rust
build python     conformance_python  tests/conformance/python
build javascript conformance_js      tests/conformance/javascript
build go         conformance_go      tests/conformance/go
build rust       conformance_rust_otel tests/conformance/rust-otel
build python     conformance_python_otel tests/conformance/python-otel
build javascript conformance_js_otel tests/conformance/javascript-otel
build go         conformance_go_otel tests/conformance/go-otel
build python     api_gateway         examples/checkout/api-gateway
build go         fraud_service       examples/checkout/fraud-service
build javascript session_service     examples/checkout/session-service
build python     billing             examples/checkout/billing
build javascript frontend_api        examples/frontend-data/frontend-api
build python     data_processor      examples/frontend-data/data-processor
build javascript js_fetch_listener   tests/guests/js-fetch-listener
build python     flask_orders        examples/flask-orders
build go         go_nethttp          examples/go-nethttp
build javascript hono_sessions       examples/hono-sessions
build rust       rust_otel           examples/rust-otel
build python     sql_orders          examples/sql-orders/orders
build python     sql_probe           tests/guests/sql-probe
build python     kv_probe            tests/guests/kv-probe
build python     py_spans            tests/guests/py-spans
build javascript kv_probe_js         tests/guests/kv-probe-js
build go         go_spans            tests/guests/go-spans
build go         kv_probe_go         tests/guests/kv-probe-go
build rust       kv_probe_rust       tests/guests/kv-probe-rust
build javascript sql_probe_js        tests/guests/sql-probe-js
build go         sql_probe_go        tests/guests/sql-probe-go
build javascript sql_reports         examples/sql-orders/reports
build go         sql_audit           examples/sql-orders/audit
build rust       sql_stock           examples/sql-orders/stock
