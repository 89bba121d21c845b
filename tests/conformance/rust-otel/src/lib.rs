//! The conformance scenario (tests/conformance/SPEC.md) written against the
//! `opentelemetry` crate's API: the host is its SDK. Its trees, metrics and
//! logs must equal the SDK version's (rust/src/lib.rs). Log records are the
//! SDK's and the `log` crate's: the API's logs are a bridge API.

use opentelemetry::trace::{Span as _, Status, Tracer as _};
use opentelemetry::{Array, KeyValue, StringValue, Value, global};
use polytrace_guest::http::wasip2::exports::http::incoming_handler::Guest;
use polytrace_guest::http::wasip2::http::types::{IncomingRequest, ResponseOutparam};
use polytrace_guest::http::{Request, respond, send};
use polytrace_guest::{kv, logs, otel};

struct Conformance;

impl Guest for Conformance {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        otel::init();
        logs::init();
        let request = match Request::read(request) {
            Ok(request) => request,
            Err(e) => return respond(out, 400, "text/plain", e.to_string().as_bytes()),
        };
        if request.path().ends_with("/span-cost") {
            let n = request
                .query("n")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000);
            return span_cost(n, out);
        }
        let tracer = global::tracer("conformance");
        let strings = |v: &[&'static str]| {
            Value::Array(Array::String(
                v.iter().map(|s| StringValue::from(*s)).collect(),
            ))
        };
        let mut work = tracer
            .span_builder("conformance.work")
            .with_attributes([
                KeyValue::new("conformance.string", "text"),
                KeyValue::new("conformance.bool", true),
                KeyValue::new("conformance.int", 42),
                KeyValue::new("conformance.float", 2.5),
                KeyValue::new("conformance.strings", strings(&["a", "b"])),
                KeyValue::new("conformance.bools", Value::Array(vec![true, false].into())),
                KeyValue::new("conformance.ints", Value::Array(vec![1i64, 2, 3].into())),
                KeyValue::new("conformance.floats", Value::Array(vec![0.5, 1.5].into())),
            ])
            .start(&tracer);
        work.add_event("checkpoint", vec![KeyValue::new("conformance.step", 1)]);
        let meter = global::meter("conformance");
        let outcome = [KeyValue::new("conformance.outcome", "ok")];
        meter
            .u64_counter("conformance.requests")
            .with_description("Conformance scenario runs")
            .with_unit("{request}")
            .build()
            .add(1, &outcome);
        meter
            .f64_histogram("conformance.latency")
            .with_description("Conformance latency")
            .with_unit("ms")
            .with_boundaries(vec![1.0, 10.0, 100.0])
            .build()
            .record(42.5, &outcome);
        logs::warn("conformance log", [kv("conformance.step", 2)]);
        log::info!("conformance native log");
        let status = match request.query("next") {
            Some(url) => match send("GET", &url, b"") {
                Ok(response) => response.status.to_string(),
                Err(e) => {
                    work.record_error(&e);
                    "null".to_string()
                }
            },
            None => "null".to_string(),
        };
        work.end();
        work.set_attribute(KeyValue::new("conformance.after_end", true));

        let mut fail = tracer.start("conformance.fail");
        // The exception's type, as the semantic conventions name it: the
        // API's record_error cannot know a `dyn Error`'s type.
        fail.add_event(
            "exception",
            vec![
                KeyValue::new("exception.type", "ConformanceError"),
                KeyValue::new("exception.message", "conformance failure"),
                KeyValue::new(
                    "exception.stacktrace",
                    format!("at {}:{}", file!(), line!()),
                ),
            ],
        );
        fail.set_status(Status::error("conformance failure"));
        fail.end();

        // Never ended: the host closes it when the request finishes.
        std::mem::forget(tracer.start("conformance.unended"));

        let body = format!("{{\"language\":\"rust-otel\",\"next_status\":{status}}}");
        respond(out, 200, "application/json", body.as_bytes());
    }
}

/// The span-cost scenario through the API: n spans of five attributes,
/// timed in the guest.
fn span_cost(n: u64, out: ResponseOutparam) {
    let tracer = global::tracer("conformance");
    let started = std::time::Instant::now();
    for i in 0..n {
        tracer
            .span_builder("bench.span")
            .with_attributes([
                KeyValue::new("bench.string", "value"),
                KeyValue::new("bench.bool", true),
                KeyValue::new("bench.int", i as i64),
                KeyValue::new("bench.float", 0.5),
                KeyValue::new("bench.route", "/checkout"),
            ])
            .start(&tracer)
            .end();
    }
    let elapsed = started.elapsed().as_nanos();
    let body = format!("{{\"language\":\"rust-otel\",\"n\":{n},\"elapsed_ns\":{elapsed}}}");
    respond(out, 200, "application/json", body.as_bytes());
}

polytrace_guest::http::wasip2::http::proxy::export!(Conformance with_types_in polytrace_guest::http::wasip2);
