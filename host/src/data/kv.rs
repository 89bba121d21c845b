//! Key-value stores for guests: `wasi:keyvalue@0.2.0-draft` (`store`,
//! `atomics`, `batch`, the version wasmtime ships), supplied by the host
//! over the stores a component's manifest grants it
//! (`keyvalue = { sessions = "sqlite:sessions.db" }`), opened by that name
//! with `store.open`, every operation traced once for every language.
//!
//! Each operation is a CLIENT span under the guest's current span, with
//! the OpenTelemetry database semantic conventions: `db.system.name`
//! (`redis`, or `sqlite` for the embedded store), `db.namespace` (the Redis
//! database index, or the store's file as granted), `db.collection.name`
//! (the bucket: the name the store is granted under), `db.operation.name`
//! (the Redis command the operation is: `GET`, `SET`, `DEL`, `EXISTS`,
//! `SCAN`, `INCRBY`, `MGET`, `MSET`, on both backends),
//! `db.query.text` (the command with `?` for its keys and values: keys can
//! be session ids, and are never recorded), `db.operation.batch.size`,
//! `server.address`/`server.port`, `db.response.status_code` (the Redis
//! error prefix: `WRONGTYPE`, `ERR`, ...) and `error.type`; the span is
//! named `{db.operation.name} {db.collection.name}` (`GET sessions`), and
//! `db.client.operation.duration` (s) is recorded with the same names.
//!
//! Backends:
//! - **embedded**: a SQLite file beside the manifest (one table,
//!   `keyvalue(key TEXT PRIMARY KEY, value BLOB)`), nothing to install;
//! - **Redis**: a server (`redis://[:PASSWORD@]HOST[:PORT][/DB]`, the
//!   password from `${ENV}`), one multiplexed connection per grant shared
//!   by the component's instances (redis-rs's `ConnectionManager`, which
//!   reconnects), each command bounded by the request's deadline.
//!
//! Errors reach the guest as `error::other` with a message that starts
//! with its kind (`unavailable:`, `too-large:`, `timeout:`, `data:`); a
//! store that is not granted is `access-denied`.

use super::sql::expand_env;
use crate::instance::InstanceState;
use crate::telemetry::attributes::cap_string;
use crate::telemetry::traces::start_span;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status};
use rusqlite::OptionalExtension;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Resource;

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports",
        // A command to a server is awaited, not blocked on.
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::GuestBucket,
        },
    });
}

pub use generated::Imports as KeyValueImports;
use generated::wasi::keyvalue::{atomics, batch, store};

/// The longest key, in bytes (Redis would take 512 MB; no key needs this).
pub const MAX_KEY_BYTES: usize = 64 << 10;
/// The largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 32 << 20;
/// The most keys one batch operation may name.
pub const MAX_BATCH_KEYS: usize = 10_000;
/// Keys per `list-keys` page (the embedded store's; Redis's `SCAN` gives
/// about this many).
pub const LIST_PAGE: usize = 1000;
/// Buckets one instance may hold open at once.
pub const MAX_BUCKETS: usize = 16;
/// How long the embedded store waits for another connection's lock (less
/// when the request's deadline is closer): `timeout` past it.
pub const EMBEDDED_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to a Redis server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command waits for its reply when the request has no
/// deadline closer than this.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A key-value store a manifest grants, parsed from its value.
#[derive(Clone, PartialEq)]
pub enum Store {
    /// The embedded store: a SQLite file (`path`, resolved beside the
    /// manifest; `namespace`: the path as written, for spans).
    Embedded { path: PathBuf, namespace: String },
    /// A Redis server.
    Redis(Arc<RedisTarget>),
}

/// A Redis server's address, for connecting and for spans. The URL (and
/// so the password) is never printed.
#[derive(PartialEq)]
pub struct RedisTarget {
    url: String,
    /// `server.address`.
    pub address: String,
    /// `server.port`.
    pub port: u16,
    /// The database index (`db.namespace`).
    pub database: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Embedded { namespace, .. } => write!(f, "Embedded({namespace})"),
            Store::Redis(t) => write!(f, "Redis({}:{}/{})", t.address, t.port, t.database),
        }
    }
}

