//! Per-span cost inside each guest, next to the native OpenTelemetry SDK of
//! the same language run natively, in one run. Each side does the loop of
//! the span-cost scenario (tests/conformance/SPEC.md): start a span with five
//! attributes, end it.
//!
//! - guests: the four `tests/conformance` components in one `polytrace`;
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
//! Environment: BENCH_SPANS (default 100000), BENCH_ROUNDS (5),
//! BENCH_LANGUAGES (comma-separated; default all).

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
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

#[derive(Clone, Copy)]
enum Native {
    InProcess,
    Python,
    Node,
    Unavailable,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

/// Nanoseconds per span of the native Rust SDK.
fn native_rust(n: u64) -> f64 {
    let processor = BatchSpanProcessor::builder(Discard)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(n as usize + 1)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .build();
    let tracer = provider.tracer("bench");
    let run = |n: u64| {
        let started = Instant::now();
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
        started.elapsed().as_nanos() as f64
    };
    run(n.min(1000));
    let elapsed = run(n);
    provider.shutdown().unwrap();
    elapsed / n as f64
}

/// Nanoseconds per span of a native SDK run as a child process.
fn native_child(program: &Path, script: &str, n: u64) -> f64 {
    let out = Command::new(program)
        .arg(repo().join("tests/native").join(script))
        .arg(n.to_string())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/bench.sh)", program.display()));
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["elapsed_ns"].as_f64().unwrap() / n as f64
}

fn native(kind: Native, n: u64) -> Option<f64> {
    match kind {
        Native::InProcess => Some(native_rust(n)),
        Native::Python => Some(native_child(
            &repo().join(".tools/native-venv/bin/python"),
            "span_cost.py",
            n,
        )),
        Native::Node => Some(native_child(Path::new("node"), "span_cost.mjs", n)),
        Native::Unavailable => None,
    }
}

/// Nanoseconds per span inside the guest, over `n` spans.
async fn guest(host: &Polytrace, language: &str, n: u64) -> f64 {
    let mut elapsed = 0.0;
    let mut spans = 0;
    while spans < n {
        let batch = PER_REQUEST.min(n - spans);
        let r = get(&host.url(&format!("/conformance-{language}/span-cost?n={batch}"))).await;
        assert_eq!(r.status, 200, "{language}: {}", r.body);
        elapsed += r.json()["elapsed_ns"].as_f64().unwrap();
        spans += batch;
    }
    elapsed / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_SPANS", 100_000);
    let rounds = env_or("BENCH_ROUNDS", 5);
    let receiver = Receiver::start().await;
    let mut manifest = String::from("app = \"bench\"\n");
    for (language, wasm, _) in LANGUAGES {
        manifest += &format!(
            "[[component]]\nid = \"conformance-{language}\"\nsource = \"{}\"\n\
             route = \"/conformance-{language}/...\"\nlanguage = \"{language}\"\n\
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
        "grpc",
        &[
            ("OTEL_TRACES_EXPORTER", "none"),
            // No embedded store either: the natives keep nothing.
            ("POLYTRACE_STORE", "none"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", &queue),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    println!(
        "per-span cost: start + 5 attributes + end, {n} spans per run, median of {rounds} rounds"
    );
    let only = std::env::var("BENCH_LANGUAGES").unwrap_or_default();
    let mut rows = Vec::new();
    for (language, _, kind) in LANGUAGES {
        if !only.is_empty() && !only.split(',').any(|l| l == *language) {
            continue;
        }
        guest(&host, language, 2 * PER_REQUEST).await; // warm up
        let (mut g, mut nat) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            g.push(guest(&host, language, n).await);
            if let Some(x) = native(*kind, n) {
                nat.push(x);
            }
        }
        let g = median(g);
        let nat = (!nat.is_empty()).then(|| median(nat));
        rows.push((*language, g, nat));
    }
    let (_, log) = host.terminate();
    let stopped = log
        .lines()
        .find(|l| l.contains("stopped"))
        .unwrap_or("no stop line");
    println!();
    println!("| language | guest (ns/span) | native SDK (ns/span) | guest / native | target ≤ 1 |");
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
    println!();
    println!("host export: {}", stopped.trim());
}
