//! The cross-language conformance suite: the scenario of
//! tests/conformance/SPEC.md, implemented with the Rust, Python, JavaScript
//! and Go SDKs, run in one host against a real OTLP receiver. The four
//! normalized trace trees must be identical, and equal to
//! tests/conformance/expected.txt; so must their metrics and logs
//! (expected-metrics.txt, expected-logs.txt). The database scenario runs on
//! SQLite and on a real PostgreSQL server (expected-db-*.txt).
//!
//! After an intended change to the scenario or to the host's spans, rewrite
//! the expected tree with `POLYTRACE_BLESS=1` and review its diff.

use polytrace_tests::tree;
use polytrace_tests::*;
use std::path::PathBuf;

/// (language, wasm name) of each implementation.
const LANGUAGES: &[(&str, &str)] = &[
    ("rust", "conformance_rust"),
    ("python", "conformance_python"),
    ("javascript", "conformance_js"),
    ("go", "conformance_go"),
];

/// The same scenario written against each language's standard
/// OpenTelemetry API (Go: its shapes), with polytrace as the API's SDK:
/// the trees, metrics and logs must be the SDK versions'. (The bad-input
/// scenario is the SDKs': the API never reports a bad instrument.)
const API_LANGUAGES: &[(&str, &str)] = &[
    ("rust-otel", "conformance_rust_otel"),
    ("python-otel", "conformance_python_otel"),
    ("javascript-otel", "conformance_js_otel"),
    ("go-otel", "conformance_go_otel"),
];

/// Every implementation: the SDKs' and the APIs'.
fn all_languages() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    LANGUAGES.iter().chain(API_LANGUAGES)
}

const REMOTE_SPAN: &str = "00f067aa0ba902b7";

fn expected_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("conformance")
        .join(file)
}

/// The rendered trees must equal each other and the expected file.
fn assert_identical_trees(file: &str, rendered: &[(&str, String)]) {
    tree::assert_expected(&expected_path(file), rendered);
}

/// Every implementation and a peer, with `isolation` for each.
fn manifest(isolation: &str) -> String {
    let mut m = String::from("app = \"conformance\"\nversion = \"1.0.0\"\n");
    for (name, wasm) in all_languages() {
        // "python-otel" is a Python component.
        let language = name.split('-').next().unwrap_or(name);
        m += &format!(
            "\n[[component]]\nid = \"conformance-{name}\"\nsource = \"{}\"\n\
             route = \"/conformance-{name}/...\"\nlanguage = \"{language}\"\n\
             isolation = \"{isolation}\"\n",
            component(wasm).display()
        );
    }
    m += &format!(
        "\n[[component]]\nid = \"peer\"\nsource = \"{}\"\nlanguage = \"rust\"\n",
        component("hello_rust").display()
    );
    m
}

/// One fresh instance per request: the trees, metrics and logs.
#[tokio::test(flavor = "multi_thread")]
async fn every_language_produces_the_same_trace() {
    scenario("per-request", 1).await;
}

/// Warm instances: the scenario's second run on an instance that already
/// ran it once gives the same trees and logs.
#[tokio::test(flavor = "multi_thread")]
async fn every_language_produces_the_same_trace_on_a_warm_instance() {
    scenario("reuse", 2).await;
}