impl Store {
    /// Parse a grant's value: `sqlite:PATH` (the embedded store, PATH
    /// relative to `dir`, the manifest's directory) or
    /// `redis://[:PASSWORD@]HOST[:PORT][/DB]` (port 6379 and database 0 by
    /// default), with `${NAME}`s replaced by environment variables
    /// (percent-encoded into the URL; `${NAME}` alone is taken whole).
    /// Errors say what is accepted and never contain a password.
    pub fn parse(value: &str, dir: &std::path::Path) -> Result<Store, String> {
        let whole = value.starts_with("${") && value.find('}') == Some(value.len() - 1);
        let value = if whole {
            expand_env(value, false)?
        } else {
            value.to_string()
        };
        if value.starts_with("redis://") {
            let url = if whole {
                value
            } else {
                expand_env(&value, true)?
            };
            return RedisTarget::parse(url).map(|t| Store::Redis(Arc::new(t)));
        }
        if value.starts_with("rediss://") || value.starts_with("redis+unix:") {
            return Err(
                "only `redis://` (TCP without TLS) is supported for Redis so far".to_string(),
            );
        }
        if let Some(path) = value.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
                return Err(format!(
                    "`{value}`: name a file for the embedded store, as in `sqlite:sessions.db`"
                ));
            }
            return Ok(Store::Embedded {
                path: dir.join(path),
                namespace: path.to_string(),
            });
        }
        Err(format!(
            "`{}` is not a key-value store this host supports: use `sqlite:PATH` (the embedded store, a file beside the manifest) or `redis://[:PASSWORD@]HOST[:PORT][/DB]`",
            if value.contains('@') {
                "(a URL with credentials)"
            } else {
                &value
            }
        ))
    }

    /// Whether the store can be opened where it is (its directory
    /// exists); a server is checked per operation (it may come up later).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Store::Redis(_) => Ok(()),
            Store::Embedded { path, namespace } => super::sql::check_file(path, namespace),
        }
    }

    fn system(&self) -> &'static str {
        match self {
            Store::Embedded { .. } => "sqlite",
            Store::Redis(_) => "redis",
        }
    }

    fn namespace(&self) -> String {
        match self {
            Store::Embedded { namespace, .. } => namespace.clone(),
            Store::Redis(t) => t.database.to_string(),
        }
    }
}

impl RedisTarget {
    fn parse(url: String) -> Result<RedisTarget, String> {
        let bad =
            |why: &str| format!("a Redis URL {why}: use `redis://[:PASSWORD@]HOST[:PORT][/DB]`");
        let parsed =
            url::Url::parse(&url).map_err(|e| bad(&format!("that does not parse ({e})")))?;
        let address = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("without a host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed.port().unwrap_or(6379);
        let database = match parsed.path().trim_start_matches('/') {
            "" => 0,
            db => db
                .parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| bad("whose database is not a number"))?,
        };
        // redis-rs accepts it too (or says why not, without the URL).
        redis::Client::open(url.as_str())
            .map_err(|e| bad(&format!("redis-rs refuses ({:?})", e.kind())))?;
        Ok(RedisTarget {
            url,
            address,
            port,
            database,
        })
    }
}

/// The stores one component may open, by the names its manifest grants
/// them under, with one Redis connection per server grant, shared by all
/// the component's instances.
#[derive(Default)]
pub struct Grants(BTreeMap<String, Arc<Granted>>);

/// A granted store, and its Redis connection once made.
pub struct Granted {
    store: Store,
    redis: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
}

impl Grants {
    /// The grants of one component (`keyvalue` in its manifest section).
    pub fn new(stores: &BTreeMap<String, Store>) -> Grants {
        Grants(
            stores
                .iter()
                .map(|(name, store)| {
                    (
                        name.clone(),
                        Arc::new(Granted {
                            store: store.clone(),
                            redis: tokio::sync::OnceCell::new(),
                        }),
                    )
                })
                .collect(),
        )
    }
}

impl Granted {
    /// The shared connection to the Redis server, made on first use (a
    /// server that is down is tried again by the next operation).
    async fn redis(&self, target: &RedisTarget) -> Result<redis::aio::ConnectionManager, Failure> {
        self.redis
            .get_or_try_init(|| async {
                let client = redis::Client::open(target.url.as_str())
                    .map_err(|e| redis_failure(target, &e))?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(0);
                redis::aio::ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(|e| redis_failure(target, &e))
            })
            .await
            .cloned()
    }
}

