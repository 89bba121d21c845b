//! A finished span as the export queue holds it: the bytes of its OTLP
//! `Span` message (opentelemetry-proto's `trace/v1/trace.proto`, protobuf
//! binary encoding), written once when the span ends, on the thread that
//! ended it.
//!
//! The queue thus holds one allocation of ~300–500 bytes per span instead
//! of a `SpanData` (352 bytes inline plus an allocation per attribute
//! list, event and owned string, ~1 KB for a typical span, freed on
//! another thread). The OTLP/HTTP exporter copies the bytes into its
//! request ([`super::otlp_http`]); the trace store and the console read
//! them through [`SpanView`], which borrows every string from the bytes;
//! the gRPC exporter gets a `SpanData` back ([`EncodedSpan::to_span_data`]).

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use prost::encoding::{WireType, decode_varint, encode_key, encode_varint, encoded_len_varint};
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One finished span: its OTLP `Span` message and the index of its
/// instrumentation scope in the pipeline's scope table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedSpan {
    scope: u32,
    bytes: Box<[u8]>,
}

impl EncodedSpan {
    /// Encode `span`, whose instrumentation scope is entry `scope` of the
    /// pipeline's scope table. One allocation, of the exact size.
    pub fn encode(span: &SpanData, scope: u32) -> EncodedSpan {
        let mut buf = Vec::with_capacity(span_len(span));
        put_span(&mut buf, span);
        debug_assert_eq!(buf.len(), buf.capacity());
        EncodedSpan {
            scope,
            bytes: buf.into_boxed_slice(),
        }
    }

    /// A span already encoded as an OTLP `Span` message (the batched
    /// path, [`super::batched`], writes it without a `SpanData`).
    pub(super) fn from_bytes(bytes: Box<[u8]>, scope: u32) -> EncodedSpan {
        EncodedSpan { scope, bytes }
    }

    /// The `Span` message (without its own field key and length).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Index of the span's instrumentation scope.
    pub fn scope(&self) -> u32 {
        self.scope
    }

    /// The span's fields, borrowed from the bytes.
    pub fn view(&self) -> SpanView<'_> {
        SpanView::parse(&self.bytes)
    }

    /// The span as the SDK's `SpanData` again, with `scope` as its
    /// instrumentation scope (for exporters that take `SpanData`).
    pub fn to_span_data(&self, scope: InstrumentationScope) -> SpanData {
        let v = self.view();
        let mut events = SpanEvents::default();
        events.events = v
            .events()
            .map(|e| {
                Event::new(
                    e.name.to_string(),
                    from_nanos(e.time_unix_nano),
                    e.attributes().map(|a| a.to_key_value()).collect(),
                    e.dropped_attributes_count,
                )
            })
            .collect();
        events.dropped_count = v.dropped_events_count;
        let mut links = SpanLinks::default();
        links.links = v
            .links()
            .map(|l| {
                Link::new(
                    SpanContext::new(
                        TraceId::from_bytes(l.trace_id),
                        SpanId::from_bytes(l.span_id),
                        TraceFlags::new(l.flags as u8),
                        l.flags & CONTEXT_IS_REMOTE != 0,
                        l.trace_state.parse().unwrap_or_default(),
                    ),
                    l.attributes().map(|a| a.to_key_value()).collect(),
                    l.dropped_attributes_count,
                )
            })
            .collect();
        links.dropped_count = v.dropped_links_count;
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(v.trace_id),
                SpanId::from_bytes(v.span_id),
                TraceFlags::new(v.flags as u8),
                false,
                v.trace_state.parse::<TraceState>().unwrap_or_default(),
            ),
            parent_span_id: v.parent_span_id.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: v.flags & CONTEXT_IS_REMOTE != 0,
            span_kind: v.kind(),
            name: Cow::Owned(v.name.to_string()),
            start_time: from_nanos(v.start_time_unix_nano),
            end_time: from_nanos(v.end_time_unix_nano),
            attributes: v.attributes().map(|a| a.to_key_value()).collect(),
            dropped_attributes_count: v.dropped_attributes_count,
            events,
            links,
            status: match v.status_code {
                1 => Status::Ok,
                2 => Status::error(v.status_message.to_string()),
                _ => Status::Unset,
            },
            instrumentation_scope: scope,
        }
    }
}

fn from_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

// ---- reading ---------------------------------------------------------------

