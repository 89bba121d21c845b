//! SQL for guests (`polytrace:telemetry/sql`): the databases a component's
//! manifest grants it, opened by name, every statement traced once for
//! every language.
//!
//! Each statement is a CLIENT span under the guest's current span, named
//! and described by the OpenTelemetry database semantic conventions
//! (`db.system.name`, `db.namespace`, `db.operation.name`,
//! `db.collection.name`, `db.query.summary`, `db.query.text` with its
//! literals replaced by `?`, `db.response.returned_rows`,
//! `db.response.status_code`, `error.type`), and a
//! `db.client.operation.duration` measurement (s). The span's name is its
//! `db.query.summary` (`SELECT orders`), else the database system's name.
//!
//! Backends:
//! - SQLite, embedded (rusqlite, the library bundled): one connection per
//!   guest connection, write-ahead logging, a 5 s busy timeout, and the
//!   request's deadline enforced inside SQLite (a statement past it is
//!   interrupted: `timeout`). Statements run on the calling thread; they
//!   are local file operations.
//! - PostgreSQL, a server ([`super::postgres`]): a pool per granted
//!   database, statements awaited without holding a worker, a statement
//!   past the deadline cancelled on the server. Spans add `server.address`
//!   and `server.port`; `db.response.status_code` is the SQLSTATE.
//!
//! Statements may use `?`, `?N` or `$N` placeholders on either backend:
//! each gets them in its own form.

use super::postgres::{Session, Target};
use crate::bindings::sql as wit;
use crate::instance::InstanceState;
use crate::telemetry::attributes::cap_string;
use crate::telemetry::traces::start_span;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Resource;

/// Rows one statement returns at most; past it, `too-large` and no rows.
pub const MAX_ROWS: usize = 100_000;
/// Bytes of values one statement returns at most (texts and blobs count
/// their length, other values 8); past it, `too-large` and no rows.
pub const MAX_RESULT_BYTES: usize = 64 << 20;
/// How long a statement waits for another connection's write lock (and
/// never past the request's deadline).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest statement text the host takes, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 1 << 20;
/// The longest TEXT or BLOB value, in a parameter or inside SQLite.
pub const MAX_VALUE_BYTES: usize = 64 << 20;
/// Connections one instance may hold open at once.
pub const MAX_CONNECTIONS: usize = 16;

/// A database the manifest grants: where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (created when missing), resolved against the
    /// manifest's directory.
    Sqlite {
        path: PathBuf,
        /// The path as the manifest wrote it: `db.namespace`.
        namespace: String,
    },
    /// A PostgreSQL server's database (its `Debug` hides the password).
    Postgres(Arc<Target>),
}

/// Replace each `${NAME}` in `text` with the environment variable NAME;
/// with `encode`, percent-encoded (for a value inside a URL: a password
/// with `@`, `/` or `%` stays the password). `${NAME:-DEFAULT}` is
/// DEFAULT, as written, when NAME is unset or empty. Errors name the variable
/// that is not set (never a value).
pub fn expand_env(text: &str, encode: bool) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let Some(len) = rest[at + 2..].find('}') else {
            return Err("a `${` without its `}`".into());
        };
        let inner = &rest[at + 2..at + 2 + len];
        // `${NAME:-DEFAULT}`, as in a shell: DEFAULT (the manifest's own
        // text, taken as written) when NAME is unset or empty.
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner, None),
        };
        if name.is_empty()
            || name.starts_with(|c: char| c.is_ascii_digit())
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "`${{{name}}}` is not an environment variable's name"
            ));
        }
        let value = std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty() || default.is_none());
        match (value, default) {
            (Some(value), _) if encode => out.extend(percent_encoding::utf8_percent_encode(
                &value,
                percent_encoding::NON_ALPHANUMERIC,
            )),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => return Err(format!("the environment variable `{name}` is not set")),
        }
        rest = &rest[at + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Database {
    /// Parse a grant's value: `sqlite:PATH` (PATH relative to `dir`, the
    /// manifest's directory) or `postgres://USER:PASSWORD@HOST:PORT/DATABASE`,
    /// with `${NAME}`s replaced by environment variables (credentials
    /// stay out of the manifest). Errors say what is accepted and never
    /// contain a password.
    pub fn parse(url: &str, dir: &std::path::Path) -> Result<Database, String> {
        // The whole URL from one variable (`${DATABASE_URL}`): as it is.
        let whole = url.starts_with("${") && url.find('}') == Some(url.len() - 1);
        let url = if whole {
            std::borrow::Cow::Owned(expand_env(url, false)?)
        } else {
            std::borrow::Cow::Borrowed(url)
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let expanded = if whole {
                url.into_owned()
            } else {
                expand_env(&url, true)?
            };
            return Ok(Database::Postgres(Arc::new(Target::parse(&expanded, dir)?)));
        }
        let url = url.as_ref();
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!(
                    "`{url}`: name the database file, as in `sqlite:data/orders.db`"
                ));
            }
            if path == ":memory:" || path.starts_with("file:") {
                return Err(format!(
                    "`{url}`: name a file (in-memory databases and SQLite URIs are not supported), as in `sqlite:data/orders.db`"
                ));
            }
            return Ok(Database::Sqlite {
                path: dir.join(path),
                namespace: path.to_string(),
            });
        }
        Err(format!(
            "`{url}` is not a database this host supports: use `sqlite:PATH` (a file beside the manifest) or `postgres://USER:PASSWORD@HOST:PORT/DATABASE`"
        ))
    }

    /// Whether the database can be opened where it is: its directory
    /// exists and the path is not a directory. Checked at start, so that a
    /// wrong path is a start-up error rather than a failure per request.
    pub fn check(&self) -> Result<(), String> {
        let (path, namespace) = match self {
            // A server may be down at start and up later: checked per
            // statement; its TLS settings are checked now.
            Database::Postgres(target) => return target.check(),
            Database::Sqlite { path, namespace } => (path, namespace),
        };
        check_file(path, namespace)
    }

    fn system(&self) -> &'static str {
        match self {
            Database::Sqlite { .. } => "sqlite",
            Database::Postgres(_) => "postgresql",
        }
    }

    fn namespace(&self) -> &str {
        match self {
            Database::Sqlite { namespace, .. } => namespace,
            Database::Postgres(t) => &t.namespace,
        }
    }
}

