//! The store's writer: one thread that turns queued batches into rows, one
//! SQLite transaction for everything waiting at once, and retention.
//!
//! Spans are written in blocks of up to [`BLOCK_SPANS`] (the model is in
//! [`super::block`]): each span's fixed-size head goes into the block's
//! heads, its attributes and events into the block's zstd-compressed
//! payload as the bytes of their OTLP fields, copied from the span's
//! encoded message (nothing is decoded or re-encoded but what search keys
//! need), and the block gets one row per table
//! with what searches use to skip it or find spans in it: a Bloom filter
//! over its search keys, its spans' trace keys and the traces of its
//! failed spans. A span has no row of its own, and a write appends to the
//! ends of tables only; nothing is inserted at random places of a large
//! B-tree.

use super::block::{self, Head, unhex};
use super::{Msg, StoreConfig, StoreStats, StoredLog, StoredSpan, now_us, stored_log};
use crate::telemetry::traces::encoded::{self, AttributeView, SpanView, ValueView};
use opentelemetry::trace::Event;
use opentelemetry::{KeyValue, StringValue, Value};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};
use serde_json::Value as Json;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The writer's maps, keyed by names of the spans being written.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// What a span given as a `StoredSpan` (tests, imports) is reckoned to
/// weigh before it is written, for the per-transaction limit.
const STORED_SPAN_BYTES: usize = 512;

/// The age limit is applied this often (and at start); the size limit
/// after every transaction.
const RETENTION_PERIOD: Duration = Duration::from_secs(60);

/// Longer attribute values are stored but not indexed for search.
pub(super) const MAX_INDEXED_VALUE: usize = 256;

pub(super) struct Writer {
    pub(super) conn: Arc<Mutex<Connection>>,
    pub(super) stats: Arc<StoreStats>,
    pub(super) config: StoreConfig,
    /// One compression context for the thread's life (making one costs
    /// more than compressing a small block).
    pub(super) zstd: zstd::bulk::Compressor<'static>,
    /// The last block id written (read from the file once).
    pub(super) last_block: Option<i64>,
}

/// The largest block id the file has used, in any table.
fn last_block(c: &Connection) -> rusqlite::Result<i64> {
    let mut last = 0;
    for table in ["blocks", "block_traces", "block_spans", "payloads"] {
        let key = if table == "blocks" { "id" } else { "block" };
        let max: Option<i64> = c
            .prepare_cached(&format!("SELECT MAX({key}) FROM {table}"))?
            .query_row([], |r| r.get(0))?;
        last = last.max(max.unwrap_or_default());
    }
    Ok(last)
}

/// Spans per block: a block is read and decompressed whole to show any
/// of its spans, so it stays small (~100–300 KB of JSON).
pub(super) const BLOCK_SPANS: usize = 256;

/// Spans the writer handles between two offers of its core (`give_way`).
const YIELD_EVERY: usize = 32;

/// Offer the core to a waiting thread every [`YIELD_EVERY`]th span `n`.
///
/// A block of spans is ~1 ms of CPU and a transaction several blocks. Left
/// alone, the scheduler lets this thread run on for up to a tick (4 ms at
/// HZ=250) after a request thread woke on its core: that wait was the
/// traced host's p99 under load (overhead benchmark, 4 connections:
/// 1.6–1.8 ms, against 0.34–0.40 ms untraced; 0.44–0.48 ms with this,
/// docs/benchmarks.md, round 7). A yield with nobody waiting costs a
/// syscall: ~0.01 µs a span.
fn give_way(n: usize) {
    if n % YIELD_EVERY == YIELD_EVERY - 1 {
        std::thread::yield_now();
    }
}

/// zstd's level for blocks: its fastest regular level (attributes repeat
/// from span to span, so even this shrinks them ~8×).
pub(super) const BLOCK_LEVEL: i32 = 1;

/// One span as it is written: its [`Head`] but for the indexes of its
/// names, which the block assigns, and its service and operation. Its
/// attributes and events (their OTLP `Span` fields, see [`append_data`]) and
/// status message are appended to the block's payload, the hashes of its
/// searchable `key=value` pairs to the block's search keys.
struct Row<'a> {
    head: Head,
    service: &'a str,
    operation: &'a str,
}

/// Where a span comes from: the export worker's batches, or spans already
/// in the stored shape (tests, benchmarks).
enum Source<'a> {
    Span(&'a str, SpanView<'a>),
    Stored(&'a StoredSpan),
}

