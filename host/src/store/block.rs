//! The on-disk model of a block of spans: what [`super::write`] writes and
//! [`super::search`] reads.
//!
//! A block holds up to `write::BLOCK_SPANS` spans written together. It is
//! four rows, one per table, all keyed by the block's id:
//!
//! - `blocks`: what a search checks to skip it (time range, Bloom filter
//!   over its search keys, the traces of its failed spans);
//! - `block_traces`: the low 32 bits of each span's trace id, to find a
//!   trace's spans without reading anything else;
//! - `block_spans`: each span's [`Head`] (fixed size, uncompressed, so a
//!   search reads a block's heads without decompressing anything) and the
//!   block's name table (the services and operations its heads point to);
//! - `payloads`: each span's attributes and events (the bytes of their
//!   OTLP `Span` fields, copied from the span's encoded message, see
//!   `write::append_data`) and status message, zstd-compressed.
//!
//! A span has no row of its own: writing a span appends to buffers and the
//! block's four rows are written once, so the per-span cost of a write is
//! encoding, not SQLite.

use super::search::{STATUS_ERROR, SpanHead};
use super::{MAX_PAYLOAD_BYTES, StoredSpan};
use crate::telemetry::traces::encoded::SpanView;
use rusqlite::{Connection, OptionalExtension, params};

/// The size of a [`Head`] on disk, in bytes.
pub(super) const HEAD_BYTES: usize = 72;

/// A span's fixed-size record in its block (little-endian, [`HEAD_BYTES`]):
///
/// | bytes | field |
/// |---|---|
/// | 0..16 | trace id (W3C byte order) |
/// | 16..24 | span id |
/// | 24..32 | parent span id (zeros for a root span) |
/// | 32..40 | start, µs since the Unix epoch (i64) |
/// | 40..48 | duration, µs (i64) |
/// | 48..50, 50..52 | service, operation: indexes into the block's names |
/// | 52 | trace.proto `SpanKind` (1 internal … 5 consumer) |
/// | 53 | status code: 0 unset, 1 ok, 2 error |
/// | 54 | 1 when the span has a parent |
/// | 55 | 0 (reserved) |
/// | 56..60 | where the span's data starts in the block's payload |
/// | 60..64, 64..68, 68..72 | lengths of its attributes, events and status message there |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Head {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub start_us: i64,
    pub duration_us: i64,
    pub service: u16,
    pub operation: u16,
    pub kind: u8,
    pub status: u8,
    pub payload_at: u32,
    pub attributes_len: u32,
    pub events_len: u32,
    pub message_len: u32,
}

impl Head {
    /// Append the head's [`HEAD_BYTES`] to `out`.
    pub(super) fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.trace_id);
        out.extend_from_slice(&self.span_id);
        out.extend_from_slice(&self.parent_id.unwrap_or_default());
        out.extend_from_slice(&self.start_us.to_le_bytes());
        out.extend_from_slice(&self.duration_us.to_le_bytes());
        out.extend_from_slice(&self.service.to_le_bytes());
        out.extend_from_slice(&self.operation.to_le_bytes());
        out.extend_from_slice(&[
            self.kind,
            self.status,
            u8::from(self.parent_id.is_some()),
            0,
        ]);
        out.extend_from_slice(&self.payload_at.to_le_bytes());
        out.extend_from_slice(&self.attributes_len.to_le_bytes());
        out.extend_from_slice(&self.events_len.to_le_bytes());
        out.extend_from_slice(&self.message_len.to_le_bytes());
    }

    /// The head written by [`Head::put`] as `b`.
    pub(super) fn read(b: &[u8; HEAD_BYTES]) -> Head {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let i64_at = |i: usize| i64::from_le_bytes(array(&b[i..i + 8]));
        Head {
            trace_id: array(&b[0..16]),
            span_id: array(&b[16..24]),
            parent_id: (b[54] != 0).then(|| array(&b[24..32])),
            start_us: i64_at(32),
            duration_us: i64_at(40),
            service: u16_at(48),
            operation: u16_at(50),
            kind: b[52],
            status: b[53],
            payload_at: u32_at(56),
            attributes_len: u32_at(60),
            events_len: u32_at(64),
            message_len: u32_at(68),
        }
    }

    /// The low 64 bits of the trace id (its low 32 are the trace key of
    /// `block_traces`).
    pub(super) fn trace_key64(&self) -> u64 {
        u64::from_be_bytes(array(&self.trace_id[8..]))
    }

    /// The span's trace key as `block_traces` stores it: the low 32 bits
    /// of the trace id, little-endian.
    pub(super) fn trace_key(&self) -> [u8; 4] {
        (self.trace_key64() as u32).to_le_bytes()
    }

    /// Whether the span's status is Error.
    pub(super) fn failed(&self) -> bool {
        i64::from(self.status) == STATUS_ERROR
    }
}