/// Whether an SQLite file granted as `namespace` can be opened at `path`:
/// it is not a directory and its directory exists.
pub(super) fn check_file(path: &std::path::Path, namespace: &str) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("`{namespace}` is a directory, not an SQLite file"));
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(format!(
            "the directory of `{namespace}` ({}) does not exist",
            dir.display()
        )),
        _ => Ok(()),
    }
}

/// The databases one component may open, by the names its manifest grants
/// them under, with a pool for each PostgreSQL one (shared by all the
/// component's instances).
#[derive(Default)]
pub struct Grants(BTreeMap<String, Arc<Granted>>);

/// A granted database, and its pool when it is a server's.
pub struct Granted {
    database: Database,
    pool: Option<deadpool_postgres::Pool>,
}

impl Grants {
    /// Whether the component may open no database at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The grants of a manifest's `sql` table. Opens nothing.
    pub fn new(grants: &BTreeMap<String, Database>) -> Grants {
        Grants(
            grants
                .iter()
                .map(|(k, v)| {
                    let pool = match v {
                        Database::Postgres(target) => Some(target.pool()),
                        Database::Sqlite { .. } => None,
                    };
                    (
                        k.clone(),
                        Arc::new(Granted {
                            database: v.clone(),
                            pool,
                        }),
                    )
                })
                .collect(),
        )
    }
}

/// The longest schema file the host takes, in bytes.
pub const MAX_SCHEMA_BYTES: u64 = 1 << 20;
/// How long a schema may take to run at start.
pub const SCHEMA_TIMEOUT: Duration = Duration::from_secs(60);

