//! The embedded trace store: every finished span the export worker hands
//! out also lands here (the same batches the OTLP exporters get), in SQLite,
//! so `polytrace up` shows traces with nothing else installed. Guest log
//! records that belong to a span are kept too, and shown on their span.
//!
//! Writes happen on one thread of their own, fed through a bounded queue:
//! a slow disk never slows a request, and when the writer falls behind,
//! batches are dropped and counted. Retention removes the oldest spans by
//! age and by database size.

use crate::telemetry::traces::encoded::EncodedSpan;
use opentelemetry::{Array, Value};
use rusqlite::{Connection, params};
use serde_json::{Value as Json, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod block;
pub mod search;
mod write;

pub use search::{AnswerBudget, Loaded, SpanHead, SpanSearch, TraceStatus, spans_of, spans_within};

/// Batches waiting for the writer; past this, new batches are dropped.
const QUEUE_BATCHES: usize = 256;

/// Where and how long traces are kept.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `None`: in memory only, gone when the host stops.
    pub path: Option<PathBuf>,
    /// Spans older than this are deleted.
    pub max_age: Duration,
    /// The most the store takes on disk, in bytes: the database file and
    /// its write-ahead log together (see [`wal_budget`]); past it the
    /// oldest spans are deleted and their pages returned to the system.
    pub max_bytes: u64,
}

/// The part of [`StoreConfig::max_bytes`] the write-ahead log may use: an
/// eighth, between 1 and 32 MiB, and never more than a quarter. SQLite
/// checkpoints the log into the database when it reaches half of this and
/// truncates it back to it after.
pub fn wal_budget(max_bytes: u64) -> u64 {
    (max_bytes / 8).clamp(1 << 20, 32 << 20).min(max_bytes / 4)
}

/// The smallest `max_bytes` a file store takes (`--store-max-mb 1`).
pub const MIN_MAX_BYTES: u64 = 1 << 20;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: None,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
        }
    }
}

/// One stored span, in the shape the query API reads.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSpan {
    /// 32 lowercase hex digits (W3C Trace Context); an id that is not
    /// hex of the right length is stored as all zeros.
    pub trace_id: String,
    /// 16 lowercase hex digits, stored as `trace_id` is.
    pub span_id: String,
    /// 16 lowercase hex digits, or empty for a root span (a parent id that
    /// is not hex is stored as none).
    pub parent_id: String,
    pub service: String,
    pub operation: String,
    /// `server`, `client`, `internal`, `producer`, `consumer`.
    pub kind: String,
    pub start_us: i64,
    pub duration_us: i64,
    /// 0 unset, 1 ok, 2 error.
    pub status: i64,
    pub status_message: String,
    /// `[{"key", "type", "value"}]` with Jaeger's tag types.
    pub attributes: Json,
    /// `[{"timestamp" (µs), "name", "attributes": [...]}]`.
    pub events: Json,
}

/// One stored log record of a span.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLog {
    pub trace_id: String,
    pub span_id: String,
    pub time_us: i64,
    pub service: String,
    /// The severity text (`INFO`, `WARN2`, ...), or `-`.
    pub severity: String,
    pub body: String,
    /// Tags, as span attributes are stored.
    pub attributes: Json,
}

/// A log record as stored, if it belongs to a span.
pub(crate) fn stored_log(
    service: &str,
    r: &opentelemetry_sdk::logs::SdkLogRecord,
) -> Option<StoredLog> {
    use opentelemetry::logs::AnyValue;
    let cx = r.trace_context()?;
    let text = |v: &AnyValue| match v {
        AnyValue::String(s) => s.to_string(),
        AnyValue::Int(i) => i.to_string(),
        AnyValue::Double(f) => f.to_string(),
        AnyValue::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    };
    let attributes: Vec<Json> = r
        .attributes_iter()
        .map(|(k, v)| match v {
            AnyValue::Int(i) => json!({"key": k.as_str(), "type": "int64", "value": i}),
            AnyValue::Double(f) => json!({"key": k.as_str(), "type": "float64", "value": f}),
            AnyValue::Boolean(b) => json!({"key": k.as_str(), "type": "bool", "value": b}),
            other => json!({"key": k.as_str(), "type": "string", "value": text(other)}),
        })
        .collect();
    Some(StoredLog {
        trace_id: cx.trace_id.to_string(),
        span_id: cx.span_id.to_string(),
        time_us: r.timestamp().or(r.observed_timestamp()).map_or(0, micros),
        service: service.to_string(),
        severity: r.severity_text().unwrap_or("-").to_string(),
        body: r.body().map(text).unwrap_or_default(),
        attributes: Json::Array(attributes),
    })
}

