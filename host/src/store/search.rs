//! Reading the store: a typed search ([`SpanSearch`]) in, the ids of the
//! matching traces out, newest first; whole traces by id; the spans of a
//! time window for the aggregate views. All SQL and the on-disk encodings
//! (status codes, blocks, search keys) stay in this module and the writer.
//!
//! Spans have no per-span index (see [`super::write`]): every read walks
//! the `blocks` rows, newest first, and skips a block by its time range,
//! its Bloom filter (service, operation, attributes, error status) or its
//! trace keys before reading any of its spans. A search stops as soon as
//! it has `limit` traces.

use super::block::{Block, Head, unhex};
use super::write::{
    MAX_INDEXED_VALUE, SearchFilter, error_key, index_text, operation_key, service_key, tag_hash,
    trace_key64,
};
use super::{Store, StoredSpan};
use crate::telemetry::traces::encoded::SpanView;
use rusqlite::{Connection, params};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The stored status code of a span whose status is Error (0 is Unset,
/// 1 is Ok).
pub const STATUS_ERROR: i64 = 2;

/// A filter over whole traces by their spans' status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceStatus {
    /// Some span of the trace has status Error.
    Error,
    /// No span of the trace has status Error.
    Ok,
}

/// A search for traces: every filter applies to one span of the trace
/// (service, operation, attributes, status, duration and start), except
/// `status`, which applies to the whole trace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpanSearch {
    pub service: Option<String>,
    pub operation: Option<String>,
    /// Attribute key → value as searches spell it (strings as they are,
    /// `true`/`false`, integers in decimal, arrays as their JSON text; see
    /// `write::index_text`): each must be a searchable attribute (not a
    /// float, at most 256 bytes) of the span.
    pub tags: BTreeMap<String, String>,
    /// `Some(true)`: the span's status is Error; `Some(false)`: it is not
    /// (Jaeger's `error` tag).
    pub span_error: Option<bool>,
    /// Span start, µs since the Unix epoch, both ends included.
    pub start_us: i64,
    pub end_us: i64,
    /// Span duration bounds in µs, both included.
    pub min_duration_us: Option<i64>,
    pub max_duration_us: Option<i64>,
    pub status: Option<TraceStatus>,
    /// At most this many traces.
    pub limit: usize,
}

/// A span without its attributes and events, for aggregate views.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanHead {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_id: String,
    pub service: String,
    pub operation: String,
    pub kind: String,
    pub start_us: i64,
    pub duration_us: i64,
    /// Whether the span's status is Error.
    pub failed: bool,
}

impl Store {
    /// The ids (32 lowercase hex digits) of the traces matching `q`, at
    /// most `q.limit`: the traces of the newest matching spans first.
    pub fn search(&self, q: &SpanSearch) -> rusqlite::Result<Vec<String>> {
        self.read(|c| search(c, q))
    }
}