/// Read a grant's schema file: UTF-8, at most [`MAX_SCHEMA_BYTES`].
/// Checked at start (`polytrace check` too) and read again when run.
pub fn read_schema(file: &std::path::Path) -> Result<String, String> {
    let shown = file.display();
    let meta = std::fs::metadata(file).map_err(|e| format!("schema `{shown}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!("schema `{shown}` is not a file"));
    }
    if meta.len() > MAX_SCHEMA_BYTES {
        return Err(format!(
            "schema `{shown}` is {} bytes; the most is {MAX_SCHEMA_BYTES}",
            meta.len()
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| format!("schema `{shown}`: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("schema `{shown}` is not UTF-8 text"))
}

impl Grants {
    /// Run each grant's schema file (`schemas`: grant name → file) on its
    /// database, once, before the app serves: statements separated by
    /// `;`, in one batch and one transaction, all or nothing (write them
    /// to be re-runnable, `CREATE TABLE IF NOT EXISTS`: they run at every
    /// start). Not traced: no request is
    /// running. The first failure is returned with the grant, the file
    /// and the database's message (never a password).
    pub async fn apply_schemas(&self, schemas: &BTreeMap<String, PathBuf>) -> Result<(), String> {
        for (name, file) in schemas {
            let granted = self
                .0
                .get(name)
                .ok_or_else(|| format!("sql.{name}: a schema for a database not granted"))?;
            let script = read_schema(file).map_err(|e| format!("sql.{name}: {e}"))?;
            let shown = file.display();
            let ran = match &granted.database {
                Database::Postgres(target) => {
                    // A pool of its own, dropped after: whatever the script
                    // sets on its session never reaches a guest's request.
                    super::postgres::run_script(&target.pool(), target, &script, SCHEMA_TIMEOUT)
                        .await
                }
                Database::Sqlite { path, namespace } => {
                    let (path, namespace) = (path.clone(), namespace.clone());
                    tokio::task::spawn_blocking(move || {
                        let mut conn = open(&path, &namespace).map_err(|e| e.message)?;
                        // All of it or nothing, as PostgreSQL runs a batch.
                        let tx = conn.transaction().map_err(|e| e.to_string())?;
                        tx.execute_batch(&script).map_err(|e| e.to_string())?;
                        tx.commit().map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
                }
            };
            ran.map_err(|why| format!("sql.{name}: schema `{shown}`: {why}"))?;
            tracing::info!(grant = %name, schema = %shown, "ran the schema");
        }
        Ok(())
    }
}

/// A connection a guest holds (the `connection` resource).
pub struct GuestConnection {
    granted: Arc<Granted>,
    backend: Backend,
    /// The summaries of the statements run lately: a service runs the
    /// same few, tokenized once.
    summaries: HashMap<String, Arc<Summary>>,
}

enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(Session),
}

impl Backend {
    fn in_transaction(&self) -> bool {
        match self {
            Backend::Sqlite(c) => !c.is_autocommit(),
            Backend::Postgres(s) => s.in_transaction(),
        }
    }
}

/// Statements whose summaries a connection keeps; past it, it starts over.
const SUMMARY_CACHE: usize = 64;
/// Statements longer than this (bytes) are not kept in the summary cache.
const SUMMARY_CACHE_STATEMENT_BYTES: usize = 16 << 10;

impl GuestConnection {
    fn summary(&mut self, statement: &str) -> Arc<Summary> {
        if let Some(s) = self.summaries.get(statement) {
            return s.clone();
        }
        let s = Arc::new(Summary::of(statement));
        // Long statements are summarized every time: the cache stays small.
        if statement.len() > SUMMARY_CACHE_STATEMENT_BYTES {
            return s;
        }
        if self.summaries.len() >= SUMMARY_CACHE {
            self.summaries.clear();
        }
        self.summaries.insert(statement.to_string(), s.clone());
        s
    }
}

pub(super) fn error(
    kind: wit::ErrorKind,
    code: impl Into<String>,
    message: impl Into<String>,
) -> wit::Error {
    wit::Error {
        kind,
        code: code.into(),
        message: message.into(),
    }
}

fn open(path: &std::path::Path, namespace: &str) -> Result<rusqlite::Connection, wit::Error> {
    let unavailable = |e: rusqlite::Error| {
        error(
            wit::ErrorKind::Unavailable,
            sqlite_code(&e),
            format!("cannot open the SQLite database `{namespace}`: {e}"),
        )
    };
    if path.is_dir() {
        return Err(error(
            wit::ErrorKind::Unavailable,
            "",
            format!("the SQLite database `{namespace}` is a directory"),
        ));
    }
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(unavailable)?;
    // Readers do not wait for writers, and a crash loses nothing committed.
    // The mode is kept in the file: only a new database is switched, which
    // needs it to itself for a moment; other connections are waited for,
    // as by statements, off the worker.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .map_err(unavailable)?;
    if !mode.eq_ignore_ascii_case("wal") {
        off_worker(|| conn.pragma_update(None, "journal_mode", "wal")).map_err(unavailable)?;
    }
    lock_down(&conn).map_err(unavailable)?;
    Ok(conn)
}

/// Run `f`, which may wait on another connection's lock, without holding
/// a tokio worker (the connection holding the lock may need one to
/// release it).
pub(super) fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Keep a guest's SQL inside the granted file and the host's limits: no
/// other database attached (`ATTACH`, or `VACUUM INTO`, which attaches),
/// no path disclosed (`PRAGMA database_list`), SQLite's defensive mode
/// (no writes to the schema's internals, no untrusted schema functions),
/// double-quoted text always an identifier (so that no literal can hide
/// from `db.query.text` as one), values and statements capped. Waiting
/// for another connection's lock is done by [`run`], off the worker.
fn lock_down(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::config::DbConfig;
    use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
    use rusqlite::limits::Limit;
    conn.busy_timeout(Duration::ZERO)?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES as i32)?;
    conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, MAX_STATEMENT_BYTES as i32)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DML, false)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DQS_DDL, false)?;
    conn.authorizer(Some(|ctx: AuthContext<'_>| match ctx.action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        AuthAction::Pragma { pragma_name, .. }
            if pragma_name.eq_ignore_ascii_case("database_list") =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }));
    Ok(())
}

impl wit::Host for InstanceState {}

impl wit::HostConnection for InstanceState {
    fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<GuestConnection>, wit::Error>> {
        let Some(database) = self.sql_grants().0.get(&name).cloned() else {
            let granted: Vec<&str> = self.sql_grants().0.keys().map(String::as_str).collect();
            let message = if granted.is_empty() {
                format!(
                    "no database `{name}`: the manifest grants this component none (`sql = {{ {name} = \"sqlite:{name}.db\" }}`)"
                )
            } else {
                format!(
                    "no database `{name}` is granted to this component (granted: {})",
                    granted.join(", ")
                )
            };
            // Refused before any database: a span says so, as for a denied HTTP call.
            let denied = error(wit::ErrorKind::NotGranted, "", message);
            self.trace_refusal(&name, kind_name(denied.kind), &denied.message)?;
            return Ok(Err(denied));
        };
        let open_now = self
            .table
            .iter_mut()
            .filter(|e| e.is::<GuestConnection>())
            .count();
        if open_now >= MAX_CONNECTIONS {
            return Ok(Err(error(
                wit::ErrorKind::Unavailable,
                "",
                format!(
                    "this instance has {MAX_CONNECTIONS} connections open already: close one (or reuse it)"
                ),
            )));
        }
        let backend = match (&database.database, &database.pool) {
            (Database::Postgres(target), Some(pool)) => {
                Backend::Postgres(Session::new(pool.clone(), target.clone()))
            }
            (Database::Sqlite { path, namespace }, _) => match open(path, namespace) {
                Ok(c) => Backend::Sqlite(c),
                Err(e) => return Ok(Err(e)),
            },
            (Database::Postgres(_), None) => unreachable!("Grants::new pools every server"),
        };
        Ok(Ok(self.table.push(GuestConnection {
            granted: database,
            backend,
            summaries: HashMap::new(),
        })?))
    }

    async fn execute(
        &mut self,
        connection: Resource<GuestConnection>,
        statement: String,
        parameters: Vec<wit::Value>,
    ) -> wasmtime::Result<Result<wit::Outcome, wit::Error>> {
        let deadline = self.deadline();
        if statement.len() > MAX_STATEMENT_BYTES {
            return Ok(Err(error(
                wit::ErrorKind::TooLarge,
                "",
                format!(
                    "the statement is {} bytes; at most {MAX_STATEMENT_BYTES}",
                    statement.len()
                ),
            )));
        }
        let (telemetry, table) = self.telemetry_and_table()?;
        let conn = table.get_mut(&connection)?;
        let trace = &mut telemetry.trace;
        let summary = conn.summary(&statement);
        let database = &conn.granted.database;
        let system = database.system();
        let mut common = vec![
            KeyValue::new("db.system.name", system),
            KeyValue::new("db.namespace", database.namespace().to_string()),
        ];
        if let Database::Postgres(target) = database {
            common.push(KeyValue::new("server.address", target.address.clone()));
            common.push(KeyValue::new("server.port", i64::from(target.port)));
        }
        if let Some(op) = &summary.operation {
            common.push(KeyValue::new("db.operation.name", op.clone()));
        }
        if let Some(target) = &summary.collection {
            common.push(KeyValue::new("db.collection.name", target.clone()));
        }
        let summary_text = summary.summary();
        if let Some(s) = &summary_text {
            common.push(KeyValue::new("db.query.summary", s.clone()));
        }
        // Read from the guest's statement: the value-length cap applies
        // (and a cut is counted), as for the guest's own attributes.
        let common: Vec<KeyValue> = common.into_iter().map(|kv| trace.cap(kv)).collect();
        let mut attrs = common.clone();
        if let Some(text) = &summary.text {
            attrs.push(trace.cap(KeyValue::new("db.query.text", text.clone())));
        }
        let name = summary_text.unwrap_or_else(|| system.to_string());
        let parent = trace.current().clone();
        let mut span = start_span(trace.tracer(), name, SpanKind::Client, attrs, Some(&parent));
        let started = Instant::now();
        let result = match &mut conn.backend {
            Backend::Sqlite(sqlite) => {
                let sqlite_statement = summary.sqlite.as_deref().unwrap_or(&statement);
                run(sqlite, sqlite_statement, &parameters, deadline)
            }
            Backend::Postgres(session) => {
                let pg_statement = summary.postgres.as_deref().unwrap_or(&statement);
                let operation = summary.operation.as_deref();
                session
                    .execute(pg_statement, operation, &parameters, deadline)
                    .await
            }
        };
        let mut metric_attrs = common;
        match &result {
            Ok(outcome) => {
                if !outcome.columns.is_empty() {
                    span.set_attribute(KeyValue::new(
                        "db.response.returned_rows",
                        outcome.rows.len() as i64,
                    ));
                }
            }
            Err(e) => {
                let error_type = if e.code.is_empty() {
                    kind_name(e.kind).to_string()
                } else {
                    e.code.clone()
                };
                if !e.code.is_empty() {
                    span.set_attribute(KeyValue::new("db.response.status_code", e.code.clone()));
                    metric_attrs.push(KeyValue::new("db.response.status_code", e.code.clone()));
                }
                span.set_attribute(KeyValue::new("error.type", error_type.clone()));
                metric_attrs.push(KeyValue::new("error.type", error_type));
                // A server's message can quote a parameter's value: the
                // guest gets it, the span does not.
                let message = match database {
                    Database::Postgres(_) => super::postgres::span_message(e),
                    Database::Sqlite { .. } => e.message.clone(),
                };
                span.set_status(Status::error(cap_string(message, trace.value_cap())));
            }
        }
        span.end();
        telemetry
            .metrics
            .db_duration
            .record(started.elapsed().as_secs_f64(), &metric_attrs);
        Ok(result)
    }

    async fn execute_json(
        &mut self,
        connection: Resource<GuestConnection>,
        statement: String,
        parameters: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::Error>> {
        let parameters = match super::sql_json::parameters(&parameters) {
            Ok(values) => values,
            Err(why) => return Ok(Err(error(wit::ErrorKind::Data, "", why))),
        };
        let outcome = self.execute(connection, statement, parameters).await?;
        Ok(outcome.map(|o| super::sql_json::outcome(&o)))
    }

    fn in_transaction(&mut self, connection: Resource<GuestConnection>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&connection)?.backend.in_transaction())
    }

    fn drop(&mut self, connection: Resource<GuestConnection>) -> wasmtime::Result<()> {
        // Closing the SQLite connection rolls back a transaction left open;
        // a PostgreSQL session rolls it back before its server connection
        // goes back to the pool.
        self.table.delete(connection)?;
        Ok(())
    }
}

