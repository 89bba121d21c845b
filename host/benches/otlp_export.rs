//! OTLP span export on one core: encode + send into a receiver that
//! discards what it gets, side by side for polytrace's path (each span
//! encoded once when it ends, `telemetry::traces::encoded`, then framed
//! into a request by `telemetry::traces::otlp_http`) and opentelemetry-otlp's
//! HTTP exporter; and the heap each queued span holds.
//!
//!     cargo bench -p polytrace --bench otlp_export
//!
//! The exporting side runs on a single-threaded runtime (one core); the
//! receiver (axum, reading each body whole, answering 200) on a thread of
//! its own. Spans: hello-rust's per-request pair (see common/hello_spans.rs),
//! in batches of 512 (the export batch). Environment: BENCH_SPANS (default
//! 200000), BENCH_ROUNDS (5, alternating, medians).

#[path = "common/hello_spans.rs"]
mod hello_spans;

#[path = "common/env.rs"]
mod env;
use env::env_or;
use hello_spans::hello_spans;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use polytrace::telemetry::tls::{ClientTls, TransportErrors};
use polytrace::telemetry::traces::encoded::{EncodedSpan, Scopes};
use polytrace::telemetry::traces::otlp_http::HttpSpanExporter;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Heap bytes in use, for the per-span memory figure.
struct Counting;
static IN_USE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        IN_USE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A receiver that reads every request body and answers 200 with an empty
/// `ExportTraceServiceResponse`; returns its traces URL and a byte count.
fn start_receiver() -> (String, Arc<AtomicU64>) {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| {
                    counter.fetch_add(body.len() as u64, Ordering::Relaxed);
                    async {
                        (
                            [("content-type", "application/x-protobuf")],
                            Vec::<u8>::new(),
                        )
                    }
                }),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}/v1/traces"), received)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let total = env_or("BENCH_SPANS", 200_000);
    let rounds = env_or("BENCH_ROUNDS", 5);
    let (url, received) = start_receiver();
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "hello"),
            KeyValue::new("telemetry.sdk.language", "rust"),
            KeyValue::new("polytrace.guest.language", "rust"),
        ])
        .build();

    // Heap per queued span, as the export queue holds them (one vector
    // per batch): encoded spans now, `SpanData` before.
    let spans: Vec<SpanData> = hello_spans(total);
    let scopes = Scopes::default();
    let before = IN_USE.load(Ordering::Relaxed);
    let batches: Vec<Vec<EncodedSpan>> = spans
        .chunks(512)
        .map(|c| {
            c.iter()
                .map(|s| EncodedSpan::encode(s, scopes.index(&s.instrumentation_scope)))
                .collect()
        })
        .collect();
    let held = IN_USE.load(Ordering::Relaxed) - before;
    let before = IN_USE.load(Ordering::Relaxed);
    let span_batches: Vec<Vec<SpanData>> = spans.chunks(512).map(|c| c.to_vec()).collect();
    let held_before = IN_USE.load(Ordering::Relaxed) - before;
    println!(
        "queued span: {:.0} bytes of heap each (EncodedSpan: {} bytes inline + its Span message; {} spans); as SpanData: {:.0} ({} inline)",
        held as f64 / total as f64,
        std::mem::size_of::<EncodedSpan>(),
        total,
        held_before as f64 / total as f64,
        std::mem::size_of::<SpanData>(),
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = || {
        ClientTls::default()
            .http_client(Duration::from_secs(10), TransportErrors::default())
            .unwrap()
    };
    let mut ours = HttpSpanExporter::new(
        &resource,
        client(),
        &url,
        &Default::default(),
        false,
        Duration::from_secs(10),
    )
    .unwrap();
    let mut theirs = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_http_client(client())
        .build()
        .unwrap();
    theirs.set_resource(&resource);

    let (mut encode, mut frame, mut ours_rate, mut theirs_rate) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        // Encoding each span alone (what `on_end` does).
        let t = Instant::now();
        for b in &span_batches {
            for s in b {
                std::hint::black_box(EncodedSpan::encode(s, 0));
            }
        }
        encode.push(total as f64 / t.elapsed().as_secs_f64());
        // Framing encoded spans into requests alone (the export worker).
        let t = Instant::now();
        for b in &batches {
            std::hint::black_box(ours.body(b, &scopes));
        }
        frame.push(total as f64 / t.elapsed().as_secs_f64());
        // polytrace, all of it: encode each span, frame, send.
        let t = Instant::now();
        rt.block_on(async {
            for b in &span_batches {
                let encoded: Vec<EncodedSpan> =
                    b.iter().map(|s| EncodedSpan::encode(s, 0)).collect();
                let body = ours.body(&encoded, &scopes);
                ours.send(body).await.unwrap();
            }
        });
        ours_rate.push(total as f64 / t.elapsed().as_secs_f64());
        // opentelemetry-otlp: takes each batch by value (cloned before the
        // clock starts, as the worker would hand it over).
        let owned: Vec<Vec<SpanData>> = span_batches.clone();
        let t = Instant::now();
        rt.block_on(async {
            for b in owned {
                theirs.export(b).await.unwrap();
            }
        });
        theirs_rate.push(total as f64 / t.elapsed().as_secs_f64());
    }
    let size = ours.body(&batches[0], &scopes).len() as f64 / batches[0].len() as f64;
    println!(
        "OTLP/HTTP protobuf, {total} spans in batches of 512, {rounds} rounds (medians), one core:"
    );
    println!("| path | spans/s |");
    println!("|---|---:|");
    println!(
        "| polytrace, span encoding only (on_end) | {:.0} |",
        median(encode)
    );
    println!(
        "| polytrace, request framing only (worker) | {:.0} |",
        median(frame)
    );
    println!(
        "| polytrace, encode + frame + send | {:.0} |",
        median(ours_rate)
    );
    println!(
        "| opentelemetry-otlp 0.33, transform + encode + send | {:.0} |",
        median(theirs_rate)
    );
    println!(
        "request body: {size:.0} bytes/span; receiver got {} MiB",
        received.load(Ordering::Relaxed) >> 20
    );
}
