//! Batched guest spans (`polytrace:telemetry/span-batch`): a guest SDK
//! records span operations in its own memory and hands the host one byte
//! buffer for many of them; the host applies them to the request's span
//! state and writes each finished span straight into its OTLP `Span`
//! message ([`EncodedSpan`]), without building a `SpanData`.
//!
//! What comes out is what the per-call `tracing.span` path makes through
//! the SDK tracer: the same span ids (the SDK's random generator), trace
//! flags and trace state (the tracer's sampler, decided the way the SDK
//! decides), span limits ([`span_limits`], the SDK's defaults and
//! `OTEL_SPAN_*_COUNT_LIMIT`), value caps and counts, nesting and the
//! current span. The unit tests check it byte for byte against the
//! per-call path.
//!
//! The operation encoding is documented on the WIT interface
//! (wit/telemetry.wit, `span-batch`). Strings that are not UTF-8 are
//! recorded with U+FFFD in place of the bad bytes.

use super::encoded::{
    EncodedSpan, Val, fixed64_len, flags, key_len, key_value_len, kind as kind_code,
    message_field_len, put_bytes, put_fixed64, put_key_value, put_len, put_string, put_uint,
    status as status_fields, status_len, string_field_len, uint_len,
};
use super::{AUTO_ENDED, MAX_SPANS_PER_REQUEST, RequestTrace, SpanExport, UNNAMED, with_random};
use crate::telemetry::attributes::{MAX_ARRAY_LENGTH, cap_string};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample, SpanLimits,
};
use prost::encoding::{WireType, encode_key};
use std::borrow::Cow;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Ended batched spans whose context a guest can still ask for.
const REMEMBERED_ENDED: usize = 64;

/// Batched spans one request may have open at once. Past it the guest is
/// leaking spans (started, never ended): `apply` fails with
/// [`TOO_MANY_OPEN`] and the host traps the guest, as it does when a guest
/// leaks `tracing.span` handles past the handle table.
pub const MAX_OPEN_BATCHED: usize = 10_000;

/// The largest batch `apply` takes, in bytes (the SDKs send far less: a
/// span's start or end, or 512 operations).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// The most operations one `apply` takes: one host call stays short (tens
/// of ms at worst) whatever the guest sends, since the request's deadline
/// cannot interrupt the host.
pub const MAX_BATCH_OPERATIONS: usize = 65_536;

/// The [`BatchError::what`] of a batch past [`MAX_BATCH_OPERATIONS`].
pub const TOO_MANY_OPERATIONS: &str = "more than 65536 operations in one batch";

/// The [`BatchError::what`] of a batch that opens more than
/// [`MAX_OPEN_BATCHED`] spans.
pub const TOO_MANY_OPEN: &str =
    "more than 10000 spans open at once (span handles leak: spans started and never ended)";

/// The span limits of every tracer provider: the SDK's defaults with its
/// `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, `OTEL_SPAN_EVENT_COUNT_LIMIT` and
/// `OTEL_SPAN_LINK_COUNT_LIMIT` read as the SDK reads them (a u32, else
/// ignored). Resolved once, so the batched path and the SDK agree.
pub fn span_limits() -> SpanLimits {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    let mut limits = SpanLimits::default();
    if let Some(n) = var("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT") {
        limits.max_attributes_per_span = n;
    }
    if let Some(n) = var("OTEL_SPAN_EVENT_COUNT_LIMIT") {
        limits.max_events_per_span = n;
    }
    if let Some(n) = var("OTEL_SPAN_LINK_COUNT_LIMIT") {
        limits.max_links_per_span = n;
    }
    limits
}

/// Where one component's batched spans go: its slot in the span export
/// queue, with the sampler and limits of its tracer provider.
#[derive(Debug)]
pub struct SpanSink {
    export: SpanExport,
    index: usize,
    scope: u32,
    sampler: Sampler,
    limits: SpanLimits,
    ids: RandomIdGenerator,
}

impl SpanSink {
    /// The sink of component `index`, whose tracer has `scope`.
    pub fn new(
        export: &SpanExport,
        index: usize,
        scope: &InstrumentationScope,
        sampler: Sampler,
        limits: SpanLimits,
    ) -> SpanSink {
        SpanSink {
            scope: export.scope_index(scope),
            export: export.clone(),
            index,
            sampler,
            limits,
            ids: RandomIdGenerator::default(),
        }
    }

    /// The SDK tracer's decision for a span under `parent`: whether it is
    /// recorded, and its trace state.
    fn sample(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
    ) -> (bool, TraceState) {
        if let (Sampler::ParentBased(_), Some(p)) = (&self.sampler, parent) {
            // ParentBased with its default delegates follows a valid parent.
            return (p.is_sampled(), p.trace_state().clone());
        }
        let cx = match parent {
            Some(p) => Context::new().with_remote_span_context(p.clone()),
            None => Context::new(),
        };
        let result = self
            .sampler
            .should_sample(Some(&cx), trace_id, name, kind, &[], &[]);
        (
            result.decision != SamplingDecision::Drop,
            result.trace_state,
        )
    }
}

impl SpanSink {
    /// Begin a span under `parent` as the SDK's tracer does: a new span id;
    /// the parent's trace, or a new one (a parent that is not valid is no
    /// parent); the sampler's decision. Returns the span's context (without
    /// the W3C random flag, which the request adds) and, when sampled, its
    /// recording, started at `start` (ns since the Unix epoch).
    pub(super) fn begin(
        &self,
        parent: Option<&SpanContext>,
        name: String,
        kind: &SpanKind,
        start: u64,
    ) -> (SpanContext, Option<Box<Recording>>) {
        let span_id = self.ids.new_span_id();
        let parent = parent.filter(|p| p.is_valid());
        let trace_id = match parent {
            Some(p) => p.trace_id(),
            None => self.ids.new_trace_id(),
        };
        let (sampled, trace_state) = self.sample(parent, trace_id, &name, kind);
        if !sampled {
            let cx = SpanContext::new(trace_id, span_id, TraceFlags::default(), false, trace_state);
            return (cx, None);
        }
        let flags = parent
            .map_or(TraceFlags::default(), |p| p.trace_flags())
            .with_sampled(true);
        let rec = Box::new(Recording {
            span_id,
            trace_id,
            trace_state: trace_state.header(),
            parent: parent.map_or(SpanId::INVALID, |p| p.span_id()),
            parent_remote: parent.is_some_and(SpanContext::is_remote),
            flags: flags.to_u8(),
            name,
            kind: kind_code(kind),
            start,
            attributes: Vec::new(),
            attribute_count: 0,
            dropped_attributes: 0,
            events: Vec::new(),
            event_count: 0,
            dropped_events: 0,
            links: Vec::new(),
            link_count: 0,
            dropped_links: 0,
            status: Status::Unset,
        });
        let cx = SpanContext::new(trace_id, span_id, flags, false, trace_state);
        (cx, Some(rec))
    }

    /// The span limits of the component's tracer provider.
    pub(super) fn limits(&self) -> &SpanLimits {
        &self.limits
    }

    /// Queue the finished span `bytes` (a `Span` message) for export.
    pub(super) fn push(&self, bytes: Box<[u8]>) {
        self.export
            .push(self.index, EncodedSpan::from_bytes(bytes, self.scope));
    }
}

/// A malformed batch: what was wrong and where — the byte offset in a
/// binary batch, the operation's index in a JSON one (`json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub offset: usize,
    pub what: &'static str,
    pub json: bool,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.json { "operation" } else { "byte" };
        write!(f, "span batch: {} at {unit} {}", self.what, self.offset)
    }
}

impl std::error::Error for BatchError {}

/// A batched span the request has open.
pub(super) struct Batched {
    /// Its entry in the request's open-span stack.
    pub(super) at: usize,
    /// Its context as the guest and its children see it.
    cx: SpanContext,
    /// `None` when it is not recorded (not sampled, or past the cap).
    rec: Option<Box<Recording>>,
    /// Not recorded but sampled out (not past the span cap): as on the
    /// per-call path, what the guest sets is still capped and counted.
    counted: bool,
}

/// What a recorded span has so far (a batched guest span, or a span the
/// host makes itself, [`super::wire`]), attributes, events and links
/// already in their wire form.
pub(super) struct Recording {
    span_id: SpanId,
    trace_id: TraceId,
    trace_state: String,
    parent: SpanId,
    parent_remote: bool,
    flags: u8,
    name: String,
    kind: u64,
    start: u64,
    /// `KeyValue` fields (tag 9), each with its key and length.
    attributes: Vec<u8>,
    attribute_count: u32,
    dropped_attributes: u32,
    /// `Event` fields (tag 11), each with its key and length.
    events: Vec<u8>,
    event_count: u32,
    dropped_events: u32,
    /// `Link` fields (tag 13), each with its key and length.
    links: Vec<u8>,
    link_count: u32,
    dropped_links: u32,
    status: Status,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &'static str) -> BatchError {
        BatchError {
            offset: self.pos,
            what,
            json: false,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("unexpected end"))?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8, BatchError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, BatchError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    fn u64(&mut self) -> Result<u64, BatchError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }

    fn bool(&mut self) -> Result<bool, BatchError> {
        Ok(self.u8()? != 0)
    }

    fn str(&mut self) -> Result<Cow<'a, str>, BatchError> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        // `from_utf8` checks valid text faster than the lossy decoder's
        // chunk iterator, which only invalid text needs.
        Ok(match std::str::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(bytes),
        })
    }

    /// A count of items that each take at least `min` bytes (bounds the
    /// allocation to what the buffer can hold).
    fn count(&mut self, min: usize) -> Result<usize, BatchError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.buf.len() - self.pos {
            return Err(self.err("count larger than the batch"));
        }
        Ok(n)
    }

    fn handle(&mut self) -> Result<u32, BatchError> {
        match self.u32()? {
            0 => Err(self.err("span handle 0")),
            h => Ok(h),
        }
    }

    fn kind(&mut self) -> Result<SpanKind, BatchError> {
        Ok(match self.u8()? {
            0 => SpanKind::Internal,
            1 => SpanKind::Server,
            2 => SpanKind::Client,
            3 => SpanKind::Producer,
            4 => SpanKind::Consumer,
            _ => return Err(self.err("unknown span kind")),
        })
    }

    fn value(&mut self) -> Result<Val<'a>, BatchError> {
        Ok(match self.u8()? {
            0 => Val::Str(self.str()?),
            1 => Val::Bool(self.bool()?),
            2 => Val::I64(self.u64()? as i64),
            3 => Val::F64(f64::from_bits(self.u64()?)),
            4 => {
                let n = self.count(4)?;
                Val::Strs((0..n).map(|_| self.str()).collect::<Result<_, _>>()?)
            }
            5 => {
                let n = self.count(1)?;
                Val::Bools((0..n).map(|_| self.bool()).collect::<Result<_, _>>()?)
            }
            6 => {
                let n = self.count(8)?;
                Val::I64s(
                    (0..n)
                        .map(|_| Ok(self.u64()? as i64))
                        .collect::<Result<_, _>>()?,
                )
            }
            7 => {
                let n = self.count(8)?;
                Val::F64s(
                    (0..n)
                        .map(|_| Ok(f64::from_bits(self.u64()?)))
                        .collect::<Result<_, _>>()?,
                )
            }
            _ => return Err(self.err("unknown value type")),
        })
    }
}

