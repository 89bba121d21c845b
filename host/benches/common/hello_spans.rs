//! What hello-rust records per request, as `SpanData`, for benchmarks: a
//! SERVER span with the HTTP semantic-convention attributes (12) and its
//! child `hello.work` with eight attributes and one event.

use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::borrow::Cow;
use std::time::{Duration, SystemTime};

/// A small deterministic generator for ids (xorshift).
pub struct Ids(pub u64);
impl Ids {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[allow(clippy::too_many_arguments)]
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
pub fn request(ids: &mut Ids, i: usize, start: SystemTime) -> [SpanData; 2] {
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

/// `n` spans of `n / 2` requests, the first starting `n` µs before now.
pub fn hello_spans(n: usize) -> Vec<SpanData> {
    let mut ids = Ids(0x9e37_79b9_7f4a_7c15);
    let now = SystemTime::now();
    (0..n / 2)
        .flat_map(|i| request(&mut ids, i, now - Duration::from_micros((n - i) as u64)))
        .collect()
}