/// [`Store::search`] on a connection.
pub fn search(c: &Connection, q: &SpanSearch) -> rusqlite::Result<Vec<String>> {
    let mut ids = Vec::new();
    if q.limit == 0 || q.tags.values().any(|v| v.len() > MAX_INDEXED_VALUE) {
        return Ok(ids);
    }
    // What a block must hold for any of its spans to match.
    let mut keys: Vec<i64> = q.tags.iter().map(|(k, v)| tag_hash(k, v)).collect();
    if let Some(service) = &q.service {
        keys.push(service_key(service));
        if let Some(operation) = &q.operation {
            keys.push(operation_key(service, operation));
        }
    }
    if q.span_error == Some(true) {
        keys.push(error_key());
    }
    let failed = match q.status {
        Some(_) => failed_traces(c)?,
        None => HashSet::new(),
    };
    // A value only a string attribute can match appears as it is in the
    // stored attributes (their OTLP bytes): a quick necessary check before
    // reading them. (Integers, booleans and arrays are stored in binary.)
    let needles: Vec<memchr::memmem::Finder<'_>> = q
        .tags
        .values()
        .filter(|v| only_text_matches(v))
        .map(|v| memchr::memmem::Finder::new(v.as_bytes()))
        .collect();
    let mut seen = HashSet::new();
    let mut blocks = c.prepare_cached(
        "SELECT id, search_filter FROM blocks
         WHERE max_start_us >= ?1 AND min_start_us <= ?2 ORDER BY id DESC",
    )?;
    let mut rows = blocks.query(params![q.start_us, q.end_us])?;
    while let Some(row) = rows.next()? {
        let filter = SearchFilter(row.get(1)?);
        if !keys.iter().all(|&k| filter.may_contain(k)) {
            continue;
        }
        // One block at a time: a search that reads many blocks holds one
        // decompressed payload at most.
        let Some(mut block) = Block::load(c, row.get(0)?)? else {
            continue;
        };
        // This block's matching spans, newest start first.
        let mut matching: Vec<(i64, [u8; 16])> = Vec::new();
        for h in std::mem::take(&mut block.heads) {
            let fits = (q.start_us..=q.end_us).contains(&h.start_us)
                && q.service
                    .as_deref()
                    .is_none_or(|s| block.name(h.service) == s)
                && q.operation
                    .as_deref()
                    .is_none_or(|o| block.name(h.operation) == o)
                && q.min_duration_us.is_none_or(|m| h.duration_us >= m)
                && q.max_duration_us.is_none_or(|m| h.duration_us <= m)
                && q.span_error.is_none_or(|e| e == h.failed());
            if !fits {
                continue;
            }
            if !q.tags.is_empty() {
                let attributes = block.data(c, &h)?.0;
                if !needles.iter().all(|n| n.find(attributes).is_some())
                    || !has_tags(attributes, &q.tags)
                {
                    continue;
                }
            }
            matching.push((h.start_us, h.trace_id));
        }
        matching.sort_by_key(|m| std::cmp::Reverse(m.0));
        for (_, trace_id) in matching {
            if !seen.insert(trace_id) {
                continue;
            }
            if let Some(want) = q.status {
                let key = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or_default());
                let trace_failed = failed.contains(&key);
                if trace_failed != (want == TraceStatus::Error) {
                    continue;
                }
            }
            ids.push(super::block::hex(&trace_id));
            if ids.len() >= q.limit {
                return Ok(ids);
            }
        }
    }
    Ok(ids)
}

/// The trace keys (low 64 bits of the id) of every trace with a failed
/// span. Two traces sharing their low 64 bits would share the answer.
fn failed_traces(c: &Connection) -> rusqlite::Result<HashSet<u64>> {
    let mut set = HashSet::new();
    let mut q = c.prepare_cached("SELECT error_traces FROM blocks WHERE error_traces != x''")?;
    let mut rows = q.query([])?;
    while let Some(r) = rows.next()? {
        for key in r.get_ref(0)?.as_blob()?.chunks_exact(8) {
            set.insert(u64::from_le_bytes(key.try_into().unwrap_or_default()));
        }
    }
    Ok(set)
}

/// Whether the stored attributes (OTLP `Span` fields) have every
/// `key=value`, by the rules the search keys follow (`write::index_text`).
fn has_tags(attributes: &[u8], tags: &BTreeMap<String, String>) -> bool {
    let span = SpanView::parse(attributes);
    let mut text = String::new();
    tags.iter().all(|(key, value)| {
        span.attributes()
            .any(|a| a.key == key && index_text(&a.value, &mut text) == Some(value.as_str()))
    })
}

/// Whether search text `v` can only match a string attribute: no boolean,
/// integer or array is spelled that way (`write::index_text`).
pub(super) fn only_text_matches(v: &str) -> bool {
    !(v == "true" || v == "false" || v.starts_with('[') || v.parse::<i64>().is_ok())
}

/// How much one answer may load: spans, and bytes of span data (an
/// estimate of their text: names, ids, attribute keys and values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerBudget {
    pub max_spans: usize,
    pub max_bytes: usize,
}

impl AnswerBudget {
    /// No limit (for tests and embedders that bound their own queries).
    pub const UNLIMITED: AnswerBudget = AnswerBudget {
        max_spans: usize::MAX,
        max_bytes: usize::MAX,
    };
}