/// The log records of a trace, oldest first, at most `limit`, as span
/// events named `log` (with `level` and `message` first, as Jaeger shows
/// logs), by span id.
pub fn logs_of(
    c: &Connection,
    trace_id: &str,
    limit: usize,
) -> rusqlite::Result<Vec<(String, Json)>> {
    let mut q = c.prepare_cached(
        "SELECT span_id, time_us, severity, body, attributes FROM logs
         WHERE trace_id = ?1 ORDER BY time_us LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    q.query_map(params![trace_id, limit], |r| {
        let attributes: String = r.get(4)?;
        let mut fields = vec![
            json!({"key": "level", "type": "string", "value": r.get::<_, String>(2)?}),
            json!({"key": "message", "type": "string", "value": r.get::<_, String>(3)?}),
        ];
        if let Ok(Json::Array(more)) = serde_json::from_str(&attributes) {
            fields.extend(more);
        }
        Ok((
            r.get::<_, String>(0)?,
            json!({"timestamp": r.get::<_, i64>(1)?, "name": "log", "attributes": fields}),
        ))
    })?
    .collect()
}

/// Counters of the store, for the stop line and tests.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub stored: AtomicU64,
    pub dropped: AtomicU64,
    pub expired: AtomicU64,
}

/// What the writer thread receives.
pub(crate) enum Msg {
    /// Finished spans of one service, converted on the writer thread so the
    /// export worker only hands them over.
    Batch(String, Vec<EncodedSpan>),
    Spans(Vec<StoredSpan>),
    /// Log records of one service (those with a span are kept).
    Logs(String, Vec<opentelemetry_sdk::logs::SdkLogRecord>),
    /// Answer once everything before this message is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The store: a writer thread with its connection, and connections of
/// their own for queries, so a reader never waits for the writer's lock
/// (WAL lets them read while it writes) nor for another reader's query.
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Read-only connections to the file; for an in-memory store, the
    /// writer's (a `:memory:` database is private to its connection).
    readers: Vec<Arc<Mutex<Connection>>>,
    /// Which reader the next query tries first.
    next_reader: std::sync::atomic::AtomicUsize,
    tx: SyncSender<Msg>,
    pub stats: Arc<StoreStats>,
    pub config: StoreConfig,
    /// When spans dropped at a full queue were last said.
    dropped_warning: crate::telemetry::drops::SharedThrottle,
}

/// The largest block payload read back (a block holds at most 256 spans
/// of attributes already capped in length).
const MAX_PAYLOAD_BYTES: usize = 256 << 20;

/// SQLite's page cache for the store's connection, in KiB.
const CACHE_KIB: i64 = 64 * 1024;
/// How much of the database file SQLite reads through `mmap`.
const MMAP_BYTES: i64 = 1 << 30;

/// Bumped when the tables change; an older file is started afresh.
const SCHEMA_VERSION: i64 = 11;