impl<'a> Row<'a> {
    /// The row of a span; its data is appended to `payload`, the search
    /// keys of its attributes to `keys`.
    fn new(
        source: Source<'a>,
        payload: &mut Vec<u8>,
        text: &mut String,
        keys: &mut Vec<i64>,
    ) -> Row<'a> {
        match source {
            Source::Span(service, s) => Row::from_span(service, s, payload, text, keys),
            Source::Stored(s) => Row::from_stored(s, payload, text, keys),
        }
    }

    fn from_span(
        service: &'a str,
        s: SpanView<'a>,
        payload: &mut Vec<u8>,
        text: &mut String,
        keys: &mut Vec<i64>,
    ) -> Row<'a> {
        let status = match s.status_code {
            1 => 1,
            2 => 2,
            _ => 0,
        };
        let start_us = (s.start_time_unix_nano / 1_000) as i64;
        let end_us = (s.end_time_unix_nano / 1_000) as i64;
        let message = if status == 2 { s.status_message } else { "" };
        let head = Head {
            trace_id: s.trace_id,
            span_id: s.span_id,
            parent_id: s.parent_span_id,
            start_us,
            duration_us: (end_us - start_us).max(0),
            status,
            kind: kind_code(s.kind),
            ..Head::default()
        };
        Row {
            head: append_data(head, &s, message, payload, text, keys),
            service,
            operation: s.name,
        }
    }

    fn from_stored(
        s: &'a StoredSpan,
        payload: &mut Vec<u8>,
        text: &mut String,
        keys: &mut Vec<i64>,
    ) -> Row<'a> {
        // Its attributes and events encoded as a span's fields, then written
        // as a span's are.
        let mut data = Vec::new();
        let attributes: Vec<KeyValue> = s
            .attributes
            .as_array()
            .into_iter()
            .flatten()
            .map(stored_key_value)
            .collect();
        encoded::put_attributes(&mut data, &attributes);
        let events: Vec<Event> = s
            .events
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                // µs since the Unix epoch; one before it, or past what
                // OTLP's nanoseconds hold, is the epoch.
                let time = e["timestamp"]
                    .as_u64()
                    .filter(|us| *us <= u64::MAX / 1_000)
                    .and_then(|us| std::time::UNIX_EPOCH.checked_add(Duration::from_micros(us)))
                    .unwrap_or(std::time::UNIX_EPOCH);
                Event::new(
                    e["name"].as_str().unwrap_or_default().to_string(),
                    time,
                    e["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(stored_key_value)
                        .collect(),
                    0,
                )
            })
            .collect();
        encoded::put_events(&mut data, &events);
        let head = Head {
            trace_id: unhex(&s.trace_id).unwrap_or_default(),
            span_id: unhex(&s.span_id).unwrap_or_default(),
            parent_id: unhex(&s.parent_id),
            start_us: s.start_us,
            duration_us: s.duration_us,
            kind: block::kind_code(&s.kind),
            status: match s.status {
                1 => 1,
                2 => 2,
                _ => 0,
            },
            ..Head::default()
        };
        Row {
            head: append_data(
                head,
                &SpanView::parse(&data),
                &s.status_message,
                payload,
                text,
                keys,
            ),
            service: &s.service,
            operation: &s.operation,
        }
    }
}

/// Append span `s`'s attributes and events (the bytes of its OTLP fields,
/// as [`SpanView::attribute_bytes`] and [`SpanView::event_bytes`] give
/// them: read back with [`SpanView::parse`]) and `message` to `payload`,
/// and the search keys of its attributes to `keys`; `head` with where they
/// are.
fn append_data(
    mut head: Head,
    s: &SpanView<'_>,
    message: &str,
    payload: &mut Vec<u8>,
    text: &mut String,
    keys: &mut Vec<i64>,
) -> Head {
    for a in s.attributes() {
        if let Some(value) = index_text(&a.value, text) {
            keys.push(tag_hash(a.key, value));
        }
    }
    let (attributes, events) = (s.attribute_bytes(), s.event_bytes());
    head.payload_at = offset(payload.len());
    head.attributes_len = offset(attributes.len());
    head.events_len = offset(events.len());
    head.message_len = offset(message.len());
    payload.extend_from_slice(attributes);
    payload.extend_from_slice(events);
    payload.extend_from_slice(message.as_bytes());
    head
}

/// A tag in the stored shape (`{"key", "type", "value"}`, see
/// [`super::tag`]) as the attribute it stands for: the JSON value's own
/// type (a number is `int64` when it is a whole number that fits and its
/// tag's type does not say `float64`), so that it reads back as given;
/// `null` with type `float64` (a float that was not finite) is NaN; any
/// other value is the string of its JSON text.
fn stored_key_value(t: &Json) -> KeyValue {
    let key = t["key"].as_str().unwrap_or_default().to_string();
    let float = t["type"].as_str() == Some("float64");
    let value = match &t["value"] {
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) if !float => Value::I64(i),
            _ => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::Null if float => Value::F64(f64::NAN),
        Json::String(v) => Value::String(StringValue::from(v.clone())),
        other => Value::String(StringValue::from(other.to_string())),
    };
    KeyValue::new(key, value)
}

/// An offset or length in a block's payload as a [`Head`] keeps it: past
/// 4 GiB (which capped attributes never reach) the span reads back empty
/// rather than as another span's bytes.
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// trace.proto `SpanKind` (a span's kind as OTLP sends it) as a [`Head`]
/// keeps it: unknown kinds become internal.
fn kind_code(kind: u64) -> u8 {
    match kind {
        2..=5 => kind as u8,
        _ => 1,
    }
}