/// A bucket a guest holds (the `bucket` resource).
pub struct GuestBucket {
    name: String,
    granted: Arc<Granted>,
    backend: Backend,
}

enum Backend {
    Embedded(rusqlite::Connection),
    Redis(redis::aio::ConnectionManager),
}

/// One operation's name and the text of its command, for its span.
#[derive(Clone, Copy)]
enum Op {
    Get,
    Set,
    Delete,
    Exists,
    ListKeys,
    Increment,
    GetMany,
    SetMany,
    DeleteMany,
}

impl Op {
    /// `db.operation.name`: the Redis command.
    fn command(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Set => "SET",
            Op::Delete | Op::DeleteMany => "DEL",
            Op::Exists => "EXISTS",
            Op::ListKeys => "SCAN",
            Op::Increment => "INCRBY",
            Op::GetMany => "MGET",
            Op::SetMany => "MSET",
        }
    }

    /// `db.query.text`: the command with its keys and values as `?`.
    fn text(self) -> &'static str {
        match self {
            Op::Get => "GET ?",
            Op::Set => "SET ? ?",
            Op::Delete => "DEL ?",
            Op::Exists => "EXISTS ?",
            Op::ListKeys => "SCAN ? COUNT ?",
            Op::Increment => "INCRBY ? ?",
            Op::GetMany => "MGET ? ...",
            Op::SetMany => "MSET ? ? ...",
            Op::DeleteMany => "DEL ? ...",
        }
    }
}

/// What failed, as the guest's message starts and as `error.type`.
#[derive(Debug)]
struct Failure {
    kind: &'static str,
    /// The Redis error prefix, when the server answered with an error.
    code: Option<String>,
    message: String,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            code: None,
            message: message.into(),
        }
    }

    fn to_wit(&self) -> store::Error {
        store::Error::Other(format!("{}: {}", self.kind, self.message))
    }
}

fn redis_failure(target: &RedisTarget, e: &redis::RedisError) -> Failure {
    let (host, port) = (&target.address, target.port);
    if let Some(code) = e.code() {
        return Failure {
            kind: if code == "WRONGTYPE"
                || code == "ERR" && e.to_string().contains("not an integer")
            {
                "data"
            } else {
                "other"
            },
            code: Some(code.to_string()),
            message: format!("Redis at {host}:{port} answered: {e}"),
        };
    }
    if e.is_timeout() {
        return Failure::new(
            "timeout",
            format!("Redis at {host}:{port} did not answer in time"),
        );
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        return Failure::new(
            "unavailable",
            format!("cannot reach Redis at {host}:{port}: {e}"),
        );
    }
    Failure::new("other", format!("Redis at {host}:{port}: {e}"))
}

fn sqlite_failure(namespace: &str, e: rusqlite::Error) -> Failure {
    let kind = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => "timeout",
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly) => "unavailable",
        Some(rusqlite::ErrorCode::DiskFull) => "too-large",
        _ => "other",
    };
    Failure::new(kind, format!("the embedded store `{namespace}`: {e}"))
}

fn open_embedded(path: &std::path::Path, namespace: &str) -> Result<rusqlite::Connection, Failure> {
    let fail = |e| sqlite_failure(namespace, e);
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(fail)?;
    conn.busy_timeout(EMBEDDED_BUSY_TIMEOUT).map_err(fail)?;
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(fail)?;
    }
    conn.execute_batch(
        // A rowid table: the key's index holds no value, so a lookup never
        // reads through a neighbour's large one.
        "CREATE TABLE IF NOT EXISTS keyvalue (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)",
    )
    .map_err(fail)?;
    Ok(conn)
}

/// Check the sizes of what a guest sends before any backend sees it.
fn check_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<(), Failure> {
    for (n, key) in keys.into_iter().enumerate() {
        if n >= MAX_BATCH_KEYS {
            return Err(Failure::new(
                "too-large",
                format!("a batch names more than {MAX_BATCH_KEYS} keys"),
            ));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(Failure::new(
                "too-large",
                format!("a key is {} bytes; at most {MAX_KEY_BYTES}", key.len()),
            ));
        }
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), Failure> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Failure::new(
            "too-large",
            format!(
                "a value is {} bytes; at most {MAX_VALUE_BYTES}",
                value.len()
            ),
        ));
    }
    Ok(())
}