/// Run the scenario `runs` times per language (the last run is checked),
/// in a host whose components have `isolation`.
async fn scenario(isolation: &str, runs: u8) {
    let receiver = Receiver::start().await;
    let host = Polytrace::up(
        &format!("conformance-{isolation}"),
        &manifest(isolation),
        &receiver,
        "http/protobuf",
        &[],
    );
    let mut rendered = Vec::new();
    let mut traces = Vec::new();
    for (i, (language, _)) in all_languages().enumerate() {
        let id = format!("conformance-{language}");
        let mut last = None;
        for run in 0..runs {
            let trace_id = format!("4bf92f3577b34da6a3ce929d0e0e{run:02x}{i:02x}");
            let response = request(
                "GET",
                &host.url(&format!(
                    "/{id}/conformance?next=http://peer/hello/conformance"
                )),
                &[
                    ("traceparent", &format!("00-{trace_id}-{REMOTE_SPAN}-01")),
                    ("user-agent", "polytrace-conformance/1"),
                ],
                "",
            )
            .await;
            last = Some((trace_id, response));
        }
        let (trace_id, response) = last.unwrap();
        assert_eq!(response.status, 200, "{language}: {}", response.body);
        let body = response.json();
        assert_eq!(body["language"], *language, "{}", response.body);
        assert_eq!(body["next_status"], 200, "{language}: {}", response.body);

        // SERVER, work, CLIENT, peer SERVER, peer hello.work, fail, unended.
        let spans = receiver.trace(&trace_id, 7).await;
        let by_name = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name && s.service() == id)
                .unwrap_or_else(|| panic!("{language}: no span {name}: {spans:#?}"))
        };
        // The trace is continued from the inbound traceparent.
        let server = spans
            .iter()
            .find(|s| s.service() == id && s.kind == KIND_SERVER)
            .unwrap();
        assert_eq!(server.parent_span_id, REMOTE_SPAN, "{language}");
        // The outbound call's CLIENT span is a child of conformance.work.
        let work = by_name("conformance.work");
        let client = spans
            .iter()
            .find(|s| s.service() == id && s.kind == KIND_CLIENT)
            .unwrap();
        assert_eq!(client.parent_span_id, work.span_id, "{language}");
        assert_eq!(work.parent_span_id, server.span_id, "{language}");
        // Unended spans are closed by the host and marked.
        let unended = by_name("conformance.unended");
        assert_eq!(unended.attributes["polytrace.span.auto_ended"], true);
        assert!(work.attr("polytrace.span.auto_ended").is_none());
        // Attributes set after the end are ignored.
        assert!(
            work.attr("conformance.after_end").is_none(),
            "{language}: {work:#?}"
        );
        // The exception event carries the language's own stack trace.
        let fail = by_name("conformance.fail");
        let exception = fail.event("exception").unwrap();
        assert!(
            exception["exception.stacktrace"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{language}: {exception:?}"
        );

        let text = tree::render(&spans, &[(&id, "<component>")]);
        rendered.push((*language, text));
        traces.push((id, trace_id, spans));
    }
    assert_identical_trees("expected.txt", &rendered);

    // Metrics and logs, normalized, identical across the four languages.
    let mut metrics = Vec::new();
    let mut logs = Vec::new();
    for ((language, _), (id, trace_id, spans)) in all_languages().zip(&traces) {
        for name in ["conformance.requests", "conformance.latency"] {
            receiver.wait_metric(id, name, |p| !p.is_empty()).await;
        }
        metrics.push((*language, render_metrics(&receiver.metric_points(), id)));
        let records = receiver
            .wait_logs(
                |r| &r.trace_id == trace_id && r.service() == id,
                |r| r.len() >= 2,
            )
            .await;
        logs.push((*language, render_logs(&records, spans)));
    }
    host.terminate();
    // Counters and histograms add up over the runs: compared after one.
    if runs == 1 {
        tree::assert_expected(&expected_path("expected-metrics.txt"), &metrics);
    }
    tree::assert_expected(&expected_path("expected-logs.txt"), &logs);
}

/// The database scenario of tests/conformance/SPEC.md on the embedded
/// SQLite backend: the four SDKs' statements give identical CLIENT spans
/// (expected-db-sqlite.txt) and `db.client.operation.duration` series.
#[tokio::test(flavor = "multi_thread")]
async fn every_language_makes_the_same_database_spans_on_sqlite() {
    database_scenario("sqlite", "sqlite:conformance.db", &[]).await;
}