/// `b` as an array of `N` bytes (`b` is `N` bytes long at every call).
fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().unwrap_or([0; N])
}

/// A block's heads, one after the other.
pub(super) fn heads(bytes: &[u8]) -> impl Iterator<Item = Head> + '_ {
    bytes
        .chunks_exact(HEAD_BYTES)
        .map(|h| Head::read(h.try_into().unwrap_or(&[0; HEAD_BYTES])))
}

/// A block's name table: strings, each as its length (u32 LE) and its
/// UTF-8 bytes.
pub(super) fn put_name(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
}

/// The names written by [`put_name`] (a damaged table reads short).
fn names(mut bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((len, rest)) = bytes.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let Some(name) = rest.get(..len) else { break };
        out.push(String::from_utf8_lossy(name).into_owned());
        bytes = &rest[len..];
    }
    out
}

/// trace.proto `SpanKind` as the store spells it.
pub(super) fn kind_name(kind: u8) -> &'static str {
    match kind {
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "internal",
    }
}

/// The `SpanKind` of a kind as the store spells it.
pub(super) fn kind_code(kind: &str) -> u8 {
    match kind {
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        _ => 1,
    }
}

/// An id of `N` bytes in lowercase hex, as W3C Trace Context writes it.
pub(super) fn hex<const N: usize>(id: &[u8; N]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * N);
    for b in id {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// The `N` bytes an id of `2 × N` hex digits (either case) spells; `None`
/// for anything else.
pub(super) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        let digit = |c: u8| char::from(c).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// One block as a reader sees it: its heads and names, and its payload
/// once a span's attributes are needed.
pub(super) struct Block {
    pub id: i64,
    pub heads: Vec<Head>,
    names: Vec<String>,
    /// Read and decompressed on first use; `Some(None)`: missing or damaged.
    payload: Option<Option<Vec<u8>>>,
}

impl Block {
    /// The block `id`'s heads and names (`None` if it is gone).
    pub(super) fn load(c: &Connection, id: i64) -> rusqlite::Result<Option<Block>> {
        c.prepare_cached("SELECT names, heads FROM block_spans WHERE block = ?1")?
            .query_row(params![id], |r| {
                Ok(Block {
                    id,
                    names: names(r.get_ref(0)?.as_blob()?),
                    heads: heads(r.get_ref(1)?.as_blob()?).collect(),
                    payload: None,
                })
            })
            .optional()
    }

    /// Name `i` of the block's table ("" if there is none).
    pub(super) fn name(&self, i: u16) -> &str {
        self.names.get(usize::from(i)).map_or("", String::as_str)
    }

    /// The span of head `h` without its attributes and events.
    pub(super) fn span_head(&self, h: &Head) -> SpanHead {
        SpanHead {
            trace_id: hex(&h.trace_id),
            span_id: hex(&h.span_id),
            parent_id: h.parent_id.as_ref().map(hex).unwrap_or_default(),
            service: self.name(h.service).to_string(),
            operation: self.name(h.operation).to_string(),
            kind: kind_name(h.kind).to_string(),
            start_us: h.start_us,
            duration_us: h.duration_us,
            failed: h.failed(),
        }
    }

    /// The attributes and events (OTLP `Span` fields, as written: read
    /// them with `SpanView::parse`) and status message of head `h`; empty
    /// when the payload is missing or damaged.
    pub(super) fn data(
        &mut self,
        c: &Connection,
        h: &Head,
    ) -> rusqlite::Result<(&[u8], &[u8], &[u8])> {
        if self.payload.is_none() {
            let data = c
                .prepare_cached("SELECT raw_len, data FROM payloads WHERE block = ?1")?
                .query_row(params![self.id], |r| {
                    // A damaged length must not become a huge allocation.
                    let raw_len = usize::try_from(r.get::<_, i64>(0)?)
                        .ok()
                        .filter(|n| *n <= MAX_PAYLOAD_BYTES);
                    Ok(raw_len.and_then(|n| {
                        zstd::bulk::decompress(r.get_ref(1).ok()?.as_blob().ok()?, n).ok()
                    }))
                })
                .optional()?
                .flatten();
            self.payload = Some(data);
        }
        let data = self.payload.as_ref().and_then(Option::as_deref);
        let data = data.unwrap_or_default();
        let mut at = h.payload_at as usize;
        let mut next = |len: u32| -> &[u8] {
            let from = at;
            at = at.saturating_add(len as usize);
            data.get(from..at).unwrap_or_default()
        };
        let attributes = next(h.attributes_len);
        let events = next(h.events_len);
        let message = next(h.message_len);
        Ok((attributes, events, message))
    }

    /// The whole span of head `h`.
    pub(super) fn span(&mut self, c: &Connection, h: &Head) -> rusqlite::Result<StoredSpan> {
        let head = self.span_head(h);
        let (attributes, events, message) = self.data(c, h)?;
        Ok(StoredSpan {
            trace_id: head.trace_id,
            span_id: head.span_id,
            parent_id: head.parent_id,
            service: head.service,
            operation: head.operation,
            kind: head.kind,
            start_us: head.start_us,
            duration_us: head.duration_us,
            status: i64::from(h.status),
            status_message: String::from_utf8_lossy(message).into_owned(),
            attributes: super::write::tags_json(SpanView::parse(attributes).attributes()),
            events: super::write::events_json(&SpanView::parse(events)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_reads_back_as_written() {
        let head = Head {
            trace_id: [0xab; 16],
            span_id: [1, 2, 3, 4, 5, 6, 7, 8],
            parent_id: Some([0; 8]),
            start_us: -5,
            duration_us: i64::MAX,
            service: 3,
            operation: 65535,
            kind: 2,
            status: 2,
            payload_at: 7,
            attributes_len: u32::MAX,
            events_len: 9,
            message_len: 10,
        };
        let mut bytes = Vec::new();
        head.put(&mut bytes);
        Head {
            parent_id: None,
            ..head
        }
        .put(&mut bytes);
        assert_eq!(bytes.len(), 2 * HEAD_BYTES);
        let read: Vec<Head> = heads(&bytes).collect();
        // A zero parent id is told apart from none.
        assert_eq!(read[0], head);
        assert_eq!(read[1].parent_id, None);
        assert!(read[0].failed());
    }

    #[test]
    fn names_and_ids_read_back_as_written() {
        let mut table = Vec::new();
        for name in ["svc", "", "GET /é"] {
            put_name(&mut table, name);
        }
        assert_eq!(names(&table), ["svc", "", "GET /é"]);
        // A cut table reads what is whole.
        assert_eq!(names(&table[..table.len() - 1]), ["svc", ""]);
        assert_eq!(hex(&[0x01, 0xef]), "01ef");
        assert_eq!(unhex::<2>("01EF"), Some([0x01, 0xef]));
        assert_eq!(unhex::<2>("01e"), None);
        assert_eq!(unhex::<2>("01eg"), None);
        assert_eq!(unhex::<2>("+1ef"), None);
        for kind in ["internal", "server", "client", "producer", "consumer"] {
            assert_eq!(kind_name(kind_code(kind)), kind);
        }
    }
}
