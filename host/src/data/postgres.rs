//! The PostgreSQL backend of [`super::sql`]: a pool of connections per
//! granted database (tokio-postgres, pooled by deadpool-postgres), shared
//! by every instance of the component.
//!
//! - A guest connection holds no server connection between statements: one
//!   is taken from the pool for a statement and given back after it, except
//!   inside a transaction (`BEGIN` … `COMMIT`/`ROLLBACK`), which keeps one
//!   until it ends. A request that ends with a transaction open has it
//!   rolled back.
//! - Statements are prepared once per server connection (the pool's
//!   statement cache); parameters go to the server in PostgreSQL's text
//!   format (blobs in binary), so the server converts them to whatever
//!   type the statement needs, as node-postgres and psycopg do. Results
//!   come back typed: booleans, integers and floats as such, `bytea` as a
//!   blob, `numeric`, `uuid`, dates and times as text (ISO 8601), `json`
//!   and text types as text; any other type is a `data` error that says to
//!   cast the column to text.
//! - A statement past the request's deadline, or one whose result passes
//!   the host's caps, is cancelled on the server (a cancel request, as
//!   `pg_cancel_backend` does) and its server connection is closed rather
//!   than given back; the guest gets `timeout` (SQLSTATE 57014) or
//!   `too-large`.
//! - A server that is down or goes away is `unavailable`; the pool opens
//!   new connections when it is back. A transaction whose connection was
//!   lost is refused until the guest rolls it back, so that a `COMMIT`
//!   never seems to succeed for work that was lost.

use super::sql::{MAX_RESULT_BYTES, MAX_ROWS, MAX_VALUE_BYTES, error, too_large};
use crate::bindings::sql as wit;
use deadpool_postgres::tokio_postgres;
use std::time::{Duration, Instant};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};

/// Server connections one granted database's pool opens at most.
pub const POOL_SIZE: usize = 16;
/// How long a statement waits for a pooled connection, or for a new one
/// to be opened (and never past the request's deadline).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a PostgreSQL database is, read from a `postgres://` URL: never
/// printed with its password (tokio-postgres's `Debug` leaves it out, and
/// [`Target::display`] is the URL without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    config: tokio_postgres::Config,
    /// `server.address`: the host name or address, or the socket directory.
    pub address: String,
    /// `server.port`.
    pub port: u16,
    /// `db.namespace`: the database's name.
    pub namespace: String,
    /// `postgres://user@address:port/namespace`, for messages.
    pub display: String,
}

impl Target {
    /// Parse a `postgres://` (or `postgresql://`) URL, its `${VAR}`s
    /// already expanded. One host; the database name is required. Errors
    /// never contain the password.
    pub fn parse(url: &str) -> Result<Target, String> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            format!(
                "not a PostgreSQL URL ({e}): write `postgres://USER:PASSWORD@HOST:PORT/DATABASE`"
            )
        })?;
        let hosts = config.get_hosts();
        if hosts.len() != 1 {
            return Err(
                "name exactly one host, as in `postgres://USER:PASSWORD@HOST:PORT/DATABASE`".into(),
            );
        }
        let address = match &hosts[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let Some(namespace) = config.get_dbname().map(str::to_string) else {
            return Err(
                "name the database, as in `postgres://USER:PASSWORD@HOST:PORT/DATABASE`".into(),
            );
        };
        let user = config
            .get_user()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let display = format!("postgres://{user}{address}:{port}/{namespace}");
        Ok(Target {
            config,
            address,
            port,
            namespace,
            display,
        })
    }

    /// A pool for this database. Opens no connection: the first statement
    /// does.
    pub fn pool(&self) -> deadpool_postgres::Pool {
        let manager = deadpool_postgres::Manager::from_config(
            self.config.clone(),
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                // A connection that closed is replaced, not handed out.
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        deadpool_postgres::Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .expect("a pool with a runtime and no hooks always builds")
    }
}