/// One field of a protobuf message, as the wire carries it.
#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// A varint: one byte for most keys and lengths, else prost's decoder.
#[inline(always)]
fn varint(buf: &mut &[u8]) -> Option<u64> {
    match buf.split_first() {
        Some((&b, rest)) if b < 0x80 => {
            *buf = rest;
            Some(u64::from(b))
        }
        _ => long_varint(buf),
    }
}

#[cold]
fn long_varint(buf: &mut &[u8]) -> Option<u64> {
    decode_varint(buf).ok()
}

/// One field from the front of `buf`, which moves past it.
#[inline(always)]
fn read_field<'a>(buf: &mut &'a [u8]) -> Option<(u32, Field<'a>)> {
    let key = varint(buf)?;
    let tag = u32::try_from(key >> 3).ok()?;
    let field = match key & 7 {
        0 => Field::Varint(varint(buf)?),
        1 => {
            let (v, rest) = buf.split_first_chunk::<8>()?;
            *buf = rest;
            Field::Fixed64(u64::from_le_bytes(*v))
        }
        2 => {
            let len = usize::try_from(varint(buf)?).ok()?;
            let (v, rest) = buf.split_at_checked(len)?;
            *buf = rest;
            Field::Bytes(v)
        }
        5 => {
            let (v, rest) = buf.split_first_chunk::<4>()?;
            *buf = rest;
            Field::Fixed32(u32::from_le_bytes(*v))
        }
        _ => return None,
    };
    Some((tag, field))
}

/// The fields of a message in order: `(field number, value)`. Stops at
/// the first malformed field (bytes written by this module never are).
#[derive(Clone)]
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Field<'a>);

    #[inline]
    fn next(&mut self) -> Option<(u32, Field<'a>)> {
        if self.0.is_empty() {
            return None;
        }
        let mut buf = self.0;
        let item = read_field(&mut buf);
        self.0 = if item.is_some() { buf } else { &[] };
        item
    }
}

/// The messages (or strings) of field `tag`, in order.
fn repeated(bytes: &[u8], tag: u32) -> impl Iterator<Item = &[u8]> + Clone {
    Fields(bytes).filter_map(move |(t, f)| match (t, f) {
        (t, Field::Bytes(b)) if t == tag => Some(b),
        _ => None,
    })
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

fn id<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().unwrap_or([0; N])
}

/// A span's fields, borrowed from its [`EncodedSpan`]; field names
/// follow trace.proto's `Span`.
#[derive(Debug, Clone)]
pub struct SpanView<'a> {
    /// 16 bytes, in the order W3C `traceparent` writes them.
    pub trace_id: [u8; 16],
    /// 8 bytes.
    pub span_id: [u8; 8],
    /// The W3C `tracestate` header value ("" when empty).
    pub trace_state: &'a str,
    /// `None` for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    /// The span name.
    pub name: &'a str,
    /// trace.proto `SpanKind`: 1 internal … 5 consumer.
    pub kind: u64,
    /// Nanoseconds since the Unix epoch.
    pub start_time_unix_nano: u64,
    /// Nanoseconds since the Unix epoch.
    pub end_time_unix_nano: u64,
    /// Attributes the SDK's limits dropped.
    pub dropped_attributes_count: u32,
    /// Events the SDK's limits dropped.
    pub dropped_events_count: u32,
    /// Links the SDK's limits dropped.
    pub dropped_links_count: u32,
    /// trace.proto `StatusCode`: 0 unset, 1 ok, 2 error.
    pub status_code: u64,
    /// The error description (only with status 2).
    pub status_message: &'a str,
    /// W3C trace flags (low byte) and the `SpanFlags` remote-parent bits.
    pub flags: u32,
    /// The stretches of the message holding the attributes, events and
    /// links (each written contiguously), so iterating them skips the rest.
    attributes: &'a [u8],
    events: &'a [u8],
    links: &'a [u8],
}