/// At the end of a request: roll back every transaction a guest left open
/// on its connections (what was not committed was never acknowledged), so
/// that no request's locks or half-done changes outlive it. Each is a
/// warning in the host's log.
pub fn end_request(table: &mut wasmtime::component::ResourceTable) {
    for entry in table.iter_mut() {
        let Some(conn) = entry.downcast_mut::<GuestConnection>() else {
            continue;
        };
        let database = conn.granted.database.namespace();
        match &mut conn.backend {
            Backend::Sqlite(sqlite) if !sqlite.is_autocommit() => {
                let result = sqlite.execute_batch("ROLLBACK");
                tracing::warn!(
                    database,
                    ?result,
                    "a request ended with a transaction open: rolled back (commit before answering)"
                );
            }
            Backend::Postgres(session) => {
                if session.roll_back_open() {
                    tracing::warn!(
                        database,
                        "a request ended with a transaction open: rolled back (commit before answering)"
                    );
                }
            }
            Backend::Sqlite(_) => {}
        }
    }
}

impl InstanceState {
    /// An Error CLIENT span `open NAME` for a database or key-value store
    /// the component may not open.
    pub(super) fn trace_refusal(
        &mut self,
        name: &str,
        error_type: &'static str,
        message: &str,
    ) -> wasmtime::Result<()> {
        let (telemetry, _) = self.telemetry_and_table()?;
        let trace = &telemetry.trace;
        let parent = trace.current().clone();
        // The name is the guest's: capped like its own values.
        let cap = trace.value_cap();
        let mut span = start_span(
            trace.tracer(),
            cap_string(format!("open {name}"), cap),
            SpanKind::Client,
            vec![KeyValue::new("error.type", error_type)],
            Some(&parent),
        );
        span.set_status(Status::error(cap_string(message.to_string(), cap)));
        span.end();
        Ok(())
    }
}

fn kind_name(kind: wit::ErrorKind) -> &'static str {
    match kind {
        wit::ErrorKind::NotGranted => "not-granted",
        wit::ErrorKind::Unavailable => "unavailable",
        wit::ErrorKind::Syntax => "syntax",
        wit::ErrorKind::Constraint => "constraint",
        wit::ErrorKind::Data => "data",
        wit::ErrorKind::TooLarge => "too-large",
        wit::ErrorKind::Timeout => "timeout",
        wit::ErrorKind::Other => "other",
    }
}

/// Run one statement on SQLite: bind, step, convert; bounded by
/// [`MAX_ROWS`], [`MAX_RESULT_BYTES`] and the request's deadline.
fn run(
    conn: &rusqlite::Connection,
    statement: &str,
    parameters: &[wit::Value],
    deadline: Option<Instant>,
) -> Result<wit::Outcome, wit::Error> {
    // SQLite calls this every 1000 virtual-machine steps: past the
    // deadline, the statement is interrupted.
    if let Some(deadline) = deadline {
        conn.progress_handler(1000, Some(move || Instant::now() >= deadline));
    }
    let mut result = run_statement(conn, statement, parameters);
    if result.as_ref().is_err_and(is_busy) {
        // Another connection holds the lock. Wait for it off the tokio
        // worker (the connection holding it may need that worker to reach
        // its COMMIT), until BUSY_TIMEOUT or the deadline.
        let until = deadline.map_or(Instant::now() + BUSY_TIMEOUT, |d| {
            d.min(Instant::now() + BUSY_TIMEOUT)
        });
        let wait = || {
            let mut pause = Duration::from_millis(1);
            while result.as_ref().is_err_and(is_busy) && Instant::now() < until {
                std::thread::sleep(pause.min(until.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(50));
                result = run_statement(conn, statement, parameters);
            }
        };
        off_worker(wait);
    }
    conn.progress_handler(0, None::<fn() -> bool>);
    result
}

/// SQLITE_BUSY (or one of its extended codes): another connection holds a
/// lock this statement needs.
fn is_busy(e: &wit::Error) -> bool {
    e.code.parse::<i32>().is_ok_and(|c| c & 0xff == 5)
}

fn run_statement(
    conn: &rusqlite::Connection,
    statement: &str,
    parameters: &[wit::Value],
) -> Result<wit::Outcome, wit::Error> {
    // rusqlite keeps the last prepared statements (16 by default): a
    // service's few statements are parsed once.
    let mut stmt = conn.prepare_cached(statement).map_err(sqlite_error)?;
    let expected = stmt.parameter_count();
    if expected != parameters.len() {
        return Err(error(
            wit::ErrorKind::Data,
            "",
            format!(
                "the statement has {expected} parameter(s), {} given",
                parameters.len()
            ),
        ));
    }
    for (i, p) in parameters.iter().enumerate() {
        bind(&mut stmt, i + 1, p)?;
    }
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    // sqlite3_changes() keeps the last INSERT/UPDATE/DELETE's count through
    // other statements: this statement's own is the total's difference.
    let changes_before = conn.total_changes();
    if columns.is_empty() {
        stmt.raw_execute().map_err(sqlite_error)?;
        return Ok(wit::Outcome {
            columns,
            rows: Vec::new(),
            rows_affected: conn.total_changes() - changes_before,
        });
    }
    let mut out = Vec::new();
    // What the rows take in the host: every value, and each row's list.
    let mut bytes = 0usize;
    {
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            if out.len() == MAX_ROWS {
                return Err(too_large(format!("more than {MAX_ROWS} rows")));
            }
            let mut values = Vec::with_capacity(columns.len());
            bytes += std::mem::size_of::<Vec<wit::Value>>()
                + columns.len() * std::mem::size_of::<wit::Value>();
            for i in 0..columns.len() {
                let v = row.get_ref(i).map_err(sqlite_error)?;
                // Counted before it is copied.
                if let rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) = v {
                    bytes += b.len();
                }
                if bytes > MAX_RESULT_BYTES {
                    return Err(too_large(format!(
                        "more than {} MiB of values",
                        MAX_RESULT_BYTES >> 20
                    )));
                }
                values.push(from_sqlite(v));
            }
            out.push(values);
        }
    }
    Ok(wit::Outcome {
        columns,
        rows: out,
        // `INSERT ... RETURNING` returns rows and changes some.
        rows_affected: conn.total_changes() - changes_before,
    })
}