/// The text a tag search matches an attribute value against, as the
/// viewer shows it ([`tags_json`]): strings as they are, `true`/`false`,
/// integers in decimal, arrays as their JSON text. Floats and values over
/// [`MAX_INDEXED_VALUE`] bytes are not indexed (`None`).
pub(super) fn index_text<'v>(value: &ValueView<'v>, buf: &'v mut String) -> Option<&'v str> {
    let text = match *value {
        ValueView::String(s) => s,
        ValueView::Bool(true) => "true",
        ValueView::Bool(false) => "false",
        ValueView::I64(i) => {
            buf.clear();
            let _ = write!(buf, "{i}");
            buf.as_str()
        }
        ValueView::Array(_) => {
            *buf = array_json(value);
            buf.as_str()
        }
        _ => return None,
    };
    (text.len() <= MAX_INDEXED_VALUE).then_some(text)
}

/// The search key of an attribute: XXH3 (64 bit) of the value's search
/// text, seeded with XXH3 (64 bit, seed 0) of `key` — no copy of either.
/// Keys are in the store's files: a change here needs a new
/// `SCHEMA_VERSION`.
pub(super) fn tag_hash(key: &str, value: &str) -> i64 {
    xxh3_64_with_seed(value.as_bytes(), xxh3_64(key.as_bytes())) as i64
}

/// The search key of a span's service (keys of the form "\u{1}…" cannot
/// clash with attribute keys, which are never control characters first in
/// practice; a key's hash seeds its value's).
pub(super) fn service_key(service: &str) -> i64 {
    tag_hash("\u{1}service", service)
}

/// The search key of a span's service and operation: as [`tag_hash`]
/// with the operation as the value, and the service folded into the seed.
pub(super) fn operation_key(service: &str, operation: &str) -> i64 {
    let seed = xxh3_64_with_seed(service.as_bytes(), xxh3_64(b"\x01operation"));
    xxh3_64_with_seed(operation.as_bytes(), seed) as i64
}

/// The search key of a span whose status is Error.
pub(super) fn error_key() -> i64 {
    tag_hash("\u{1}status", "error")
}

/// The low 64 bits of a trace id given as 32 hex digits (0 if it is not).
pub(super) fn trace_key64(trace_id: &str) -> u64 {
    trace_id
        .get(trace_id.len().saturating_sub(16)..)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

/// A Bloom filter over 64-bit keys: `bits` a power of two, [`FILTER_PROBES`]
/// probes per key by double hashing of the mixed key.
pub(super) struct SearchFilter(pub(super) Vec<u8>);

/// Probes per key; with [`FILTER_BITS_PER_KEY`] bits per key this gives
/// about 1–2% false positives.
const FILTER_PROBES: u32 = 4;
const FILTER_BITS_PER_KEY: usize = 10;

impl SearchFilter {
    /// A filter holding `keys` (duplicates allowed).
    pub(super) fn new(keys: &mut Vec<i64>) -> SearchFilter {
        keys.sort_unstable();
        keys.dedup();
        let bits = (keys.len() * FILTER_BITS_PER_KEY)
            .max(512)
            .next_power_of_two();
        let mut filter = SearchFilter(vec![0; bits / 8]);
        for &key in keys.iter() {
            for bit in probes(key, bits) {
                filter.0[bit / 8] |= 1 << (bit % 8);
            }
        }
        filter
    }

    /// Whether `key` may be in the filter (false: certainly not). An empty
    /// or damaged filter says yes to everything.
    pub(super) fn may_contain(&self, key: i64) -> bool {
        if self.0.is_empty() || !self.0.len().is_power_of_two() {
            return true;
        }
        probes(key, self.0.len() * 8).all(|bit| self.0[bit / 8] & (1 << (bit % 8)) != 0)
    }
}

/// The bits of a filter of `bits` bits (a power of two) that `key` sets.
fn probes(key: i64, bits: usize) -> impl Iterator<Item = usize> {
    // splitmix64's finalizer: the probes do not rest on the key's bits.
    let mut h = key as u64;
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let (h1, h2) = (h as u32, ((h >> 32) as u32) | 1);
    let mask = bits.max(1) - 1;
    (0..FILTER_PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) as usize) & mask)
}

/// An array attribute as the JSON text stored for it (Jaeger has no array
/// tags: its OTLP receiver stores them as strings of JSON, and so do we).
fn array_json(a: &ValueView<'_>) -> String {
    serde_json::to_string(&Items(*a)).unwrap_or_default()
}

/// The elements of an array value as a JSON array of scalars.
struct Items<'a>(ValueView<'a>);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for item in self.0.items() {
            match item {
                ValueView::Bool(b) => seq.serialize_element(&b)?,
                ValueView::I64(i) => seq.serialize_element(&i)?,
                ValueView::F64(f) => seq.serialize_element(&f)?,
                ValueView::String(v) => seq.serialize_element(v)?,
                ValueView::Array(_) | ValueView::Other => seq.serialize_element(&())?,
            }
        }
        seq.end()
    }
}

