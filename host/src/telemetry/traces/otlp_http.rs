//! OTLP/HTTP span export without intermediate structs: a batch of
//! `SpanData` is encoded straight into the bytes of an
//! `ExportTraceServiceRequest` (opentelemetry-proto's
//! `collector/trace/v1/trace_service.proto`, protobuf binary encoding) and
//! POSTed as `application/x-protobuf`, as the OTLP/HTTP specification
//! describes.
//!
//! opentelemetry-otlp's exporter first converts every span into
//! opentelemetry-proto structs (a second copy of every string) and needs
//! the batch by value; this encoder borrows the batch, so the same spans
//! then go to the trace store without a clone, and writes each field once.
//! The resource and each instrumentation scope are encoded once, by
//! opentelemetry-proto itself. A unit test decodes both encodings and
//! checks they are the same message.

use crate::telemetry::tls::ExportHttpClient;
use bytes::Bytes;
use opentelemetry::trace::{Event, Link, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_http::HttpClient;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Span flags (trace.proto `SpanFlags`): the span's context says whether
/// its parent is remote, and this bit says it does.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
/// The parent span is remote.
const CONTEXT_IS_REMOTE: u32 = 0x200;

/// Encodes batches of one component's spans as `ExportTraceServiceRequest`
/// bytes.
pub struct SpanEncoder {
    /// The component's `Resource` message and schema URL, encoded once.
    resource: Vec<u8>,
    schema_url: String,
    /// Each instrumentation scope's `InstrumentationScope` message.
    scopes: HashMap<InstrumentationScope, Vec<u8>>,
}

impl SpanEncoder {
    /// An encoder for spans of `resource`.
    pub fn new(resource: &Resource) -> SpanEncoder {
        use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
        let r = ResourceAttributesWithSchema::from(resource);
        let message = opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: r.attributes.0,
            dropped_attributes_count: 0,
            entity_refs: vec![],
        };
        SpanEncoder {
            resource: message.encode_to_vec(),
            schema_url: r.schema_url.unwrap_or_default(),
            scopes: HashMap::new(),
        }
    }

    /// The request carrying `spans`: one `ResourceSpans` with one
    /// `ScopeSpans` per instrumentation scope, in order of first use.
    pub fn encode(&mut self, spans: &[SpanData]) -> Vec<u8> {
        // Group by scope, keeping first-use order.
        let mut groups: Vec<(&InstrumentationScope, Vec<(&SpanData, usize)>)> = Vec::new();
        for s in spans {
            let len = span_len(s);
            match groups
                .iter_mut()
                .find(|(scope, _)| *scope == &s.instrumentation_scope)
            {
                Some((_, members)) => members.push((s, len)),
                None => groups.push((&s.instrumentation_scope, vec![(s, len)])),
            }
        }
        for (scope, _) in &groups {
            if !self.scopes.contains_key(*scope) {
                let message: opentelemetry_proto::tonic::common::v1::InstrumentationScope =
                    ((*scope).clone(), None).into();
                self.scopes
                    .insert((*scope).clone(), message.encode_to_vec());
            }
        }
        let scope_lens: Vec<usize> = groups
            .iter()
            .map(|(scope, members)| {
                let schema = scope.schema_url().unwrap_or_default();
                message_field_len(1, self.scopes[*scope].len())
                    + members
                        .iter()
                        .map(|(_, len)| message_field_len(2, *len))
                        .sum::<usize>()
                    + string_field_len(3, schema)
            })
            .collect();
        let resource_spans_len = message_field_len(1, self.resource.len())
            + scope_lens
                .iter()
                .map(|len| message_field_len(2, *len))
                .sum::<usize>()
            + string_field_len(3, &self.schema_url);
        let mut buf = Vec::with_capacity(message_field_len(1, resource_spans_len));
        put_len(&mut buf, 1, resource_spans_len);
        put_bytes(&mut buf, 1, &self.resource);
        for ((scope, members), len) in groups.iter().zip(scope_lens) {
            put_len(&mut buf, 2, len);
            put_bytes(&mut buf, 1, &self.scopes[*scope]);
            for (s, len) in members {
                put_len(&mut buf, 2, *len);
                let at = buf.len();
                put_span(&mut buf, s);
                debug_assert_eq!(buf.len() - at, *len);
            }
            put_string(&mut buf, 3, scope.schema_url().unwrap_or_default());
        }
        put_string(&mut buf, 3, &self.schema_url);
        buf
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

fn key_len(tag: u32) -> usize {
    encoded_len_varint(u64::from(tag << 3))
}

/// A length-delimited field of `len` bytes, with its key and length.
fn message_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A string field; proto3 leaves an empty one out.
fn string_field_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        message_field_len(tag, s.len())
    }
}

