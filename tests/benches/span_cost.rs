//! Per-operation cost inside each guest, next to the native OpenTelemetry
//! SDK of the same language run natively, in one run. Each side does the
//! loops of tests/conformance/SPEC.md: span-cost (start a span with five
//! attributes, end it), metric-cost (add 1 to a counter with two attributes)
//! and log-cost (emit an INFO record with two attributes).
//!
//! - guests: the four `tests/conformance` components in one `polytrace`
//!   (and, for spans, their `*-otel` twins written against the standard
//!   OpenTelemetry API, for the API layer's cost);
//!   each request makes 1000 spans (the per-request recording cap) timed by
//!   the guest's own monotonic clock, and a run is BENCH_SPANS spans over
//!   consecutive requests. Spans are recorded, queued and handed to the
//!   export worker, which discards them (`OTEL_TRACES_EXPORTER=none`,
//!   `POLYTRACE_STORE=none`), as
//!   the natives' exporters do: both sides pay for making spans, neither
//!   for encoding or sending them (docs/benchmarks.md has the OTLP
//!   overhead);
//! - natives: Rust `opentelemetry_sdk` in this process, Python
//!   `opentelemetry-sdk` and Node `@opentelemetry/sdk-trace` as child
//!   processes (tests/native/), each with a BatchSpanProcessor and
//!   an exporter that discards. Go's native SDK cannot be fetched here.
//!
//! Rounds alternate guest and native so machine drift hits both; the table
//! shows the median round.
//!
//!     scripts/bench.sh span_cost      (installs the native SDKs first)
//!
//! Metrics aggregate in the host and are read by nobody (the natives: an
//! idle reader); log records are queued, batched and sent as OTLP to a
//! receiver that does not decode them (the natives: a batch processor and an
//! exporter that discards).
//!
//! Scenario `span-export` (not in the default set) compares what a span
//! costs all told: the same spans made *and encoded as OTLP protobuf*,
//! measured as CPU time of every thread (not the loop's wall time), so the
//! work a batch processor's thread does counts on both sides. The guest's
//! side is the host process's CPU over the requests (its OTLP encoding
//! happens when a span ends, on the request thread; the request handling
//! around the loop counts too); the natives' exporters encode each batch
//! with their own OTLP encoder (Rust: opentelemetry-proto's transform and
//! prost, what opentelemetry-otlp sends; Python:
//! `opentelemetry-exporter-otlp-proto-common`; Node:
//! `@opentelemetry/otlp-transformer`) and discard the bytes. Neither side
//! sends them.
//!
//! Environment: BENCH_SPANS (operations per run, default 100000),
//! BENCH_ROUNDS (5), BENCH_LANGUAGES and BENCH_SCENARIOS (comma-separated;
//! default span,metric,log; also span-export).

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
use polytrace_tests::bench::{cpu_ns_between, env_or, median, process_cpu_ns};
use polytrace_tests::{Polytrace, Receiver, component, get};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const PER_REQUEST: u64 = 1000;

/// (language, wasm, native runner)
const LANGUAGES: &[(&str, &str, Native)] = &[
    ("rust", "conformance_rust", Native::InProcess),
    ("python", "conformance_python", Native::Python),
    ("javascript", "conformance_js", Native::Node),
    ("go", "conformance_go", Native::Unavailable),
];

/// The span scenario through each language's standard OpenTelemetry API
/// (`tests/conformance/*-otel`): measured in the same rounds as the SDK's,
/// for the cost of the API layer.
const API: &[(&str, &str)] = &[
    ("rust-otel", "conformance_rust_otel"),
    ("python-otel", "conformance_python_otel"),
    ("javascript-otel", "conformance_js_otel"),
    ("go-otel", "conformance_go_otel"),
];