fn below_zero(value: i64) -> Failure {
    Failure::new(
        "data",
        format!("the counter would be {value}: below zero, which the interface's u64 cannot carry"),
    )
}

/// The value an increment leaves, from the stored bytes (decimal text,
/// as Redis keeps counters) and the delta.
fn incremented(stored: Option<&[u8]>, delta: i64) -> Result<i64, Failure> {
    let current = match stored {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| Failure::new("data", "the value is not an integer"))?,
    };
    current
        .checked_add(delta)
        .ok_or_else(|| Failure::new("data", "the increment would overflow a 64-bit integer"))
}

impl InstanceState {
    /// When a key-value operation must be done: the request's deadline,
    /// and at most [`RESPONSE_TIMEOUT`] from now.
    fn kv_deadline(&self) -> Instant {
        let cap = Instant::now() + RESPONSE_TIMEOUT;
        self.deadline().map_or(cap, |d| d.min(cap))
    }

    /// Run one operation on `bucket` under a CLIENT span, recording its
    /// duration; `run` gets the backend and the request's deadline.
    async fn kv_operation<T>(
        &mut self,
        bucket: &Resource<GuestBucket>,
        op: Op,
        batch_size: Option<usize>,
        run: impl AsyncFnOnce(&str, &mut Backend, &Granted, Instant) -> Result<T, Failure>,
    ) -> wasmtime::Result<Result<T, store::Error>> {
        let deadline = self.kv_deadline();
        let (telemetry, table) = self.telemetry_and_table()?;
        let bucket = table.get_mut(bucket)?;
        if let Backend::Embedded(c) = &bucket.backend {
            // Waiting for another connection's lock ends at the deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = c.busy_timeout(left.min(EMBEDDED_BUSY_TIMEOUT));
        }
        let trace = &mut telemetry.trace;
        let store = &bucket.granted.store;
        let mut common = vec![
            KeyValue::new("db.system.name", store.system()),
            KeyValue::new("db.namespace", store.namespace()),
            KeyValue::new("db.collection.name", bucket.name.clone()),
            KeyValue::new("db.operation.name", op.command()),
        ];
        if let Store::Redis(target) = store {
            common.push(KeyValue::new("server.address", target.address.clone()));
            common.push(KeyValue::new("server.port", i64::from(target.port)));
        }
        let mut attrs = common.clone();
        attrs.push(KeyValue::new("db.query.text", op.text()));
        if let Some(n) = batch_size.filter(|n| *n >= 2) {
            attrs.push(KeyValue::new("db.operation.batch.size", n as i64));
        }
        let name = format!("{} {}", op.command(), bucket.name);
        let parent = trace.current().clone();
        let mut span = start_span(trace.tracer(), name, SpanKind::Client, attrs, Some(&parent));
        let started = Instant::now();
        let granted = bucket.granted.clone();
        let namespace = store.namespace();
        let embedded = matches!(bucket.backend, Backend::Embedded(_));
        let mut operation =
            std::pin::pin!(run(&namespace, &mut bucket.backend, &granted, deadline));
        // The embedded store's operations await nothing, but SQLite may
        // wait for another connection's lock (up to its busy timeout): they
        // are polled off the worker, where they complete.
        let done = if embedded {
            super::sql::off_worker(|| futures_util::FutureExt::now_or_never(operation.as_mut()))
        } else {
            None
        };
        let result = match done {
            Some(result) => result,
            None => operation.await,
        };
        let mut metric_attrs = common;
        if let Err(failure) = &result {
            let error_type = failure
                .code
                .clone()
                .unwrap_or_else(|| failure.kind.to_string());
            if let Some(code) = &failure.code {
                span.set_attribute(KeyValue::new("db.response.status_code", code.clone()));
                metric_attrs.push(KeyValue::new("db.response.status_code", code.clone()));
            }
            span.set_attribute(KeyValue::new("error.type", error_type.clone()));
            metric_attrs.push(KeyValue::new("error.type", error_type));
            span.set_status(Status::error(cap_string(
                failure.message.clone(),
                trace.value_cap(),
            )));
        }
        span.end();
        telemetry
            .metrics
            .db_duration
            .record(started.elapsed().as_secs_f64(), &metric_attrs);
        Ok(result.map_err(|f| f.to_wit()))
    }
}