/// Cut `s` to `cap` bytes on a character boundary; says whether it did.
fn cap_cow(s: &mut Cow<'_, str>, cap: usize) -> bool {
    if s.len() <= cap {
        return false;
    }
    match s {
        Cow::Borrowed(b) => {
            let mut end = cap;
            while !b.is_char_boundary(end) {
                end -= 1;
            }
            *b = &b[..end];
        }
        Cow::Owned(o) => *o = cap_string(std::mem::take(o), cap),
    }
    true
}

/// The value-length and array caps of [`super::attributes::cap_value`],
/// on a borrowed attribute; says whether anything was cut.
fn cap_attribute(key: &mut Cow<'_, str>, value: &mut Val<'_>, cap: usize) -> bool {
    fn cut_array<T: Clone>(v: &mut Cow<'_, [T]>) -> bool {
        if v.len() <= MAX_ARRAY_LENGTH {
            return false;
        }
        match v {
            Cow::Borrowed(b) => *b = &b[..MAX_ARRAY_LENGTH],
            Cow::Owned(o) => o.truncate(MAX_ARRAY_LENGTH),
        }
        true
    }
    let mut cut = match value {
        Val::Str(s) => cap_cow(s, cap),
        Val::Strs(v) => {
            let mut cut = v.len() > MAX_ARRAY_LENGTH;
            v.truncate(MAX_ARRAY_LENGTH);
            for s in v.iter_mut() {
                cut |= cap_cow(s, cap);
            }
            cut
        }
        Val::Bools(v) => cut_array(v),
        Val::I64s(v) => cut_array(v),
        Val::F64s(v) => cut_array(v),
        Val::Bool(_) | Val::I64(_) | Val::F64(_) => false,
    };
    cut |= cap_cow(key, cap);
    cut
}

/// Cap every key and value of `attributes` at `cap` bytes; how many were cut.
fn cap_attributes(attributes: &mut Attributes<'_>, cap: usize) -> u64 {
    attributes
        .iter_mut()
        .map(|(k, v)| u64::from(cap_attribute(k, v, cap)))
        .sum()
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// A guest time, or now for 0.
fn time_or_now(t: u64) -> u64 {
    if t == 0 { now_nanos() } else { t }
}

/// The attributes an event or link keeps under `limit`, and how many it
/// drops (the SDK keeps the first ones).
fn within<'s, 'a>(
    attributes: &'s [(Cow<'a, str>, Val<'a>)],
    limit: u32,
) -> (&'s [(Cow<'a, str>, Val<'a>)], u64) {
    let kept = &attributes[..attributes.len().min(limit as usize)];
    (kept, (attributes.len() - kept.len()) as u64)
}

impl Recording {
    /// Add (capped) `attributes` as far as the span's attribute limit
    /// allows. The buffer grows once, by what the kept ones take in the
    /// wire form, instead of by doubling (five reallocations for a span
    /// with five short attributes).
    fn add_attributes(&mut self, limits: &SpanLimits, attributes: &[(Cow<'_, str>, Val<'_>)]) {
        let room = limits
            .max_attributes_per_span
            .saturating_sub(self.attribute_count) as usize;
        let kept: usize = attributes
            .iter()
            .take(room)
            .map(|(k, v)| message_field_len(9, key_value_len(k, v)))
            .sum();
        self.attributes.reserve(kept);
        for (k, v) in attributes {
            self.add_attribute(limits, k, v);
        }
    }

    pub(super) fn add_attribute(&mut self, limits: &SpanLimits, key: &str, value: &Val<'_>) {
        if self.attribute_count < limits.max_attributes_per_span {
            put_key_value(&mut self.attributes, 9, key, value);
            self.attribute_count += 1;
        } else {
            self.dropped_attributes = self.dropped_attributes.saturating_add(1);
        }
    }

    pub(super) fn add_event(
        &mut self,
        limits: &SpanLimits,
        time: u64,
        name: &str,
        attributes: &[(Cow<'_, str>, Val<'_>)],
    ) {
        if self.event_count >= limits.max_events_per_span {
            self.dropped_events = self.dropped_events.saturating_add(1);
            return;
        }
        self.event_count += 1;
        let (kept, dropped) = within(attributes, limits.max_attributes_per_event);
        let len = fixed64_len(1, time)
            + string_field_len(2, name)
            + kept
                .iter()
                .map(|(k, v)| message_field_len(3, key_value_len(k, v)))
                .sum::<usize>()
            + uint_len(4, dropped);
        let buf = &mut self.events;
        put_len(buf, 11, len);
        put_fixed64(buf, 1, time);
        put_string(buf, 2, name);
        for (k, v) in kept {
            put_key_value(buf, 3, k, v);
        }
        put_uint(buf, 4, dropped);
    }

    /// Add a link to `cx` with (at most the limit's) `attributes`, as the
    /// SDK's span does: past the span's link limit, only counted.
    pub(super) fn add_link(
        &mut self,
        limits: &SpanLimits,
        cx: &SpanContext,
        attributes: &[(Cow<'_, str>, Val<'_>)],
    ) {
        if self.link_count >= limits.max_links_per_span {
            self.dropped_links = self.dropped_links.saturating_add(1);
            return;
        }
        self.link_count += 1;
        let (kept, dropped) = within(attributes, limits.max_attributes_per_link);
        let trace_state = cx.trace_state().header();
        let len = message_field_len(1, 16)
            + message_field_len(2, 8)
            + string_field_len(3, &trace_state)
            + kept
                .iter()
                .map(|(k, v)| message_field_len(4, key_value_len(k, v)))
                .sum::<usize>()
            + uint_len(5, dropped)
            + key_len(6)
            + 4;
        let buf = &mut self.links;
        put_len(buf, 13, len);
        put_bytes(buf, 1, &cx.trace_id().to_bytes());
        put_bytes(buf, 2, &cx.span_id().to_bytes());
        put_string(buf, 3, &trace_state);
        for (k, v) in kept {
            put_key_value(buf, 4, k, v);
        }
        put_uint(buf, 5, dropped);
        encode_key(6, WireType::ThirtyTwoBit, buf);
        let f = flags(cx.trace_flags().to_u8(), cx.is_remote());
        buf.extend_from_slice(&f.to_le_bytes());
    }

    /// Set the status as the SDK's span does: only to a greater one
    /// (`Unset` < `Error` < `Ok`).
    pub(super) fn set_status(&mut self, status: Status) {
        if status > self.status {
            self.status = status;
        }
    }

    /// Rename the span.
    pub(super) fn set_name(&mut self, name: String) {
        self.name = name;
    }

    /// The `Span` message, as [`EncodedSpan::encode`] writes it.
    pub(super) fn finish(self, end: u64) -> Box<[u8]> {
        let parent = self.parent != SpanId::INVALID;
        let len = message_field_len(1, 16)
            + message_field_len(2, 8)
            + string_field_len(3, &self.trace_state)
            + if parent { message_field_len(4, 8) } else { 0 }
            + string_field_len(5, &self.name)
            + uint_len(6, self.kind)
            + fixed64_len(7, self.start)
            + fixed64_len(8, end)
            + self.attributes.len()
            + uint_len(10, u64::from(self.dropped_attributes))
            + self.events.len()
            + uint_len(12, u64::from(self.dropped_events))
            + self.links.len()
            + uint_len(14, u64::from(self.dropped_links))
            + message_field_len(15, status_len(&self.status))
            + key_len(16)
            + 4;
        let mut buf = Vec::with_capacity(len);
        put_bytes(&mut buf, 1, &self.trace_id.to_bytes());
        put_bytes(&mut buf, 2, &self.span_id.to_bytes());
        put_string(&mut buf, 3, &self.trace_state);
        if parent {
            put_bytes(&mut buf, 4, &self.parent.to_bytes());
        }
        put_string(&mut buf, 5, &self.name);
        put_uint(&mut buf, 6, self.kind);
        put_fixed64(&mut buf, 7, self.start);
        put_fixed64(&mut buf, 8, end);
        buf.extend_from_slice(&self.attributes);
        put_uint(&mut buf, 10, u64::from(self.dropped_attributes));
        buf.extend_from_slice(&self.events);
        put_uint(&mut buf, 12, u64::from(self.dropped_events));
        buf.extend_from_slice(&self.links);
        put_uint(&mut buf, 14, u64::from(self.dropped_links));
        put_len(&mut buf, 15, status_len(&self.status));
        let (message, code) = status_fields(&self.status);
        put_string(&mut buf, 2, message);
        put_uint(&mut buf, 3, code);
        encode_key(16, WireType::ThirtyTwoBit, &mut buf);
        buf.extend_from_slice(&flags(self.flags, self.parent_remote).to_le_bytes());
        debug_assert_eq!(buf.len(), len);
        buf.into_boxed_slice()
    }
}

/// One decoded span operation (see the WIT interface for each one's meaning).
#[derive(Debug)]
enum Op<'a> {
    Start {
        handle: u32,
        kind: SpanKind,
        time: u64,
        name: Cow<'a, str>,
        /// An explicit parent; `None`: under the current span (also when
        /// the explicit parent is not valid, as on the per-call path).
        parent: Option<SpanContext>,
        attributes: Attributes<'a>,
    },
    SetAttributes {
        handle: u32,
        attributes: Attributes<'a>,
    },
    AddEvent {
        handle: u32,
        time: u64,
        name: Cow<'a, str>,
        attributes: Attributes<'a>,
    },
    RecordException {
        handle: u32,
        time: u64,
        exception_type: Cow<'a, str>,
        message: Cow<'a, str>,
        stacktrace: Option<Cow<'a, str>>,
        set_status: bool,
    },
    SetStatus {
        handle: u32,
        status: Status,
    },
    UpdateName {
        handle: u32,
        name: Cow<'a, str>,
    },
    End {
        handle: u32,
        time: u64,
    },
}

type Attributes<'a> = Vec<(Cow<'a, str>, Val<'a>)>;