#[derive(Clone, Copy)]
enum Native {
    InProcess,
    Python,
    Node,
    Unavailable,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

/// An exporter that encodes each batch as the OTLP request
/// opentelemetry-otlp would send (opentelemetry-proto's transform, prost)
/// and discards the bytes, counting the spans it encoded.
#[derive(Debug, Default)]
struct EncodeOtlp {
    resource: Option<opentelemetry_sdk::Resource>,
    spans: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SpanExporter for EncodeOtlp {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
        use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
        let spans = batch.len();
        let resource = self
            .resource
            .clone()
            .unwrap_or_else(|| opentelemetry_sdk::Resource::builder_empty().build());
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch,
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        let body = prost::Message::encode_to_vec(&request);
        assert!(
            body.len() > 100 * spans,
            "{spans} spans in {} bytes",
            body.len()
        );
        self.spans
            .fetch_add(spans, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.resource = Some(resource.clone());
    }
}

/// CPU nanoseconds per span of the native Rust SDK, spans encoded as OTLP
/// by the batch processor's thread (every thread of this process counted).
fn native_rust_export(n: u64) -> f64 {
    let exporter = EncodeOtlp::default();
    let spans = exporter.spans.clone();
    let provider = batch_provider(exporter, n);
    let tracer = provider.tracer("bench");
    let run = |n: u64| {
        let before = process_cpu_ns(std::process::id());
        span_loop(&tracer, n);
        provider.force_flush().unwrap();
        cpu_ns_between(before, process_cpu_ns(std::process::id())) as f64
    };
    run(n.min(1000));
    let cpu = run(n);
    provider.shutdown().unwrap();
    assert_eq!(
        spans.load(std::sync::atomic::Ordering::Relaxed) as u64,
        n.min(1000) + n,
        "every native span encoded"
    );
    cpu / n as f64
}

/// Nanoseconds per counter add of the native Rust SDK.
fn native_rust_metric(n: u64) -> f64 {
    use opentelemetry::metrics::MeterProvider as _;
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(opentelemetry_sdk::metrics::ManualReader::builder().build())
        .build();
    let counter = provider
        .meter("bench")
        .f64_counter("bench.counter")
        .with_unit("{item}")
        .build();
    let run = |n: u64| {
        let started = Instant::now();
        for _ in 0..n {
            counter.add(
                1.0,
                &[
                    KeyValue::new("bench.route", "/checkout"),
                    KeyValue::new("bench.status", "ok"),
                ],
            );
        }
        started.elapsed().as_nanos() as f64
    };
    run(n.min(1000));
    let elapsed = run(n);
    provider.shutdown().unwrap();
    elapsed / n as f64
}

#[derive(Debug)]
struct DiscardLogs;

impl opentelemetry_sdk::logs::LogExporter for DiscardLogs {
    async fn export(&self, _batch: opentelemetry_sdk::logs::LogBatch<'_>) -> OTelSdkResult {
        Ok(())
    }
}

/// Nanoseconds per log record of the native Rust SDK.
fn native_rust_log(n: u64) -> f64 {
    use opentelemetry::logs::{
        AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity,
    };
    let processor = opentelemetry_sdk::logs::BatchLogProcessor::builder(DiscardLogs)
        .with_batch_config(
            opentelemetry_sdk::logs::BatchConfigBuilder::default()
                .with_max_queue_size(n as usize + 1)
                .build(),
        )
        .build();
    let provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_log_processor(processor)
        .build();
    let logger = provider.logger("bench");
    let run = |n: u64| {
        let started = Instant::now();
        for _ in 0..n {
            let mut record = logger.create_log_record();
            record.set_severity_number(Severity::Info);
            record.set_severity_text("INFO");
            record.set_body(AnyValue::from("bench log"));
            record.add_attribute("bench.route", "/checkout");
            record.add_attribute("bench.status", "ok");
            logger.emit(record);
        }
        started.elapsed().as_nanos() as f64
    };
    run(n.min(1000));
    let elapsed = run(n);
    provider.shutdown().unwrap();
    elapsed / n as f64
}

/// Nanoseconds per span of the native Rust SDK.
fn native_rust(n: u64) -> f64 {
    let provider = batch_provider(Discard, n);
    let tracer = provider.tracer("bench");
    let run = |n: u64| {
        let started = Instant::now();
        span_loop(&tracer, n);
        started.elapsed().as_nanos() as f64
    };
    run(n.min(1000));
    let elapsed = run(n);
    provider.shutdown().unwrap();
    elapsed / n as f64
}

/// A tracer provider with a batch processor into `exporter` whose queue
/// holds `n` spans (no span is dropped for being fast).
fn batch_provider(exporter: impl SpanExporter + 'static, n: u64) -> SdkTracerProvider {
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(n as usize + 1)
                .build(),
        )
        .build();
    SdkTracerProvider::builder()
        .with_span_processor(processor)
        .build()
}

/// The span-cost loop of tests/conformance/SPEC.md with the native SDK.
fn span_loop(tracer: &opentelemetry_sdk::trace::SdkTracer, n: u64) {
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
            .start(tracer)
            .end();
    }
}