/// Attributes as the store gives them back (`[{"key", "type", "value"}]`,
/// Jaeger's tag shape, as [`super::tag`] builds it): `string`, `bool`,
/// `int64`, `float64` (`null` when not finite); arrays as `string`s of
/// their JSON text (Jaeger has no array tags); any other kind as an empty
/// string.
pub(super) fn tags_json<'a>(attributes: impl Iterator<Item = AttributeView<'a>>) -> Json {
    Json::Array(
        attributes
            .map(|a| {
                let (ty, value) = match a.value {
                    ValueView::String(s) => ("string", Json::from(s)),
                    ValueView::Bool(b) => ("bool", Json::from(b)),
                    ValueView::I64(i) => ("int64", Json::from(i)),
                    ValueView::F64(f) => ("float64", Json::from(f)),
                    array @ ValueView::Array(_) => ("string", Json::from(array_json(&array))),
                    ValueView::Other => ("string", Json::from("")),
                };
                serde_json::json!({"key": a.key, "type": ty, "value": value})
            })
            .collect(),
    )
}

/// Events as the store gives them back: `[{"timestamp" (µs since the Unix
/// epoch), "name", "attributes" (as [`tags_json`])}]`.
pub(super) fn events_json(s: &SpanView<'_>) -> Json {
    Json::Array(
        s.events()
            .map(|e| {
                serde_json::json!({
                    "timestamp": (e.time_unix_nano / 1_000) as i64,
                    "name": e.name,
                    "attributes": tags_json(e.attributes()),
                })
            })
            .collect(),
    )
}

/// How long writing must pause before the store checkpoints its log.
const IDLE_CHECKPOINT: std::time::Duration = std::time::Duration::from_secs(1);