impl<'a> SpanView<'a> {
    /// The fields of any trace.proto `Span` message, borrowed from
    /// `bytes`; a field it does not have reads as its default. A message
    /// holding only attributes and events (what [`SpanView::attribute_bytes`]
    /// and [`SpanView::event_bytes`] return, or [`put_attributes`] and
    /// [`put_events`] write) reads back as a span with just those. Reading
    /// stops at the first malformed field (bytes this module writes never
    /// are).
    pub fn parse(bytes: &'a [u8]) -> SpanView<'a> {
        let mut v = SpanView {
            trace_id: [0; 16],
            span_id: [0; 8],
            trace_state: "",
            parent_span_id: None,
            name: "",
            kind: 0,
            start_time_unix_nano: 0,
            end_time_unix_nano: 0,
            dropped_attributes_count: 0,
            dropped_events_count: 0,
            dropped_links_count: 0,
            status_code: 0,
            status_message: "",
            flags: 0,
            attributes: &[],
            events: &[],
            links: &[],
        };
        // Where a run of one repeated field starts and ends.
        let mut runs: [(usize, usize); 3] = [(usize::MAX, 0); 3];
        let mut fields = Fields(bytes);
        loop {
            let at = bytes.len() - fields.0.len();
            let Some((tag, field)) = fields.next() else {
                break;
            };
            let end = bytes.len() - fields.0.len();
            if let Some(run) = match tag {
                9 => Some(&mut runs[0]),
                11 => Some(&mut runs[1]),
                13 => Some(&mut runs[2]),
                _ => None,
            } {
                run.0 = run.0.min(at);
                run.1 = end;
                continue;
            }
            match (tag, field) {
                (1, Field::Bytes(b)) => v.trace_id = id(b),
                (2, Field::Bytes(b)) => v.span_id = id(b),
                (3, Field::Bytes(b)) => v.trace_state = text(b),
                (4, Field::Bytes(b)) => v.parent_span_id = Some(id(b)),
                (5, Field::Bytes(b)) => v.name = text(b),
                (6, Field::Varint(k)) => v.kind = k,
                (7, Field::Fixed64(t)) => v.start_time_unix_nano = t,
                (8, Field::Fixed64(t)) => v.end_time_unix_nano = t,
                (10, Field::Varint(n)) => v.dropped_attributes_count = n as u32,
                (12, Field::Varint(n)) => v.dropped_events_count = n as u32,
                (14, Field::Varint(n)) => v.dropped_links_count = n as u32,
                (15, Field::Bytes(b)) => {
                    for (tag, field) in Fields(b) {
                        match (tag, field) {
                            (2, Field::Bytes(m)) => v.status_message = text(m),
                            (3, Field::Varint(c)) => v.status_code = c,
                            _ => {}
                        }
                    }
                }
                (16, Field::Fixed32(f)) => v.flags = f,
                _ => {}
            }
        }
        let run = |(start, end): (usize, usize)| bytes.get(start..end).unwrap_or_default();
        v.attributes = run(runs[0]);
        v.events = run(runs[1]);
        v.links = run(runs[2]);
        v
    }

    /// The span kind as the SDK names it.
    pub fn kind(&self) -> SpanKind {
        match self.kind {
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Internal,
        }
    }

    /// The span's attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = AttributeView<'a>> + Clone + use<'a> {
        repeated(self.attributes, 9).map(AttributeView::parse)
    }

    /// The span's events, in order.
    pub fn events(&self) -> impl Iterator<Item = EventView<'a>> + Clone + use<'a> {
        repeated(self.events, 11).map(EventView::parse)
    }

    /// The span's links, in order.
    pub fn links(&self) -> impl Iterator<Item = LinkView<'a>> + Clone + use<'a> {
        repeated(self.links, 13).map(LinkView::parse)
    }

    /// The span's `attributes` fields (number 9) as they are in its
    /// message, keys and lengths included: bytes that are themselves a
    /// `Span` message, which [`SpanView::parse`] reads back.
    pub fn attribute_bytes(&self) -> &'a [u8] {
        self.attributes
    }

    /// The span's `events` fields (number 11), likewise.
    pub fn event_bytes(&self) -> &'a [u8] {
        self.events
    }
}

/// A `KeyValue`, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct AttributeView<'a> {
    /// The attribute name (semantic-convention names verbatim).
    pub key: &'a str,
    /// Its typed value.
    pub value: ValueView<'a>,
}