/// Nanoseconds per operation of a native SDK run as a child process
/// (`cpu_ns` when it reports CPU time, else `elapsed_ns`).
fn native_child(program: &Path, script: &str, n: u64, scenario: &str) -> f64 {
    let out = Command::new(program)
        .arg(repo().join("tests/native").join(script))
        .arg(n.to_string())
        .arg(scenario)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/bench.sh)", program.display()));
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ns = v.get("cpu_ns").unwrap_or(&v["elapsed_ns"]);
    ns.as_f64().unwrap() / n as f64
}

fn native(kind: Native, n: u64, scenario: &str) -> Option<f64> {
    match (kind, scenario) {
        (Native::InProcess, "metric") => Some(native_rust_metric(n)),
        (Native::InProcess, "log") => Some(native_rust_log(n)),
        (Native::InProcess, "span-export") => Some(native_rust_export(n)),
        (Native::InProcess, _) => Some(native_rust(n)),
        (Native::Python, _) => Some(native_child(
            &repo().join(".tools/native-venv/bin/python"),
            "span_cost.py",
            n,
            scenario,
        )),
        (Native::Node, _) => Some(native_child(
            Path::new("node"),
            "span_cost.mjs",
            n,
            scenario,
        )),
        (Native::Unavailable, _) => None,
    }
}

/// CPU nanoseconds of the host process (every thread) per span, over `n`
/// spans of the guest's span-cost loop, including the export worker taking
/// the last batch.
async fn guest_cpu(host: &Polytrace, language: &str, n: u64) -> f64 {
    let before = process_cpu_ns(host.pid());
    guest(host, language, "span", n).await;
    // The worker takes a partial batch after OTEL_BSP_SCHEDULE_DELAY.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    cpu_ns_between(before, process_cpu_ns(host.pid())) as f64 / n as f64
}