/// Bind parameter `i` (1-based), texts and blobs without a copy.
fn bind(
    stmt: &mut rusqlite::CachedStatement<'_>,
    i: usize,
    v: &wit::Value,
) -> Result<(), wit::Error> {
    let size = match v {
        wit::Value::Text(t) => t.len(),
        wit::Value::Blob(b) => b.len(),
        _ => 0,
    };
    if size > MAX_VALUE_BYTES {
        return Err(error(
            wit::ErrorKind::Data,
            "",
            format!("parameter {i} is {size} bytes; at most {MAX_VALUE_BYTES}"),
        ));
    }
    let result = match v {
        wit::Value::Null => stmt.raw_bind_parameter(i, rusqlite::types::Null),
        wit::Value::Boolean(b) => stmt.raw_bind_parameter(i, *b),
        wit::Value::Int64(n) => stmt.raw_bind_parameter(i, *n),
        wit::Value::Float64(f) => stmt.raw_bind_parameter(i, *f),
        wit::Value::Text(t) => stmt.raw_bind_parameter(i, t.as_str()),
        wit::Value::Blob(b) => stmt.raw_bind_parameter(i, b.as_slice()),
    };
    result.map_err(sqlite_error)
}

pub(super) fn too_large(what: String) -> wit::Error {
    error(
        wit::ErrorKind::TooLarge,
        "",
        format!("the result has {what}: select fewer (LIMIT) or page through it"),
    )
}

/// A column value. TEXT that is not UTF-8 comes back as a blob of its
/// bytes, so nothing stored is lost or altered.
fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> wit::Value {
    use rusqlite::types::ValueRef as V;
    match v {
        V::Null => wit::Value::Null,
        V::Integer(i) => wit::Value::Int64(i),
        V::Real(f) => wit::Value::Float64(f),
        V::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => wit::Value::Text(s.to_string()),
            Err(_) => wit::Value::Blob(t.to_vec()),
        },
        V::Blob(b) => wit::Value::Blob(b.to_vec()),
    }
}

/// SQLite's extended result code, as text (`"2067"`), when it gave one.
fn sqlite_code(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => f.extended_code.to_string(),
        rusqlite::Error::SqlInputError { error, .. } => error.extended_code.to_string(),
        _ => String::new(),
    }
}

fn sqlite_error(e: rusqlite::Error) -> wit::Error {
    use rusqlite::ErrorCode as C;
    let code = sqlite_code(&e);
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::ConstraintViolation => wit::ErrorKind::Constraint,
            C::TypeMismatch | C::TooBig => wit::ErrorKind::Data,
            C::OperationInterrupted => wit::ErrorKind::Timeout,
            C::CannotOpen
            | C::DatabaseBusy
            | C::DatabaseLocked
            | C::NotADatabase
            | C::DatabaseCorrupt => wit::ErrorKind::Unavailable,
            // SQLITE_ERROR: a syntax error, or a table or column that does not exist.
            C::Unknown => wit::ErrorKind::Syntax,
            _ => wit::ErrorKind::Other,
        },
        // A statement SQLite cannot prepare: syntax, or a missing table or column.
        rusqlite::Error::SqlInputError { .. } | rusqlite::Error::MultipleStatement => {
            wit::ErrorKind::Syntax
        }
        rusqlite::Error::InvalidParameterCount(..)
        | rusqlite::Error::InvalidParameterName(_)
        | rusqlite::Error::ToSqlConversionFailure(_) => wit::ErrorKind::Data,
        _ => wit::ErrorKind::Other,
    };
    let message = match &e {
        rusqlite::Error::SqliteFailure(f, Some(m)) => format!("{m} ({f})"),
        rusqlite::Error::SqlInputError { msg, offset, .. } => format!("{msg} (at byte {offset})"),
        rusqlite::Error::MultipleStatement => "one statement at a time".to_string(),
        other => other.to_string(),
    };
    error(kind, code, message)
}

/// Whether `t` is a literal value: a number or any kind of string.
fn is_literal(t: &sqlparser::tokenizer::Token) -> bool {
    use sqlparser::tokenizer::Token as T;
    matches!(
        t,
        T::Number(..)
            | T::SingleQuotedString(_)
            | T::DoubleQuotedString(_)
            | T::TripleSingleQuotedString(_)
            | T::TripleDoubleQuotedString(_)
            | T::DollarQuotedString(_)
            | T::SingleQuotedByteStringLiteral(_)
            | T::DoubleQuotedByteStringLiteral(_)
            | T::TripleSingleQuotedByteStringLiteral(_)
            | T::TripleDoubleQuotedByteStringLiteral(_)
            | T::SingleQuotedRawStringLiteral(_)
            | T::DoubleQuotedRawStringLiteral(_)
            | T::TripleSingleQuotedRawStringLiteral(_)
            | T::TripleDoubleQuotedRawStringLiteral(_)
            | T::NationalStringLiteral(_)
            | T::QuoteDelimitedStringLiteral(_)
            | T::NationalQuoteDelimitedStringLiteral(_)
            | T::EscapedStringLiteral(_)
            | T::UnicodeStringLiteral(_)
            | T::HexStringLiteral(_)
    )
}

