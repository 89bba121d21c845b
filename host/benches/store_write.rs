//! How many spans per second the embedded store writes to its file, on its
//! own thread (one core), from the `SpanData` batches the export worker
//! hands it — the same path `polytrace up` takes.
//!
//!     cargo bench -p polytrace --bench store_write
//!
//! The spans are what hello-rust produces per request: a SERVER span with
//! the HTTP semantic-convention attributes (12) and its child `hello.work`
//! with eight attributes and one event. Environment: BENCH_SPANS (default
//! 400000), BENCH_BATCH (spans per batch, default 512, the export batch).

use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use polytrace::store::{Store, StoreConfig};
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator for ids (xorshift).
struct Ids(u64);
impl Ids {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn span(
    trace_id: TraceId,
    span_id: SpanId,
    parent: SpanId,
    kind: SpanKind,
    name: &'static str,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
) -> SpanData {
    let mut span_events = SpanEvents::default();
    span_events.events = events;
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: kind,
        name: Cow::Borrowed(name),
        start_time: start,
        end_time: start + Duration::from_micros(140),
        attributes,
        dropped_attributes_count: 0,
        events: span_events,
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("polytrace").build(),
    }
}

/// The two spans of one hello request.
fn request(ids: &mut Ids, i: usize, start: SystemTime) -> [SpanData; 2] {
    let trace_id = TraceId::from(((ids.next() as u128) << 64) | ids.next() as u128);
    let server_id = SpanId::from(ids.next());
    let server = span(
        trace_id,
        server_id,
        SpanId::INVALID,
        SpanKind::Server,
        "GET /hello",
        start,
        vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("url.path", "/hello"),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("network.protocol.version", "1.1"),
            KeyValue::new("http.route", "/hello"),
            KeyValue::new("server.address", "127.0.0.1"),
            KeyValue::new("server.port", 8080i64),
            KeyValue::new("client.address", "127.0.0.1"),
            KeyValue::new("user_agent.original", "wrk/4.2"),
            KeyValue::new("http.response.status_code", 200i64),
            KeyValue::new("polytrace.component", "hello"),
            KeyValue::new("polytrace.instance.reused", true),
        ],
        vec![],
    );
    let work = span(
        trace_id,
        SpanId::from(ids.next()),
        server_id,
        SpanKind::Internal,
        "hello.work",
        start + Duration::from_micros(20),
        vec![
            KeyValue::new("greeting", "hello"),
            KeyValue::new("count", (i % 1000) as i64),
            KeyValue::new("ratio", 0.5),
            KeyValue::new("ok", true),
            KeyValue::new("user.id", format!("user-{}", i % 5000)),
            KeyValue::new("app.region", "eu-west-1"),
            KeyValue::new("app.tier", "gold"),
            KeyValue::new("app.attempt", 1i64),
        ],
        vec![Event::new(
            "checkpoint",
            start + Duration::from_micros(30),
            vec![KeyValue::new("step", 1i64)],
            0,
        )],
    );
    [server, work]
}

fn main() {
    let total = env_or("BENCH_SPANS", 400_000);
    let batch_size = env_or("BENCH_BATCH", 512);
    let dir = std::env::temp_dir().join(format!("polytrace-write-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(StoreConfig {
        path: Some(dir.join("traces.db")),
        max_age: Duration::from_secs(86_400),
        max_bytes: 8 << 30,
    })
    .unwrap();
    let mut ids = Ids(0x9e37_79b9_7f4a_7c15);
    let now = SystemTime::now();
    let batches: Vec<Vec<SpanData>> = (0..total / 2)
        .flat_map(|i| request(&mut ids, i, now - Duration::from_micros((total - i) as u64)))
        .collect::<Vec<_>>()
        .chunks(batch_size)
        .map(|c| c.to_vec())
        .collect();
    let started = Instant::now();
    for (n, batch) in batches.into_iter().enumerate() {
        store.add("hello", batch);
        // Stay within the queue so nothing is dropped: what is measured is
        // the writer's pace, not the queue's.
        if n % 64 == 63 {
            assert!(store.flush(Duration::from_secs(600)));
        }
    }
    assert!(store.flush(Duration::from_secs(600)));
    let elapsed = started.elapsed();
    let stored = store.stats.stored.load(Ordering::Relaxed);
    let dropped = store.stats.dropped.load(Ordering::Relaxed);
    let bytes = std::fs::metadata(dir.join("traces.db")).map_or(0, |m| m.len())
        + std::fs::metadata(dir.join("traces.db-wal")).map_or(0, |m| m.len());
    println!(
        "store write: {stored} spans in {:.2} s = {:.0} spans/s (dropped {dropped}), {:.0} bytes/span on disk",
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64(),
        bytes as f64 / stored.max(1) as f64,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