/// The same on a real PostgreSQL server (expected-db-postgresql.txt).
#[tokio::test(flavor = "multi_thread")]
async fn every_language_makes_the_same_database_spans_on_postgresql() {
    let pg = postgres::Postgres::start("conformance");
    pg.psql("postgres", "CREATE DATABASE conformance");
    let url = format!(
        "postgres://polytrace:${{CONFORMANCE_PG_PASSWORD}}@127.0.0.1:{}/conformance",
        pg.port
    );
    database_scenario(
        "postgresql",
        &url,
        &[("CONFORMANCE_PG_PASSWORD", &pg.password)],
    )
    .await;
}

/// Run `GET /db` once per SDK language, each component granted the
/// database `conformance` at `url`; compare the trees and the duration
/// series.
async fn database_scenario(backend: &str, url: &str, env: &[(&str, &str)]) {
    let receiver = Receiver::start().await;
    let mut m = String::from("app = \"conformance-db\"\nversion = \"1.0.0\"\n");
    for (name, wasm) in LANGUAGES {
        m += &format!(
            "\n[[component]]\nid = \"conformance-{name}\"\nsource = \"{}\"\n\
             route = \"/conformance-{name}/...\"\nlanguage = \"{name}\"\n\
             sql = {{ conformance = \"{url}\" }}\n",
            component(wasm).display()
        );
    }
    let host = Polytrace::up(
        &format!("conformance-db-{backend}"),
        &m,
        &receiver,
        "http/protobuf",
        env,
    );
    let mut rendered = Vec::new();
    let mut series = Vec::new();
    for (language, _) in LANGUAGES {
        let id = format!("conformance-{language}");
        let response = get(&host.url(&format!("/{id}/db"))).await;
        assert_eq!(
            response.status,
            200,
            "{language}: {}\n{}",
            response.body,
            host.log()
        );
        let body = response.json();
        assert_eq!(body["language"], *language, "{}", response.body);
        assert_eq!(body["name"], "tea", "{language}: {}", response.body);
        assert_eq!(
            body["error_kind"], "syntax",
            "{language}: {}",
            response.body
        );
        // SERVER, conformance.db, CREATE, BEGIN, INSERT, COMMIT, SELECT, SELECT.
        let spans = receiver.trace(&response.trace_id(), 8).await;
        let db = spans.iter().find(|s| s.name == "conformance.db").unwrap();
        for s in spans.iter().filter(|s| s.kind == KIND_CLIENT) {
            assert_eq!(s.parent_span_id, db.span_id, "{language}: {s:#?}");
        }
        rendered.push((*language, tree::render(&spans, &[(&id, "<component>")])));
        let points = receiver
            .wait_metric(&id, "db.client.operation.duration", |p| {
                render_db_series(p, &id).lines().count() >= 6
            })
            .await;
        series.push((*language, render_db_series(&points, &id)));
    }
    host.terminate();
    assert_identical_trees(&format!("expected-db-{backend}.txt"), &rendered);
    let first = &series[0].1;
    for (language, s) in &series {
        assert_eq!(
            s, first,
            "{language}'s db.client.operation.duration series differ from rust's"
        );
    }
}

/// The `db.client.operation.duration` series of `service`: each attribute
/// set (without the per-run port) with its count, one line each.
fn render_db_series(points: &[MetricPoint], service: &str) -> String {
    let lines: std::collections::BTreeSet<String> = points
        .iter()
        .filter(|p| p.service() == service && p.name == "db.client.operation.duration")
        .map(|p| {
            let mut attributes = p.attributes.clone();
            attributes.remove("server.port");
            format!(
                "{} unit={} bounds={:?} attributes={} count={}\n",
                p.kind,
                p.unit,
                p.bounds,
                serde_json::to_string(&attributes).unwrap(),
                p.count
            )
        })
        .collect();
    lines.into_iter().collect()
}

