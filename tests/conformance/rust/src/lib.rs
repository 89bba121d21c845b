//! The conformance scenario (tests/conformance/SPEC.md) with the Rust SDK.

use polytrace_guest::http::wasip2::exports::http::incoming_handler::Guest;
use polytrace_guest::http::wasip2::http::types::{IncomingRequest, ResponseOutparam};
use polytrace_guest::http::{Request, respond, send};
use polytrace_guest::sql::{Connection, ErrorKind, Value};
use polytrace_guest::{Span, Status, kv, logs, metrics};

struct Conformance;

impl Guest for Conformance {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let request = match Request::read(request) {
            Ok(request) => request,
            Err(e) => return respond(out, 400, "text/plain", e.to_string().as_bytes()),
        };
        if request.path().ends_with("/bad-input") {
            return bad_input(out);
        }
        let n = || request.query("n").and_then(|n| n.parse().ok()).unwrap_or(1000);
        if request.path().ends_with("/span-cost") {
            return span_cost(n(), out);
        }
        if request.path().ends_with("/metric-cost") {
            return metric_cost(n(), out);
        }
        if request.path().ends_with("/log-cost") {
            return log_cost(n(), out);
        }
        if request.path().ends_with("/db") {
            return database(out);
        }
        logs::init();
        let work = Span::start(
            "conformance.work",
            [
                kv("conformance.string", "text"),
                kv("conformance.bool", true),
                kv("conformance.int", 42),
                kv("conformance.float", 2.5),
                kv("conformance.strings", vec!["a", "b"]),
                kv("conformance.bools", vec![true, false]),
                kv("conformance.ints", vec![1i64, 2, 3]),
                kv("conformance.floats", vec![0.5, 1.5]),
            ],
        );
        work.add_event("checkpoint", [kv("conformance.step", 1)]);
        let outcome = || [kv("conformance.outcome", "ok")];
        metrics::counter("conformance.requests", "Conformance scenario runs", "{request}")
            .expect("a valid counter")
            .add(1.0, outcome());
        metrics::histogram_with_boundaries(
            "conformance.latency",
            "Conformance latency",
            "ms",
            &[1.0, 10.0, 100.0],
        )
        .expect("a valid histogram")
        .record(42.5, outcome());
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
        work.set_attribute("conformance.after_end", true);

        let fail = Span::start("conformance.fail", []);
        fail.record_exception("ConformanceError", "conformance failure", None);
        fail.set_status(Status::Error("conformance failure".into()));
        fail.end();

        // Never ended: the host closes it when the request finishes.
        std::mem::forget(Span::start("conformance.unended", []));

        let body = format!("{{\"language\":\"rust\",\"next_status\":{status}}}");
        respond(out, 200, "application/json", body.as_bytes());
    }
}

/// The database scenario: a table made, a row upserted in a transaction,
/// read back, and a statement on a table that does not exist, handled.
fn database(out: ResponseOutparam) {
    let span = Span::start("conformance.db", []);
    let db = Connection::open("conformance").expect("the granted database");
    db.execute(
        "CREATE TABLE IF NOT EXISTS conformance_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        &[],
    )
    .expect("the table");
    db.transaction(|db| {
        db.execute(
            "INSERT INTO conformance_items (id, name) VALUES (?, ?) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            &[1i64.into(), "tea".into()],
        )
    })
    .expect("the upsert");
    let read = db
        .execute("SELECT name FROM conformance_items WHERE id = ?", &[1i64.into()])
        .expect("the read");
    let name = match read.rows.first().and_then(|row| row.first()) {
        Some(Value::Text(name)) => name.clone(),
        other => format!("{other:?}"),
    };
    let kind = match db.execute("SELECT name FROM conformance_missing", &[]) {
        Err(e) if e.kind == ErrorKind::Syntax => "syntax",
        Err(_) => "another error",
        Ok(_) => "none",
    };
    span.end();
    let body = format!(r#"{{"language":"rust","name":"{name}","error_kind":"{kind}"}}"#);
    respond(out, 200, "application/json", body.as_bytes());
}

/// The bad-input scenario. Rust's `SpanKind` cannot hold an invalid kind, so
/// `bad.kind` uses the default one.
fn bad_input(out: ResponseOutparam) {
    Span::start("", []).end();
    Span::start("bad.kind", []).end();
    Span::start(
        "bad.huge",
        [
            kv("bad.huge", "x".repeat(1 << 20)),
            kv("bad.long", (0..1000).collect::<Vec<i64>>()),
        ],
    )
    .end();
    let many = (0..10_000).map(|i| kv(format!("bad.attr.{i:05}"), i));
    Span::start("bad.many", many).end();
    let error = match metrics::counter("1bad name", "", "") {
        Err(metrics::MetricError::InvalidName(_)) => "invalid-name",
        Err(_) => "another error",
        Ok(_) => "none",
    };
    let body = format!(r#"{{"language":"rust","metric_error":"{error}"}}"#);
    respond(out, 200, "application/json", body.as_bytes());
}

/// The span-cost scenario: `n` spans of five attributes, timed in the guest.
fn span_cost(n: i64, out: ResponseOutparam) {
    let started = std::time::Instant::now();
    for i in 0..n {
        // Dropped at once: the span ends with its handle.
        let _ = Span::start(
            "bench.span",
            [
                kv("bench.string", "value"),
                kv("bench.bool", true),
                kv("bench.int", i),
                kv("bench.float", 0.5),
                kv("bench.route", "/checkout"),
            ],
        );
    }
    let elapsed = started.elapsed().as_nanos();
    let body = format!("{{\"language\":\"rust\",\"n\":{n},\"elapsed_ns\":{elapsed}}}");
    respond(out, 200, "application/json", body.as_bytes());
}

/// The metric-cost scenario: `n` counter adds with two attributes.
fn metric_cost(n: i64, out: ResponseOutparam) {
    let counter = metrics::counter("bench.counter", "", "{item}").expect("a valid counter");
    let started = std::time::Instant::now();
    for _ in 0..n {
        counter.add(
            1.0,
            [kv("bench.route", "/checkout"), kv("bench.status", "ok")],
        );
    }
    let elapsed = started.elapsed().as_nanos();
    let body = format!("{{\"language\":\"rust\",\"n\":{n},\"elapsed_ns\":{elapsed}}}");
    respond(out, 200, "application/json", body.as_bytes());
}

/// The log-cost scenario: `n` INFO records with two attributes.
fn log_cost(n: i64, out: ResponseOutparam) {
    let started = std::time::Instant::now();
    for _ in 0..n {
        logs::info(
            "bench log",
            [kv("bench.route", "/checkout"), kv("bench.status", "ok")],
        );
    }
    let elapsed = started.elapsed().as_nanos();
    let body = format!("{{\"language\":\"rust\",\"n\":{n},\"elapsed_ns\":{elapsed}}}");
    respond(out, 200, "application/json", body.as_bytes());
}

polytrace_guest::http::wasip2::http::proxy::export!(Conformance with_types_in polytrace_guest::http::wasip2);