const SCHEMA: &str = "
-- A block: up to write::BLOCK_SPANS spans written together (`spans` of
-- them; the model is in block.rs) and what searches need to skip it
-- without reading it: `search_filter`, a Bloom filter over its search
-- keys (write::tag_hash); `error_traces`, the low 64 bits of the trace id
-- of each span with status Error (8 bytes LE).
CREATE TABLE IF NOT EXISTS blocks (
    id INTEGER PRIMARY KEY,
    spans INTEGER NOT NULL,
    min_start_us INTEGER NOT NULL,
    max_start_us INTEGER NOT NULL,
    error_traces BLOB NOT NULL,
    search_filter BLOB NOT NULL
);
-- A block's trace keys, to find a trace's spans: the low 32 bits of each
-- span's trace id (4 bytes LE, in the order of its heads).
CREATE TABLE IF NOT EXISTS block_traces (
    block INTEGER PRIMARY KEY,
    trace_keys BLOB NOT NULL
);
-- A block's spans: their heads (block::Head, 72 bytes each) and the names
-- (services and operations) the heads point to.
CREATE TABLE IF NOT EXISTS block_spans (
    block INTEGER PRIMARY KEY,
    names BLOB NOT NULL,
    heads BLOB NOT NULL
);
-- A block's attributes, events and status messages, zstd-compressed
-- (`raw_len`: the payload's size uncompressed).
CREATE TABLE IF NOT EXISTS payloads (
    block INTEGER PRIMARY KEY,
    raw_len INTEGER NOT NULL,
    data BLOB NOT NULL
);
-- Every (service, operation, kind) with spans in the store, for the
-- operation lists; `last_start_us`: its newest span's start (retention
-- removes the names whose spans are all gone).
CREATE TABLE IF NOT EXISTS operations (
    service TEXT NOT NULL,
    operation TEXT NOT NULL,
    kind TEXT NOT NULL,
    last_start_us INTEGER NOT NULL,
    PRIMARY KEY (service, operation, kind)
) WITHOUT ROWID;
-- Log records of spans, shown with their span.
CREATE TABLE IF NOT EXISTS logs (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    service TEXT NOT NULL,
    severity TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_trace ON logs (trace_id, time_us);
CREATE INDEX IF NOT EXISTS logs_by_time ON logs (time_us);
CREATE TABLE IF NOT EXISTS services (
    service TEXT PRIMARY KEY,
    language TEXT NOT NULL,
    resource TEXT NOT NULL
);
";

impl Store {
    /// Open (or create) the store and start its writer thread.
    pub fn open(config: StoreConfig) -> anyhow::Result<Arc<Store>> {
        let conn = match &config.path {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        anyhow::anyhow!("trace store: cannot create {}: {e}", dir.display())
                    })?;
                }
                let conn = Connection::open(path).map_err(|e| {
                    anyhow::anyhow!("trace store: cannot open {}: {e}", path.display())
                })?;
                // The first statement that reads the file: a file that is
                // not a SQLite database fails here.
                conn.pragma_update(None, "journal_mode", "WAL")
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "trace store: cannot use {} as the store ({e}); pass --store with \
                             another file, `memory` or `none`",
                            path.display()
                        )
                    })?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                // Checkpoint the WAL at half its budget (16 MiB for the
                // default size, instead of SQLite's 4 MiB: fewer copies of
                // hot index pages into the main file), and truncate it back
                // to the budget after, so the log stays inside the size cap.
                // The checkpoint starts at half the budget: the log passes
                // that by up to a transaction before it does.
                let wal = wal_budget(config.max_bytes) as i64;
                let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                conn.pragma_update(None, "wal_autocheckpoint", wal / 2 / page.max(512))?;
                conn.pragma_update(None, "journal_size_limit", wal)?;
                conn
            }
            None => Connection::open_in_memory()?,
        };
        // Freed pages go back to the file system on `incremental_vacuum`:
        // the size cap counts them. The pragma takes effect for a new
        // database; a file made without it is rebuilt once.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        let auto_vacuum: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        if auto_vacuum != 2 {
            tracing::info!("trace store: rebuilding the file once so it can return free pages");
            conn.execute_batch("VACUUM")
                .map_err(|e| anyhow::anyhow!("trace store: cannot rebuild the file: {e}"))?;
        }
        conn.busy_timeout(Duration::from_secs(5))?;
        // A page cache that holds the hot ends of every index (the default
        // 2 MiB made each transaction evict and re-read index pages), in
        // KiB; pages are read through a memory map, not copied by `pread`.
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        // The store is a cache of traces: a file from another schema version
        // is started afresh rather than migrated.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != SCHEMA_VERSION {
            conn.execute_batch(
                "DROP TABLE IF EXISTS spans; DROP TABLE IF EXISTS tags; DROP TABLE IF EXISTS services;
                 DROP TABLE IF EXISTS logs; DROP TABLE IF EXISTS tag_postings;
                 DROP TABLE IF EXISTS blocks; DROP TABLE IF EXISTS payloads;
                 DROP TABLE IF EXISTS operations; DROP TABLE IF EXISTS block_traces;
                 DROP TABLE IF EXISTS block_spans;",
            )?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        conn.execute_batch(SCHEMA)
            .map_err(|e| anyhow::anyhow!("trace store: cannot create its tables: {e}"))?;
        let conn = Arc::new(Mutex::new(conn));
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_BATCHES);
        let stats = Arc::new(StoreStats::default());
        let writer = write::Writer {
            conn: conn.clone(),
            stats: stats.clone(),
            config: config.clone(),
            zstd: zstd::bulk::Compressor::new(write::BLOCK_LEVEL)?,
            last_block: None,
        };
        std::thread::Builder::new()
            .name("polytrace-store".into())
            .spawn(move || writer.run(rx))?;
        let readers = match &config.path {
            Some(path) => (0..READERS)
                .map(|_| open_reader(path).map(|c| Arc::new(Mutex::new(c))))
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => vec![conn.clone()],
        };
        Ok(Arc::new(Store {
            conn,
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            tx,
            stats,
            config,
            dropped_warning: Default::default(),
        }))
    }

    /// Record a component's service, language and resource (at start-up).
    pub fn register_service(&self, service: &str, language: &str, resource: &Json) {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let _ = conn.execute(
            "INSERT INTO services (service, language, resource) VALUES (?1, ?2, ?3)
             ON CONFLICT(service) DO UPDATE SET language = ?2, resource = ?3",
            params![service, language, resource.to_string()],
        );
    }

    /// Queue a batch for writing; never blocks. A full queue drops it.
    pub fn add(&self, service: &str, batch: Vec<EncodedSpan>) {
        let n = batch.len() as u64;
        if self
            .tx
            .try_send(Msg::Batch(service.to_string(), batch))
            .is_err()
        {
            self.dropped(n);
        }
    }

    /// Count `n` spans the queue had no room for, and say so (once per
    /// 30 s): the viewer will not show them.
    fn dropped(&self, n: u64) {
        let total = self.stats.dropped.fetch_add(n, Ordering::Relaxed) + n;
        if self.dropped_warning.ready() {
            tracing::warn!(
                "trace store behind: {n} spans not stored ({total} in all); spans end faster \
                 than its writer keeps them (one thread; ~200,000 spans/s on an idle core, \
                 far fewer when the requests take the cores). The viewer will not show them; \
                 the OTLP export is not affected"
            );
        }
    }

    /// Queue spans for writing; never blocks. A full queue drops them.
    pub fn add_spans(&self, spans: Vec<StoredSpan>) {
        let n = spans.len() as u64;
        match self.tx.try_send(Msg::Spans(spans)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped(n),
        }
    }

    /// Queue log records for writing; never blocks. A full queue drops them.
    pub fn add_logs(&self, service: &str, records: Vec<opentelemetry_sdk::logs::SdkLogRecord>) {
        let _ = self.tx.try_send(Msg::Logs(service.to_string(), records));
    }

    /// Wait until everything queued so far is written and retention has
    /// run (blocking; for shutdown and tests).
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(done_tx)).is_err() {
            return false;
        }
        done_rx.recv_timeout(timeout).is_ok()
    }

    /// Run a read-only query on a reader connection (the first free one,
    /// else the next in turn), with no time budget.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.read_within(None, f)
    }

    /// Like [`read`](Self::read), interrupted once `deadline` has passed:
    /// SQLite's progress handler stops the statement running then, and it
    /// fails with `SQLITE_INTERRUPT` (see [`is_interrupted`]).
    pub fn read_within<T>(
        &self,
        deadline: Option<std::time::Instant>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        let free = (0..n).find_map(|i| self.readers[(start + i) % n].try_lock().ok());
        let conn = match free {
            Some(c) => c,
            None => self.readers[start % n]
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        };
        /// Clears the deadline however the read ends (a panic included):
        /// an in-memory store's reader is its writer's connection.
        struct Deadline<'a>(&'a Connection);
        impl Drop for Deadline<'_> {
            fn drop(&mut self) {
                self.0
                    .progress_handler(PROGRESS_STEPS, None::<fn() -> bool>);
            }
        }
        let _clear = deadline.map(|deadline| {
            conn.progress_handler(
                PROGRESS_STEPS,
                Some(move || std::time::Instant::now() >= deadline),
            );
            Deadline(&conn)
        });
        f(&conn)
    }
}