impl<'a> AttributeView<'a> {
    fn parse(b: &'a [u8]) -> AttributeView<'a> {
        // The order this module writes: key, then value.
        let mut rest = b;
        if let Some((1, Field::Bytes(k))) = read_field(&mut rest)
            && let Some((2, Field::Bytes(v))) = read_field(&mut rest)
            && rest.is_empty()
        {
            return AttributeView {
                key: text(k),
                value: ValueView::parse(v),
            };
        }
        let mut a = AttributeView {
            key: "",
            value: ValueView::Other,
        };
        for (tag, field) in Fields(b) {
            match (tag, field) {
                (1, Field::Bytes(k)) => a.key = text(k),
                (2, Field::Bytes(v)) => a.value = ValueView::parse(v),
                _ => {}
            }
        }
        a
    }

    /// The attribute as the SDK's (allocates).
    pub fn to_key_value(&self) -> KeyValue {
        KeyValue::new(self.key.to_string(), self.value.to_value())
    }
}

/// An `AnyValue`, borrowed. Arrays hold their `ArrayValue` message.
#[derive(Debug, Clone, Copy)]
pub enum ValueView<'a> {
    /// A string (UTF-8).
    String(&'a str),
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    I64(i64),
    /// A 64-bit float.
    F64(f64),
    /// An array: its `ArrayValue` message; [`ValueView::items`] reads it.
    Array(&'a [u8]),
    /// A kind polytrace never writes (key-value lists, bytes) or none.
    Other,
}

impl<'a> ValueView<'a> {
    fn parse(b: &'a [u8]) -> ValueView<'a> {
        let mut value = ValueView::Other;
        // A oneof: one field (the last wins if a writer sent several).
        for (tag, field) in Fields(b) {
            value = match (tag, field) {
                (1, Field::Bytes(s)) => ValueView::String(text(s)),
                (2, Field::Varint(v)) => ValueView::Bool(v != 0),
                (3, Field::Varint(v)) => ValueView::I64(v as i64),
                (4, Field::Fixed64(v)) => ValueView::F64(f64::from_bits(v)),
                (5, Field::Bytes(a)) => ValueView::Array(a),
                _ => value,
            };
        }
        value
    }

    /// The elements of an array value (none for other values).
    pub fn items(&self) -> impl Iterator<Item = ValueView<'a>> + Clone + use<'a> {
        let bytes = match self {
            ValueView::Array(a) => *a,
            _ => &[],
        };
        repeated(bytes, 1).map(ValueView::parse)
    }

    /// The value as the SDK's (allocates). An array takes its type from
    /// its first element; an empty one is an empty string array.
    pub fn to_value(&self) -> Value {
        match *self {
            ValueView::String(s) => Value::String(StringValue::from(s.to_string())),
            ValueView::Bool(b) => Value::Bool(b),
            ValueView::I64(i) => Value::I64(i),
            ValueView::F64(f) => Value::F64(f),
            ValueView::Array(_) => {
                let items: Vec<ValueView> = self.items().collect();
                Value::Array(match items.first() {
                    Some(ValueView::Bool(_)) => Array::Bool(
                        items
                            .iter()
                            .map(|v| matches!(v, ValueView::Bool(true)))
                            .collect(),
                    ),
                    Some(ValueView::I64(_)) => Array::I64(
                        items
                            .iter()
                            .map(|v| if let ValueView::I64(i) = v { *i } else { 0 })
                            .collect(),
                    ),
                    Some(ValueView::F64(_)) => Array::F64(
                        items
                            .iter()
                            .map(|v| if let ValueView::F64(f) = v { *f } else { 0.0 })
                            .collect(),
                    ),
                    _ => Array::String(
                        items
                            .iter()
                            .map(|v| match v {
                                ValueView::String(s) => StringValue::from(s.to_string()),
                                _ => StringValue::from(""),
                            })
                            .collect(),
                    ),
                })
            }
            ValueView::Other => Value::String(StringValue::from("")),
        }
    }
}

/// A `Span.Event`, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// Nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// The event name (`exception` for recorded exceptions).
    pub name: &'a str,
    /// Attributes the SDK's limits dropped.
    pub dropped_attributes_count: u32,
    bytes: &'a [u8],
}

impl<'a> EventView<'a> {
    fn parse(b: &'a [u8]) -> EventView<'a> {
        let mut e = EventView {
            time_unix_nano: 0,
            name: "",
            dropped_attributes_count: 0,
            bytes: b,
        };
        for (tag, field) in Fields(b) {
            match (tag, field) {
                (1, Field::Fixed64(t)) => e.time_unix_nano = t,
                (2, Field::Bytes(n)) => e.name = text(n),
                (4, Field::Varint(n)) => e.dropped_attributes_count = n as u32,
                _ => {}
            }
        }
        e
    }

    /// The event's attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = AttributeView<'a>> + Clone + use<'a> {
        repeated(self.bytes, 3).map(AttributeView::parse)
    }
}

/// A `Span.Link`, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct LinkView<'a> {
    /// The linked span's trace id, 16 bytes.
    pub trace_id: [u8; 16],
    /// The linked span's id, 8 bytes.
    pub span_id: [u8; 8],
    /// The linked span's `tracestate` header value.
    pub trace_state: &'a str,
    /// Attributes the SDK's limits dropped.
    pub dropped_attributes_count: u32,
    /// W3C trace flags (low byte) and the `SpanFlags` remote bits.
    pub flags: u32,
    bytes: &'a [u8],
}

impl<'a> LinkView<'a> {
    fn parse(b: &'a [u8]) -> LinkView<'a> {
        let mut l = LinkView {
            trace_id: [0; 16],
            span_id: [0; 8],
            trace_state: "",
            dropped_attributes_count: 0,
            flags: 0,
            bytes: b,
        };
        for (tag, field) in Fields(b) {
            match (tag, field) {
                (1, Field::Bytes(t)) => l.trace_id = id(t),
                (2, Field::Bytes(s)) => l.span_id = id(s),
                (3, Field::Bytes(s)) => l.trace_state = text(s),
                (5, Field::Varint(n)) => l.dropped_attributes_count = n as u32,
                (6, Field::Fixed32(f)) => l.flags = f,
                _ => {}
            }
        }
        l
    }

    /// The link's attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = AttributeView<'a>> + Clone + use<'a> {
        repeated(self.bytes, 4).map(AttributeView::parse)
    }
}

// ---- writing ---------------------------------------------------------------

/// Span flags (trace.proto `SpanFlags`): the span's context says whether
/// its parent is remote, and this bit says it does.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
/// The parent span is remote.
const CONTEXT_IS_REMOTE: u32 = 0x200;

/// `t` in ns since the Unix epoch (0 before it).
pub(super) fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

pub(super) fn key_len(tag: u32) -> usize {
    encoded_len_varint(u64::from(tag << 3))
}

/// A length-delimited field of `len` bytes, with its key and length.
pub(super) fn message_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A string field; proto3 leaves an empty one out.
pub(super) fn string_field_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        message_field_len(tag, s.len())
    }
}