fn redis_target(granted: &Granted) -> &RedisTarget {
    match &granted.store {
        Store::Redis(target) => target,
        Store::Embedded { .. } => unreachable!("a Redis bucket's grant is a Redis server"),
    }
}

/// Run one Redis command within the deadline.
async fn redis_query<T: redis::FromRedisValue>(
    granted: &Granted,
    conn: &mut redis::aio::ConnectionManager,
    cmd: &redis::Cmd,
    deadline: Instant,
) -> Result<T, Failure> {
    let target = redis_target(granted);
    match tokio::time::timeout_at(deadline.into(), cmd.query_async::<T>(conn)).await {
        Ok(result) => result.map_err(|e| redis_failure(target, &e)),
        Err(_) => Err(Failure::new(
            "timeout",
            format!(
                "Redis at {}:{} did not answer before the request's deadline",
                target.address, target.port
            ),
        )),
    }
}

impl store::Host for InstanceState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<GuestBucket>, store::Error>> {
        let Some(granted) = self.kv_grants().0.get(&identifier).cloned() else {
            let granted: Vec<&str> = self.kv_grants().0.keys().map(String::as_str).collect();
            let message = if granted.is_empty() {
                format!(
                    "no key-value store `{identifier}`: the manifest grants this component none (`keyvalue = {{ {identifier} = \"sqlite:{identifier}.db\" }}`)"
                )
            } else {
                format!(
                    "no key-value store `{identifier}` is granted to this component (granted: {})",
                    granted.join(", ")
                )
            };
            self.trace_refusal(&identifier, "access-denied", &message)?;
            return Ok(Err(store::Error::AccessDenied));
        };
        let open_now = self
            .table
            .iter_mut()
            .filter(|e| e.is::<GuestBucket>())
            .count();
        let opened = if open_now >= MAX_BUCKETS {
            Err(Failure::new(
                "too-large",
                format!(
                    "this instance has {MAX_BUCKETS} stores open already: open each store once and keep it (the clients do)"
                ),
            ))
        } else {
            match &granted.store {
                // Creating the table may wait for another connection's lock.
                Store::Embedded { path, namespace } => {
                    super::sql::off_worker(|| open_embedded(path, namespace)).map(Backend::Embedded)
                }
                Store::Redis(target) => {
                    match tokio::time::timeout_at(self.kv_deadline().into(), granted.redis(target))
                        .await
                    {
                        Ok(connected) => connected.map(Backend::Redis),
                        Err(_) => Err(Failure::new(
                            "timeout",
                            format!(
                                "no connection to Redis at {}:{} before the request's deadline",
                                target.address, target.port
                            ),
                        )),
                    }
                }
            }
        };
        let backend = match opened {
            Ok(backend) => backend,
            Err(failure) => {
                // A store that cannot be opened is an Error span, as a
                // failed operation is.
                self.trace_refusal(&identifier, failure.kind, &failure.message)?;
                return Ok(Err(failure.to_wit()));
            }
        };
        Ok(Ok(self.table.push(GuestBucket {
            name: identifier,
            granted,
            backend,
        })?))
    }
}

impl store::HostBucket for InstanceState {
    async fn get(
        &mut self,
        bucket: Resource<GuestBucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        self.kv_operation(
            &bucket,
            Op::Get,
            None,
            async |ns, backend, granted, deadline| {
                check_keys([key.as_str()])?;
                match backend {
                    Backend::Embedded(c) => c
                        .query_row("SELECT value FROM keyvalue WHERE key = ?1", [&key], |r| {
                            r.get(0)
                        })
                        .optional()
                        .map_err(|e| sqlite_failure(ns, e)),
                    Backend::Redis(c) => {
                        let value: Option<Vec<u8>> =
                            redis_query(granted, c, redis::cmd("GET").arg(&key), deadline).await?;
                        Ok(value)
                    }
                }
            },
        )
        .await
    }