/// The database's size in bytes, free pages included (what its file takes
/// once the write-ahead log is checkpointed).
/// Whether a read failed because its deadline passed ([`Store::read_within`]).
pub fn is_interrupted(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted)
}

/// Reader connections of a file store.
const READERS: usize = 2;
/// SQLite virtual-machine steps between two checks of a read's deadline.
const PROGRESS_STEPS: i32 = 10_000;

/// A read-only connection to the store's file, with the page cache and
/// memory map a query needs (a smaller cache than the writer's: readers
/// share the operating system's page cache through the map).
fn open_reader(path: &std::path::Path) -> anyhow::Result<Connection> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| anyhow::anyhow!("trace store: cannot open {} to read: {e}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "cache_size", -(CACHE_KIB / 4))?;
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    Ok(conn)
}

pub(crate) fn database_bytes(conn: &Connection) -> u64 {
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap_or(0);
    let size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap_or(4096);
    (pages.max(0) * size) as u64
}

/// Return every free page to the file system (`auto_vacuum =
/// INCREMENTAL`). The pragma frees one page per step: run it to the end.
pub(crate) fn vacuum_free_pages(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64
}

pub(crate) fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as i64
}

/// A tag as Jaeger types it: string, bool, int64, float64 (arrays as JSON
/// strings, as Jaeger's own OTLP receiver does).
pub fn tag(key: &str, value: &Value) -> Json {
    let (ty, v) = match value {
        Value::Bool(b) => ("bool", json!(b)),
        Value::I64(i) => ("int64", json!(i)),
        Value::F64(f) => ("float64", json!(f)),
        Value::String(s) => ("string", json!(s.as_str())),
        Value::Array(a) => {
            let items = match a {
                Array::Bool(v) => json!(v),
                Array::I64(v) => json!(v),
                Array::F64(v) => json!(v),
                Array::String(v) => json!(v.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
                _ => json!([]),
            };
            ("string", json!(items.to_string()))
        }
        other => ("string", json!(other.to_string())),
    };
    json!({"key": key, "type": ty, "value": v})
}

/// The default database path for an app: beside its manifest.
pub fn default_path(manifest_dir: &Path) -> PathBuf {
    manifest_dir.join(".polytrace").join("traces.db")
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;

    fn span(trace: usize, i: usize, start_us: i64) -> StoredSpan {
        StoredSpan {
            trace_id: format!("{trace:032x}"),
            span_id: format!("{i:016x}"),
            parent_id: String::new(),
            service: "svc".into(),
            operation: "op".into(),
            kind: "server".into(),
            start_us,
            duration_us: 10,
            status: 0,
            status_message: String::new(),
            attributes: json!([{"key": "k", "type": "string", "value": "x".repeat(200)}]),
            events: json!([]),
        }
    }

    /// The starts of every stored span, read from the blocks' heads.
    fn starts(store: &Store) -> Vec<i64> {
        let mut starts = Vec::new();
        store
            .read(|c| search::scan_window(c, i64::MIN, i64::MAX, |h| starts.push(h.start_us)))
            .unwrap();
        starts
    }

    /// A new empty directory for one test, and the store file's path in it.
    fn empty_dir(test: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("polytrace-store-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        (dir, path)
    }

    fn count(store: &Store) -> i64 {
        store
            .read(|c| {
                c.query_row("SELECT COALESCE(SUM(spans), 0) FROM blocks", [], |r| {
                    r.get(0)
                })
            })
            .unwrap()
    }

    #[test]
    fn old_spans_expire_and_size_is_capped() {
        let dir = std::env::temp_dir().join(format!("polytrace-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = StoreConfig {
            path: Some(dir.join("t.db")),
            max_age: Duration::from_secs(3600),
            max_bytes: 4 << 20,
        };
        let store = Store::open(config).unwrap();
        let now = now_us();
        let two_hours_ago = now - 7_200_000_000;
        // 10 old spans, then 20,000 recent ones (~14 MB with their tag
        // index, in 20 groups of one start time): both limits apply.
        store.add_spans((0..10).map(|i| span(0, i, two_hours_ago)).collect());
        for t in 1..=20 {
            store.add_spans(
                (0..1000)
                    .map(|i| span(t, i, now - 1000 + t as i64))
                    .collect(),
            );
        }
        // The writer applies retention by itself as it writes.
        assert!(store.flush(Duration::from_secs(30)));
        let written = 20_010;
        let starts = starts(&store);
        let old = starts.iter().filter(|s| **s < now - 3_600_000_000).count();
        let total = starts.len() as i64;
        assert_eq!(old, 0, "spans past max_age are gone");
        assert!(total < written && total > 0, "{written} → {total}");
        assert_eq!(total, count(&store));
        // On disk, the log included.
        let on_disk: u64 = ["t.db", "t.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
            .sum();
        assert!(on_disk <= 4 << 20, "{on_disk} bytes on disk");
        // The newest survive: the oldest go first.
        let newest = self::starts(&store).into_iter().max();
        assert_eq!(newest, Some(now - 1000 + 20));
        assert!(store.stats.expired.load(Ordering::Relaxed) > 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_of_the_previous_schema_starts_afresh_and_takes_spans() {
        let (dir, path) = empty_dir("v8");
        {
            // The tables of schema 8 (one row per span), with a span in them.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE spans (id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL);
                 CREATE TABLE blocks (id INTEGER PRIMARY KEY, first_id INTEGER NOT NULL,
                     last_id INTEGER NOT NULL, min_start_us INTEGER NOT NULL,
                     max_start_us INTEGER NOT NULL, error_traces BLOB NOT NULL,
                     search_filter BLOB NOT NULL);
                 CREATE TABLE block_traces (block INTEGER PRIMARY KEY,
                     first_id INTEGER NOT NULL, trace_keys BLOB NOT NULL);
                 INSERT INTO spans VALUES (1, 'old');
                 INSERT INTO blocks VALUES (7, 1, 1, 0, 0, x'', x'');
                 PRAGMA user_version = 8;",
            )
            .unwrap();
        }
        let store = Store::open(StoreConfig {
            path: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        let now = now_us();
        store.add_spans(vec![span(5, 1, now)]);
        assert!(store.flush(Duration::from_secs(5)));
        assert_eq!(store.stats.stored.load(Ordering::Relaxed), 1);
        assert_eq!(count(&store), 1);
        let found = store
            .read(|c| spans_of(c, &[format!("{:032x}", 5)]))
            .unwrap();
        assert_eq!(found, vec![span(5, 1, now)]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_is_not_a_store_is_named_and_left_alone() {
        let path =
            std::env::temp_dir().join(format!("polytrace-not-a-store-{}", std::process::id()));
        let text = "root:x:0:0:root:/root:/bin/bash\n".repeat(100);
        std::fs::write(&path, &text).unwrap();
        let err = Store::open(StoreConfig {
            path: Some(path.clone()),
            ..Default::default()
        })
        .err()
        .expect("refused");
        let message = format!("{err:#}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("--store"), "{message}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_block_that_straddles_the_age_limit_keeps_its_other_spans() {
        let store = Store::open(StoreConfig {
            max_age: Duration::from_secs(3600),
            ..Default::default()
        })
        .unwrap();
        let now = now_us();
        // One block: a recent span, then one past max_age (removed by the
        // retention that a flush applies: the block is written again
        // without it), then a recent one of the same trace as the first.
        let mut failed = span(1, 3, now);
        failed.status = 2;
        failed.status_message = "no stock".into();
        store.add_spans(vec![
            span(1, 1, now),
            span(2, 1, now - 7_200_000_000),
            failed.clone(),
        ]);
        assert!(store.flush(Duration::from_secs(5)));
        assert_eq!(count(&store), 2);
        assert_eq!(store.stats.expired.load(Ordering::Relaxed), 1);
        // Block ids are not reused after retention deleted the newest.
        store.add_spans(vec![span(3, 1, now)]);
        assert!(store.flush(Duration::from_secs(5)));
        let blocks: Vec<(i64, i64)> = store
            .read(|c| {
                c.prepare("SELECT id, spans FROM blocks ORDER BY id")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .unwrap();
        assert_eq!(blocks, vec![(1, 2), (2, 1)]);
        let found = store
            .read(|c| {
                spans_of(
                    c,
                    &[
                        format!("{:032x}", 3),
                        format!("{:032x}", 1),
                        format!("{:032x}", 2),
                    ],
                )
            })
            .unwrap();
        let ids: Vec<(&str, &str)> = found
            .iter()
            .map(|s| (s.trace_id.as_str(), s.span_id.as_str()))
            .collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
        // The rewritten block's spans keep their own data.
        let kept = found.iter().find(|s| s.span_id == failed.span_id).unwrap();
        assert_eq!(kept, &failed);
        let all = store
            .search(&SpanSearch {
                start_us: now - 1_000_000,
                end_us: now + 1_000_000,
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.len(), 2, "each trace once: {all:?}");
    }

    #[test]
    fn retention_rebuilds_the_trace_keys_of_a_block_it_writes_again() {
        let (dir, path) = empty_dir("keys");
        let now = now_us();
        {
            // One block: a recent span and one two hours old, kept by the
            // default week of retention.
            let store = Store::open(StoreConfig {
                path: Some(path.clone()),
                ..Default::default()
            })
            .unwrap();
            store.add_spans(vec![span(1, 1, now), span(2, 1, now - 7_200_000_000)]);
            assert!(store.flush(Duration::from_secs(5)));
            assert_eq!(count(&store), 2);
        }
        // The block's trace keys are lost.
        Connection::open(&path)
            .unwrap()
            .execute("DELETE FROM block_traces", [])
            .unwrap();
        let store = Store::open(StoreConfig {
            path: Some(path.clone()),
            max_age: Duration::from_secs(3600),
            ..Default::default()
        })
        .unwrap();
        store.add_spans(vec![span(3, 1, now)]);
        assert!(store.flush(Duration::from_secs(5)));
        // Retention wrote the block again without the old span, with the
        // keys of the span it kept: its trace is found again.
        assert_eq!(count(&store), 2);
        assert_eq!(store.stats.expired.load(Ordering::Relaxed), 1);
        let found = store
            .read(|c| spans_of(c, &[format!("{:032x}", 1), format!("{:032x}", 2)]))
            .unwrap();
        assert_eq!(found, vec![span(1, 1, now)]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A span of trace `trace` with these attributes, encoded as the
    /// export worker hands spans to the store.
    fn encoded_span(trace: u128, start_us: i64, attributes: Vec<KeyValue>) -> EncodedSpan {
        use opentelemetry::trace::{
            SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
        };
        let start = UNIX_EPOCH + Duration::from_micros(start_us as u64);
        let span = opentelemetry_sdk::trace::SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(7),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "GET /x".into(),
            start_time: start,
            end_time: start + Duration::from_micros(10),
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: opentelemetry::InstrumentationScope::builder("t").build(),
        };
        EncodedSpan::encode(&span, 0)
    }

    #[test]
    fn a_tag_search_matches_each_attribute_type_as_searches_spell_it() {
        let store = Store::open(StoreConfig::default()).unwrap();
        let now = now_us();
        let attributes = vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.response.status_code", 503i64),
            KeyValue::new("error.flag", true),
            KeyValue::new("codes", Value::Array(Array::I64(vec![1, 2]))),
            KeyValue::new("user.zip", "01234"),
            KeyValue::new("user.id", "42"),
            KeyValue::new("ratio", 0.5),
            KeyValue::new("quote", "say \"hi\""),
        ];
        store.add("svc", vec![encoded_span(1, now, attributes)]);
        // Another trace, so that a search that matched anything would say so.
        store.add(
            "svc",
            vec![encoded_span(2, now, vec![KeyValue::new("user.id", 42i64)])],
        );
        assert!(store.flush(Duration::from_secs(10)));
        let find = |pairs: &[(&str, &str)]| -> Vec<String> {
            store
                .search(&SpanSearch {
                    tags: pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    start_us: now - 1_000_000,
                    end_us: now + 1_000_000,
                    limit: 10,
                    ..Default::default()
                })
                .unwrap()
        };
        let first = vec![format!("{:032x}", 1)];
        for pairs in [
            &[("http.request.method", "GET")][..],
            &[("http.response.status_code", "503")],
            &[("error.flag", "true")],
            &[("codes", "[1,2]")],
            &[("user.zip", "01234")],
            &[("quote", "say \"hi\"")],
            &[
                ("http.request.method", "GET"),
                ("http.response.status_code", "503"),
            ],
        ] {
            assert_eq!(find(pairs), first, "{pairs:?}");
        }
        // A string and an integer spelled alike both match.
        let mut both = find(&[("user.id", "42")]);
        both.sort();
        assert_eq!(both, [format!("{:032x}", 1), format!("{:032x}", 2)]);
        for pairs in [
            &[("http.request.method", "POST")][..],
            &[("http.response.status_code", "500")],
            &[("error.flag", "false")],
            &[("codes", "[1]")],
            &[("user.zip", "1234")],
            // Floats are not searchable.
            &[("ratio", "0.5")],
            // Every pair on one span.
            &[
                ("http.request.method", "GET"),
                ("http.response.status_code", "500"),
            ],
            // The value of another key.
            &[("user.zip", "GET")],
        ] {
            assert_eq!(find(pairs), Vec::<String>::new(), "{pairs:?}");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let store = Store::open(StoreConfig::default()).unwrap();
        // Hold the connection: the writer cannot drain the queue.
        let guard = store.conn.lock().unwrap();
        let started = std::time::Instant::now();
        // What the host says meanwhile.
        #[derive(Clone, Default)]
        struct Said(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Said {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let said = Said::default();
        let writer = said.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..(QUEUE_BATCHES * 2 + 10) {
                store.add_spans(vec![span(1, 1, 1)]);
            }
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        // Said once (the warning is throttled), with the count.
        let said = String::from_utf8(said.0.lock().unwrap().clone()).unwrap();
        assert_eq!(said.matches("trace store behind").count(), 1, "{said}");
        assert!(said.contains("spans not stored"), "{said}");
        // The writer may take what arrives while it drains the queue before
        // it blocks on the lock (how much depends on scheduling), so the
        // exact number dropped is not fixed: some were, and every span is
        // accounted for as stored or dropped.
        let dropped = store.stats.dropped.load(Ordering::Relaxed);
        assert!(dropped > 0);
        drop(guard);
        assert!(store.flush(Duration::from_secs(5)));
        let stored = store.stats.stored.load(Ordering::Relaxed);
        assert_eq!(stored + dropped, (QUEUE_BATCHES * 2 + 10) as u64);
    }
}