impl<'a> Reader<'a> {
    /// An attribute list: a count, then each key and value.
    fn attribute_list(&mut self) -> Result<Attributes<'a>, BatchError> {
        let n = self.count(6)?;
        let mut list = Vec::with_capacity(n);
        for _ in 0..n {
            list.push((self.str()?, self.value()?));
        }
        Ok(list)
    }

    fn parent(&mut self) -> Result<Option<SpanContext>, BatchError> {
        let trace_id = TraceId::from_bytes(self.take(16)?.try_into().unwrap_or_default());
        let span_id = SpanId::from_bytes(self.take(8)?.try_into().unwrap_or_default());
        let flags = self.u8()?;
        let remote = self.bool()?;
        let state = self.str()?;
        Ok(remote_parent(
            &trace_id.to_string(),
            &span_id.to_string(),
            flags,
            remote,
            &state,
        ))
    }

    /// The next operation.
    fn op(&mut self) -> Result<Op<'a>, BatchError> {
        let at = self.pos;
        Ok(match self.u8()? {
            op @ (1 | 2) => {
                let handle = self.handle()?;
                let kind = self.kind()?;
                let time = self.u64()?;
                let name = self.str()?;
                let parent = if op == 2 { self.parent()? } else { None };
                Op::Start {
                    handle,
                    kind,
                    time,
                    name,
                    parent,
                    attributes: self.attribute_list()?,
                }
            }
            3 => Op::SetAttributes {
                handle: self.handle()?,
                attributes: self.attribute_list()?,
            },
            4 => Op::AddEvent {
                handle: self.handle()?,
                time: self.u64()?,
                name: self.str()?,
                attributes: self.attribute_list()?,
            },
            5 => Op::RecordException {
                handle: self.handle()?,
                time: self.u64()?,
                exception_type: self.str()?,
                message: self.str()?,
                stacktrace: if self.bool()? {
                    Some(self.str()?)
                } else {
                    None
                },
                set_status: self.bool()?,
            },
            6 => {
                let handle = self.handle()?;
                let code = self.u8()?;
                let description = self.str()?;
                Op::SetStatus {
                    handle,
                    status: status_of(code, description)
                        .ok_or_else(|| self.err("unknown status code"))?,
                }
            }
            7 => Op::UpdateName {
                handle: self.handle()?,
                name: self.str()?,
            },
            8 => Op::End {
                handle: self.handle()?,
                time: self.u64()?,
            },
            _ => {
                return Err(BatchError {
                    offset: at,
                    what: "unknown operation",
                    json: false,
                });
            }
        })
    }
}

fn status_of(code: u8, description: Cow<'_, str>) -> Option<Status> {
    Some(match code {
        0 => Status::Unset,
        1 => Status::Ok,
        2 => Status::error(description.into_owned()),
        _ => return None,
    })
}

/// An explicit parent given as a WIT `span-context`'s fields, read by the
/// W3C rules (lowercase hex, non-zero ids, known flags only) on both the
/// per-call and the batched path; `None` when it is not valid.
pub(super) fn remote_parent(
    trace_id: &str,
    span_id: &str,
    flags: u8,
    remote: bool,
    trace_state: &str,
) -> Option<SpanContext> {
    let (trace_id, span_id, flags) =
        super::propagation::parse_traceparent(&format!("00-{trace_id}-{span_id}-{flags:02x}"))?;
    let state = super::propagation::parse_tracestate(trace_state).unwrap_or_default();
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        remote,
        state,
    ))
}

impl RequestTrace {
    /// Apply a `span-batch` buffer (encoding: wit/telemetry.wit; binary, or
    /// JSON when it starts with `[`). Stops at the first malformed
    /// operation; the ones before it stay applied.
    pub fn apply_batch(&mut self, ops: &[u8]) -> Result<(), BatchError> {
        if ops.len() > MAX_BATCH_BYTES {
            return Err(BatchError {
                offset: 0,
                what: "batch larger than 16 MiB",
                json: false,
            });
        }
        match ops.first() {
            Some(b'[') => return json::apply(self, ops),
            Some(b'(') => return marshal::apply(self, ops),
            _ => {}
        }
        let mut r = Reader { buf: ops, pos: 0 };
        let mut n = 0;
        while r.pos < ops.len() {
            let at = r.pos;
            n += 1;
            if n > MAX_BATCH_OPERATIONS {
                return Err(BatchError {
                    offset: at,
                    what: TOO_MANY_OPERATIONS,
                    json: false,
                });
            }
            let op = r.op()?;
            self.apply_op(op).map_err(|what| BatchError {
                offset: at,
                what,
                json: false,
            })?;
        }
        Ok(())
    }

    /// Apply one operation; an error says why it was refused.
    fn apply_op(&mut self, op: Op<'_>) -> Result<(), &'static str> {
        match op {
            Op::Start {
                handle,
                kind,
                time,
                name,
                parent,
                attributes,
            } => {
                if self.batched.contains_key(&handle) {
                    return Err("span handle already open");
                }
                if self.batched.len() >= MAX_OPEN_BATCHED {
                    return Err(TOO_MANY_OPEN);
                }
                self.start_batched(handle, kind, time, name, parent, attributes);
            }
            Op::SetAttributes {
                handle,
                mut attributes,
            } => {
                let limits = self.sink.limits;
                if let Some(h) = self.recording(handle) {
                    self.adjustments.truncated_values +=
                        cap_attributes(&mut attributes, self.value_cap);
                    // Sampled out: capped and counted, not kept.
                    if let Some(rec) = self.rec_mut(h) {
                        rec.add_attributes(&limits, &attributes);
                    }
                }
            }
            Op::AddEvent {
                handle,
                time,
                name,
                attributes,
            } => {
                if let Some(h) = self.recording(handle) {
                    self.event(h, time_or_now(time), name, attributes, true);
                }
            }
            Op::RecordException {
                handle,
                time,
                exception_type,
                message,
                stacktrace,
                set_status,
            } => {
                if let Some(h) = self.recording(handle) {
                    let status = set_status
                        .then(|| Status::error(self.cap_str(message.clone().into_owned())));
                    let mut attrs = vec![
                        (Cow::Borrowed("exception.type"), Val::Str(exception_type)),
                        (Cow::Borrowed("exception.message"), Val::Str(message)),
                    ];
                    if let Some(st) = stacktrace {
                        attrs.push((Cow::Borrowed("exception.stacktrace"), Val::Str(st)));
                    }
                    self.event(
                        h,
                        time_or_now(time),
                        Cow::Borrowed("exception"),
                        attrs,
                        false,
                    );
                    if let Some(status) = status {
                        self.set_batched_status(h, status);
                    }
                }
            }
            Op::SetStatus { handle, status } => {
                if let Some(h) = self.recording(handle) {
                    self.set_batched_status(h, status);
                }
            }
            Op::UpdateName { handle, name } => {
                if let Some(h) = self.recording(handle)
                    && !name.is_empty()
                {
                    let name = self.cap_str(name.into_owned());
                    if let Some(rec) = self.rec_mut(h) {
                        rec.name = name;
                    }
                }
            }
            Op::End { handle, time } => self.end_batched(handle, time_or_now(time), true),
        }
        Ok(())
    }

    /// The context of batched span `handle`, open or recently ended.
    pub fn batched_context(&self, handle: u32) -> Option<&SpanContext> {
        self.batched.get(&handle).map(|b| &b.cx).or_else(|| {
            self.ended
                .iter()
                .rev()
                .find(|(h, _)| *h == handle)
                .map(|(_, cx)| cx)
        })
    }

    /// Whether batched span `handle` is open and recorded.
    pub fn batched_is_recording(&self, handle: u32) -> bool {
        self.batched.get(&handle).is_some_and(|b| b.rec.is_some())
    }

    /// `handle` if it is open and recorded, or sampled out (what is set
    /// on it is then capped and counted, and not kept).
    fn recording(&self, handle: u32) -> Option<u32> {
        self.batched
            .get(&handle)
            .filter(|b| b.rec.is_some() || b.counted)
            .map(|_| handle)
    }

    fn rec_mut(&mut self, handle: u32) -> Option<&mut Recording> {
        self.batched
            .get_mut(&handle)
            .and_then(|b| b.rec.as_deref_mut())
    }

    fn start_batched<'a>(
        &mut self,
        handle: u32,
        kind: SpanKind,
        time: u64,
        name: Cow<'a, str>,
        parent: Option<SpanContext>,
        attributes: Attributes<'a>,
    ) {
        // The parent: an explicit one, else the current span.
        let parent = parent.unwrap_or_else(|| self.current().clone());
        if self.started >= MAX_SPANS_PER_REQUEST {
            // Not recorded: its children and outbound calls attach to `parent`.
            self.adjustments.dropped_spans += 1;
            self.open_batched(handle, parent, None, false);
            return;
        }
        self.started += 1;
        let name = if name.is_empty() {
            self.adjustments.unnamed_spans += 1;
            UNNAMED.to_string()
        } else {
            self.cap_str(name.into_owned())
        };
        let (cx, rec) = self
            .sink
            .begin(Some(&parent), name, &kind, time_or_now(time));
        let cx = with_random(cx, self.random);
        // Capped and counted even when sampled out, as on the per-call path.
        let mut attributes = attributes;
        self.adjustments.truncated_values += cap_attributes(&mut attributes, self.value_cap);
        match rec {
            None => self.open_batched(handle, cx, None, true),
            Some(mut rec) => {
                rec.add_attributes(&self.sink.limits, &attributes);
                self.open_batched(handle, cx, Some(rec), false);
            }
        }
    }

    fn open_batched(
        &mut self,
        handle: u32,
        cx: SpanContext,
        rec: Option<Box<Recording>>,
        counted: bool,
    ) {
        self.shared.set(&cx);
        let at = self.open.len();
        self.open.push((super::Slot::Batched(handle), cx.clone()));
        self.batched.insert(
            handle,
            Batched {
                at,
                cx,
                rec,
                counted,
            },
        );
    }

    /// Add an event; `cap_name` is false for the host's own names.
    fn event(
        &mut self,
        i: u32,
        time: u64,
        name: Cow<'_, str>,
        attrs: Attributes<'_>,
        cap_name: bool,
    ) {
        let mut attrs = attrs;
        self.adjustments.truncated_values += cap_attributes(&mut attrs, self.value_cap);
        let name = if cap_name {
            self.cap_str(name.into_owned())
        } else {
            name.into_owned()
        };
        let limits = self.sink.limits;
        if let Some(rec) = self.rec_mut(i) {
            rec.add_event(&limits, time, &name, &attrs);
        }
    }

    fn set_batched_status(&mut self, i: u32, status: Status) {
        if let Some(rec) = self.rec_mut(i) {
            rec.set_status(status);
        }
    }

    /// End batched span `handle` at `end` (ns): queue it if recorded and,
    /// with `pop`, take it off the open stack so its parent is current.
    fn end_batched(&mut self, handle: u32, end: u64, pop: bool) {
        let Some(b) = self.batched.remove(&handle) else {
            return;
        };
        if let Some(rec) = b.rec {
            self.sink.push(rec.finish(end));
        }
        if self.ended.len() == REMEMBERED_ENDED {
            self.ended.pop_front();
        }
        self.ended.push_back((handle, b.cx));
        if pop {
            self.close_at(b.at);
        }
    }

    /// End a batched span the guest left open when its request finished,
    /// marked so (the caller has taken it off the open stack).
    pub(super) fn end_batched_abandoned(&mut self, handle: u32) {
        let limits = self.sink.limits;
        if let Some(rec) = self.rec_mut(handle) {
            rec.add_attribute(&limits, AUTO_ENDED, &Val::Bool(true));
        }
        self.end_batched(handle, now_nanos(), false);
    }
}

mod marshal;

/// The JSON form of a batch, for guests whose engine writes JSON natively
/// much faster than it writes bytes one at a time (interpreted JavaScript:
/// `JSON.stringify` of a whole batch costs ~1.6 µs per span, a hand-written
/// binary encoder ~50 µs). Format: wit/telemetry.wit, `span-batch`. A
/// [`BatchError`] from here has the operation's index as its offset.
mod json {
    use super::{Attributes, BatchError, Op, RequestTrace, Val, remote_parent, status_of};
    use opentelemetry::trace::SpanKind;
    use serde::de::Error as _;
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::borrow::Cow;
    use std::fmt;