/// The byte offset in `text` of a tokenizer location (1-based line, and
/// column in characters).
fn byte_offsets(text: &str) -> impl Fn(sqlparser::tokenizer::Location) -> Option<usize> + '_ {
    let mut lines = vec![0];
    lines.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    move |l| {
        let start = *lines.get(usize::try_from(l.line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(l.column).ok()?.checked_sub(1)?;
        let line = &text[start..];
        match line.char_indices().nth(column) {
            Some((i, _)) => Some(start + i),
            None => (line.chars().count() == column).then_some(text.len()),
        }
    }
}

/// What the database conventions name and describe a statement by, read
/// from its tokens (sqlparser's tokenizer: quotes, comments and literals
/// as SQL has them).
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// `db.operation.name`: the statement's first keyword (`SELECT`).
    pub operation: Option<String>,
    /// `db.collection.name`: the table it reads or writes, when one is plain.
    pub collection: Option<String>,
    /// `db.query.text`: the statement with every literal replaced by `?`;
    /// `None` when it cannot be tokenized (then nothing of it is recorded).
    pub text: Option<String>,
    /// The statement for SQLite when it differs: PostgreSQL's `$1`
    /// placeholders as SQLite's numbered `?1` (SQLite would take `$1` for a
    /// name and number it by first appearance).
    pub sqlite: Option<String>,
    /// The statement for PostgreSQL when it differs: `?` and `?N`
    /// placeholders as `$N` (left alone in a statement that has `$N`
    /// already, where a `?` is an operator).
    pub postgres: Option<String>,
}

impl Summary {
    /// Read `statement`.
    pub fn of(statement: &str) -> Summary {
        use sqlparser::dialect::GenericDialect;
        use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
        let Ok(spanned) = Tokenizer::new(&GenericDialect {}, statement).tokenize_with_location()
        else {
            return Summary::default();
        };
        let tokens: Vec<&Token> = spanned.iter().map(|t| &t.token).collect();
        let numbered = |p: &str| {
            p.strip_prefix('$')
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .map(|n| format!("?{n}"))
        };
        // The statement each backend runs: placeholders replaced where
        // they are in the text, every other byte as written.
        let rewrite = |map: &mut dyn FnMut(&str) -> Option<String>| {
            let at = byte_offsets(statement);
            let mut out = String::with_capacity(statement.len() + 8);
            let mut copied = 0;
            for t in &spanned {
                if let Token::Placeholder(p) = &t.token
                    && let (Some(from), Some(to)) = (at(t.span.start), at(t.span.end))
                    && let Some(n) = map(p)
                {
                    out.push_str(&statement[copied..from]);
                    out.push_str(&n);
                    copied = to;
                }
            }
            out.push_str(&statement[copied..]);
            out
        };
        let has = |f: &dyn Fn(&str) -> bool| {
            tokens
                .iter()
                .any(|t| matches!(t, Token::Placeholder(p) if f(p)))
        };
        let dollar = has(&|p| numbered(p).is_some());
        fn qmark(p: &str) -> Option<&str> {
            p.strip_prefix('?')
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        }
        // SQLite's `$1` is a name: numbered `?1` instead.
        let sqlite = dollar.then(|| rewrite(&mut |p| numbered(p)));
        // PostgreSQL has only `$N`: a bare `?` is one more than the
        // highest number before it, as SQLite numbers it.
        let postgres = (!dollar && has(&|p| qmark(p).is_some())).then(|| {
            let mut highest = 0u32;
            rewrite(&mut |p| {
                let n = match qmark(p)? {
                    "" => highest + 1,
                    digits => digits.parse().ok()?,
                };
                highest = highest.max(n);
                Some(format!("${n}"))
            })
        });
        // db.query.text: literals as `?`, comments left out.
        let mut text = String::with_capacity(statement.len());
        let mut after_number = false;
        for t in &tokens {
            match t {
                t if is_literal(t) => text.push('?'),
                // `0x1F` reads as a number and a word: the word is the literal's.
                Token::Word(w) if after_number && w.quote_style.is_none() => {}
                Token::Whitespace(Whitespace::SingleLineComment { .. })
                | Token::Whitespace(Whitespace::MultiLineComment(_)) => text.push(' '),
                other => text.push_str(&other.to_string()),
            }
            after_number = matches!(t, Token::Number(..));
        }
        // Words outside parentheses, uppercased when unquoted keywords.
        let mut words: Vec<(String, bool)> = Vec::new();
        let mut depth = 0i32;
        let mut previous_dot = false;
        for t in tokens.iter().copied() {
            match t {
                Token::LParen => {
                    // A subquery where a table could be: no plain target.
                    if depth == 0 {
                        words.push(("(".to_string(), false));
                    }
                    depth += 1
                }
                Token::RParen => depth -= 1,
                Token::Period if depth == 0 => {
                    previous_dot = true;
                    continue;
                }
                Token::Word(w) if depth == 0 => {
                    if previous_dot && let Some((last, _)) = words.last_mut() {
                        last.push('.');
                        last.push_str(&w.value);
                    } else {
                        words.push((w.value.clone(), w.quote_style.is_none()));
                    }
                }
                _ => {}
            }
            if !matches!(t, Token::Whitespace(_)) {
                previous_dot = false;
            }
        }
        let keyword = |i: usize| {
            words
                .get(i)
                .filter(|(_, plain)| *plain)
                .map(|(w, _)| w.to_ascii_uppercase())
        };
        // `WITH ... AS (...) SELECT ...`: the operation is the statement's
        // own, after its common table expressions.
        let operation = match keyword(0).as_deref() {
            Some("WITH") => (1..words.len()).filter_map(keyword).find(|k| {
                matches!(
                    k.as_str(),
                    "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "REPLACE"
                )
            }),
            _ => keyword(0),
        };
        let after = |kw: &str| {
            let i = (0..words.len()).find(|&i| keyword(i).as_deref() == Some(kw))?;
            let mut j = i + 1;
            // `CREATE TABLE IF NOT EXISTS t`, `DROP TABLE IF EXISTS t`.
            while matches!(
                keyword(j).as_deref(),
                Some("IF" | "NOT" | "EXISTS" | "OR" | "REPLACE" | "IGNORE")
            ) {
                j += 1;
            }
            words
                .get(j)
                .filter(|(w, _)| w != "(")
                .map(|(w, _)| w.clone())
        };
        let collection = match operation.as_deref() {
            Some("SELECT" | "DELETE") => after("FROM"),
            Some("INSERT" | "REPLACE") => after("INTO"),
            Some("UPDATE") => after("UPDATE"),
            Some("CREATE" | "DROP" | "ALTER") => after("TABLE"),
            _ => None,
        };
        Summary {
            operation,
            collection,
            text: Some(text),
            sqlite,
            postgres,
        }
    }