/// A guest connection's state on PostgreSQL.
pub struct Session {
    pool: deadpool_postgres::Pool,
    target: std::sync::Arc<Target>,
    /// The server connection a transaction holds.
    pinned: Option<deadpool_postgres::Object>,
    /// Whether the guest is inside a transaction (tracked from the
    /// statements it runs: `BEGIN`/`START` … `COMMIT`/`END`/`ROLLBACK`/`ABORT`).
    in_transaction: bool,
    /// The transaction's server connection was lost: every statement but
    /// `ROLLBACK` is refused until the guest rolls back.
    lost: bool,
}

impl Session {
    /// A session on `pool`: nothing is opened yet.
    pub fn new(pool: deadpool_postgres::Pool, target: std::sync::Arc<Target>) -> Session {
        Session {
            pool,
            target,
            pinned: None,
            in_transaction: false,
            lost: false,
        }
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Run one statement (`$N` placeholders) with its parameters, within
    /// the deadline. `operation` is the statement's first keyword, which
    /// moves the transaction state.
    pub async fn execute(
        &mut self,
        statement: &str,
        operation: Option<&str>,
        parameters: &[wit::Value],
        deadline: Option<Instant>,
    ) -> Result<wit::Outcome, wit::Error> {
        let ends = transaction_end(statement, operation);
        if self.lost {
            if ends == Some(false) {
                // The server rolled back when the connection went.
                self.lost = false;
                self.in_transaction = false;
                return Ok(wit::Outcome {
                    columns: Vec::new(),
                    rows: Vec::new(),
                    rows_affected: 0,
                });
            }
            return Err(error(
                wit::ErrorKind::Unavailable,
                "08006",
                "the connection of this transaction was lost, and the transaction with it: roll back and start again",
            ));
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let client = match self.pinned.take() {
            Some(c) => c,
            None => self.connect(deadline).await?,
        };
        let mut running = Running {
            client: Some(client),
            armed: true,
        };
        let result = tokio::time::timeout_at(
            deadline.into(),
            run(running.client(), statement, parameters),
        )
        .await
        .unwrap_or_else(|_| {
            Err(error(
                wit::ErrorKind::Timeout,
                "57014",
                "the statement ran past the request's deadline: cancelled on the server",
            ))
        });
        let keep = match &result {
            Ok(_) => true,
            // The server answered: the connection is fine.
            Err(e) => {
                !matches!(e.kind, wit::ErrorKind::Timeout | wit::ErrorKind::TooLarge)
                    && !running.client().is_closed()
            }
        };
        if keep {
            running.armed = false;
        }
        let client = running.take();
        let was_in = self.in_transaction;
        match (&result, ends) {
            (Ok(_), Some(true)) => self.in_transaction = true,
            // COMMIT, END, ABORT and ROLLBACK end it, even when they fail.
            (_, Some(false)) => self.in_transaction = false,
            _ => {}
        }
        match client {
            Some(c) if self.in_transaction => self.pinned = Some(c),
            Some(_) => {} // back to the pool
            None if was_in && self.in_transaction => {
                self.lost = true;
                self.in_transaction = true;
            }
            None => {}
        }
        result
    }

    async fn connect(&self, deadline: Instant) -> Result<deadpool_postgres::Object, wit::Error> {
        let until = deadline.min(Instant::now() + CONNECT_TIMEOUT);
        let waited = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout_at(until.into(), self.pool.get()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => {
                let code = match &e {
                    deadpool_postgres::PoolError::Backend(b) => {
                        b.code().map(|c| c.code().to_string()).unwrap_or_default()
                    }
                    _ => String::new(),
                };
                let why = match &e {
                    deadpool_postgres::PoolError::Backend(b) => pg_message(b),
                    other => other.to_string(),
                };
                Err(error(
                    wit::ErrorKind::Unavailable,
                    code,
                    format!("cannot connect to {}: {why}", self.target.display),
                ))
            }
            Err(_) => Err(error(
                wit::ErrorKind::Unavailable,
                "",
                format!(
                    "no connection to {} within {} ms ({} in use, or the server does not answer)",
                    self.target.display,
                    waited.as_millis(),
                    POOL_SIZE
                ),
            )),
        }
    }

    /// At a request's end, or when the guest drops the connection: roll
    /// back a transaction left open, in the background, and give its
    /// server connection back after. Whether one was open.
    pub fn roll_back_open(&mut self) -> bool {
        let open = self.in_transaction;
        self.in_transaction = false;
        self.lost = false;
        if let Some(client) = self.pinned.take() {
            tokio::spawn(async move {
                let done =
                    tokio::time::timeout(CONNECT_TIMEOUT, client.batch_execute("ROLLBACK")).await;
                if !matches!(done, Ok(Ok(()))) {
                    // Not known to be clean: closed, not given back.
                    let _ = deadpool_postgres::Object::take(client);
                }
            });
        }
        open
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.roll_back_open();
        } else if let Some(client) = self.pinned.take() {
            // Closed, not given back: the server rolls back.
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// Whether a statement begins (`Some(true)`) or ends (`Some(false)`) a
/// transaction. `ROLLBACK TO` and `… AND CHAIN` do neither.
fn transaction_end(statement: &str, operation: Option<&str>) -> Option<bool> {
    let words: Vec<String> = statement
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .take(4)
        .map(str::to_ascii_uppercase)
        .collect();
    let chained = words.windows(2).any(|w| w[0] == "AND" && w[1] == "CHAIN");
    match operation {
        Some("BEGIN" | "START") => Some(true),
        Some("ROLLBACK") if words.get(1).is_some_and(|w| w == "TO") => None,
        Some("COMMIT" | "END" | "ROLLBACK" | "ABORT") if !chained => Some(false),
        Some("PREPARE") if words.get(1).is_some_and(|w| w == "TRANSACTION") => Some(false),
        _ => None,
    }
}

/// A server connection while a statement runs on it. Dropped while armed
/// (the statement did not finish cleanly, or the request's future was
/// dropped mid-statement), it sends the server a cancel request for the
/// statement and closes the connection instead of giving it back.
struct Running {
    client: Option<deadpool_postgres::Object>,
    armed: bool,
}

impl Running {
    fn client(&self) -> &deadpool_postgres::Object {
        self.client.as_ref().expect("taken only at the end")
    }

    /// The connection, if it may be used again.
    fn take(&mut self) -> Option<deadpool_postgres::Object> {
        if self.armed { None } else { self.client.take() }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(client) = self.client.take() {
            let cancel = client.cancel_token();
            let _ = deadpool_postgres::Object::take(client);
            if tokio::runtime::Handle::try_current().is_ok() {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        cancel.cancel_query(tokio_postgres::NoTls),
                    )
                    .await;
                });
            }
        }
    }
}

/// Statements a server connection keeps prepared; past it, it starts
/// over (a guest that builds its statements' text would otherwise grow
/// the cache, and the server's, without bound).
const STATEMENT_CACHE: usize = 256;

async fn run(
    client: &deadpool_postgres::Object,
    statement: &str,
    parameters: &[wit::Value],
) -> Result<wit::Outcome, wit::Error> {
    if client.statement_cache.size() >= STATEMENT_CACHE {
        client.statement_cache.clear();
    }
    let prepared = client.prepare_cached(statement).await.map_err(pg_error)?;
    let expected = prepared.params().len();
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
        let size = match p {
            wit::Value::Text(t) => t.len(),
            wit::Value::Blob(b) => b.len(),
            _ => 0,
        };
        if size > MAX_VALUE_BYTES {
            return Err(error(
                wit::ErrorKind::Data,
                "",
                format!(
                    "parameter {} is {size} bytes; at most {MAX_VALUE_BYTES}",
                    i + 1
                ),
            ));
        }
    }
    let params: Vec<Param<'_>> = parameters.iter().map(Param).collect();
    let columns: Vec<String> = prepared
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    if columns.is_empty() {
        let affected = client
            .execute_raw(&prepared, params.iter().map(|p| p as &(dyn ToSql + Sync)))
            .await
            .map_err(pg_error)?;
        return Ok(wit::Outcome {
            columns,
            rows: Vec::new(),
            rows_affected: affected,
        });
    }
    let stream = client
        .query_raw(&prepared, params.iter().map(|p| p as &(dyn ToSql + Sync)))
        .await
        .map_err(pg_error)?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = futures_util::StreamExt::next(&mut stream).await {
        let row = row.map_err(pg_error)?;
        if rows.len() == MAX_ROWS {
            return Err(too_large(format!("more than {MAX_ROWS} rows")));
        }
        bytes += std::mem::size_of::<Vec<wit::Value>>()
            + columns.len() * std::mem::size_of::<wit::Value>();
        let mut values = Vec::with_capacity(columns.len());
        for (i, column) in prepared.columns().iter().enumerate() {
            let Column(value) = row.try_get::<_, Column>(i).map_err(|e| {
                error(
                    wit::ErrorKind::Data,
                    "",
                    format!(
                        "column `{}` ({}): {e}; cast it to text in the statement (`{}::text`)",
                        column.name(),
                        column.type_(),
                        column.name()
                    ),
                )
            })?;
            if let wit::Value::Text(t) = &value {
                bytes += t.len();
            } else if let wit::Value::Blob(b) = &value {
                bytes += b.len();
            }
            values.push(value);
        }
        if bytes > MAX_RESULT_BYTES {
            return Err(too_large(format!(
                "more than {} MiB of values",
                MAX_RESULT_BYTES >> 20
            )));
        }
        rows.push(values);
    }
    let affected = stream.rows_affected().unwrap_or(0);
    Ok(wit::Outcome {
        columns,
        rows,
        rows_affected: affected,
    })
}