/// The `conformance.*` points of `service`, one line each, sorted; the same
/// cumulative point exported several times counts once.
fn render_metrics(points: &[MetricPoint], service: &str) -> String {
    let lines: std::collections::BTreeSet<String> = points
        .iter()
        .filter(|p| p.service() == service && p.name.starts_with("conformance."))
        .map(|p| {
            let mut line = format!(
                "{} {} unit={:?} description={:?} monotonic={} temporality={} attributes={}",
                p.name,
                p.kind,
                p.unit,
                p.description,
                p.monotonic,
                p.temporality,
                serde_json::to_string(&p.attributes).unwrap()
            );
            if p.kind == "histogram" {
                line += &format!(
                    " count={} sum={} bounds={:?} buckets={:?}",
                    p.count, p.value, p.bounds, p.bucket_counts
                );
            } else {
                line += &format!(" value={}", p.value);
            }
            line
        })
        .collect();
    lines.into_iter().map(|l| l + "\n").collect()
}

/// Log records, one line each, sorted: severity, body, attributes (the
/// language-specific `code.*` ones left out) and the span they belong to.
fn render_logs(records: &[LogRecord], spans: &[FlatSpan]) -> String {
    let mut lines: Vec<String> = records
        .iter()
        .map(|r| {
            let attributes: std::collections::BTreeMap<_, _> = r
                .attributes
                .iter()
                .filter(|(k, _)| !k.starts_with("code."))
                .collect();
            let span = spans
                .iter()
                .find(|s| s.span_id == r.span_id)
                .map_or("<no span>", |s| s.name.as_str());
            format!(
                "{} {} {} attributes={} span={span}\n",
                r.severity_number,
                r.severity_text,
                r.body,
                serde_json::to_string(&attributes).unwrap()
            )
        })
        .collect();
    lines.sort();
    lines.concat()
}

/// Telemetry past every limit, from every SDK: each request still succeeds,
/// and the host cuts, drops and counts the same way for all four.
#[tokio::test(flavor = "multi_thread")]
async fn bad_telemetry_never_fails_a_request() {
    let receiver = Receiver::start().await;
    let host = Polytrace::up("bad-input", &manifest("reuse"), &receiver, "grpc", &[]);
    let mut rendered = Vec::new();
    for (language, _) in LANGUAGES {
        let id = format!("conformance-{language}");
        let response = request(
            "GET",
            &host.url(&format!("/{id}/bad-input")),
            &[("user-agent", "polytrace-conformance/1")],
            "",
        )
        .await;
        assert_eq!(response.status, 200, "{language}: {}", response.body);
        assert_eq!(response.json()["language"], *language);
        // An invalid instrument name is an error value, not a trap.
        assert_eq!(
            response.json()["metric_error"],
            "invalid-name",
            "{language}: {}",
            response.body
        );
        // SERVER + unnamed, bad.kind, bad.huge, bad.many.
        let spans = receiver.trace(&response.trace_id(), 5).await;
        let server = spans.iter().find(|s| s.kind == KIND_SERVER).unwrap();
        assert_eq!(
            server.attributes["polytrace.spans.unnamed"], 1,
            "{language}"
        );
        assert_eq!(
            server.attributes["polytrace.attributes.truncated"], 2,
            "{language}"
        );
        let named = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("{language}: no {name}: {spans:#?}"))
        };
        assert_eq!(named("unnamed").kind, KIND_INTERNAL);
        assert_eq!(named("bad.kind").kind, KIND_INTERNAL);
        let huge = named("bad.huge");
        assert_eq!(huge.attributes["bad.huge"].as_str().unwrap().len(), 4096);
        assert_eq!(huge.attributes["bad.long"].as_array().unwrap().len(), 128);
        let many = named("bad.many");
        assert_eq!(many.attributes.len(), 128, "{language}");
        assert_eq!(many.dropped_attributes_count, 10_000 - 128, "{language}");
        rendered.push((*language, tree::render(&spans, &[(&id, "<component>")])));
    }
    // The host is still serving.
    let again = get(&host.url("/conformance-rust/bad-input")).await;
    assert_eq!(again.status, 200);
    host.terminate();
    assert_identical_trees("expected-bad-input.txt", &rendered);
}