fn put_len(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_len(buf, tag, bytes.len());
    buf.extend_from_slice(bytes);
}

fn put_string(buf: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(buf, tag, s.as_bytes());
    }
}

fn put_fixed64(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed64_len(tag: u32, v: u64) -> usize {
    if v == 0 { 0 } else { key_len(tag) + 8 }
}

fn put_uint(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

fn uint_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

/// `AnyValue`: a oneof, so its one field is written even when it holds
/// the default value.
fn any_value_len(v: &Value) -> usize {
    match v {
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(i) => key_len(3) + encoded_len_varint(*i as u64),
        Value::F64(_) => key_len(4) + 8,
        Value::String(s) => message_field_len(1, s.as_str().len()),
        Value::Array(a) => message_field_len(5, array_len(a)),
        // A value type newer than this encoder: sent as its text.
        other => message_field_len(1, other.to_string().len()),
    }
}

/// `ArrayValue`: `repeated AnyValue values = 1`.
fn array_len(a: &Array) -> usize {
    fn each<T>(items: &[T], len: impl Fn(&T) -> usize) -> usize {
        items.iter().map(|i| message_field_len(1, len(i))).sum()
    }
    match a {
        Array::Bool(v) => each(v, |_| key_len(2) + 1),
        Array::I64(v) => each(v, |i| key_len(3) + encoded_len_varint(*i as u64)),
        Array::F64(v) => each(v, |_| key_len(4) + 8),
        Array::String(v) => each(v, |s| message_field_len(1, s.as_str().len())),
        _ => 0,
    }
}

fn put_any_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Bool(b) => {
            encode_key(2, WireType::Varint, buf);
            buf.push(u8::from(*b));
        }
        Value::I64(i) => {
            encode_key(3, WireType::Varint, buf);
            encode_varint(*i as u64, buf);
        }
        Value::F64(f) => {
            encode_key(4, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => put_bytes(buf, 1, s.as_str().as_bytes()),
        Value::Array(a) => {
            put_len(buf, 5, array_len(a));
            match a {
                Array::Bool(v) => v.iter().for_each(|b| {
                    put_len(buf, 1, key_len(2) + 1);
                    put_any_value(buf, &Value::Bool(*b));
                }),
                Array::I64(v) => v.iter().for_each(|i| {
                    put_len(buf, 1, key_len(3) + encoded_len_varint(*i as u64));
                    put_any_value(buf, &Value::I64(*i));
                }),
                Array::F64(v) => v.iter().for_each(|f| {
                    put_len(buf, 1, key_len(4) + 8);
                    put_any_value(buf, &Value::F64(*f));
                }),
                Array::String(v) => v.iter().for_each(|s| {
                    put_len(buf, 1, message_field_len(1, s.as_str().len()));
                    put_bytes(buf, 1, s.as_str().as_bytes());
                }),
                _ => {}
            }
        }
        other => put_bytes(buf, 1, other.to_string().as_bytes()),
    }
}

/// `KeyValue { string key = 1; AnyValue value = 2; }`
fn key_value_len(kv: &KeyValue) -> usize {
    string_field_len(1, kv.key.as_str()) + message_field_len(2, any_value_len(&kv.value))
}

fn put_key_value(buf: &mut Vec<u8>, tag: u32, kv: &KeyValue) {
    put_len(buf, tag, key_value_len(kv));
    put_string(buf, 1, kv.key.as_str());
    put_len(buf, 2, any_value_len(&kv.value));
    put_any_value(buf, &kv.value);
}

fn attributes_len(tag: u32, attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|kv| message_field_len(tag, key_value_len(kv)))
        .sum()
}

/// `Span.Event`: time 1, name 2, attributes 3, dropped count 4.
fn event_len(e: &Event) -> usize {
    fixed64_len(1, nanos(e.timestamp))
        + string_field_len(2, &e.name)
        + attributes_len(3, &e.attributes)
        + uint_len(4, u64::from(e.dropped_attributes_count))
}

fn put_event(buf: &mut Vec<u8>, e: &Event) {
    put_len(buf, 11, event_len(e));
    put_fixed64(buf, 1, nanos(e.timestamp));
    put_string(buf, 2, &e.name);
    for kv in &e.attributes {
        put_key_value(buf, 3, kv);
    }
    put_uint(buf, 4, u64::from(e.dropped_attributes_count));
}

fn flags(trace_flags: u8, remote: bool) -> u32 {
    u32::from(trace_flags) | CONTEXT_HAS_IS_REMOTE | if remote { CONTEXT_IS_REMOTE } else { 0 }
}

/// `Span.Link`: trace id 1, span id 2, trace state 3, attributes 4,
/// dropped count 5, flags 6.
fn link_len(l: &Link, trace_state: &str) -> usize {
    message_field_len(1, 16)
        + message_field_len(2, 8)
        + string_field_len(3, trace_state)
        + attributes_len(4, &l.attributes)
        + uint_len(5, u64::from(l.dropped_attributes_count))
        + key_len(6)
        + 4
}

fn put_link(buf: &mut Vec<u8>, l: &Link) {
    let trace_state = l.span_context.trace_state().header();
    put_len(buf, 13, link_len(l, &trace_state));
    put_bytes(buf, 1, &l.span_context.trace_id().to_bytes());
    put_bytes(buf, 2, &l.span_context.span_id().to_bytes());
    put_string(buf, 3, &trace_state);
    for kv in &l.attributes {
        put_key_value(buf, 4, kv);
    }
    put_uint(buf, 5, u64::from(l.dropped_attributes_count));
    encode_key(6, WireType::ThirtyTwoBit, buf);
    let f = flags(
        l.span_context.trace_flags().to_u8(),
        l.span_context.is_remote(),
    );
    buf.extend_from_slice(&f.to_le_bytes());
}

fn kind(k: &SpanKind) -> u64 {
    match k {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// `Status { string message = 2; StatusCode code = 3; }`
fn status(s: &Status) -> (&str, u64) {
    match s {
        Status::Unset => ("", 0),
        Status::Ok => ("", 1),
        Status::Error { description } => (description.as_ref(), 2),
    }
}

fn status_len(s: &Status) -> usize {
    let (message, code) = status(s);
    string_field_len(2, message) + uint_len(3, code)
}

/// The `Span` message's length (without its own key and length).
fn span_len(s: &SpanData) -> usize {
    let trace_state = s.span_context.trace_state().header();
    message_field_len(1, 16)
        + message_field_len(2, 8)
        + string_field_len(3, &trace_state)
        + if s.parent_span_id == opentelemetry::trace::SpanId::INVALID {
            0
        } else {
            message_field_len(4, 8)
        }
        + string_field_len(5, &s.name)
        + uint_len(6, kind(&s.span_kind))
        + fixed64_len(7, nanos(s.start_time))
        + fixed64_len(8, nanos(s.end_time))
        + attributes_len(9, &s.attributes)
        + uint_len(10, u64::from(s.dropped_attributes_count))
        + s.events
            .iter()
            .map(|e| message_field_len(11, event_len(e)))
            .sum::<usize>()
        + uint_len(12, u64::from(s.events.dropped_count))
        + s.links
            .iter()
            .map(|l| message_field_len(13, link_len(l, &l.span_context.trace_state().header())))
            .sum::<usize>()
        + uint_len(14, u64::from(s.links.dropped_count))
        + message_field_len(15, status_len(&s.status))
        + key_len(16)
        + 4
}

fn put_span(buf: &mut Vec<u8>, s: &SpanData) {
    put_bytes(buf, 1, &s.span_context.trace_id().to_bytes());
    put_bytes(buf, 2, &s.span_context.span_id().to_bytes());
    put_string(buf, 3, &s.span_context.trace_state().header());
    if s.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        put_bytes(buf, 4, &s.parent_span_id.to_bytes());
    }
    put_string(buf, 5, &s.name);
    put_uint(buf, 6, kind(&s.span_kind));
    put_fixed64(buf, 7, nanos(s.start_time));
    put_fixed64(buf, 8, nanos(s.end_time));
    for kv in &s.attributes {
        put_key_value(buf, 9, kv);
    }
    put_uint(buf, 10, u64::from(s.dropped_attributes_count));
    for e in s.events.iter() {
        put_event(buf, e);
    }
    put_uint(buf, 12, u64::from(s.events.dropped_count));
    for l in s.links.iter() {
        put_link(buf, l);
    }
    put_uint(buf, 14, u64::from(s.links.dropped_count));
    put_len(buf, 15, status_len(&s.status));
    let (message, code) = status(&s.status);
    put_string(buf, 2, message);
    put_uint(buf, 3, code);
    encode_key(16, WireType::ThirtyTwoBit, buf);
    let f = flags(
        s.span_context.trace_flags().to_u8(),
        s.parent_span_is_remote,
    );
    buf.extend_from_slice(&f.to_le_bytes());
}

/// An OTLP/HTTP span exporter for one component: encodes with
/// [`SpanEncoder`] and POSTs to the traces endpoint, with the configured
/// headers, gzip compression and timeout (the client's TLS settings and
/// error recording are [`ExportHttpClient`]'s).
pub struct HttpSpanExporter {
    encoder: SpanEncoder,
    client: ExportHttpClient,
    endpoint: http::Uri,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    gzip: bool,
    timeout: Duration,
}

impl HttpSpanExporter {
    /// An exporter of `resource`'s spans to `endpoint` (the full traces URL,
    /// e.g. `http://localhost:4318/v1/traces`).
    ///
    /// Errors: the endpoint is not a URL, or a header is not valid HTTP.
    pub fn new(
        resource: &Resource,
        client: ExportHttpClient,
        endpoint: &str,
        headers: &BTreeMap<String, String>,
        gzip: bool,
        timeout: Duration,
    ) -> anyhow::Result<HttpSpanExporter> {
        let endpoint: http::Uri = endpoint
            .parse()
            .map_err(|e| anyhow::anyhow!("OTLP traces endpoint `{endpoint}`: {e}"))?;
        let headers = headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| anyhow::anyhow!("export header name `{k}` is not valid"))?,
                    http::HeaderValue::from_str(v).map_err(|_| {
                        anyhow::anyhow!("export header `{k}` has a value that is not valid")
                    })?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(HttpSpanExporter {
            encoder: SpanEncoder::new(resource),
            client,
            endpoint,
            headers,
            gzip,
            timeout,
        })
    }

    /// The request body for `spans` (compressed when configured).
    pub fn body(&mut self, spans: &[SpanData]) -> Bytes {
        let raw = self.encoder.encode(spans);
        if !self.gzip {
            return raw.into();
        }
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4),
            flate2::Compression::default(),
        );
        let _ = gz.write_all(&raw);
        gz.finish().unwrap_or(raw).into()
    }

    /// Send a body made by [`HttpSpanExporter::body`]. Errors: the
    /// transport failed, the timeout passed, or the backend answered
    /// other than 2xx (the message has the status and the start of the
    /// body).
    pub fn send(&self, body: Bytes) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let mut request = http::Request::post(self.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf");
        if self.gzip {
            request = request.header(http::header::CONTENT_ENCODING, "gzip");
        }
        for (k, v) in &self.headers {
            request = request.header(k, v);
        }
        let request = request.body(body);
        let client = self.client.clone();
        let timeout = self.timeout;
        async move {
            let request = request.map_err(|e| e.to_string())?;
            let response = tokio::time::timeout(timeout, client.send_bytes(request))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            if response.status().is_success() {
                Ok(())
            } else {
                let body = String::from_utf8_lossy(response.body());
                let body: String = body.chars().take(200).collect();
                Err(format!("HTTP {}: {body}", response.status()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::borrow::Cow;

    fn span(i: u64, scope: &InstrumentationScope) -> SpanData {
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "checkpoint",
            UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_123),
            vec![KeyValue::new("step", 1i64), KeyValue::new("", "")],
            2,
        ));
        events.dropped_count = i as u32 % 2;
        let mut links = SpanLinks::default();
        if i.is_multiple_of(2) {
            links.links.push(Link::new(
                SpanContext::new(
                    TraceId::from(7u128 << 64 | i as u128),
                    SpanId::from(9),
                    TraceFlags::SAMPLED,
                    true,
                    TraceState::from_key_value([("k", "v")]).unwrap(),
                ),
                vec![KeyValue::new("link.n", -5i64)],
                0,
            ));
        }
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(0xabcdu128 << 64 | i as u128),
                SpanId::from(i + 1),
                if i.is_multiple_of(3) {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                },
                false,
                if i.is_multiple_of(2) {
                    TraceState::NONE
                } else {
                    TraceState::from_key_value([("vendor", "x")]).unwrap()
                },
            ),
            parent_span_id: if i == 0 {
                SpanId::INVALID
            } else {
                SpanId::from(i)
            },
            parent_span_is_remote: i == 1,
            span_kind: [
                SpanKind::Server,
                SpanKind::Client,
                SpanKind::Internal,
                SpanKind::Producer,
                SpanKind::Consumer,
            ][i as usize % 5]
                .clone(),
            name: Cow::Owned(format!("op-{i}")),
            start_time: UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000 + i),
            end_time: UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_900 + i),
            attributes: vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("empty", ""),
                KeyValue::new("n", -(i as i64) * 1_000_000_007),
                KeyValue::new("f", 0.25),
                KeyValue::new("b", i.is_multiple_of(2)),
                KeyValue::new("ints", Value::Array(Array::I64(vec![1, -2, 300]))),
                KeyValue::new(
                    "strs",
                    Value::Array(Array::String(vec!["a".into(), "".into()])),
                ),
                KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![1.5, -0.0]))),
                KeyValue::new("long", "x".repeat(300)),
            ],
            dropped_attributes_count: i as u32,
            events,
            links,
            status: match i % 3 {
                0 => Status::Unset,
                1 => Status::Ok,
                _ => Status::error("it failed"),
            },
            instrumentation_scope: scope.clone(),
        }
    }

    #[test]
    fn the_encoding_is_the_message_opentelemetry_proto_makes() {
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "hello"),
                KeyValue::new("telemetry.sdk.language", "rust"),
            ])
            .with_schema_url(
                Vec::<KeyValue>::new(),
                "https://opentelemetry.io/schemas/1.30.0",
            )
            .build();
        let scopes = [
            InstrumentationScope::builder("polytrace").build(),
            InstrumentationScope::builder("guest")
                .with_version("1.2")
                .with_schema_url("https://example.com/s")
                .with_attributes([KeyValue::new("a", 1i64)])
                .build(),
        ];
        let spans: Vec<SpanData> = (0..12).map(|i| span(i, &scopes[i as usize % 2])).collect();
        let mut encoder = SpanEncoder::new(&resource);
        let ours = ExportTraceServiceRequest::decode(encoder.encode(&spans).as_slice()).unwrap();
        let theirs = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans.clone(),
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        assert_eq!(ours, theirs);
        // Byte for byte too (field order, omitted defaults).
        assert_eq!(encoder.encode(&spans), theirs.encode_to_vec());
        // An empty batch is a valid, empty request.
        let empty = ExportTraceServiceRequest::decode(encoder.encode(&[]).as_slice()).unwrap();
        assert_eq!(empty.resource_spans[0].scope_spans.len(), 0);
    }
}