impl Writer {
    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        // Retention at start (a restart with a shorter limit applies it at
        // once) and every minute; the size cap after every transaction.
        self.retain();
        let mut last_retention = std::time::Instant::now();
        // Written since the last idle checkpoint.
        let mut dirty = false;
        loop {
            let wait = if dirty {
                IDLE_CHECKPOINT
            } else {
                RETENTION_PERIOD
            };
            let first = match rx.recv_timeout(wait) {
                Ok(msg) => msg,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if dirty => {
                    // Writing has paused: copy the log into the database so
                    // that the files on disk shrink to what the size cap
                    // left (evictions otherwise wait in the log, and the
                    // database file keeps its old length, until the next
                    // automatic checkpoint, which only a write triggers).
                    self.checkpoint();
                    dirty = false;
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    self.retain();
                    last_retention = std::time::Instant::now();
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            dirty = self.config.path.is_some();
            // Take whatever else is waiting: one transaction for all of it.
            let mut batches = Vec::new();
            let mut stored = Vec::new();
            let mut logs = Vec::new();
            let mut flushes = Vec::new();
            let mut next = Some(first);
            // One transaction's spans stay well inside the log's budget, so
            // the log and the database never pass the size cap by much more
            // than a transaction (what is left waits for the next one).
            let tx_limit = super::wal_budget(self.config.max_bytes) as usize / 4;
            let mut tx_bytes = 0;
            while let Some(msg) = next {
                match msg {
                    Msg::Batch(service, batch) => {
                        tx_bytes += batch.iter().map(|s| s.bytes().len()).sum::<usize>();
                        batches.push((service, batch));
                    }
                    Msg::Spans(s) => {
                        tx_bytes += s.len() * STORED_SPAN_BYTES;
                        stored.extend(s);
                    }
                    Msg::Logs(service, records) => {
                        tx_bytes += records.len() * STORED_SPAN_BYTES;
                        logs.extend(records.iter().filter_map(|r| stored_log(&service, r)));
                    }
                    Msg::Flush(done) => flushes.push(done),
                }
                next = if tx_bytes < tx_limit {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !logs.is_empty() {
                if let Err(e) = self.write_logs(&logs) {
                    tracing::warn!("trace store: cannot write {} log records: {e}", logs.len());
                }
                self.cap_size();
            }
            let sources: Vec<Source<'_>> = batches
                .iter()
                .flat_map(|(service, batch)| batch.iter().map(|s| Source::Span(service, s.view())))
                .chain(stored.iter().map(Source::Stored))
                .collect();
            if !sources.is_empty() {
                let n = sources.len() as u64;
                match self.write(sources) {
                    Ok(()) => {
                        self.stats.stored.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!("trace store: cannot write {n} spans: {e}");
                        self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                    }
                }
                if last_retention.elapsed() >= RETENTION_PERIOD {
                    self.retain();
                    last_retention = std::time::Instant::now();
                } else {
                    // The size cap holds after every transaction.
                    self.cap_size();
                }
            }
            if !flushes.is_empty() {
                // A flush promises everything written and the limits applied.
                self.retain();
                last_retention = std::time::Instant::now();
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    /// Write spans in one transaction: for each block of up to
    /// [`BLOCK_SPANS`], its four rows (see [`super::block`]).
    fn write(&mut self, sources: Vec<Source<'_>>) -> rusqlite::Result<()> {
        let conn = self.conn.clone();
        let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        {
            let mut insert_block = tx.prepare_cached(
                "INSERT INTO blocks (id, spans, min_start_us, max_start_us, error_traces,
                 search_filter)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut insert_traces =
                tx.prepare_cached("INSERT INTO block_traces (block, trace_keys) VALUES (?1, ?2)")?;
            let mut insert_spans = tx.prepare_cached(
                "INSERT INTO block_spans (block, names, heads) VALUES (?1, ?2, ?3)",
            )?;
            let mut insert_payload = tx.prepare_cached(
                "INSERT INTO payloads (block, raw_len, data) VALUES (?1, ?2, ?3)",
            )?;
            let mut insert_operation = tx.prepare_cached(
                "INSERT INTO operations (service, operation, kind, last_start_us)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (service, operation, kind) DO UPDATE SET last_start_us =
                     MAX(last_start_us, excluded.last_start_us)",
            )?;
            // Block ids are never reused, even when retention has deleted
            // the newest block.
            let mut block = match self.last_block {
                Some(last) => last,
                None => last_block(&tx)?,
            };
            let mut operations: HashMap<(&str, &str, u8), i64> = HashMap::default();
            let mut payload = Vec::new();
            let mut text = String::new();
            let mut keys = Vec::new();
            let mut heads = Vec::new();
            let mut names = Vec::new();
            let mut name_index: HashMap<&str, u16> = HashMap::default();
            let mut sources = sources.into_iter().peekable();
            while sources.peek().is_some() {
                block += 1;
                payload.clear();
                keys.clear();
                heads.clear();
                names.clear();
                name_index.clear();
                let rows: Vec<Row<'_>> = sources
                    .by_ref()
                    .take(BLOCK_SPANS)
                    .enumerate()
                    .map(|(n, source)| {
                        give_way(n);
                        Row::new(source, &mut payload, &mut text, &mut keys)
                    })
                    .collect();
                let mut trace_keys = Vec::with_capacity(rows.len() * 4);
                let mut error_traces = Vec::new();
                let (mut min_start, mut max_start) = (i64::MAX, i64::MIN);
                for row in &rows {
                    let mut head = row.head;
                    for (name, index) in [
                        (row.service, &mut head.service),
                        (row.operation, &mut head.operation),
                    ] {
                        let next = name_index.len() as u16;
                        *index = *name_index.entry(name).or_insert_with(|| {
                            block::put_name(&mut names, name);
                            next
                        });
                    }
                    head.put(&mut heads);
                    min_start = min_start.min(head.start_us);
                    max_start = max_start.max(head.start_us);
                    trace_keys.extend_from_slice(&head.trace_key());
                    keys.push(service_key(row.service));
                    keys.push(operation_key(row.service, row.operation));
                    let last = operations
                        .entry((row.service, row.operation, head.kind))
                        .or_insert(head.start_us);
                    *last = (*last).max(head.start_us);
                    if head.failed() {
                        keys.push(error_key());
                        error_traces.extend_from_slice(&head.trace_key64().to_le_bytes());
                    }
                }
                let filter = SearchFilter::new(&mut keys);
                insert_block.execute(params![
                    block,
                    rows.len() as i64,
                    min_start,
                    max_start,
                    error_traces,
                    filter.0,
                ])?;
                insert_traces.execute(params![block, trace_keys])?;
                insert_spans.execute(params![block, names, heads])?;
                let data = self
                    .zstd
                    .compress(&payload)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                insert_payload.execute(params![block, payload.len() as i64, data])?;
            }
            for ((service, operation, kind), last) in operations {
                insert_operation.execute(params![
                    service,
                    operation,
                    block::kind_name(kind),
                    last
                ])?;
            }
            self.last_block = Some(block);
        }
        let committed = tx.commit();
        if committed.is_err() {
            // Read the ids again next time rather than trust the counter.
            self.last_block = None;
        }
        committed
    }

    fn write_logs(&self, logs: &[StoredLog]) -> rusqlite::Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO logs (trace_id, span_id, time_us, service, severity, body, attributes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for l in logs {
                insert.execute(params![
                    l.trace_id,
                    l.span_id,
                    l.time_us,
                    l.service,
                    l.severity,
                    l.body,
                    l.attributes.to_string()
                ])?;
            }
        }
        tx.commit()
    }

    /// Delete spans past the age limit, then cap the size.
    pub(super) fn retain(&self) {
        {
            let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            let cutoff = now_us() - self.config.max_age.as_micros() as i64;
            // One transaction: a crash leaves every block whole or gone.
            let expired = conn.unchecked_transaction().and_then(|tx| {
                let n = expire_before(&tx, cutoff)?;
                tx.execute("DELETE FROM logs WHERE time_us < ?1", params![cutoff])?;
                tx.execute(
                    "DELETE FROM operations WHERE last_start_us < ?1",
                    params![cutoff],
                )?;
                tx.commit()?;
                Ok(n)
            });
            match expired {
                Ok(n) => {
                    self.stats.expired.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!("trace store: cannot delete old spans: {e}"),
            }
        }
        self.cap_size();
    }

    /// Checkpoint the write-ahead log and truncate it (best effort: a
    /// reader in the middle of a query keeps the part it reads, which the
    /// next checkpoint takes).
    fn checkpoint(&self) {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::debug!("trace store: checkpoint when idle: {e}");
        }
    }

    /// Delete the oldest blocks until the database fits its part of the
    /// size cap ([`StoreConfig::max_bytes`](super::StoreConfig) minus the
    /// log's [`wal_budget`](super::wal_budget)), returning freed pages to
    /// the file system as it goes.
    pub(super) fn cap_size(&self) {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        // The log's part, and room for the next transaction.
        let wal = super::wal_budget(self.config.max_bytes);
        let budget = self.config.max_bytes.saturating_sub(wal + wal / 4);
        for _ in 0..1000 {
            // Cheap (two pragmas) when under the cap, as it is after most
            // transactions.
            if super::database_bytes(&conn) <= budget {
                break;
            }
            if let Err(e) = super::vacuum_free_pages(&conn) {
                tracing::warn!("trace store: cannot return free pages: {e}");
            }
            if super::database_bytes(&conn) <= budget {
                break;
            }
            let dropped = conn.unchecked_transaction().and_then(|tx| {
                let n = drop_oldest_blocks(&tx)?;
                tx.commit()?;
                Ok(n)
            });
            match dropped {
                Ok(0) => break,
                Ok(n) => {
                    self.stats.expired.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!("trace store: cannot delete the oldest spans: {e}");
                    break;
                }
            }
        }
    }
}

/// Delete every span that started before `cutoff` (µs): whole blocks when
/// all their spans did; the blocks that straddle it are written again with
/// the heads and trace keys of their other spans (their payload, filter
/// and failed traces stay as they were: they only name more than is
/// there). Returns the number of spans deleted.
fn expire_before(conn: &Connection, cutoff: i64) -> rusqlite::Result<u64> {
    let blocks: Vec<(i64, i64, i64)> = conn
        .prepare_cached("SELECT id, spans, max_start_us FROM blocks WHERE min_start_us < ?1")?
        .query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut deleted: u64 = 0;
    for (id, spans, max_start) in blocks {
        // A damaged count must not make the figure absurd.
        let spans = u64::try_from(spans).unwrap_or(0);
        if max_start < cutoff {
            delete_block(conn, id)?;
            deleted = deleted.saturating_add(spans);
            continue;
        }
        let heads: Option<Vec<u8>> = conn
            .prepare_cached("SELECT heads FROM block_spans WHERE block = ?1")?
            .query_row(params![id], |r| {
                Ok(r.get_ref(0)?.as_blob().ok().map(<[u8]>::to_vec))
            })
            .optional()?
            .flatten();
        // The trace keys are those of the heads kept, written afresh (a
        // missing or damaged row comes back whole).
        let (mut kept_heads, mut kept_keys) = (Vec::new(), Vec::new());
        let mut min_start = i64::MAX;
        for head in block::heads(heads.as_deref().unwrap_or_default()) {
            if head.start_us >= cutoff {
                head.put(&mut kept_heads);
                kept_keys.extend_from_slice(&head.trace_key());
                min_start = min_start.min(head.start_us);
            }
        }
        let kept = (kept_heads.len() / block::HEAD_BYTES) as u64;
        deleted = deleted.saturating_add(spans.saturating_sub(kept));
        if kept == 0 {
            // Its heads were missing or damaged: nothing in it can be shown.
            delete_block(conn, id)?;
            continue;
        }
        conn.execute(
            "UPDATE blocks SET spans = ?2, min_start_us = ?3 WHERE id = ?1",
            params![id, kept as i64, min_start],
        )?;
        conn.execute(
            "UPDATE block_spans SET heads = ?2 WHERE block = ?1",
            params![id, kept_heads],
        )?;
        conn.execute(
            "INSERT OR REPLACE INTO block_traces (block, trace_keys) VALUES (?1, ?2)",
            params![id, kept_keys],
        )?;
    }
    Ok(deleted)
}

/// Delete the oldest tenth of the blocks (at least one) and the log records
/// up to their newest start; returns the number of spans deleted.
fn drop_oldest_blocks(conn: &Connection) -> rusqlite::Result<u64> {
    let blocks: Vec<(i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT id, spans, max_start_us FROM blocks ORDER BY id
             LIMIT MAX(1, (SELECT COUNT(*) / 10 FROM blocks))",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut deleted: u64 = 0;
    let mut edge = i64::MIN;
    for (id, spans, max_start) in blocks {
        delete_block(conn, id)?;
        deleted = deleted.saturating_add(u64::try_from(spans).unwrap_or(0));
        edge = edge.max(max_start);
    }
    conn.execute("DELETE FROM logs WHERE time_us <= ?1", params![edge])?;
    Ok(deleted)
}

/// Delete a block's four rows.
fn delete_block(conn: &Connection, block: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM blocks WHERE id = ?1", params![block])?;
    for table in ["block_traces", "block_spans", "payloads"] {
        conn.prepare_cached(&format!("DELETE FROM {table} WHERE block = ?1"))?
            .execute(params![block])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::traces::encoded::EncodedSpan;
    use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, Status};
    use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

    /// A span with these attributes and events, as the export queue holds it.
    fn encoded(attributes: Vec<KeyValue>, events: Vec<Event>) -> EncodedSpan {
        let mut span_events = SpanEvents::default();
        span_events.events = events;
        let span = SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "s".into(),
            start_time: std::time::UNIX_EPOCH,
            end_time: std::time::UNIX_EPOCH,
            attributes,
            dropped_attributes_count: 0,
            events: span_events,
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("t").build(),
        };
        EncodedSpan::encode(&span, 0)
    }

    #[test]
    fn keys_and_ids_are_spelled_as_stored_files_expect() {
        // Store files hold these keys: they move only with SCHEMA_VERSION.
        // XXH3-64 of b"v" seeded with XXH3-64 of b"k", from the reference
        // implementation (C).
        assert_eq!(tag_hash("k", "v"), 0xad56_a59f_e368_2db7_u64 as i64);
        assert_ne!(operation_key("a", "b"), operation_key("ab", ""));
        assert_ne!(operation_key("a", "b"), tag_hash("\u{1}service", "b"));
        assert_eq!(
            block::hex(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]),
            "0123456789abcdef"
        );
        assert_eq!(block::hex(&[0xff; 16]), "f".repeat(32));
    }

    #[test]
    fn the_search_filter_has_every_key_and_few_others() {
        let mut keys: Vec<i64> = (0..2000)
            .map(|i| tag_hash("user.id", &format!("u{i}")))
            .collect();
        let filter = SearchFilter::new(&mut keys);
        for i in 0..2000 {
            assert!(filter.may_contain(tag_hash("user.id", &format!("u{i}"))));
        }
        let false_positives = (0..10_000)
            .filter(|i| filter.may_contain(tag_hash("user.id", &format!("other{i}"))))
            .count();
        assert!(false_positives < 400, "{false_positives} of 10000");
        // No filter (or a damaged one) rules nothing out.
        assert!(SearchFilter(vec![]).may_contain(1));
        assert!(SearchFilter(vec![0; 3]).may_contain(1));
        assert_eq!(trace_key64("0000000000000001000000000000002a"), 42);
    }

    /// A span in the stored shape with these attributes and events.
    fn stored_span(attributes: Json, events: Json) -> StoredSpan {
        StoredSpan {
            trace_id: "1".repeat(32),
            span_id: "2".repeat(16),
            parent_id: String::new(),
            service: "svc".into(),
            operation: "op".into(),
            kind: "internal".into(),
            start_us: 1,
            duration_us: 2,
            status: 0,
            status_message: String::new(),
            attributes,
            events,
        }
    }

    /// What `Row::new` appends to a payload for `source`: its attributes'
    /// and events' bytes and its message.
    fn written(source: Source<'_>) -> (Vec<u8>, Vec<u8>, String, Vec<i64>) {
        let (mut payload, mut text, mut keys) = (b"before".to_vec(), String::new(), Vec::new());
        let row = Row::new(source, &mut payload, &mut text, &mut keys);
        let h = row.head;
        let mut at = h.payload_at as usize;
        assert_eq!(at, 6, "appended after what the block already holds");
        let mut next = |len: u32| {
            at += len as usize;
            payload[at - len as usize..at].to_vec()
        };
        let attributes = next(h.attributes_len);
        let events = next(h.events_len);
        let message = String::from_utf8(next(h.message_len)).unwrap();
        assert_eq!(at, payload.len());
        (attributes, events, message, keys)
    }

    #[test]
    fn attributes_and_events_read_back_in_the_stored_tag_shape() {
        let attrs = vec![
            KeyValue::new("s", "a\"b"),
            KeyValue::new("i", 7i64),
            KeyValue::new("f", 0.5),
            KeyValue::new("whole", 2.0),
            KeyValue::new("nan", f64::NAN),
            KeyValue::new("b", true),
            KeyValue::new(
                "arr",
                Value::Array(Array::String(vec!["x".into(), "y".into()])),
            ),
        ];
        let built = Json::Array(
            attrs
                .iter()
                .map(|kv| super::super::tag(kv.key.as_str(), &kv.value))
                .collect(),
        );
        let event = opentelemetry::trace::Event::new(
            "checkpoint",
            std::time::UNIX_EPOCH + Duration::from_micros(5),
            vec![KeyValue::new("step", 1i64)],
            0,
        );
        let events = serde_json::json!([{"timestamp": 5, "name": "checkpoint",
            "attributes": [{"key": "step", "type": "int64", "value": 1}]}]);
        let span = encoded(attrs.clone(), vec![event]);
        let from_span = written(Source::Span("svc", span.view()));
        // The span's own bytes, copied.
        assert_eq!(from_span.0, span.view().attribute_bytes());
        assert_eq!(tags_json(SpanView::parse(&from_span.0).attributes()), built);
        assert_eq!(events_json(&SpanView::parse(&from_span.1)), events);
        // Attributes and events of other messages are not read as these.
        assert_eq!(
            tags_json(SpanView::parse(&from_span.1).attributes()),
            serde_json::json!([])
        );
        assert_eq!(
            events_json(&SpanView::parse(&from_span.0)),
            serde_json::json!([])
        );

        // Spans given in the stored shape read back as they were given,
        // with the same search keys.
        let stored = StoredSpan {
            status: 2,
            status_message: "failed".into(),
            ..stored_span(built.clone(), events.clone())
        };
        let from_stored = written(Source::Stored(&stored));
        // (An array is the string of its JSON text there, as it reads back.)
        assert_eq!(
            tags_json(SpanView::parse(&from_stored.0).attributes()),
            built
        );
        assert_eq!(from_stored.1, from_span.1);
        assert_eq!(from_stored.2, "failed");
        assert_eq!(from_stored.3, from_span.3, "the same search keys");
        assert_eq!(
            from_span.3,
            [
                tag_hash("s", "a\"b"),
                tag_hash("i", "7"),
                tag_hash("b", "true"),
                tag_hash("arr", "[\"x\",\"y\"]")
            ]
        );
    }

    #[test]
    fn stored_spans_read_back_as_given_and_odd_ones_do_not_panic() {
        let mut stored = stored_span(
            // Types from the values when a tag does not say (or says
            // otherwise), as they were given.
            serde_json::json!([
                {"key": "n", "value": 5},
                {"key": "t", "type": "string", "value": true},
                {"key": "big", "type": "int64", "value": 18446744073709551615u64},
                {"key": "inf", "type": "float64", "value": null},
                {"key": "o", "value": {"a": 1}},
            ]),
            serde_json::json!([
                {"timestamp": -5, "name": "before the epoch"},
                {"timestamp": u64::MAX, "name": "past OTLP's nanoseconds"},
                {"name": "no time", "attributes": "not a list"},
            ]),
        );
        let (attributes, events, _, _) = written(Source::Stored(&stored));
        assert_eq!(
            tags_json(SpanView::parse(&attributes).attributes()),
            serde_json::json!([
                {"key": "n", "type": "int64", "value": 5},
                {"key": "t", "type": "bool", "value": true},
                {"key": "big", "type": "float64", "value": 18446744073709551615.0},
                {"key": "inf", "type": "float64", "value": null},
                {"key": "o", "type": "string", "value": "{\"a\":1}"},
            ])
        );
        let times: Vec<Json> = events_json(&SpanView::parse(&events))
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["timestamp"].clone())
            .collect();
        assert_eq!(times, [0, 0, 0]);
        stored.attributes = serde_json::json!({"not": "a list"});
        stored.events = Json::Null;
        let (attributes, events, _, keys) = written(Source::Stored(&stored));
        assert!(attributes.is_empty() && events.is_empty() && keys.is_empty());
    }

    #[test]
    fn search_text_is_what_the_viewer_shows() {
        let mut buf = String::new();
        for (value, string) in [
            (Value::from("GET"), true),
            (Value::from("007"), true),
            (Value::from(true), false),
            (Value::from(-42i64), false),
            (Value::Array(Array::I64(vec![1, 2])), false),
            (
                Value::Array(Array::String(vec!["a".into(), "\"b".into()])),
                false,
            ),
            (Value::Array(Array::F64(vec![0.5, f64::NAN])), false),
            (Value::Array(Array::Bool(vec![])), false),
        ] {
            let span = encoded(vec![KeyValue::new("k", value.clone())], vec![]);
            let view = span.view();
            let shown = match &tags_json(view.attributes())[0]["value"] {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            let a = view.attributes().next().unwrap();
            let indexed = index_text(&a.value, &mut buf).map(str::to_string);
            assert_eq!(indexed.as_deref(), Some(shown.as_str()), "{value:?}");
            // The raw-bytes pre-check of a search applies to strings only,
            // and to every string that is not spelled like another type.
            let pre_checked = super::super::search::only_text_matches(&shown);
            assert_eq!(pre_checked, string && shown != "007", "{value:?}");
        }
        for value in [Value::from(0.5), Value::from("x".repeat(257))] {
            let span = encoded(vec![KeyValue::new("k", value)], vec![]);
            let a = span.view().attributes().next().unwrap();
            assert_eq!(index_text(&a.value, &mut buf), None);
        }
    }
}