    async fn set(
        &mut self,
        bucket: Resource<GuestBucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        self.kv_operation(&bucket, Op::Set, None, async |ns, backend, granted, deadline| {
            check_keys([key.as_str()])?;
            check_value(&value)?;
            match backend {
                Backend::Embedded(c) => c
                    .execute(
                        "INSERT INTO keyvalue (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        rusqlite::params![key, value],
                    )
                    .map(drop)
                    .map_err(|e| sqlite_failure(ns, e)),
                Backend::Redis(c) => {
                    redis_query::<()>(granted, c, redis::cmd("SET").arg(&key).arg(&value), deadline)
                        .await
                }
            }
        })
        .await
    }

    async fn delete(
        &mut self,
        bucket: Resource<GuestBucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        self.kv_operation(
            &bucket,
            Op::Delete,
            None,
            async |ns, backend, granted, deadline| {
                check_keys([key.as_str()])?;
                match backend {
                    Backend::Embedded(c) => c
                        .execute("DELETE FROM keyvalue WHERE key = ?1", [&key])
                        .map(drop)
                        .map_err(|e| sqlite_failure(ns, e)),
                    Backend::Redis(c) => {
                        redis_query::<i64>(granted, c, redis::cmd("DEL").arg(&key), deadline)
                            .await
                            .map(drop)
                    }
                }
            },
        )
        .await
    }

    async fn exists(
        &mut self,
        bucket: Resource<GuestBucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        self.kv_operation(
            &bucket,
            Op::Exists,
            None,
            async |ns, backend, granted, deadline| {
                check_keys([key.as_str()])?;
                match backend {
                    Backend::Embedded(c) => c
                        .query_row("SELECT 1 FROM keyvalue WHERE key = ?1", [&key], |_| Ok(()))
                        .optional()
                        .map(|found| found.is_some())
                        .map_err(|e| sqlite_failure(ns, e)),
                    Backend::Redis(c) => {
                        redis_query::<i64>(granted, c, redis::cmd("EXISTS").arg(&key), deadline)
                            .await
                            .map(|n| n > 0)
                    }
                }
            },
        )
        .await
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<GuestBucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        self.kv_operation(
            &bucket,
            Op::ListKeys,
            None,
            async |ns, backend, granted, deadline| {
                match backend {
                    Backend::Embedded(c) => {
                        // The cursor is an offset into the keys in order.
                        let offset = cursor.unwrap_or(0);
                        let mut statement = c
                            .prepare_cached(
                                "SELECT key FROM keyvalue ORDER BY key LIMIT ?1 OFFSET ?2",
                            )
                            .map_err(|e| sqlite_failure(ns, e))?;
                        let keys = statement
                            .query_map(
                                rusqlite::params![
                                    LIST_PAGE as i64,
                                    offset.min(i64::MAX as u64) as i64
                                ],
                                |r| r.get::<_, String>(0),
                            )
                            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                            .map_err(|e| sqlite_failure(ns, e))?;
                        let cursor = (keys.len() == LIST_PAGE).then(|| offset + LIST_PAGE as u64);
                        Ok(store::KeyResponse { keys, cursor })
                    }
                    Backend::Redis(c) => {
                        let (next, keys): (u64, Vec<Vec<u8>>) = redis_query(
                            granted,
                            c,
                            redis::cmd("SCAN")
                                .arg(cursor.unwrap_or(0))
                                .arg("COUNT")
                                .arg(LIST_PAGE),
                            deadline,
                        )
                        .await?;
                        // WIT keys are strings: a key that is not UTF-8 (set
                        // by something else) is listed with U+FFFD in it.
                        let keys = keys
                            .into_iter()
                            .map(|k| String::from_utf8_lossy(&k).into_owned())
                            .collect();
                        Ok(store::KeyResponse {
                            keys,
                            cursor: (next != 0).then_some(next),
                        })
                    }
                }
            },
        )
        .await
    }