    /// `db.query.summary`: `{operation} {collection}`, or the operation.
    pub fn summary(&self) -> Option<String> {
        match (&self.operation, &self.collection) {
            (Some(op), Some(c)) => Some(format!("{op} {c}")),
            (Some(op), None) => Some(op.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_the_operation_and_the_table() {
        let s = Summary::of("SELECT id, total FROM orders WHERE id = ?");
        assert_eq!(s.summary().as_deref(), Some("SELECT orders"));
        let s = Summary::of("insert into main.orders (id) values (?1)");
        assert_eq!(s.summary().as_deref(), Some("INSERT main.orders"));
        let s = Summary::of("UPDATE \"Orders\" SET total = 3");
        assert_eq!(s.collection.as_deref(), Some("Orders"));
        let s = Summary::of("CREATE TABLE IF NOT EXISTS charges (id INTEGER)");
        assert_eq!(s.summary().as_deref(), Some("CREATE charges"));
        let s = Summary::of("SELECT count(*) FROM (SELECT * FROM a) AS sub");
        assert_eq!(s.summary().as_deref(), Some("SELECT"));
        assert_eq!(Summary::of("BEGIN").summary().as_deref(), Some("BEGIN"));
        let s = Summary::of(
            "WITH recent AS (SELECT * FROM orders) DELETE FROM archive WHERE id IN (SELECT id FROM recent)",
        );
        assert_eq!(s.summary().as_deref(), Some("DELETE archive"));
    }

    #[test]
    fn literals_never_reach_the_query_text() {
        let s = Summary::of("SELECT * FROM users WHERE name = 'ada' AND age > 36 -- 'x'");
        let text = s.text.unwrap();
        assert!(!text.contains("ada") && !text.contains("36"), "{text}");
        assert!(text.contains("name = ?"), "{text}");
        // Unterminated: nothing of it is recorded.
        assert_eq!(Summary::of("SELECT 'secret").text, None);
        // Other literal kinds, and comments, never reach it either.
        let text = Summary::of("SELECT x'00ff', N'ann', 0x1F /* ann */ FROM t -- ann\n")
            .text
            .unwrap();
        assert!(
            !text.contains("ann") && !text.contains("1F") && !text.contains("ff"),
            "{text}"
        );
    }

    /// A scratch directory of one test, removed when it is dropped (also
    /// when the test fails).
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl std::ops::Deref for Scratch {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    /// A fresh directory `polytrace-sql-<name>-<pid>` and the path of `a.db`
    /// in it.
    fn scratch(name: &str) -> (Scratch, PathBuf) {
        let dir = std::env::temp_dir().join(format!("polytrace-sql-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("a.db");
        (Scratch(dir), db)
    }

    #[test]
    fn a_guest_reaches_no_other_file() {
        let (dir, db) = scratch("lock");
        let conn = open(&db, "a.db").unwrap();
        let other = dir.join("b.db");
        for statement in [
            format!("ATTACH '{}' AS b", other.display()),
            format!("VACUUM INTO '{}'", other.display()),
            "PRAGMA database_list".to_string(),
        ] {
            assert!(run(&conn, &statement, &[], None).is_err(), "{statement}");
        }
        assert!(!other.exists());
        // A double-quoted word is an identifier, never a literal.
        run(&conn, "CREATE TABLE t (name TEXT)", &[], None).unwrap();
        assert!(run(&conn, "SELECT * FROM t WHERE name = \"ann\"", &[], None).is_err());
        // Each statement's own changed-row count.
        let insert = run(&conn, "INSERT INTO t VALUES ('a'), ('b')", &[], None).unwrap();
        assert_eq!(insert.rows_affected, 2);
        assert_eq!(
            run(&conn, "SELECT * FROM t", &[], None)
                .unwrap()
                .rows_affected,
            0
        );
        assert_eq!(run(&conn, "BEGIN", &[], None).unwrap().rows_affected, 0);
    }

    #[test]
    fn a_locked_database_is_waited_for_until_the_deadline() {
        let (_dir, db) = scratch("busy");
        let holder = open(&db, "a.db").unwrap();
        let waiter = open(&db, "a.db").unwrap();
        run(&holder, "CREATE TABLE t (n INTEGER)", &[], None).unwrap();
        run(&holder, "BEGIN IMMEDIATE", &[], None).unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        let e = run(&waiter, "INSERT INTO t VALUES (1)", &[], Some(deadline)).unwrap_err();
        assert!(is_busy(&e), "{e:?}");
        assert!(started.elapsed() >= Duration::from_millis(250));
        run(&holder, "COMMIT", &[], None).unwrap();
        assert_eq!(
            run(&waiter, "INSERT INTO t VALUES (1)", &[], None)
                .unwrap()
                .rows_affected,
            1
        );
    }

    #[test]
    fn the_placeholder_rewrite_changes_nothing_else() {
        let statement = "SELECT 'O''Brien', \"a\"\"b\", 0x10, 'é' || $2\n  FROM t WHERE id = $1";
        assert_eq!(
            Summary::of(statement).sqlite.as_deref(),
            Some("SELECT 'O''Brien', \"a\"\"b\", 0x10, 'é' || ?2\n  FROM t WHERE id = ?1")
        );
    }

    #[test]
    fn sqlite_placeholders_become_postgres_numbered_ones() {
        let s = Summary::of("SELECT * FROM t WHERE a = ? AND b = ? AND c = '?'");
        assert_eq!(
            s.postgres.as_deref(),
            Some("SELECT * FROM t WHERE a = $1 AND b = $2 AND c = '?'")
        );
        // Numbered as SQLite numbers them: a bare `?` follows the highest.
        let s = Summary::of("SELECT ?2, ?, ?1");
        assert_eq!(s.postgres.as_deref(), Some("SELECT $2, $3, $1"));
        // With `$N` already there, a `?` is jsonb's operator: left alone.
        let s = Summary::of("SELECT doc ? 'k' FROM t WHERE id = $1");
        assert_eq!(s.postgres, None);
        assert_eq!(Summary::of("SELECT 1").postgres, None);
    }

    #[test]
    fn environment_variables_fill_in_credentials() {
        // SAFETY: set before any thread of this test reads the environment.
        unsafe { std::env::set_var("POLYTRACE_TEST_PG_SECRET", "s3cret") };
        assert_eq!(
            expand_env(
                "postgres://app:${POLYTRACE_TEST_PG_SECRET}@db/orders",
                false
            )
            .unwrap(),
            "postgres://app:s3cret@db/orders"
        );
        let e = expand_env("postgres://app:${POLYTRACE_TEST_NOT_SET}@db/x", true).unwrap_err();
        assert!(e.contains("`POLYTRACE_TEST_NOT_SET` is not set"), "{e}");
        assert!(expand_env("${", false).is_err());
        // Defaults, as in a shell: taken as written when unset or empty.
        assert_eq!(
            expand_env("${POLYTRACE_TEST_NOT_SET:-sqlite:a b.db}", true).unwrap(),
            "sqlite:a b.db"
        );
        unsafe { std::env::set_var("POLYTRACE_TEST_EMPTY", "") };
        assert_eq!(
            expand_env("x${POLYTRACE_TEST_EMPTY:-y}z", false).unwrap(),
            "xyz"
        );
        assert_eq!(
            expand_env("${POLYTRACE_TEST_PG_SECRET:-other}", false).unwrap(),
            "s3cret"
        );
        assert!(expand_env("${:-x}", false).is_err());
        let from_default = Database::parse(
            "${POLYTRACE_TEST_NOT_SET:-sqlite:orders.db}",
            std::path::Path::new("/d"),
        )
        .unwrap();
        assert_eq!(
            from_default,
            Database::Sqlite {
                path: "/d/orders.db".into(),
                namespace: "orders.db".into()
            }
        );
        // A password with URL syntax in it stays the password.
        unsafe { std::env::set_var("POLYTRACE_TEST_PG_ODD", "Xk9@pw/2%41") };
        let Database::Postgres(odd) = Database::parse(
            "postgres://app:${POLYTRACE_TEST_PG_ODD}@db:5433/orders",
            std::path::Path::new("."),
        )
        .unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(
            (odd.address.as_str(), odd.namespace.as_str()),
            ("db", "orders")
        );
        assert!(!odd.display.contains("pw"), "{}", odd.display);
        // The whole URL from one variable.
        unsafe { std::env::set_var("POLYTRACE_TEST_PG_URL", "postgres://app:pw@db:5434/whole") };
        let whole = Database::parse("${POLYTRACE_TEST_PG_URL}", std::path::Path::new(".")).unwrap();
        assert_eq!(whole.namespace(), "whole");
        let db = Database::parse(
            "postgres://app:${POLYTRACE_TEST_PG_SECRET}@db:5433/orders",
            std::path::Path::new("."),
        )
        .unwrap();
        assert!(!format!("{db:?}").contains("s3cret"), "{db:?}");
        assert_eq!(db.namespace(), "orders");
        assert_eq!(db.system(), "postgresql");
    }

    #[test]
    fn postgres_placeholders_become_sqlite_numbered_ones() {
        let s = Summary::of("SELECT * FROM t WHERE b = $2 AND a = $1");
        assert_eq!(
            s.sqlite.as_deref(),
            Some("SELECT * FROM t WHERE b = ?2 AND a = ?1")
        );
        assert_eq!(Summary::of("SELECT ?").sqlite, None);
        // Bound by number, not by order of appearance.
        let s = Summary::of("SELECT $2 AS second, $1 AS first");
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let out = run(
            &conn,
            s.sqlite.as_deref().unwrap(),
            &[
                wit::Value::Text("one".into()),
                wit::Value::Text("two".into()),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            out.rows[0],
            vec![
                wit::Value::Text("two".into()),
                wit::Value::Text("one".into())
            ]
        );
    }

    #[test]
    fn grants_parse_sqlite_files_beside_the_manifest() {
        let dir = std::path::Path::new("/app");
        assert_eq!(
            Database::parse("sqlite:data/orders.db", dir),
            Ok(Database::Sqlite {
                path: "/app/data/orders.db".into(),
                namespace: "data/orders.db".into()
            })
        );
        assert!(Database::parse("sqlite:", dir).is_err());
        assert!(Database::parse("sqlite::memory:", dir).is_err());
        let (scratch_dir, _) = scratch("check");
        let here = Database::parse("sqlite:a.db", &scratch_dir).unwrap();
        assert_eq!(here.check(), Ok(()));
        let missing = Database::parse("sqlite:nowhere/x.db", &scratch_dir).unwrap();
        assert!(missing.check().unwrap_err().contains("does not exist"));
        let directory = Database::parse("sqlite:.", &scratch_dir).unwrap();
        assert!(directory.check().unwrap_err().contains("is a directory"));
        assert!(
            Database::parse("mysql://x", dir)
                .unwrap_err()
                .contains("sqlite:PATH")
        );
    }

    #[test]
    fn sqlite_errors_have_kinds_and_codes() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
            .unwrap();
        let e = run(&conn, "SELEC 1", &[], None).unwrap_err();
        assert_eq!(e.kind, wit::ErrorKind::Syntax);
        let ok = run(
            &conn,
            "INSERT INTO t (name) VALUES (?)",
            &[wit::Value::Text("a".into())],
            None,
        )
        .unwrap();
        assert_eq!(ok.rows_affected, 1);
        let e = run(
            &conn,
            "INSERT INTO t (name) VALUES (?)",
            &[wit::Value::Text("a".into())],
            None,
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.code.as_str()),
            (wit::ErrorKind::Constraint, "2067")
        );
        let e = run(&conn, "SELECT * FROM t WHERE id = ?", &[], None).unwrap_err();
        assert_eq!(e.kind, wit::ErrorKind::Data);
        // A statement past its deadline is interrupted.
        let past = Instant::now() - Duration::from_millis(1);
        let e = run(
            &conn,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
            &[],
            Some(past),
        )
        .unwrap_err();
        assert_eq!(e.kind, wit::ErrorKind::Timeout);
    }

    #[test]
    fn rows_come_back_typed_and_bounded() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let out = run(
            &conn,
            "SELECT 1 AS i, 2.5 AS f, 'x' AS t, x'00ff' AS b, NULL AS n, CAST(x'ff' AS TEXT) AS bad",
            &[],
            None,
        )
        .unwrap();
        assert_eq!(out.columns, ["i", "f", "t", "b", "n", "bad"]);
        assert_eq!(
            out.rows[0],
            vec![
                wit::Value::Int64(1),
                wit::Value::Float64(2.5),
                wit::Value::Text("x".into()),
                wit::Value::Blob(vec![0, 255]),
                wit::Value::Null,
                wit::Value::Blob(vec![255]),
            ]
        );
        let e = run(
            &conn,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100001) SELECT x FROM c",
            &[],
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind, wit::ErrorKind::TooLarge);
    }
}