/// The spans [`spans_within`] loaded, and the traces its budget left out.
#[derive(Debug, Default)]
pub struct Loaded {
    /// By start time.
    pub spans: Vec<StoredSpan>,
    /// Traces not loaded at all: the ones before them used the budget.
    pub left_out: Vec<String>,
    /// The one trace loaded only in part (the first trace asked for, when
    /// it alone is larger than the budget).
    pub truncated: Option<String>,
    /// What the loaded spans took of the budget: spans, and bytes.
    pub spans_used: usize,
    pub bytes_used: usize,
}

/// All spans of the given traces (ids as 32 lowercase hex digits), by
/// start time: the blocks' trace keys name the candidate spans, their
/// heads decide.
pub fn spans_of(c: &Connection, trace_ids: &[String]) -> rusqlite::Result<Vec<StoredSpan>> {
    Ok(spans_within(c, trace_ids, AnswerBudget::UNLIMITED)?.spans)
}

/// The spans of `trace_ids`, whole traces in the order asked for, while
/// `budget` lasts: a trace that would pass it is left out, so an answer
/// never holds more than the budget however many traces were asked for.
/// Only the first trace may be cut short (loaded up to the budget).
pub fn spans_within(
    c: &Connection,
    trace_ids: &[String],
    budget: AnswerBudget,
) -> rusqlite::Result<Loaded> {
    if trace_ids.is_empty() {
        return Ok(Loaded::default());
    }
    let keys: HashSet<u32> = trace_ids.iter().map(|id| trace_key64(id) as u32).collect();
    // A bit per low 16 bits of the wanted keys: most keys are ruled out
    // with one load, without hashing.
    let mut maybe = vec![0u64; 1024];
    for k in &keys {
        maybe[(*k as u16 >> 6) as usize] |= 1 << (k & 63);
    }
    // Candidate blocks by trace key, each with how many of its spans carry
    // the key: a trace's spans, and perhaps a few of another trace whose key
    // collides (their heads tell them apart). The keys and the heads are
    // read in separate statements, and the writer may rewrite a block in
    // between, so a block's heads are searched whole rather than by index.
    let mut candidates: HashMap<u32, Vec<(i64, usize)>> = HashMap::new();
    {
        let mut blocks = c.prepare_cached("SELECT block, trace_keys FROM block_traces")?;
        let mut rows = blocks.query([])?;
        while let Some(r) = rows.next()? {
            let block: i64 = r.get(0)?;
            for key in r.get_ref(1)?.as_blob()?.chunks_exact(4) {
                let key = u32::from_le_bytes([key[0], key[1], key[2], key[3]]);
                if maybe[(key as u16 >> 6) as usize] & (1 << (key & 63)) != 0 && keys.contains(&key)
                {
                    let in_block = candidates.entry(key).or_default();
                    match in_block.last_mut() {
                        Some((last, count)) if *last == block => *count += 1,
                        _ => in_block.push((block, 1)),
                    }
                }
            }
        }
    }
    // The blocks read so far (`None`: gone since the keys were read).
    let mut blocks: HashMap<i64, Option<Block>> = HashMap::new();
    let mut loaded = Loaded::default();
    let (mut spans_used, mut bytes_used) = (0usize, 0usize);
    // Set once a trace did not fit: the rest are left out unread.
    let mut full = false;
    for (n, trace_id) in trace_ids.iter().enumerate() {
        let rows = candidates
            .get(&(trace_key64(trace_id) as u32))
            .map_or(&[][..], Vec::as_slice);
        let expected: usize = rows.iter().map(|(_, count)| count).sum();
        if n > 0 && (full || spans_used + expected > budget.max_spans) {
            loaded.left_out.push(trace_id.clone());
            continue;
        }
        let wanted: Option<[u8; 16]> = unhex(trace_id);
        // A span written twice (the same trace and span id) is shown once,
        // as last written.
        let mut trace: HashMap<String, StoredSpan> = HashMap::new();
        let (mut spans, mut bytes) = (0, 0);
        let mut cut = false;
        'blocks: for &(id, _) in rows {
            let block = match blocks.entry(id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(Block::load(c, id)?),
            };
            let Some(block) = block else { continue };
            for i in 0..block.heads.len() {
                let h: Head = block.heads[i];
                if Some(h.trace_id) != wanted {
                    continue;
                }
                if spans_used + spans >= budget.max_spans || bytes_used + bytes >= budget.max_bytes
                {
                    cut = true;
                    break 'blocks;
                }
                let span = block.span(c, &h)?;
                spans += 1;
                bytes += span_bytes(&span);
                trace.insert(span.span_id.clone(), span);
            }
        }
        if cut && n > 0 {
            // Only the first trace may be shown in part.
            full = true;
            loaded.left_out.push(trace_id.clone());
            continue;
        }
        if cut {
            loaded.truncated = Some(trace_id.clone());
            full = true;
        }
        spans_used += spans;
        bytes_used += bytes;
        loaded.spans.extend(trace.into_values());
    }
    loaded.spans_used = spans_used;
    loaded.bytes_used = bytes_used;
    loaded
        .spans
        .sort_by(|a, b| a.start_us.cmp(&b.start_us).then(a.span_id.cmp(&b.span_id)));
    Ok(loaded)
}