    /// Integers beyond this are numbers a JavaScript engine cannot hold
    /// exactly; they are recorded as f64, as `Number.isSafeInteger` says.
    const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

    /// A JSON value that keeps an object's keys in their order (attributes
    /// keep the order the guest set them in) and borrows strings without
    /// escapes from the batch.
    #[derive(Debug)]
    pub(super) enum J<'a> {
        Null,
        Bool(bool),
        /// A number written as an integer.
        Int(i128),
        /// A number with a fraction or an exponent.
        Float(f64),
        Str(Cow<'a, str>),
        Array(Vec<J<'a>>),
        Object(Vec<(Cow<'a, str>, J<'a>)>),
        /// A marshal value no field or attribute can be (bytes, a set).
        Other,
    }

    impl<'de> Deserialize<'de> for J<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = J<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON value")
                }
                fn visit_unit<E>(self) -> Result<J<'de>, E> {
                    Ok(J::Null)
                }
                fn visit_bool<E>(self, b: bool) -> Result<J<'de>, E> {
                    Ok(J::Bool(b))
                }
                fn visit_i64<E>(self, i: i64) -> Result<J<'de>, E> {
                    Ok(J::Int(i.into()))
                }
                fn visit_u64<E>(self, i: u64) -> Result<J<'de>, E> {
                    Ok(J::Int(i.into()))
                }
                fn visit_f64<E>(self, f: f64) -> Result<J<'de>, E> {
                    Ok(J::Float(f))
                }
                fn visit_borrowed_str<E>(self, s: &'de str) -> Result<J<'de>, E> {
                    Ok(J::Str(Cow::Borrowed(s)))
                }
                fn visit_str<E>(self, s: &str) -> Result<J<'de>, E> {
                    Ok(J::Str(Cow::Owned(s.to_string())))
                }
                fn visit_string<E>(self, s: String) -> Result<J<'de>, E> {
                    Ok(J::Str(Cow::Owned(s)))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J<'de>, A::Error> {
                    let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                    while let Some(item) = seq.next_element()? {
                        items.push(item);
                    }
                    Ok(J::Array(items))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J<'de>, A::Error> {
                    let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                    while let Some((k, v)) = map.next_entry::<Cow<'de, str>, J<'de>>()? {
                        entries.push((k, v));
                    }
                    Ok(J::Object(entries))
                }
            }
            d.deserialize_any(V)
        }
    }

    impl<'a> J<'a> {
        fn as_u64(&self) -> Option<u64> {
            match self {
                J::Int(i) => u64::try_from(*i).ok(),
                _ => None,
            }
        }
        fn as_bool(&self) -> Option<bool> {
            match self {
                J::Bool(b) => Some(*b),
                _ => None,
            }
        }
        fn as_str(&self) -> Option<&str> {
            match self {
                J::Str(s) => Some(s),
                _ => None,
            }
        }
        /// An integer a JavaScript number holds exactly.
        fn safe_integer(&self) -> Option<i64> {
            match self {
                J::Int(i) if i.abs() <= i128::from(MAX_SAFE_INTEGER) => Some(*i as i64),
                _ => None,
            }
        }
        fn as_f64(&self) -> Option<f64> {
            match self {
                J::Int(i) => Some(*i as f64),
                J::Float(f) => Some(*f),
                _ => None,
            }
        }
    }

    /// Apply a JSON batch as it is parsed (memory bounded by one
    /// operation). A malformed operation is skipped and the rest applied;
    /// the first error is returned. A syntax error stops there.
    pub(super) fn apply(trace: &mut RequestTrace, bytes: &[u8]) -> Result<(), BatchError> {
        let mut state = State {
            trace,
            first_error: None,
        };
        let parsed = serde_json::Deserializer::from_slice(bytes).deserialize_seq(Ops(&mut state));
        match (state.first_error, parsed) {
            (Some(e), _) => Err(e),
            (None, Err(_)) => Err(BatchError {
                offset: 0,
                what: "not valid JSON",
                json: true,
            }),
            (None, Ok(())) => Ok(()),
        }
    }

    struct State<'t> {
        trace: &'t mut RequestTrace,
        first_error: Option<BatchError>,
    }

    struct Ops<'s, 't>(&'s mut State<'t>);

    impl<'de> Visitor<'de> for Ops<'_, '_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a span batch (a JSON array)")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let state = self.0;
            // Stop parsing: the error returned to the caller is `first_error`.
            let stop = |state: &mut State<'_>, offset, what| {
                state.first_error.get_or_insert(BatchError {
                    offset,
                    what,
                    json: true,
                });
                A::Error::custom(what)
            };
            let origin = match seq.next_element::<J<'de>>()? {
                Some(J::Str(s)) => match s.parse::<u64>() {
                    Ok(o) => o,
                    Err(_) => return Err(stop(state, 0, "bad time origin")),
                },
                _ => return Err(stop(state, 0, "no time origin")),
            };
            let dialect = Dialect::Json { origin };
            let mut i = 0;
            while let Some(item) = seq.next_element::<J<'de>>()? {
                i += 1;
                if let Err(what) = apply_item(state.trace, i, item, dialect, &mut state.first_error)
                {
                    return Err(A::Error::custom(what));
                }
            }
            Ok(())
        }
    }

    /// How a batch that is not binary writes times and attribute values.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Dialect {
        /// JSON: times are milliseconds after `origin` (ns since the Unix
        /// epoch); numbers follow JavaScript's (see [`value`]).
        Json { origin: u64 },
        /// CPython's marshal form: times are ns since the Unix epoch;
        /// integers and floats are Python's own `int` and `float`.
        Marshal,
    }

    /// Apply operation `i` (1-based) of a JSON or marshal batch. A
    /// malformed or refused operation is skipped and remembered in
    /// `first_error`; `Err` stops the batch (past the operation cap, or a
    /// leak the caller traps on).
    pub(super) fn apply_item(
        trace: &mut RequestTrace,
        i: usize,
        item: J<'_>,
        dialect: Dialect,
        first_error: &mut Option<BatchError>,
    ) -> Result<(), &'static str> {
        let mut skip = |what| {
            first_error.get_or_insert(BatchError {
                offset: i,
                what,
                json: true,
            });
        };
        if i > super::MAX_BATCH_OPERATIONS {
            skip(super::TOO_MANY_OPERATIONS);
            return Err(super::TOO_MANY_OPERATIONS);
        }
        let J::Array(fields) = item else {
            skip("an operation is not an array");
            return Ok(());
        };
        let mut invalid = 0;
        let Some(op) = op(&fields, dialect, &mut invalid) else {
            skip("malformed operation");
            return Ok(());
        };
        trace.adjustments.invalid_values += invalid;
        if let Err(what) = trace.apply_op(op) {
            if what == super::TOO_MANY_OPEN {
                // Trapped by the caller: nothing after it.
                *first_error = Some(BatchError {
                    offset: i,
                    what,
                    json: true,
                });
                return Err(what);
            }
            skip(what);
        }
        Ok(())
    }

    fn handle(v: Option<&J<'_>>) -> Option<u32> {
        v?.as_u64()
            .and_then(|h| u32::try_from(h).ok())
            .filter(|&h| h != 0)
    }

    fn text<'a>(v: Option<&'a J<'a>>) -> Option<Cow<'a, str>> {
        v?.as_str().map(Cow::Borrowed)
    }

    /// A time as ns since the epoch; null is "now" (0). JSON: milliseconds
    /// after the batch's origin; marshal: an integer of ns since the epoch.
    fn time(v: Option<&J<'_>>, dialect: Dialect) -> Option<u64> {
        let origin = match (v?, dialect) {
            (J::Null, _) => return Some(0),
            (J::Int(ns), Dialect::Marshal) => return u64::try_from(*ns).ok(),
            (_, Dialect::Marshal) => return None,
            (_, Dialect::Json { origin }) => origin,
        };
        let offset = (v?.as_f64()? * 1e6).round();
        if !offset.is_finite() {
            return None;
        }
        i128::from(origin)
            .checked_add(offset as i128)
            .and_then(|ns| u64::try_from(ns).ok())
    }

    fn kind(v: Option<&J<'_>>) -> Option<SpanKind> {
        Some(match v?.as_u64()? {
            0 => SpanKind::Internal,
            1 => SpanKind::Server,
            2 => SpanKind::Client,
            3 => SpanKind::Producer,
            4 => SpanKind::Consumer,
            _ => return None,
        })
    }

    fn s64_text(v: &J<'_>) -> Option<i64> {
        v.as_str()?.parse().ok()
    }

    /// An f64 JSON cannot write as a number (`nan`, `inf`, `-inf`), or any other.
    fn f64_text(v: &J<'_>) -> Option<f64> {
        v.as_str()?.parse().ok()
    }

    /// A typed value; `None` for one that is not an attribute value.
    fn value<'a>(v: &'a J<'a>, dialect: Dialect) -> Option<Val<'a>> {
        if let Dialect::Marshal = dialect {
            return python_value(v);
        }
        Some(match v {
            J::Str(s) => Val::Str(Cow::Borrowed(s)),
            J::Bool(b) => Val::Bool(*b),
            J::Int(_) | J::Float(_) => match v.safe_integer() {
                Some(i) => Val::I64(i),
                None => Val::F64(v.as_f64()?),
            },
            J::Object(o) if o.len() == 1 => match &o[0] {
                (k, v) if k == "s64" => Val::I64(s64_text(v)?),
                (k, v) if k == "f64" => Val::F64(f64_text(v)?),
                (k, J::Array(a)) if k == "s64-array" => {
                    Val::I64s(a.iter().map(s64_text).collect::<Option<_>>()?)
                }
                (k, J::Array(a)) if k == "f64-array" => {
                    Val::F64s(a.iter().map(f64_text).collect::<Option<_>>()?)
                }
                _ => return None,
            },
            J::Array(a) => array_value(a, |v| v.safe_integer())?,
            J::Null | J::Object(_) | J::Other => return None,
        })
    }

    /// An array value: all strings, all booleans, all integers (as `int`
    /// reads them), else all numbers as f64; `None` for a mixed array.
    fn array_value<'a>(a: &'a [J<'a>], int: fn(&J<'_>) -> Option<i64>) -> Option<Val<'a>> {
        Some(if a.iter().all(|i| matches!(i, J::Str(_))) {
            Val::Strs(
                a.iter()
                    .filter_map(|s| s.as_str().map(Cow::Borrowed))
                    .collect(),
            )
        } else if a.iter().all(|i| matches!(i, J::Bool(_))) {
            Val::Bools(a.iter().filter_map(J::as_bool).collect())
        } else if a.iter().all(|i| int(i).is_some()) {
            Val::I64s(a.iter().filter_map(int).collect())
        } else if a.iter().all(|n| n.as_f64().is_some()) {
            Val::F64s(a.iter().filter_map(J::as_f64).collect())
        } else {
            return None;
        })
    }

    /// A Python value as CPython's marshal writes it: `int` and `float`
    /// keep their types (an `int` past 64 bits is not a value), lists of
    /// one type are arrays, and ints mixed with floats a float array (as
    /// the Python SDK's per-call path has it).
    fn python_value<'a>(v: &'a J<'a>) -> Option<Val<'a>> {
        Some(match v {
            J::Str(s) => Val::Str(Cow::Borrowed(s)),
            J::Bool(b) => Val::Bool(*b),
            J::Int(_) => Val::I64(python_int(v)?),
            J::Float(f) => Val::F64(*f),
            J::Array(a) => array_value(a, python_int)?,
            J::Null | J::Object(_) | J::Other => return None,
        })
    }

    /// A Python `int` within 64 bits.
    fn python_int(v: &J<'_>) -> Option<i64> {
        match v {
            J::Int(i) => i64::try_from(*i).ok(),
            _ => None,
        }
    }

    /// An object's attributes, in order; values that are not attribute
    /// values (and, in marshal, empty keys) are left out and counted in
    /// `invalid`.
    fn attributes<'a>(
        v: Option<&'a J<'a>>,
        dialect: Dialect,
        invalid: &mut u64,
    ) -> Option<Attributes<'a>> {
        let J::Object(o) = v? else { return None };
        let mut list = Vec::with_capacity(o.len());
        for (k, v) in o {
            if k.is_empty() && matches!(dialect, Dialect::Marshal) {
                *invalid += 1;
                continue;
            }
            match value(v, dialect) {
                Some(v) => list.push((Cow::Borrowed(k.as_ref()), v)),
                None => *invalid += 1,
            }
        }
        Some(list)
    }

    fn op<'a>(f: &'a [J<'a>], dialect: Dialect, invalid: &mut u64) -> Option<Op<'a>> {
        Some(match f.first()?.as_u64()? {
            1 => Op::Start {
                handle: handle(f.get(1))?,
                kind: kind(f.get(2))?,
                time: time(f.get(3), dialect)?,
                name: text(f.get(4))?,
                parent: None,
                attributes: attributes(f.get(5), dialect, invalid)?,
            },
            2 => Op::Start {
                handle: handle(f.get(1))?,
                kind: kind(f.get(2))?,
                time: time(f.get(3), dialect)?,
                name: text(f.get(4))?,
                parent: remote_parent(
                    f.get(6)?.as_str()?,
                    f.get(7)?.as_str()?,
                    u8::try_from(f.get(8)?.as_u64()?).ok()?,
                    f.get(9)?.as_bool()?,
                    f.get(10)?.as_str()?,
                ),
                attributes: attributes(f.get(5), dialect, invalid)?,
            },
            3 => Op::SetAttributes {
                handle: handle(f.get(1))?,
                attributes: attributes(f.get(2), dialect, invalid)?,
            },
            4 => Op::AddEvent {
                handle: handle(f.get(1))?,
                time: time(f.get(2), dialect)?,
                name: text(f.get(3))?,
                attributes: attributes(f.get(4), dialect, invalid)?,
            },
            5 => Op::RecordException {
                handle: handle(f.get(1))?,
                time: time(f.get(2), dialect)?,
                exception_type: text(f.get(3))?,
                message: text(f.get(4))?,
                stacktrace: match f.get(5)? {
                    J::Null => None,
                    v => Some(text(Some(v))?),
                },
                set_status: f.get(6)?.as_bool()?,
            },
            6 => Op::SetStatus {
                handle: handle(f.get(1))?,
                status: status_of(u8::try_from(f.get(2)?.as_u64()?).ok()?, text(f.get(3))?)?,
            },
            7 => Op::UpdateName {
                handle: handle(f.get(1))?,
                name: text(f.get(2))?,
            },
            8 => Op::End {
                handle: handle(f.get(1))?,
                time: time(f.get(2), dialect)?,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::start_span;
    use super::*;
    use crate::telemetry::attributes::Adjustments;
    use opentelemetry::trace::{Span as _, TracerProvider as _};
    use opentelemetry::{Array, KeyValue, Value};
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData};
    use std::sync::Arc;
    use std::time::Duration;

    /// A guest SDK's encoder, as the WIT documents the format.
    #[derive(Default)]
    struct Ops(Vec<u8>);

    impl Ops {
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u8(&mut self, v: u8) -> &mut Self {
            self.0.push(v);
            self
        }
        fn str(&mut self, s: &str) -> &mut Self {
            self.u32(s.len() as u32);
            self.0.extend_from_slice(s.as_bytes());
            self
        }
        fn attrs(&mut self, attrs: &[KeyValue]) -> &mut Self {
            self.u32(attrs.len() as u32);
            for kv in attrs {
                self.str(kv.key.as_str());
                match &kv.value {
                    Value::String(s) => {
                        self.u8(0).str(s.as_str());
                    }
                    Value::Bool(b) => {
                        self.u8(1).u8(u8::from(*b));
                    }
                    Value::I64(i) => {
                        self.u8(2).u64(*i as u64);
                    }
                    Value::F64(f) => {
                        self.u8(3).u64(f.to_bits());
                    }
                    Value::Array(Array::String(v)) => {
                        self.u8(4).u32(v.len() as u32);
                        v.iter().for_each(|s| {
                            self.str(s.as_str());
                        });
                    }
                    Value::Array(Array::Bool(v)) => {
                        self.u8(5).u32(v.len() as u32);
                        v.iter().for_each(|b| {
                            self.u8(u8::from(*b));
                        });
                    }
                    Value::Array(Array::I64(v)) => {
                        self.u8(6).u32(v.len() as u32);
                        v.iter().for_each(|i| {
                            self.u64(*i as u64);
                        });
                    }
                    Value::Array(Array::F64(v)) => {
                        self.u8(7).u32(v.len() as u32);
                        v.iter().for_each(|f| {
                            self.u64(f.to_bits());
                        });
                    }
                    other => panic!("{other:?}"),
                };
            }
            self
        }
        fn start(&mut self, h: u32, name: &str, attrs: &[KeyValue]) -> &mut Self {
            self.u8(1).u32(h).u8(0).u64(T0).str(name).attrs(attrs)
        }
    }

    const T0: u64 = 1_700_000_000_000_000_000;
    const CAP: usize = 12;

    fn time(n: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(n)
    }

    struct Setup {
        export: SpanExport,
        tracer: opentelemetry_sdk::trace::SdkTracer,
        sink: Arc<SpanSink>,
        _provider: SdkTracerProvider,
    }

    fn setup(sampler: Sampler) -> Setup {
        let export = SpanExport::detached(1);
        let limits = SpanLimits {
            max_attributes_per_span: 6,
            max_events_per_span: 2,
            max_attributes_per_event: 2,
            ..SpanLimits::default()
        };
        let scope = InstrumentationScope::builder(super::super::TRACER_NAME).build();
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler.clone())
            .with_span_limits(limits)
            .with_span_processor(export.processor(0))
            .build();
        let tracer = provider.tracer_with_scope(scope.clone());
        let sink = Arc::new(SpanSink::new(&export, 0, &scope, sampler, limits));
        Setup {
            export,
            tracer,
            sink,
            _provider: provider,
        }
    }

    fn request(s: &Setup, server: &SpanContext) -> RequestTrace {
        RequestTrace::new(
            s.tracer.clone(),
            s.sink.clone(),
            server.clone(),
            String::new(),
            String::new(),
            true,
            CAP,
        )
    }

    fn attrs() -> Vec<KeyValue> {
        vec![
            KeyValue::new("order.id", "o-1"),
            KeyValue::new("order.items", 3i64),
            KeyValue::new("order.express", true),
            KeyValue::new("order.total", 12.5),
            KeyValue::new("a.key.longer.than.the.cap", "a value longer than the cap é"),
            KeyValue::new(
                "tags",
                Value::Array(Array::String(vec!["x".into(), "é".repeat(9).into()])),
            ),
            KeyValue::new("ns", Value::Array(Array::I64((0..200).collect()))),
        ]
    }

    /// Span ids renumbered by order of appearance, times fixed where the
    /// per-call path takes "now": what must then be equal is everything
    /// the guest controls and everything the host adds.
    fn normalized(spans: Vec<(usize, EncodedSpan)>) -> Vec<SpanData> {
        let scope = InstrumentationScope::builder("polytrace").build();
        let mut ids = std::collections::HashMap::new();
        let mut renumber = |id: SpanId| {
            if id == SpanId::INVALID {
                return id;
            }
            let n = ids.len() as u64 + 1;
            *ids.entry(id).or_insert(SpanId::from(n))
        };
        spans
            .into_iter()
            .map(|(_, s)| {
                let mut d = s.to_span_data(scope.clone());
                let cx = &d.span_context;
                d.span_context = SpanContext::new(
                    cx.trace_id(),
                    renumber(cx.span_id()),
                    cx.trace_flags(),
                    cx.is_remote(),
                    cx.trace_state().clone(),
                );
                d.parent_span_id = renumber(d.parent_span_id);
                d.start_time = time(T0);
                for e in d.events.events.iter_mut() {
                    if e.name == "exception" {
                        e.timestamp = time(T0 + 5);
                    }
                }
                d
            })
            .collect()
    }

    #[test]
    fn batched_spans_are_the_spans_the_per_call_path_makes() {
        let s = setup(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let server = start_span(&s.tracer, "s".into(), SpanKind::Server, vec![], None);
        let server_cx = server.span_context().clone();

        // The per-call path, as the WIT glue drives it.
        let mut rt = request(&s, &server_cx);
        let mut outer = rt.start("validate_order".into(), SpanKind::Internal, attrs(), None);
        rt.push(1, outer.context().clone());
        rt.set_attribute(&mut outer, KeyValue::new("late", 1i64));
        rt.set_attribute(&mut outer, KeyValue::new("over.the.limit", 2i64));
        rt.add_event(
            &mut outer,
            "checkpoint".into(),
            vec![
                KeyValue::new("a", 1i64),
                KeyValue::new("b", 2i64),
                KeyValue::new("c", 3i64),
            ],
            Some(time(T0 + 1)),
        );
        rt.record_exception(
            &mut outer,
            "ValueError".into(),
            "bad things happened".into(),
            Some("at x".into()),
            true,
        );
        rt.add_event(
            &mut outer,
            "past.the.event.limit".into(),
            vec![],
            Some(time(T0 + 2)),
        );
        rt.set_status(&mut outer, Status::Ok);
        rt.set_status(&mut outer, Status::error("after ok"));
        rt.update_name(&mut outer, "renamed".into());
        let mut inner = rt.start(String::new(), SpanKind::Client, vec![], None);
        rt.push(2, inner.context().clone());
        assert_eq!(rt.current().span_id(), inner.context().span_id());
        rt.end(2, &mut inner, Some(time(T0 + 3)));
        rt.end(1, &mut outer, Some(time(T0 + 4)));
        let per_call_adjustments = rt.adjustments();
        let per_call = normalized(s.export.drain());

        // The same guest code through one batch.
        let mut rt = request(&s, &server_cx);
        let mut ops = Ops::default();
        ops.start(7, "validate_order", &attrs());
        ops.u8(3).u32(7).attrs(&[KeyValue::new("late", 1i64)]);
        ops.u8(3)
            .u32(7)
            .attrs(&[KeyValue::new("over.the.limit", 2i64)]);
        ops.u8(4).u32(7).u64(T0 + 1).str("checkpoint").attrs(&[
            KeyValue::new("a", 1i64),
            KeyValue::new("b", 2i64),
            KeyValue::new("c", 3i64),
        ]);
        ops.u8(5)
            .u32(7)
            .u64(T0 + 5)
            .str("ValueError")
            .str("bad things happened")
            .u8(1)
            .str("at x")
            .u8(1);
        ops.u8(4)
            .u32(7)
            .u64(T0 + 2)
            .str("past.the.event.limit")
            .attrs(&[]);
        ops.u8(6).u32(7).u8(1).str("");
        ops.u8(6).u32(7).u8(2).str("after ok");
        ops.u8(7).u32(7).str("renamed");
        ops.u8(1).u32(8).u8(2).u64(T0).str("").attrs(&[]);
        rt.apply_batch(&ops.0).unwrap();
        // Mid-batch state: the inner span is current, as on the per-call path.
        assert_eq!(rt.current().trace_id(), server_cx.trace_id());
        let inner_cx = rt.batched_context(8).unwrap().clone();
        assert_eq!(rt.current().span_id(), inner_cx.span_id());
        assert!(rt.batched_is_recording(8));
        let mut ops = Ops::default();
        ops.u8(8).u32(8).u64(T0 + 3);
        ops.u8(8).u32(7).u64(T0 + 4);
        rt.apply_batch(&ops.0).unwrap();
        assert_eq!(rt.current().span_id(), server_cx.span_id());
        assert!(!rt.batched_is_recording(8));
        assert_eq!(
            rt.batched_context(8),
            Some(&inner_cx),
            "ended spans are remembered"
        );
        let queued = s.export.drain();
        for (_, span) in &queued {
            // Written as the encoder writes a SpanData, field for field.
            let again = EncodedSpan::encode(&span.to_span_data(InstrumentationScope::default()), 0);
            assert_eq!(again.bytes(), span.bytes());
        }
        assert_eq!(normalized(queued), per_call);
        assert_eq!(rt.adjustments(), per_call_adjustments);
        assert_eq!(
            per_call_adjustments,
            Adjustments {
                dropped_spans: 0,
                truncated_values: 11,
                unnamed_spans: 1,
                invalid_values: 0,
            }
        );
        // What the limits did, to be sure the comparison covers them.
        let outer = &per_call[1];
        assert_eq!(outer.name, "renamed");
        assert_eq!(outer.attributes.len(), 6);
        assert_eq!(outer.dropped_attributes_count, 3);
        assert_eq!(outer.events.len(), 2);
        assert_eq!(outer.events.dropped_count, 1);
        assert_eq!(outer.status, Status::Ok);
        assert_eq!(per_call[0].span_kind, SpanKind::Client);
        assert_eq!(per_call[0].parent_span_id, outer.span_context.span_id());
    }

    #[test]
    fn explicit_parents_sampling_and_abandoned_spans() {
        let s = setup(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let server = start_span(&s.tracer, "s".into(), SpanKind::Server, vec![], None);
        let mut rt = request(&s, server.span_context());
        let mut ops = Ops::default();
        // A remote parent that is not sampled: the span is not recorded.
        ops.u8(2).u32(1).u8(4).u64(T0).str("consume");
        ops.0.extend_from_slice(&[0xab; 16]);
        ops.0.extend_from_slice(&[0xcd; 8]);
        ops.u8(0)
            .u8(1)
            .str("k=v")
            .attrs(&[KeyValue::new("x", 1i64)]);
        // A sampled remote parent: recorded, in the parent's trace.
        ops.u8(2).u32(2).u8(4).u64(T0).str("consume");
        ops.0.extend_from_slice(&[0xab; 16]);
        ops.0.extend_from_slice(&[0xcd; 8]);
        ops.u8(1).u8(1).str("k=v").attrs(&[]);
        // Left open.
        ops.start(3, "left.open", &[]);
        rt.apply_batch(&ops.0).unwrap();
        assert!(!rt.batched_is_recording(1));
        assert!(!rt.batched_context(1).unwrap().is_sampled());
        assert!(rt.batched_is_recording(2));
        assert!(rt.take_open().is_empty());
        let spans = s.export.drain();
        assert_eq!(spans.len(), 2, "the unsampled span is not queued");
        let abandoned = spans[0].1.view();
        assert_eq!(abandoned.name, "left.open");
        assert!(abandoned.attributes().any(|a| a.key == AUTO_ENDED));
        let consumer = spans[1].1.to_span_data(InstrumentationScope::default());
        assert_eq!(
            consumer.span_context.trace_id(),
            TraceId::from_bytes([0xab; 16])
        );
        assert_eq!(consumer.parent_span_id, SpanId::from_bytes([0xcd; 8]));
        assert!(consumer.parent_span_is_remote);
        assert_eq!(consumer.span_context.trace_state().header(), "k=v");

        // Nothing recorded under always_off.
        let s = setup(Sampler::AlwaysOff);
        let server = start_span(&s.tracer, "s".into(), SpanKind::Server, vec![], None);
        let mut rt = request(&s, server.span_context());
        let mut ops = Ops::default();
        ops.start(1, "a", &[]).u8(8).u32(1).u64(0);
        rt.apply_batch(&ops.0).unwrap();
        assert!(s.export.drain().is_empty());
    }

    #[test]
    fn the_span_cap_counts_batched_spans_too() {
        let s = setup(Sampler::AlwaysOn);
        let server = start_span(&s.tracer, "s".into(), SpanKind::Server, vec![], None);
        let mut rt = request(&s, server.span_context());
        let mut ops = Ops::default();
        for h in 1..=MAX_SPANS_PER_REQUEST as u32 + 5 {
            ops.start(h, "n", &[KeyValue::new("i", 1i64)])
                .u8(8)
                .u32(h)
                .u64(T0 + 1);
        }
        rt.apply_batch(&ops.0).unwrap();
        assert_eq!(s.export.drain().len(), MAX_SPANS_PER_REQUEST as usize);
        assert_eq!(rt.adjustments().dropped_spans, 5);
    }

    #[test]
    fn malformed_batches_are_refused_where_they_go_wrong() {
        let s = setup(Sampler::AlwaysOn);
        let server = start_span(&s.tracer, "s".into(), SpanKind::Server, vec![], None);
        let mut rt = request(&s, server.span_context());
        let mut ops = Ops::default();
        ops.start(1, "kept", &[]).u8(8).u32(1).u64(T0 + 1);
        let good = ops.0.len();
        ops.u8(99);
        assert_eq!(
            rt.apply_batch(&ops.0),
            Err(BatchError {
                offset: good,
                what: "unknown operation",
                json: false,
            })
        );
        assert_eq!(
            s.export.drain().len(),
            1,
            "operations before the bad one stay applied"
        );
        // Unknown handles do nothing; a handle opened twice is refused.
        let mut ops = Ops::default();
        ops.u8(3)
            .u32(42)
            .attrs(&[KeyValue::new("a", 1i64)])
            .u8(8)
            .u32(42)
            .u64(0);
        ops.start(2, "a", &[]).start(2, "b", &[]);
        assert_eq!(
            rt.apply_batch(&ops.0).unwrap_err().what,
            "span handle already open"
        );
        // A count larger than the buffer is refused before allocating.
        let mut ops = Ops::default();
        ops.u8(3).u32(2).u32(u32::MAX);
        assert_eq!(
            rt.apply_batch(&ops.0).unwrap_err().what,
            "count larger than the batch"
        );
        // Spans started and never ended: refused past the cap, and ended
        // (auto-ended, at most MAX_SPANS_PER_REQUEST recorded) with the request.
        let mut ops = Ops::default();
        for h in 100..100 + MAX_OPEN_BATCHED as u32 + 1 {
            ops.start(h, "leaked", &[]);
        }
        assert_eq!(rt.apply_batch(&ops.0).unwrap_err().what, TOO_MANY_OPEN);
        assert!(rt.take_open().is_empty());
        assert!(rt.batched.is_empty());
        s.export.drain();
        // Every prefix and byte flip of a valid batch: an error or applied, never a panic.
        let mut ops = Ops::default();
        ops.start(10, "s", &attrs())
            .u8(4)
            .u32(10)
            .u64(T0)
            .str("e")
            .attrs(&attrs())
            .u8(8)
            .u32(10)
            .u64(T0);
        for n in 0..ops.0.len() {
            let _ = rt.apply_batch(&ops.0[..n]);
            let mut flipped = ops.0.clone();
            flipped[n] ^= 0xff;
            let _ = rt.apply_batch(&flipped);
            rt.take_open();
        }
    }

    #[test]
    fn text_that_is_not_utf8_is_kept_with_replacement_characters() {
        let s = setup(Sampler::AlwaysOn);
        let server = start_span(&s.tracer, "s".into(), SpanKind::Server, vec![], None);
        let mut rt = request(&s, server.span_context());
        let mut ops = Ops::default();
        ops.start(1, "n~", &[KeyValue::new("k", "v~é")])
            .u8(8)
            .u32(1)
            .u64(T0 + 1);
        for marker in [&b"n~"[..], b"v~"] {
            let at = ops.0.windows(2).position(|w| w == marker).unwrap();
            ops.0[at + 1] = 0xff;
        }
        rt.apply_batch(&ops.0).unwrap();
        let spans = s.export.drain();
        let scope = InstrumentationScope::builder("polytrace").build();
        let d = spans[0].1.to_span_data(scope);
        assert_eq!(d.name, "n\u{FFFD}");
        assert_eq!(d.attributes[0].value, Value::from("v\u{FFFD}é"));
    }

    #[test]
    fn the_json_form_makes_the_same_spans() {
        let s = setup(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let server = start_span(&s.tracer, "s".into(), SpanKind::Server, vec![], None);
        let server_cx = server.span_context().clone();
        let events = |t: u64| {
            let mut ops = Ops::default();
            ops.u8(1)
                .u32(7)
                .u8(3)
                .u64(T0 + t)
                .str("validate_order")
                .attrs(&[
                    KeyValue::new("order.id", "o-1"),
                    KeyValue::new("order.items", 3i64),
                    KeyValue::new("order.express", true),
                    KeyValue::new("order.total", 12.5),
                    KeyValue::new("big", 1e21),
                    KeyValue::new("tags", Value::Array(Array::String(vec!["x".into()]))),
                    KeyValue::new("ns", Value::Array(Array::I64(vec![1, -2]))),
                    KeyValue::new("fs", Value::Array(Array::F64(vec![1.5, 2.0]))),
                    KeyValue::new("id", -9_007_199_254_740_993i64),
                    KeyValue::new("nan", f64::NAN),
                ]);
            ops.u8(4)
                .u32(7)
                .u64(T0 + t + 1_500_000)
                .str("checkpoint")
                .attrs(&[KeyValue::new("a", 1i64)]);
            ops.u8(5)
                .u32(7)
                .u64(T0 + t + 2_000_000)
                .str("Error")
                .str("boom")
                .u8(0)
                .u8(1);
            ops.u8(7).u32(7).str("renamed");
            ops.u8(2).u32(8).u8(4).u64(T0 + t).str("consume");
            ops.0.extend_from_slice(&[0xab; 16]);
            ops.0.extend_from_slice(&[0xcd; 8]);
            ops.u8(1).u8(1).str("k=v").attrs(&[]);
            ops.u8(6).u32(8).u8(2).str("bad");
            ops.u8(8).u32(8).u64(T0 + t + 3_000_000);
            ops.u8(8).u32(7).u64(T0 + t + 4_000_000);
            ops
        };
        let mut rt = request(&s, &server_cx);
        rt.apply_batch(&events(0).0).unwrap();
        let binary = normalized(s.export.drain());
        assert_eq!(binary.len(), 2);

        let mut rt = request(&s, &server_cx);
        // Times are milliseconds after the origin; a bigint travels as {"s64": text}.
        let json = format!(
            r#"["{T0}",
            [1,7,3,0,"validate_order",{{"order.id":"o-1","order.items":3,"order.express":true,
              "order.total":12.5,"big":1e21,"tags":["x"],"ns":[1,-2],"fs":[1.5,2.0],
              "id":{{"s64":"-9007199254740993"}},"nan":{{"f64":"nan"}},"skip.null":null,"skip.object":{{"a":1}},"skip.mixed":[1,"a"]}}],
            [4,7,1.5,"checkpoint",{{"a":1}}],
            [5,7,2,"Error","boom",null,true],
            [7,7,"renamed"],
            [2,8,4,0,"consume",{{}},"{}","{}",1,true,"k=v"],
            [6,8,2,"bad"],
            [8,8,3],
            [8,7,4]]"#,
            "ab".repeat(16),
            "cd".repeat(8)
        );
        rt.apply_batch(json.as_bytes()).unwrap();
        assert_eq!(normalized(s.export.drain()), binary);
        assert_eq!(rt.adjustments().invalid_values, 3);
        assert!(rt.adjustments().attributes().contains(&KeyValue::new(
            crate::telemetry::attributes::INVALID_VALUES,
            3
        )));
        // A safe integer is an s64; past 2^53 - 1 it is an f64, as in JavaScript.
        let mut rt = request(&s, &server_cx);
        rt.apply_batch(format!(r#"["{T0}",[1,1,0,1,"n",{{"safe":9007199254740991,"unsafe":9007199254740993}}],[8,1,2]]"#).as_bytes())
            .unwrap();
        let span = s.export.drain().pop().unwrap().1;
        let span = span.to_span_data(InstrumentationScope::default());
        assert_eq!(span.attributes[0].value, Value::I64(9_007_199_254_740_991));
        assert_eq!(
            span.attributes[1].value,
            Value::F64(9_007_199_254_740_993.0)
        );
        assert_eq!(span.start_time, time(T0 + 1_000_000));
        // Malformed: refused at the operation's index, earlier ones applied.
        let err = rt
            .apply_batch(format!(r#"["{T0}",[1,2,0,1,"a",{{}}],[1,3,9,1,"b",{{}}]]"#).as_bytes())
            .unwrap_err();
        assert_eq!((err.offset, err.what), (2, "malformed operation"));
        assert!(rt.batched_is_recording(2));
        // Malformed operations are skipped, the rest applied.
        let err = rt
            .apply_batch(format!(r#"["{T0}",[1,4,0,1,"a",7],[1,5,0,1,"b",{{}}]]"#).as_bytes())
            .unwrap_err();
        assert_eq!((err.offset, err.what), (1, "malformed operation"));
        assert!(!rt.batched_is_recording(4));
        assert!(rt.batched_is_recording(5));
        assert_eq!(rt.apply_batch(b"[}").unwrap_err().what, "not valid JSON");
        assert_eq!(rt.apply_batch(b"[1,2").unwrap_err().what, "no time origin");
        assert_eq!(rt.apply_batch(b"[[1]]").unwrap_err().what, "no time origin");
        let err = rt
            .apply_batch(format!(r#"["{T0}",[8,5,1e300]]"#).as_bytes())
            .unwrap_err();
        assert_eq!(
            err.what, "malformed operation",
            "a time past u64 is refused, not wrapped"
        );
        // Every prefix of a valid batch: an error or applied, never a panic.
        for n in 0..json.len() {
            let _ = rt.apply_batch(&json.as_bytes()[..n]);
            rt.take_open();
        }
    }

    /// A value as CPython's `marshal.dumps(x, 2)` writes it.
    enum M<'a> {
        None,
        Bool(bool),
        Int(i128),
        Float(f64),
        Str(&'a str),
        Tuple(Vec<M<'a>>),
        List(Vec<M<'a>>),
        Dict(Vec<(M<'a>, M<'a>)>),
        /// Bytes written as they are (a type the host does not take).
        Raw(&'a [u8]),
    }

    impl M<'_> {
        fn dump(&self, out: &mut Vec<u8>) {
            let len = |out: &mut Vec<u8>, n: usize| out.extend((n as i32).to_le_bytes());
            match self {
                M::None => out.push(b'N'),
                M::Bool(b) => out.push(if *b { b'T' } else { b'F' }),
                M::Int(i) => match i32::try_from(*i) {
                    Ok(small) => {
                        out.push(b'i');
                        out.extend(small.to_le_bytes());
                    }
                    Err(_) => {
                        let mut digits = Vec::new();
                        let mut a = i.unsigned_abs();
                        while a > 0 {
                            digits.push((a & 0x7fff) as u16);
                            a >>= 15;
                        }
                        out.push(b'l');
                        let n = digits.len() as i32;
                        out.extend((if *i < 0 { -n } else { n }).to_le_bytes());
                        digits.iter().for_each(|d| out.extend(d.to_le_bytes()));
                    }
                },
                M::Float(f) => {
                    out.push(b'g');
                    out.extend(f.to_le_bytes());
                }
                M::Str(s) => {
                    out.push(b'u');
                    len(out, s.len());
                    out.extend(s.as_bytes());
                }
                M::Tuple(items) | M::List(items) => {
                    out.push(if matches!(self, M::Tuple(_)) {
                        b'('
                    } else {
                        b'['
                    });
                    len(out, items.len());
                    items.iter().for_each(|i| i.dump(out));
                }
                M::Dict(entries) => {
                    out.push(b'{');
                    for (k, v) in entries {
                        k.dump(out);
                        v.dump(out);
                    }
                    out.push(b'0');
                }
                M::Raw(bytes) => out.extend(*bytes),
            }
        }

        /// A batch of these operations.
        fn batch(ops: Vec<M<'_>>) -> Vec<u8> {
            let mut out = Vec::new();
            M::Tuple(ops).dump(&mut out);
            out
        }
    }

    /// End batched span `handle` "now" in marshal form; the span made.
    fn end_marshal(rt: &mut RequestTrace, s: &Setup, handle: i128) -> SpanData {
        let end = M::Tuple(vec![M::Int(8), M::Int(handle), M::None]);
        rt.apply_batch(&M::batch(vec![end])).unwrap();
        let span = s.export.drain().pop().unwrap().1;
        span.to_span_data(InstrumentationScope::default())
    }

    fn attr<'a>(k: &'a str, v: M<'a>) -> (M<'a>, M<'a>) {
        (M::Str(k), v)
    }

    #[test]
    fn the_test_encoder_writes_what_cpython_writes() {
        // python3 -c 'import marshal; print(marshal.dumps(((1, 7, 0, None,
        //   "bench.span", {"bench.string": "value", "bench.bool": True,
        //   "bench.int": 1 << 40, "bench.float": 0.5, "bench.l": [1, 2]}),), 2).hex())'
        // (CPython 3.11 natively and componentize-py's CPython write the same.)
        let cpython = "280100000028060000006901000000690700000069000000004e750a00000062656e63682e7370616e7b750c00000062656e63682e737472696e67750500000076616c7565750a00000062656e63682e626f6f6c54750900000062656e63682e696e746c03000000000000000004750b00000062656e63682e666c6f617467000000000000e03f750700000062656e63682e6c5b020000006901000000690200000030";
        let ours = M::batch(vec![M::Tuple(vec![
            M::Int(1),
            M::Int(7),
            M::Int(0),
            M::None,
            M::Str("bench.span"),
            M::Dict(vec![
                attr("bench.string", M::Str("value")),
                attr("bench.bool", M::Bool(true)),
                attr("bench.int", M::Int(1 << 40)),
                attr("bench.float", M::Float(0.5)),
                attr("bench.l", M::List(vec![M::Int(1), M::Int(2)])),
            ]),
        ])]);
        let hex: String = ours.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, cpython);

        let s = setup(Sampler::AlwaysOn);
        let server = start_span(&s.tracer, "s".into(), SpanKind::Server, vec![], None);
        let mut rt = request(&s, server.span_context());
        rt.apply_batch(&ours).unwrap();
        let span = end_marshal(&mut rt, &s, 7);
        assert_eq!(span.name, "bench.span");
        assert_eq!(
            span.attributes,
            vec![
                KeyValue::new("bench.string", "value"),
                KeyValue::new("bench.bool", true),
                KeyValue::new("bench.int", 1i64 << 40),
                KeyValue::new("bench.float", 0.5),
                KeyValue::new("bench.l", Value::Array(Array::I64(vec![1, 2]))),
            ]
        );
    }

    #[test]
    fn the_marshal_form_makes_the_same_spans_with_python_types() {
        let s = setup(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let server = start_span(&s.tracer, "s".into(), SpanKind::Server, vec![], None);
        let server_cx = server.span_context().clone();
        let t = |ns: u64| M::Int(i128::from(T0 + ns));
        let mut ops = Ops::default();
        ops.u8(1)
            .u32(7)
            .u8(3)
            .u64(T0)
            .str("validate_order")
            .attrs(&[
                KeyValue::new("order.id", "o-1"),
                KeyValue::new("order.items", 3i64),
                KeyValue::new("order.express", true),
                KeyValue::new("order.total", 12.5),
                KeyValue::new("whole", 2.0),
                KeyValue::new("big", 1i64 << 60),
                KeyValue::new("tags", Value::Array(Array::String(vec!["x".into()]))),
                KeyValue::new("ns", Value::Array(Array::I64(vec![1, -2]))),
                KeyValue::new("mixed", Value::Array(Array::F64(vec![1.0, 2.5]))),
                KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("nan", f64::NAN),
            ]);
        ops.u8(4)
            .u32(7)
            .u64(T0 + 1_500_000)
            .str("checkpoint")
            .attrs(&[KeyValue::new("a", 1i64)]);
        ops.u8(5)
            .u32(7)
            .u64(T0 + 2_000_000)
            .str("Error")
            .str("boom")
            .u8(1)
            .str("Traceback")
            .u8(1);
        ops.u8(7).u32(7).str("renamed");
        ops.u8(2).u32(8).u8(4).u64(T0).str("consume");
        ops.0.extend_from_slice(&[0xab; 16]);
        ops.0.extend_from_slice(&[0xcd; 8]);
        ops.u8(1).u8(1).str("k=v").attrs(&[]);
        ops.u8(6).u32(8).u8(2).str("bad");
        ops.u8(8).u32(8).u64(T0 + 3_000_000);
        ops.u8(8).u32(7).u64(T0 + 4_000_000);
        let mut rt = request(&s, &server_cx);
        rt.apply_batch(&ops.0).unwrap();
        let binary = normalized(s.export.drain());
        assert_eq!(binary.len(), 2);

        let trace_id = "ab".repeat(16);
        let span_id = "cd".repeat(8);
        let batch = M::batch(vec![
            M::Tuple(vec![
                M::Int(1),
                M::Int(7),
                M::Int(3),
                t(0),
                M::Str("validate_order"),
                M::Dict(vec![
                    attr("order.id", M::Str("o-1")),
                    attr("order.items", M::Int(3)),
                    attr("order.express", M::Bool(true)),
                    attr("order.total", M::Float(12.5)),
                    // A Python float stays a float, an int past 2^53 an int.
                    attr("whole", M::Float(2.0)),
                    attr("big", M::Int(1 << 60)),
                    attr("tags", M::List(vec![M::Str("x")])),
                    attr("ns", M::Tuple(vec![M::Int(1), M::Int(-2)])),
                    attr("mixed", M::List(vec![M::Int(1), M::Float(2.5)])),
                    attr("flags", M::List(vec![M::Bool(true), M::Bool(false)])),
                    attr("nan", M::Float(f64::NAN)),
                    // Not attribute values: left out and counted.
                    attr("skip.none", M::None),
                    attr("skip.huge", M::Int(1 << 64)),
                    attr("skip.bytes", M::Raw(b"s\x02\x00\x00\x00ab")),
                    attr("skip.set", M::Raw(b"<\x01\x00\x00\x00i\x01\x00\x00\x00")),
                    attr("skip.dict", M::Dict(vec![])),
                    attr("skip.nested", M::List(vec![M::List(vec![])])),
                    attr("skip.bool.int", M::List(vec![M::Bool(true), M::Int(1)])),
                    attr("", M::Int(1)),
                    (M::Int(5), M::Int(1)),
                ]),
            ]),
            M::Tuple(vec![
                M::Int(4),
                M::Int(7),
                t(1_500_000),
                M::Str("checkpoint"),
                M::Dict(vec![attr("a", M::Int(1))]),
            ]),
            M::Tuple(vec![
                M::Int(5),
                M::Int(7),
                t(2_000_000),
                M::Str("Error"),
                M::Str("boom"),
                M::Str("Traceback"),
                M::Bool(true),
            ]),
            M::Tuple(vec![M::Int(7), M::Int(7), M::Str("renamed")]),
            M::Tuple(vec![
                M::Int(2),
                M::Int(8),
                M::Int(4),
                t(0),
                M::Str("consume"),
                M::Dict(vec![]),
                M::Str(&trace_id),
                M::Str(&span_id),
                M::Int(1),
                M::Bool(true),
                M::Str("k=v"),
            ]),
            M::Tuple(vec![M::Int(6), M::Int(8), M::Int(2), M::Str("bad")]),
            M::Tuple(vec![M::Int(8), M::Int(8), t(3_000_000)]),
            M::Tuple(vec![M::Int(8), M::Int(7), t(4_000_000)]),
        ]);
        let mut rt = request(&s, &server_cx);
        rt.apply_batch(&batch).unwrap();
        assert_eq!(normalized(s.export.drain()), binary);
        assert_eq!(rt.adjustments().invalid_values, 9);

        // None is "now"; a malformed operation is skipped, the rest applied.
        let mut rt = request(&s, &server_cx);
        let err = rt
            .apply_batch(&M::batch(vec![
                M::Tuple(vec![M::Int(1), M::Int(1), M::Int(0), M::None, M::Str("a")]),
                M::Tuple(vec![
                    M::Int(1),
                    M::Int(2),
                    M::Int(0),
                    M::None,
                    M::Str("b"),
                    M::Dict(vec![]),
                ]),
                M::Tuple(vec![M::Int(8), M::Int(2), M::Float(1.0)]),
                M::Str("not an operation"),
            ]))
            .unwrap_err();
        assert_eq!((err.offset, err.what), (1, "malformed operation"));
        assert!(!rt.batched_is_recording(1));
        assert!(rt.batched_is_recording(2), "a float time is malformed");
        let span = end_marshal(&mut rt, &s, 2);
        assert!(span.start_time > time(T0) && span.end_time >= span.start_time);
    }

    #[test]
    fn a_hostile_marshal_batch_is_refused_without_panicking() {
        let s = setup(Sampler::AlwaysOn);
        let server = start_span(&s.tracer, "s".into(), SpanKind::Server, vec![], None);
        let mut rt = request(&s, server.span_context());
        let what = |rt: &mut RequestTrace, bytes: &[u8]| rt.apply_batch(bytes).unwrap_err().what;
        let refused: [(&[u8], &str); 8] = [
            (b"(\xff\xff\xff\xff", "negative length"),
            (b"(\xff\xff\xff\x7f", "length past the end"),
            (b"(\x01\x00", "truncated"),
            (
                b"(\x01\x00\x00\x00u\x10\x00\x00\x00ab",
                "length past the end",
            ),
            (
                b"(\x01\x00\x00\x00c",
                "a marshal type a span batch does not take",
            ),
            // A back-reference flag (format 3 and later) is not version 2.
            (
                b"(\x01\x00\x00\x00\xe9\x01\x00\x00\x00",
                "a marshal type a span batch does not take",
            ),
            (
                b"(\x01\x00\x00\x00l\x01\x00\x00\x00\xff\xff",
                "an int digit past 15 bits",
            ),
            (b"(\x00\x00\x00\x00N", "bytes after the batch"),
        ];
        for (bytes, expected) in refused {
            assert_eq!(what(&mut rt, bytes), expected, "{bytes:?}");
        }
        // Nesting is bounded (no deep recursion on the host's stack).
        let mut deep = b"(\x01\x00\x00\x00".to_vec();
        for _ in 0..10_000 {
            deep.extend(b"[\x01\x00\x00\x00");
        }
        deep.push(b'N');
        assert_eq!(what(&mut rt, &deep), "values nested too deep");
        // A batch of a million one-byte values is refused, not held.
        let mut many = b"(\x01\x00\x00\x00(\x00\x00\x20\x00".to_vec();
        many.resize(many.len() + (1 << 21), b'N');
        assert_eq!(
            what(&mut rt, &many),
            "more than 1048576 values in one batch"
        );
        // A dict without its end runs out of bytes.
        assert_eq!(what(&mut rt, b"(\x01\x00\x00\x00{NN"), "truncated");
        // Every prefix of a valid batch: an error or applied, never a panic.
        let batch = M::batch(vec![
            M::Tuple(vec![
                M::Int(1),
                M::Int(1),
                M::Int(0),
                M::None,
                M::Str("n"),
                M::Dict(vec![
                    attr("k", M::List(vec![M::Int(1 << 40), M::Float(0.5)])),
                    attr("s", M::Str("é")),
                ]),
            ]),
            M::Tuple(vec![M::Int(8), M::Int(1), M::None]),
        ]);
        for n in 1..batch.len() {
            let _ = rt.apply_batch(&batch[..n]);
            rt.take_open();
        }
    }

    #[test]
    fn the_current_span_is_the_innermost_open_one_in_any_end_order() {
        let s = setup(Sampler::AlwaysOn);
        let server = start_span(&s.tracer, "s".into(), SpanKind::Server, vec![], None);
        let mut rt = request(&s, server.span_context());
        // A model of the open stack: handles, innermost last.
        let mut model: Vec<u32> = Vec::new();
        let mut next = 1u32;
        let mut seed = 7u64;
        for step in 0..5000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut ops = Ops::default();
            if model.is_empty() || !(seed >> 33).is_multiple_of(3) || step < 300 {
                ops.start(next, "s", &[]);
                model.push(next);
                next += 1;
            } else {
                // End an open span anywhere in the stack, mostly deep ones.
                let i = ((seed >> 40) as usize) % model.len();
                ops.u8(8).u32(model.remove(i)).u64(T0 + 1);
            }
            rt.apply_batch(&ops.0).unwrap();
            let expected = model
                .last()
                .map(|h| rt.batched_context(*h).unwrap().span_id());
            assert_eq!(
                Some(rt.current().span_id()),
                expected.or(Some(server.span_context().span_id())),
                "step {step}"
            );
            assert!(
                rt.open.len() <= 2 * model.len() + 66,
                "ended entries are compacted"
            );
        }
        s.export.drain();
        // Too many operations in one call: refused past the cap.
        let mut ops = Ops::default();
        for _ in 0..=MAX_BATCH_OPERATIONS {
            ops.u8(7).u32(1).str("");
        }
        assert_eq!(
            rt.apply_batch(&ops.0).unwrap_err().what,
            TOO_MANY_OPERATIONS
        );
        assert_eq!(
            rt.apply_batch(&vec![8u8; MAX_BATCH_BYTES + 1])
                .unwrap_err()
                .what,
            "batch larger than 16 MiB"
        );
    }

    #[test]
    fn a_sampled_out_span_counts_cuts_as_the_per_call_path_does() {
        let s = setup(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let server = start_span(&s.tracer, "s".into(), SpanKind::Server, vec![], None);
        let parent = SpanContext::new(
            TraceId::from_bytes([0xab; 16]),
            SpanId::from_bytes([0xcd; 8]),
            TraceFlags::default(),
            true,
            TraceState::default(),
        );
        let long = "a value longer than the cap";
        let mut rt = request(&s, server.span_context());
        let mut span = rt.start("n".into(), SpanKind::Consumer, vec![], Some(parent));
        assert!(!span.is_recording());
        rt.push(1, span.context().clone());
        rt.set_attribute(&mut span, KeyValue::new("k", long));
        rt.add_event(&mut span, long.into(), vec![KeyValue::new("k", long)], None);
        rt.record_exception(&mut span, "T".into(), long.into(), None, true);
        rt.update_name(&mut span, long.into());
        rt.end(1, &mut span, None);
        let per_call = rt.adjustments();
        assert!(per_call.truncated_values >= 5, "{per_call:?}");

        let mut rt = request(&s, server.span_context());
        let mut ops = Ops::default();
        ops.u8(2).u32(1).u8(4).u64(0).str("n");
        ops.0.extend_from_slice(&[0xab; 16]);
        ops.0.extend_from_slice(&[0xcd; 8]);
        ops.u8(0).u8(1).str("").attrs(&[]);
        ops.u8(3).u32(1).attrs(&[KeyValue::new("k", long)]);
        ops.u8(4)
            .u32(1)
            .u64(0)
            .str(long)
            .attrs(&[KeyValue::new("k", long)]);
        ops.u8(5).u32(1).u64(0).str("T").str(long).u8(0).u8(1);
        ops.u8(7).u32(1).str(long);
        ops.u8(8).u32(1).u64(0);
        rt.apply_batch(&ops.0).unwrap();
        assert_eq!(rt.adjustments(), per_call);
        assert!(s.export.drain().is_empty(), "nothing recorded");
    }
}