pub(super) fn put_len(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

pub(super) fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_len(buf, tag, bytes.len());
    buf.extend_from_slice(bytes);
}

pub(super) fn put_string(buf: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(buf, tag, s.as_bytes());
    }
}

pub(super) fn put_fixed64(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

pub(super) fn fixed64_len(tag: u32, v: u64) -> usize {
    if v == 0 { 0 } else { key_len(tag) + 8 }
}

pub(super) fn put_uint(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

pub(super) fn uint_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

/// An attribute value as the writers below take it, borrowing its strings
/// and arrays: from a `SpanData` ([`val`]) or from a guest's batch
/// ([`super::batched`]).
#[derive(Debug)]
pub(super) enum Val<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    I64(i64),
    F64(f64),
    Strs(Vec<Cow<'a, str>>),
    Bools(Cow<'a, [bool]>),
    I64s(Cow<'a, [i64]>),
    F64s(Cow<'a, [f64]>),
}

/// An OpenTelemetry value as a [`Val`]. A value type newer than this
/// encoder is sent as its text.
pub(super) fn val(v: &Value) -> Val<'_> {
    match v {
        Value::Bool(b) => Val::Bool(*b),
        Value::I64(i) => Val::I64(*i),
        Value::F64(f) => Val::F64(*f),
        Value::String(s) => Val::Str(Cow::Borrowed(s.as_str())),
        Value::Array(Array::Bool(v)) => Val::Bools(Cow::Borrowed(v)),
        Value::Array(Array::I64(v)) => Val::I64s(Cow::Borrowed(v)),
        Value::Array(Array::F64(v)) => Val::F64s(Cow::Borrowed(v)),
        Value::Array(Array::String(v)) => {
            Val::Strs(v.iter().map(|s| Cow::Borrowed(s.as_str())).collect())
        }
        Value::Array(_) => Val::Strs(Vec::new()),
        other => Val::Str(Cow::Owned(other.to_string())),
    }
}

/// The `ArrayValue` of an array value (its items, without its own key).
fn array_len(v: &Val<'_>) -> usize {
    fn each<T>(items: &[T], len: impl Fn(&T) -> usize) -> usize {
        items.iter().map(|i| message_field_len(1, len(i))).sum()
    }
    match v {
        Val::Bools(a) => each(a, |_| key_len(2) + 1),
        Val::I64s(a) => each(a, |i| key_len(3) + encoded_len_varint(*i as u64)),
        Val::F64s(a) => each(a, |_| key_len(4) + 8),
        Val::Strs(a) => each(a, |s| message_field_len(1, s.len())),
        Val::Str(_) | Val::Bool(_) | Val::I64(_) | Val::F64(_) => 0,
    }
}

fn any_len(v: &Val<'_>) -> usize {
    match v {
        Val::Bool(_) => key_len(2) + 1,
        Val::I64(i) => key_len(3) + encoded_len_varint(*i as u64),
        Val::F64(_) => key_len(4) + 8,
        Val::Str(s) => message_field_len(1, s.len()),
        array => message_field_len(5, array_len(array)),
    }
}

/// `AnyValue`: a oneof, so its one field is written even when it holds
/// the default value.
fn put_any(buf: &mut Vec<u8>, v: &Val<'_>) {
    match v {
        Val::Bool(b) => {
            encode_key(2, WireType::Varint, buf);
            buf.push(u8::from(*b));
        }
        Val::I64(i) => {
            encode_key(3, WireType::Varint, buf);
            encode_varint(*i as u64, buf);
        }
        Val::F64(f) => {
            encode_key(4, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&f.to_le_bytes());
        }
        Val::Str(s) => put_bytes(buf, 1, s.as_bytes()),
        array => {
            put_len(buf, 5, array_len(array));
            let item = |buf: &mut Vec<u8>, v: Val<'_>| {
                put_len(buf, 1, any_len(&v));
                put_any(buf, &v);
            };
            match array {
                Val::Bools(a) => a.iter().for_each(|b| item(buf, Val::Bool(*b))),
                Val::I64s(a) => a.iter().for_each(|i| item(buf, Val::I64(*i))),
                Val::F64s(a) => a.iter().for_each(|f| item(buf, Val::F64(*f))),
                Val::Strs(a) => a
                    .iter()
                    .for_each(|s| item(buf, Val::Str(Cow::Borrowed(s.as_ref())))),
                Val::Str(_) | Val::Bool(_) | Val::I64(_) | Val::F64(_) => {}
            }
        }
    }
}

pub(super) fn key_value_len(key: &str, value: &Val<'_>) -> usize {
    string_field_len(1, key) + message_field_len(2, any_len(value))
}

pub(super) fn put_key_value(buf: &mut Vec<u8>, tag: u32, key: &str, value: &Val<'_>) {
    put_len(buf, tag, key_value_len(key, value));
    put_string(buf, 1, key);
    put_len(buf, 2, any_len(value));
    put_any(buf, value);
}

/// `KeyValue` of a `SpanData`: its length.
fn kv_len(kv: &KeyValue) -> usize {
    key_value_len(kv.key.as_str(), &val(&kv.value))
}

fn put_kv(buf: &mut Vec<u8>, tag: u32, kv: &KeyValue) {
    put_key_value(buf, tag, kv.key.as_str(), &val(&kv.value));
}

fn attributes_len(tag: u32, attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|kv| message_field_len(tag, kv_len(kv)))
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
        put_kv(buf, 3, kv);
    }
    put_uint(buf, 4, u64::from(e.dropped_attributes_count));
}

/// Append `attributes` to `buf` as a `Span` message's `attributes` fields
/// (number 9), as [`SpanView::attribute_bytes`] returns them.
pub fn put_attributes(buf: &mut Vec<u8>, attributes: &[KeyValue]) {
    for kv in attributes {
        put_kv(buf, 9, kv);
    }
}

/// Append `events` to `buf` as a `Span` message's `events` fields (number
/// 11), as [`SpanView::event_bytes`] returns them.
pub fn put_events(buf: &mut Vec<u8>, events: &[Event]) {
    for e in events {
        put_event(buf, e);
    }
}

pub(super) fn flags(trace_flags: u8, remote: bool) -> u32 {
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
        put_kv(buf, 4, kv);
    }
    put_uint(buf, 5, u64::from(l.dropped_attributes_count));
    encode_key(6, WireType::ThirtyTwoBit, buf);
    let f = flags(
        l.span_context.trace_flags().to_u8(),
        l.span_context.is_remote(),
    );
    buf.extend_from_slice(&f.to_le_bytes());
}