/// Nanoseconds per operation inside the guest, over `n` operations.
async fn guest(host: &Polytrace, language: &str, scenario: &str, n: u64) -> f64 {
    let mut elapsed = 0.0;
    let mut spans = 0;
    while spans < n {
        let batch = PER_REQUEST.min(n - spans);
        let r = get(&host.url(&format!(
            "/conformance-{language}/{scenario}-cost?n={batch}"
        )))
        .await;
        assert_eq!(r.status, 200, "{language}: {}", r.body);
        elapsed += r.json()["elapsed_ns"].as_f64().unwrap();
        spans += batch;
    }
    elapsed / n as f64
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_SPANS", 100_000);
    let rounds = env_or("BENCH_ROUNDS", 5);
    let receiver = Receiver::start_sink().await;
    let mut manifest = String::from("app = \"bench\"\n");
    let components = LANGUAGES
        .iter()
        .map(|(l, w, _)| (*l, *w))
        .chain(API.iter().copied());
    for (name, wasm) in components {
        let language = name.split('-').next().unwrap_or(name);
        manifest += &format!(
            "[[component]]\nid = \"conformance-{name}\"\nsource = \"{}\"\n\
             route = \"/conformance-{name}/...\"\nlanguage = \"{language}\"\n\
             limits = {{ request_timeout_ms = 60000 }}\n",
            component(wasm).display()
        );
    }
    // The queue holds whole bursts: no span is dropped for being fast.
    let queue = (PER_REQUEST * 100).to_string();
    let host = Polytrace::up(
        "span-cost",
        &manifest,
        &receiver,
        "http/protobuf",
        &[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_BLRP_MAX_QUEUE_SIZE", &queue),
            ("POLYTRACE_GUEST_LOGS", "off"),
            // No embedded store either: the natives keep nothing.
            ("POLYTRACE_STORE", "none"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", &queue),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    let only = std::env::var("BENCH_LANGUAGES").unwrap_or_default();
    let scenarios = std::env::var("BENCH_SCENARIOS").unwrap_or_else(|_| "span,metric,log".into());
    let mut tables = Vec::new();
    let mut api_rows = Vec::new();
    for scenario in scenarios.split(',').map(str::trim) {
        let what = match scenario {
            "span" => "span: start + 5 attributes + end",
            "metric" => "counter add with 2 attributes",
            "log" => "log record (INFO, body, 2 attributes)",
            "span-export" => {
                "span made and encoded as OTLP: CPU time of every thread per span \
                 (native: its SDK and its OTLP encoder)"
            }
            other => panic!(
                "BENCH_SCENARIOS: unknown scenario `{other}` (span, metric, log, span-export)"
            ),
        };
        println!("{what}: {n} per run, median of {rounds} rounds");
        let mut rows = Vec::new();
        for (language, _, kind) in LANGUAGES {
            if !only.is_empty() && !only.split(',').any(|l| l == *language) {
                continue;
            }
            // The API's cost is measured for spans, in the same rounds.
            let api = (scenario == "span").then(|| format!("{language}-otel"));
            let route = if scenario == "span-export" {
                "span"
            } else {
                scenario
            };
            guest(&host, language, route, 2 * PER_REQUEST).await; // warm up
            if let Some(api) = &api {
                guest(&host, api, scenario, 2 * PER_REQUEST).await;
            }
            let (mut g, mut a, mut nat) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                g.push(if scenario == "span-export" {
                    guest_cpu(&host, language, n).await
                } else {
                    guest(&host, language, scenario, n).await
                });
                if let Some(api) = &api {
                    a.push(guest(&host, api, scenario, n).await);
                }
                if let Some(x) = native(*kind, n, scenario) {
                    nat.push(x);
                }
            }
            let g = median(g);
            let nat = (!nat.is_empty()).then(|| median(nat));
            if !a.is_empty() {
                api_rows.push((*language, g, median(a)));
            }
            rows.push((*language, g, nat));
        }
        tables.push((what, rows));
    }
    let (_, log) = host.terminate();
    let stopped = log
        .lines()
        .find(|l| l.contains("stopped"))
        .unwrap_or("no stop line");
    for (what, rows) in tables {
        println!();
        println!("{what}");
        println!();
        println!(
            "| language | guest (ns/op) | native SDK (ns/op) | guest / native | guest ≤ native |"
        );
        println!("|---|---:|---:|---:|---|");
        for (language, g, nat) in rows {
            match nat {
                Some(nat) => println!(
                    "| {language} | {g:.0} | {nat:.0} | {:.2} | {} |",
                    g / nat,
                    if g <= nat { "met" } else { "not met" }
                ),
                None => println!("| {language} | {g:.0} | (not available here) | – | – |"),
            }
        }
    }
    if !api_rows.is_empty() {
        println!();
        println!(
            "span through the standard OpenTelemetry API vs the polytrace SDK (target: ≤ 1.10)"
        );
        println!();
        println!("| language | SDK (ns/span) | API (ns/span) | API / SDK | ≤ 1.10 |");
        println!("|---|---:|---:|---:|---|");
        for (language, sdk, api) in api_rows {
            println!(
                "| {language} | {sdk:.0} | {api:.0} | {:.2} | {} |",
                api / sdk,
                if api <= 1.10 * sdk { "met" } else { "not met" }
            );
        }
    }
    println!();
    println!("host export: {}", stopped.trim());
}