    async fn drop(&mut self, bucket: Resource<GuestBucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for InstanceState {
    async fn increment(
        &mut self,
        bucket: Resource<GuestBucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, store::Error>> {
        self.kv_operation(&bucket, Op::Increment, None, async |ns, backend, granted, deadline| {
            check_keys([key.as_str()])?;
            let delta = i64::try_from(delta)
                .map_err(|_| Failure::new("data", format!("an increment of {delta} is larger than a 64-bit signed integer (Redis's counters)")))?;
            let value = match backend {
                Backend::Embedded(c) => {
                    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                        .map_err(|e| sqlite_failure(ns, e))?;
                    let stored: Option<Vec<u8>> = tx
                        .query_row("SELECT value FROM keyvalue WHERE key = ?1", [&key], |r| r.get(0))
                        .optional()
                    .map_err(|e| sqlite_failure(ns, e))?;
                    let value = incremented(stored.as_deref(), delta)?;
                    if value < 0 {
                        return Err(below_zero(value));
                    }
                    tx.execute(
                        "INSERT INTO keyvalue (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        rusqlite::params![key, value.to_string().into_bytes()],
                    )
                    .and_then(|_| tx.commit())
                    .map_err(|e| sqlite_failure(ns, e))?;
                    value
                }
                Backend::Redis(c) => {
                    redis_query::<i64>(granted, c, redis::cmd("INCRBY").arg(&key).arg(delta), deadline)
                        .await?
                }
            };
            u64::try_from(value).map_err(|_| below_zero(value))
        })
        .await
    }
}

impl batch::Host for InstanceState {
    async fn get_many(
        &mut self,
        bucket: Resource<GuestBucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, store::Error>> {
        let n = keys.len();
        self.kv_operation(&bucket, Op::GetMany, Some(n), async |ns, backend, granted, deadline| {
            check_keys(keys.iter().map(String::as_str))?;
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            // The values' sizes are known before any value is read, so a
            // batch past the cap (a key named many times included) costs
            // no memory.
            let too_large = |total: u64| {
                Failure::new(
                    "too-large",
                    format!("the values are {total} bytes together; at most {MAX_VALUE_BYTES}: ask for fewer keys"),
                )
            };
            let values: Vec<Option<Vec<u8>>> = match backend {
                Backend::Embedded(c) => {
                    let mut sizes = c
                        .prepare_cached("SELECT length(value) FROM keyvalue WHERE key = ?1")
                        .map_err(|e| sqlite_failure(ns, e))?;
                    let mut total = 0u64;
                    for key in &keys {
                        let size: Option<i64> = sizes
                            .query_row([key], |r| r.get(0))
                            .optional()
                    .map_err(|e| sqlite_failure(ns, e))?;
                        total += size.unwrap_or(0).max(0) as u64;
                    }
                    if total > MAX_VALUE_BYTES as u64 {
                        return Err(too_large(total));
                    }
                    let mut statement = c
                        .prepare_cached("SELECT value FROM keyvalue WHERE key = ?1")
                        .map_err(|e| sqlite_failure(ns, e))?;
                    let mut values = Vec::with_capacity(keys.len());
                    for key in &keys {
                        values.push(
                            statement
                                .query_row([key], |r| r.get(0))
                                .optional()
                    .map_err(|e| sqlite_failure(ns, e))?,
                        );
                    }
                    values
                }
                Backend::Redis(c) => {
                    let mut pipe = redis::pipe();
                    for key in &keys {
                        pipe.cmd("STRLEN").arg(key);
                    }
                    let sizes: Vec<u64> =
                        tokio::time::timeout_at(deadline.into(), pipe.query_async(c))
                            .await
                            .map_err(|_| Failure::new("timeout", "Redis did not answer before the request's deadline"))?
                            .map_err(|e| redis_failure(redis_target(granted), &e))?;
                    let total: u64 = sizes.iter().sum();
                    if total > MAX_VALUE_BYTES as u64 {
                        return Err(too_large(total));
                    }
                    redis_query(granted, c, redis::cmd("MGET").arg(&keys), deadline).await?
                }
            };
            let mut total = 0usize;
            keys.into_iter()
                .zip(values)
                .map(|(k, v)| {
                    // Values that grew between the sizes and the read.
                    total += v.as_ref().map_or(0, Vec::len);
                    if total > MAX_VALUE_BYTES {
                        return Err(too_large(total as u64));
                    }
                    Ok(v.map(|v| (k, v)))
                })
                .collect()
        })
        .await
    }

    async fn set_many(
        &mut self,
        bucket: Resource<GuestBucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let n = key_values.len();
        self.kv_operation(&bucket, Op::SetMany, Some(n), async |ns, backend, granted, deadline| {
            check_keys(key_values.iter().map(|(k, _)| k.as_str()))?;
            let total: usize = key_values.iter().map(|(_, v)| v.len()).sum();
            if total > MAX_VALUE_BYTES {
                return Err(Failure::new(
                    "too-large",
                    format!("the values are {total} bytes together; at most {MAX_VALUE_BYTES}"),
                ));
            }
            if key_values.is_empty() {
                return Ok(());
            }
            match backend {
                Backend::Embedded(c) => {
                    let tx = c.transaction().map_err(|e| sqlite_failure(ns, e))?;
                    {
                        let mut statement = tx
                            .prepare_cached("INSERT INTO keyvalue (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                            .map_err(|e| sqlite_failure(ns, e))?;
                        for (k, v) in &key_values {
                            statement
                                .execute(rusqlite::params![k, v])
                                .map_err(|e| sqlite_failure(ns, e))?;
                        }
                    }
                    tx.commit().map_err(|e| sqlite_failure(ns, e))
                }
                Backend::Redis(c) => {
                    let mut cmd = redis::cmd("MSET");
                    for (k, v) in &key_values {
                        cmd.arg(k).arg(v);
                    }
                    redis_query::<()>(granted, c, &cmd, deadline).await
                }
            }
        })
        .await
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<GuestBucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let n = keys.len();
        self.kv_operation(
            &bucket,
            Op::DeleteMany,
            Some(n),
            async |ns, backend, granted, deadline| {
                check_keys(keys.iter().map(String::as_str))?;
                if keys.is_empty() {
                    return Ok(());
                }
                match backend {
                    Backend::Embedded(c) => {
                        let tx = c.transaction().map_err(|e| sqlite_failure(ns, e))?;
                        {
                            let mut statement = tx
                                .prepare_cached("DELETE FROM keyvalue WHERE key = ?1")
                                .map_err(|e| sqlite_failure(ns, e))?;
                            for k in &keys {
                                statement.execute([k]).map_err(|e| sqlite_failure(ns, e))?;
                            }
                        }
                        tx.commit().map_err(|e| sqlite_failure(ns, e))
                    }
                    Backend::Redis(c) => {
                        redis_query::<i64>(granted, c, redis::cmd("DEL").arg(&keys), deadline)
                            .await
                            .map(drop)
                    }
                }
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_hide_their_password() {
        let dir = std::path::Path::new("/srv/app");
        assert_eq!(
            Store::parse("sqlite:data/sessions.db", dir).unwrap(),
            Store::Embedded {
                path: dir.join("data/sessions.db"),
                namespace: "data/sessions.db".into()
            }
        );
        // SAFETY: the variable is this test's own.
        unsafe { std::env::set_var("POLYTRACE_KV_TEST_PW", "s3cr/t@x") };
        let redis = Store::parse(
            "redis://:${POLYTRACE_KV_TEST_PW}@cache.internal:6380/2",
            dir,
        )
        .unwrap();
        let Store::Redis(target) = &redis else {
            panic!("{redis:?}")
        };
        assert_eq!(
            (target.address.as_str(), target.port, target.database),
            ("cache.internal", 6380, 2)
        );
        assert!(!format!("{redis:?}").contains("s3cr"), "{redis:?}");
        let Store::Redis(default) = Store::parse("redis://127.0.0.1", dir).unwrap() else {
            panic!()
        };
        assert_eq!((default.port, default.database), (6379, 0));
        for bad in [
            "memcached://x",
            "redis://h/not-a-db",
            "sqlite:",
            "rediss://h",
        ] {
            let e = Store::parse(bad, dir).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        let e = Store::parse("http://user:hunter2@x", dir).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn increments_follow_redis_counters() {
        assert_eq!(incremented(None, 5).unwrap(), 5);
        assert_eq!(incremented(Some(b"41"), 1).unwrap(), 42);
        assert_eq!(incremented(Some(b"-3"), 1).unwrap(), -2);
        assert_eq!(incremented(Some(b"x"), 1).unwrap_err().kind, "data");
        assert_eq!(
            incremented(Some(b"9223372036854775807"), 1)
                .unwrap_err()
                .kind,
            "data"
        );
    }
}