pub(super) fn kind(k: &SpanKind) -> u64 {
    match k {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// `Status { string message = 2; StatusCode code = 3; }`
pub(super) fn status(s: &Status) -> (&str, u64) {
    match s {
        Status::Unset => ("", 0),
        Status::Ok => ("", 1),
        Status::Error { description } => (description.as_ref(), 2),
    }
}

pub(super) fn status_len(s: &Status) -> usize {
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
        put_kv(buf, 9, kv);
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

/// The instrumentation scopes of a pipeline's spans: an [`EncodedSpan`]
/// names its scope by its index here. Scopes come from the host's tracers
/// (in practice one, `polytrace`), so the table stays tiny.
#[derive(Debug, Default)]
pub struct Scopes(std::sync::RwLock<Vec<InstrumentationScope>>);

impl Scopes {
    /// The index of `scope`, added when new.
    pub fn index(&self, scope: &InstrumentationScope) -> u32 {
        if let Ok(table) = self.0.read()
            && let Some(i) = table.iter().position(|s| s == scope)
        {
            return i as u32;
        }
        let Ok(mut table) = self.0.write() else {
            return 0;
        };
        match table.iter().position(|s| s == scope) {
            Some(i) => i as u32,
            None => {
                table.push(scope.clone());
                (table.len() - 1) as u32
            }
        }
    }

    /// The scope at `index` (an empty scope if there is none).
    pub fn get(&self, index: u32) -> InstrumentationScope {
        self.0
            .read()
            .ok()
            .and_then(|t| t.get(index as usize).cloned())
            .unwrap_or_else(|| InstrumentationScope::builder("").build())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use opentelemetry::trace::TraceState;

    /// A span using every field the encoding has: links, events, arrays,
    /// empty keys and values, remote parents, trace state, each kind and
    /// status.
    pub(in crate::telemetry::traces) fn span(i: u64, scope: &InstrumentationScope) -> SpanData {
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
    fn a_span_reads_back_as_it_was_written() {
        let scopes = [
            InstrumentationScope::builder("polytrace").build(),
            InstrumentationScope::builder("guest")
                .with_version("1.2")
                .build(),
        ];
        let table = Scopes::default();
        for i in 0..12 {
            let original = span(i, &scopes[i as usize % 2]);
            let encoded =
                EncodedSpan::encode(&original, table.index(&original.instrumentation_scope));
            assert_eq!(encoded.scope(), i as u32 % 2);
            let back = encoded.to_span_data(table.get(encoded.scope()));
            assert_eq!(back, original, "span {i}");
            let v = encoded.view();
            assert_eq!(v.name, format!("op-{i}"));
            assert_eq!(v.parent_span_id.is_none(), i == 0);
            assert_eq!(v.attributes().count(), 10);
            assert_eq!(v.attributes().nth(2).map(|a| a.key), Some("n"));
        }
        assert_eq!(table.get(7).name(), "");
    }

    #[test]
    fn damaged_bytes_read_as_far_as_they_are_whole() {
        let table = Scopes::default();
        let original = span(3, &InstrumentationScope::builder("p").build());
        let encoded = EncodedSpan::encode(&original, table.index(&original.instrumentation_scope));
        let keys: Vec<&str> = encoded.view().attributes().map(|a| a.key).collect();
        for cut in 0..encoded.bytes().len() {
            let v = SpanView::parse(&encoded.bytes()[..cut]);
            // Never panics; a cut field and everything after it is absent,
            // so what is read is a prefix of what was written.
            let read: Vec<&str> = v.attributes().map(|a| a.key).collect();
            assert_eq!(read, keys[..read.len()], "cut at {cut}");
            let _ = v.events().map(|e| e.attributes().count()).sum::<usize>();
        }
        assert_eq!(Fields(&[0xff; 12]).count(), 0);
        assert!(
            Fields(&[0x0a, 0x80, 0x80, 0x80, 0x80, 0x10])
                .next()
                .is_none(),
            "a length past the end is not a field"
        );
    }
}