/// A parameter, sent in PostgreSQL's text format (the server converts it
/// to the type the statement needs: `'42'` to an integer, `'2026-11-30'`
/// to a date), blobs in binary (`bytea`).
#[derive(Debug)]
struct Param<'a>(&'a wit::Value);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use std::fmt::Write as _;
        match self.0 {
            wit::Value::Null => return Ok(IsNull::Yes),
            wit::Value::Boolean(b) => out.extend_from_slice(if *b { b"t" } else { b"f" }),
            wit::Value::Int64(n) => write!(out, "{n}")?,
            wit::Value::Float64(f) if f.is_nan() => out.extend_from_slice(b"NaN"),
            wit::Value::Float64(f) if f.is_infinite() => {
                out.extend_from_slice(if *f > 0.0 { b"Infinity" } else { b"-Infinity" })
            }
            // Rust's shortest representation that reads back the same.
            wit::Value::Float64(f) => write!(out, "{f:?}")?,
            wit::Value::Text(t) => out.extend_from_slice(t.as_bytes()),
            wit::Value::Blob(b) => out.extend_from_slice(b),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> tokio_postgres::types::Format {
        match self.0 {
            wit::Value::Blob(_) => tokio_postgres::types::Format::Binary,
            _ => tokio_postgres::types::Format::Text,
        }
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A column value read in PostgreSQL's binary format.
struct Column(wit::Value);

impl<'a> FromSql<'a> for Column {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Column, Box<dyn std::error::Error + Sync + Send>> {
        use wit::Value as V;
        let text = |s: String| V::Text(s);
        let value = match *ty {
            Type::BOOL => V::Boolean(bool::from_sql(ty, raw)?),
            Type::INT2 => V::Int64(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => V::Int64(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => V::Int64(i64::from_sql(ty, raw)?),
            Type::OID => V::Int64(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => V::Float64(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => V::Float64(f64::from_sql(ty, raw)?),
            Type::BYTEA => V::Blob(raw.to_vec()),
            Type::NUMERIC => text(rust_decimal::Decimal::from_sql(ty, raw)?.to_string()),
            Type::UUID => text(uuid::Uuid::from_sql(ty, raw)?.to_string()),
            Type::DATE => text(chrono::NaiveDate::from_sql(ty, raw)?.to_string()),
            Type::TIME => text(chrono::NaiveTime::from_sql(ty, raw)?.to_string()),
            Type::TIMESTAMP => text(
                chrono::NaiveDateTime::from_sql(ty, raw)?
                    .format("%Y-%m-%dT%H:%M:%S%.f")
                    .to_string(),
            ),
            Type::TIMESTAMPTZ => text(
                chrono::DateTime::<chrono::Utc>::from_sql(ty, raw)?
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
            // jsonb's binary format is a version byte, then the text.
            Type::JSONB => match raw.split_first() {
                Some((1, rest)) => utf8(rest),
                _ => return Err("unsupported jsonb version".into()),
            },
            // Text in the server's encoding; json's binary format is its text.
            Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::UNKNOWN
            | Type::JSON
            | Type::XML => utf8(raw),
            // Enums and citext send their text.
            ref t
                if matches!(t.kind(), tokio_postgres::types::Kind::Enum(_))
                    || t.name() == "citext" =>
            {
                utf8(raw)
            }
            ref t => return Err(format!("type `{t}` is not one this host converts").into()),
        };
        Ok(Column(value))
    }

    fn from_sql_null(_: &Type) -> Result<Column, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Column(wit::Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Text that is not UTF-8 (a server in another encoding) comes back as a
/// blob of its bytes, as from SQLite.
fn utf8(raw: &[u8]) -> wit::Value {
    match std::str::from_utf8(raw) {
        Ok(s) => wit::Value::Text(s.to_string()),
        Err(_) => wit::Value::Blob(raw.to_vec()),
    }
}

/// The server's message, without its DETAIL (which can quote the values
/// of a row); otherwise what went wrong and why ("error connecting to
/// server: Connection refused").
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// A tokio-postgres error as the guest's error: SQLSTATE as the code, its
/// class as the kind (`23` constraint, `22` data, `42` syntax or a name
/// that does not exist, `57014` timeout, `08`/`53`/`57P` unavailable,
/// `54` too large). Without SQLSTATE: a value that would not convert is
/// `data`, anything else (a closed connection, an I/O error) is
/// `unavailable`. The message is the server's, without its DETAIL.
pub fn pg_error(e: tokio_postgres::Error) -> wit::Error {
    let Some(db) = e.as_db_error() else {
        // tokio-postgres says "error serializing parameter N" or "error
        // deserializing column N" for a conversion; it has no public kind.
        let text = e.to_string();
        let kind = if !e.is_closed() && text.contains("serializing") {
            wit::ErrorKind::Data
        } else {
            wit::ErrorKind::Unavailable
        };
        return error(kind, "", pg_message(&e));
    };
    let code = db.code().code();
    let kind = match code {
        "57014" => wit::ErrorKind::Timeout,
        c if c.starts_with("23") => wit::ErrorKind::Constraint,
        c if c.starts_with("22") => wit::ErrorKind::Data,
        c if c.starts_with("42") => wit::ErrorKind::Syntax,
        c if c.starts_with("54") => wit::ErrorKind::TooLarge,
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => {
            wit::ErrorKind::Unavailable
        }
        _ => wit::ErrorKind::Other,
    };
    error(kind, code, db.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let t = Target::parse("postgres://app:s3cret@db.internal:6543/orders").unwrap();
        assert_eq!(
            (t.address.as_str(), t.port, t.namespace.as_str()),
            ("db.internal", 6543, "orders")
        );
        assert_eq!(t.display, "postgres://app@db.internal:6543/orders");
        assert!(!format!("{t:?}").contains("s3cret"), "{t:?}");
        let e = Target::parse("postgres://app:s3cret@db.internal:notaport/orders").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(
            Target::parse("postgres://app@db.internal")
                .unwrap_err()
                .contains("name the database")
        );
    }

    #[test]
    fn transactions_begin_and_end_by_statement() {
        let t =
            |s: &str| transaction_end(s, super::super::sql::Summary::of(s).operation.as_deref());
        assert_eq!(t("BEGIN"), Some(true));
        assert_eq!(
            t("start transaction isolation level serializable"),
            Some(true)
        );
        assert_eq!(t("COMMIT"), Some(false));
        assert_eq!(t("rollback"), Some(false));
        assert_eq!(t("ROLLBACK TO SAVEPOINT a"), None);
        assert_eq!(t("COMMIT AND CHAIN"), None);
        assert_eq!(t("SELECT 1"), None);
    }
}