/// An estimate of a value's size as JSON text, 8 bytes a number.
pub fn json_bytes(v: &Json) -> usize {
    match v {
        Json::String(s) => s.len() + 2,
        Json::Array(a) => 2 + a.iter().map(json_bytes).sum::<usize>(),
        Json::Object(o) => {
            2 + o
                .iter()
                .map(|(k, v)| k.len() + 3 + json_bytes(v))
                .sum::<usize>()
        }
        _ => 8,
    }
}

/// An estimate of a span's size as text: its strings and its attributes'
/// and events' JSON.
fn span_bytes(s: &StoredSpan) -> usize {
    let json = json_bytes;
    64 + s.trace_id.len()
        + s.span_id.len()
        + s.parent_id.len()
        + s.service.len()
        + s.operation.len()
        + s.status_message.len()
        + json(&s.attributes)
        + json(&s.events)
}

/// Call `each` with every span that started in `start_us..=end_us`.
pub fn scan_window(
    c: &Connection,
    start_us: i64,
    end_us: i64,
    mut each: impl FnMut(SpanHead),
) -> rusqlite::Result<()> {
    let ids: Vec<i64> = c
        .prepare_cached(
            "SELECT id FROM blocks WHERE max_start_us >= ?1 AND min_start_us <= ?2 ORDER BY id",
        )?
        .query_map(params![start_us, end_us], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in ids {
        let Some(block) = Block::load(c, id)? else {
            continue;
        };
        for h in &block.heads {
            if (start_us..=end_us).contains(&h.start_us) {
                each(block.span_head(h));
            }
        }
    }
    Ok(())
}

/// The services that wrote spans or were registered, by name.
pub fn service_names(c: &Connection) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached(
        "SELECT service FROM services UNION SELECT DISTINCT service FROM operations ORDER BY 1",
    )?
    .query_map([], |r| r.get(0))?
    .collect()
}

/// `(operation, kind)` of a service's spans, by name then kind; `kind`
/// keeps one kind only.
pub fn operations(
    c: &Connection,
    service: &str,
    kind: Option<&str>,
) -> rusqlite::Result<Vec<(String, String)>> {
    c.prepare_cached(
        "SELECT operation, kind FROM operations
         WHERE service = ?1 AND (?2 IS NULL OR kind = ?2) ORDER BY 1, 2",
    )?
    .query_map(params![service, kind], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// The registered services: name → (guest language, resource as stored
/// tags).
pub fn registered_services(c: &Connection) -> rusqlite::Result<HashMap<String, (String, Json)>> {
    c.prepare_cached("SELECT service, language, resource FROM services")?
        .query_map([], |r| {
            let resource: String = r.get(2)?;
            Ok((
                r.get::<_, String>(0)?,
                (
                    r.get::<_, String>(1)?,
                    serde_json::from_str(&resource).unwrap_or(Json::Array(Vec::new())),
                ),
            ))
        })?
        .collect()
}
