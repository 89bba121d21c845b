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
    /// TLS, when `sslmode` asks for it: the server's certificate verified
    /// against the system's roots and, when given, `sslrootcert`'s.
    pub tls: Option<Tls>,
}

/// TLS to a PostgreSQL server (`sslmode=require`, `verify-ca` or
/// `verify-full`: all three verify the certificate and the host name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// Extra trusted CA certificates (PEM), `sslrootcert` resolved against
    /// the manifest's directory.
    pub root_cert: Option<std::path::PathBuf>,
}

impl Tls {
    /// The trusted roots: the system's, and `root_cert`'s. Errors say
    /// which file and why.
    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable system certificates are skipped, as by other clients.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = &self.root_cert {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect())
                .map_err(|e| format!("sslrootcert `{}`: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "sslrootcert `{}` holds no PEM certificate",
                    path.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert `{}`: {e}", path.display()))?;
            }
        }
        Ok(roots)
    }

    fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(self.roots()?)
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }
}

impl Target {
    /// Parse a `postgres://` (or `postgresql://`) URL, its `${VAR}`s
    /// already expanded. One host; the database name is required.
    /// `sslmode=require` (or `verify-ca`, `verify-full`) asks for TLS and
    /// `sslrootcert=PATH` (relative to `dir`, the manifest's directory)
    /// adds a trusted CA, as for libpq; other modes connect without TLS.
    /// Errors never contain the password.
    pub fn parse(url: &str, dir: &std::path::Path) -> Result<Target, String> {
        let (url, tls) = split_tls(url, dir)?;
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
            tls,
        })
    }

    /// Whether the TLS settings hold: the `sslrootcert` file is there and
    /// holds certificates. Checked at start.
    pub fn check(&self) -> Result<(), String> {
        match &self.tls {
            Some(tls) => tls.roots().map(|_| ()),
            None => Ok(()),
        }
    }

    /// A pool for this database. Opens no connection: the first statement
    /// does.
    pub fn pool(&self) -> deadpool_postgres::Pool {
        let config = deadpool_postgres::ManagerConfig {
            // A connection that closed is replaced, not handed out.
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match self.tls.as_ref().map(Tls::connector) {
            Some(Ok(tls)) => {
                deadpool_postgres::Manager::from_config(self.config.clone(), tls, config)
            }
            Some(Err(why)) => {
                // Checked at start; a file changed since fails each
                // connection instead (TLS is required, never dropped).
                tracing::error!(database = %self.display, "TLS: {why}");
                let mut refused = self.config.clone();
                refused.ssl_mode(tokio_postgres::config::SslMode::Require);
                deadpool_postgres::Manager::from_config(refused, tokio_postgres::NoTls, config)
            }
            None => deadpool_postgres::Manager::from_config(
                self.config.clone(),
                tokio_postgres::NoTls,
                config,
            ),
        };
        deadpool_postgres::Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .expect("a pool with a runtime and no hooks always builds")
    }
}

/// The URL without the parameters tokio-postgres does not take
/// (`sslrootcert`, and `sslmode=verify-ca`/`verify-full`, read as
/// `require`), and the TLS they ask for.
fn split_tls(url: &str, dir: &std::path::Path) -> Result<(String, Option<Tls>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut kept = Vec::new();
    let mut mode = None;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("`{key}` is not UTF-8"))?;
        match key {
            "sslrootcert" => root_cert = Some(dir.join(value.as_ref())),
            "sslmode" => {
                mode = Some(value.to_string());
                let as_tokio = match value.as_ref() {
                    "verify-ca" | "verify-full" => "require",
                    other => other,
                };
                kept.push(format!("sslmode={as_tokio}"));
            }
            _ => kept.push(pair.to_string()),
        }
    }
    let tls = match mode.as_deref() {
        Some("require" | "verify-ca" | "verify-full") => Some(Tls { root_cert }),
        _ if root_cert.is_some() => {
            return Err("`sslrootcert` needs `sslmode=require` (or `verify-full`)".into());
        }
        _ => None,
    };
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, tls))
}

/// A guest connection's state on PostgreSQL.
pub struct Session {
    pool: deadpool_postgres::Pool,
    target: std::sync::Arc<Target>,
    /// The server connection a transaction holds.
    pinned: Option<deadpool_postgres::Object>,
    /// The transaction state, as the server reports it.
    state: Tx,
    /// The pinned connection's session state was changed (`SET`, a
    /// temporary table, an advisory lock, …): it stays with this guest
    /// connection until the request ends, then is reset.
    dirty: bool,
}

/// Where a guest connection is, transaction-wise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tx {
    /// No transaction: each statement commits on its own.
    Idle,
    /// Inside `BEGIN` … .
    Open,
    /// Inside a transaction a statement failed in: the server refuses all
    /// but `ROLLBACK` (`25P02`), and a `COMMIT` rolls back.
    Failed,
    /// The server connection went away inside a transaction, and the
    /// transaction with it.
    Lost,
}

/// The statements that may move the transaction state; after one, the
/// state is asked of the server (unless it is one of the plain forms
/// whose effect is certain).
fn transaction_control(operation: &str) -> bool {
    matches!(
        operation,
        "BEGIN"
            | "START"
            | "COMMIT"
            | "END"
            | "ROLLBACK"
            | "ABORT"
            | "PREPARE"
            | "SAVEPOINT"
            | "RELEASE"
            | "CALL"
            | "DO"
            | ""
    )
}

/// Statements that change a server connection's session state beyond the
/// statement: such a connection is reset (`DISCARD ALL`) before another
/// request uses it.
fn changes_session(operation: &str, statement: &str) -> bool {
    let lower = statement.to_ascii_lowercase();
    matches!(
        operation,
        "SET"
            | "RESET"
            | "DISCARD"
            | "DEALLOCATE"
            | "LISTEN"
            | "UNLISTEN"
            | "LOAD"
            | "DECLARE"
            | "PREPARE"
            | "SECURITY"
            | "CLOSE"
    ) || (operation == "CREATE" && (lower.contains("temp ") || lower.contains("temporary ")))
        || lower.contains("advisory_lock")
        || lower.contains("set_config")
}

impl Session {
    /// A session on `pool`: nothing is opened yet.
    pub fn new(pool: deadpool_postgres::Pool, target: std::sync::Arc<Target>) -> Session {
        Session {
            pool,
            target,
            pinned: None,
            state: Tx::Idle,
            dirty: false,
        }
    }

    /// Whether a transaction is open (failed or lost ones too, until the
    /// guest rolls them back).
    pub fn in_transaction(&self) -> bool {
        self.state != Tx::Idle
    }

    /// Run one statement (`$N` placeholders) with its parameters, within
    /// the deadline. `operation` is the statement's first keyword.
    pub async fn execute(
        &mut self,
        statement: &str,
        operation: Option<&str>,
        parameters: &[wit::Value],
        deadline: Option<Instant>,
    ) -> Result<wit::Outcome, wit::Error> {
        let op = operation.unwrap_or("");
        let plain = plain_control(statement);
        if op == "COPY" {
            return Err(error(
                wit::ErrorKind::Syntax,
                "",
                "COPY is not supported through the host: use INSERT and SELECT",
            ));
        }
        if self.state == Tx::Lost {
            return self.after_loss(plain.as_deref());
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let client = match self.pinned.take() {
            Some(c) => c,
            None => self.connect(deadline).await?,
        };
        let was = self.state;
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
            Err(Failure::unclean(error(
                wit::ErrorKind::Timeout,
                "57014",
                "the statement ran past the request's deadline: cancelled on the server",
            )))
        });
        if result.as_ref().is_ok() || result.as_ref().is_err_and(|f| f.clean) {
            running.armed = false;
        }
        let mut result = result.map_err(|f| f.error);
        let Some(client) = running.take() else {
            // Cancelled and closed: a transaction on it is gone.
            self.state = if was == Tx::Idle { Tx::Idle } else { Tx::Lost };
            self.dirty = false;
            return result;
        };
        if result.as_ref().is_err_and(|e| e.code == "26000") {
            // A prepared statement the cache holds is gone (DEALLOCATE).
            client.statement_cache.clear();
        }
        if changes_session(op, statement) {
            self.dirty = true;
        }
        self.state = match (plain.as_deref(), &result) {
            (Some("BEGIN"), Ok(_)) => Tx::Open,
            (Some("COMMIT" | "ROLLBACK"), Ok(_)) => Tx::Idle,
            _ if transaction_control(op) || (was != Tx::Idle && result.is_err()) => {
                match transaction_state(&client, deadline).await {
                    Some(state) => state,
                    None => {
                        // Not known: closed, not given back.
                        drop(deadpool_postgres::Object::take(client));
                        self.state = if was == Tx::Idle { Tx::Idle } else { Tx::Lost };
                        self.dirty = false;
                        return result;
                    }
                }
            }
            _ => was,
        };
        if was == Tx::Failed && matches!(op, "COMMIT" | "END") && result.is_ok() {
            // PostgreSQL answers a COMMIT of a failed transaction with a
            // rollback, and no error: the guest must not think it committed.
            result = Err(error(
                wit::ErrorKind::Other,
                "25P02",
                "the transaction had failed (a statement in it did) and was rolled back, not committed",
            ));
        }
        // A transaction, or a session setting the guest made, keeps its
        // server connection until it ends, or the request does.
        if self.state != Tx::Idle || self.dirty {
            self.pinned = Some(client);
        }
        result
    }

    /// A statement after the transaction's connection was lost: `ROLLBACK`
    /// ends it (the server rolled back already); anything else is refused,
    /// a `COMMIT` with the state cleared.
    fn after_loss(&mut self, plain: Option<&str>) -> Result<wit::Outcome, wit::Error> {
        let lost = |what: &str| {
            error(
                wit::ErrorKind::Unavailable,
                "08006",
                format!(
                    "the connection of this transaction was lost, and the transaction with it: {what}"
                ),
            )
        };
        match plain {
            Some("ROLLBACK") => {
                self.state = Tx::Idle;
                Ok(wit::Outcome {
                    columns: Vec::new(),
                    rows: Vec::new(),
                    rows_affected: 0,
                })
            }
            Some("COMMIT") => {
                self.state = Tx::Idle;
                Err(lost("nothing was committed"))
            }
            _ => Err(lost("roll back and start again")),
        }
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
    /// back a transaction left open and reset session settings the guest
    /// made (`DISCARD ALL`), in the background, then give the server
    /// connection back (closed instead if either fails). Whether a
    /// transaction was open.
    pub fn roll_back_open(&mut self) -> bool {
        let open = self.state != Tx::Idle;
        self.state = Tx::Idle;
        let dirty = std::mem::take(&mut self.dirty);
        if let Some(client) = self.pinned.take() {
            tokio::spawn(async move {
                let clean = async {
                    if open {
                        client.batch_execute("ROLLBACK").await?;
                    }
                    if dirty {
                        client.batch_execute("DISCARD ALL").await?;
                        client.statement_cache.clear();
                    }
                    Ok::<_, tokio_postgres::Error>(())
                };
                if !matches!(
                    tokio::time::timeout(CONNECT_TIMEOUT, clean).await,
                    Ok(Ok(()))
                ) {
                    // Not known to be clean: closed, not given back.
                    drop(deadpool_postgres::Object::take(client));
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

/// `BEGIN`, `COMMIT` or `ROLLBACK` when the statement is exactly one of
/// the plain forms clients send (`BEGIN`, `START TRANSACTION`, `COMMIT`,
/// `END`, `ROLLBACK`, `ABORT`, with an optional `WORK`/`TRANSACTION` and
/// `;`), whose effect on the transaction is certain.
fn plain_control(statement: &str) -> Option<String> {
    let words: Vec<String> = statement
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let form = match words.as_slice() {
        ["BEGIN"] | ["BEGIN", "WORK" | "TRANSACTION"] | ["START", "TRANSACTION"] => "BEGIN",
        ["COMMIT" | "END"] | ["COMMIT" | "END", "WORK" | "TRANSACTION"] => "COMMIT",
        ["ROLLBACK" | "ABORT"] | ["ROLLBACK" | "ABORT", "WORK" | "TRANSACTION"] => "ROLLBACK",
        _ => return None,
    };
    Some(form.to_string())
}

/// The transaction state, asked of the server: in a transaction block,
/// `now()` (the transaction's start) is earlier than the statement's own
/// start; in a failed one, the query itself is refused with `25P02`.
/// `None` when the server does not answer as expected.
async fn transaction_state(client: &deadpool_postgres::Object, deadline: Instant) -> Option<Tx> {
    let asked = tokio::time::timeout_at(
        deadline.max(Instant::now() + Duration::from_secs(1)).into(),
        client.simple_query("SELECT now() = statement_timestamp()"),
    )
    .await
    .ok()?;
    match asked {
        Ok(messages) => messages.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => match row.get(0) {
                Some("t") => Some(Tx::Idle),
                Some("f") => Some(Tx::Open),
                _ => None,
            },
            _ => None,
        }),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION) => {
            Some(Tx::Failed)
        }
        Err(_) => None,
    }
}

/// A statement's failure, and whether its connection is still usable
/// (`clean`: the server answered with an error and is ready for the next
/// statement, or nothing was sent).
struct Failure {
    error: wit::Error,
    clean: bool,
}

impl Failure {
    fn clean(error: wit::Error) -> Failure {
        Failure { error, clean: true }
    }

    fn unclean(error: wit::Error) -> Failure {
        Failure {
            error,
            clean: false,
        }
    }

    /// A tokio-postgres error: clean when it is the server's own.
    fn pg(e: tokio_postgres::Error) -> Failure {
        let clean = e.as_db_error().is_some();
        Failure {
            error: pg_error(e),
            clean,
        }
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
/// Statements longer than this (bytes) are prepared for one use only,
/// never cached: the cache stays small whatever guests send.
const CACHED_STATEMENT_BYTES: usize = 16 << 10;

async fn run(
    client: &deadpool_postgres::Object,
    statement: &str,
    parameters: &[wit::Value],
) -> Result<wit::Outcome, Failure> {
    if client.statement_cache.size() >= STATEMENT_CACHE {
        client.statement_cache.clear();
    }
    let prepared = if statement.len() > CACHED_STATEMENT_BYTES {
        client.prepare(statement).await
    } else {
        client.prepare_cached(statement).await
    }
    .map_err(Failure::pg)?;
    // Checked before anything runs: the connection stays clean.
    let expected = prepared.params();
    if expected.len() != parameters.len() {
        return Err(Failure::clean(error(
            wit::ErrorKind::Data,
            "",
            format!(
                "the statement has {} parameter(s), {} given",
                expected.len(),
                parameters.len()
            ),
        )));
    }
    for (i, (p, ty)) in parameters.iter().zip(expected).enumerate() {
        let size = match p {
            wit::Value::Text(t) => t.len(),
            wit::Value::Blob(b) => b.len(),
            _ => 0,
        };
        let problem = if size > MAX_VALUE_BYTES {
            format!("is {size} bytes; at most {MAX_VALUE_BYTES}")
        } else if matches!(p, wit::Value::Blob(_)) && *ty != Type::BYTEA {
            format!("is bytes, for a `{ty}`: send bytes only for `bytea`")
        } else {
            continue;
        };
        return Err(Failure::clean(error(
            wit::ErrorKind::Data,
            "",
            format!("parameter {} {problem}", i + 1),
        )));
    }
    if let Some(c) = prepared.columns().iter().find(|c| !decodes(c.type_())) {
        return Err(Failure::clean(error(
            wit::ErrorKind::Data,
            "",
            format!(
                "column `{}` has type `{}`, which the host does not convert: cast it to text in the statement (`{}::text`)",
                c.name(),
                c.type_(),
                c.name()
            ),
        )));
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
            .map_err(Failure::pg)?;
        return Ok(wit::Outcome {
            columns,
            rows: Vec::new(),
            rows_affected: affected,
        });
    }
    let stream = client
        .query_raw(&prepared, params.iter().map(|p| p as &(dyn ToSql + Sync)))
        .await
        .map_err(Failure::pg)?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    // Past here a failure leaves rows unread: the connection is closed.
    let too_large = |what: String| Failure::unclean(too_large(what));
    while let Some(row) = futures_util::StreamExt::next(&mut stream).await {
        let row = row.map_err(Failure::pg)?;
        if rows.len() == MAX_ROWS {
            return Err(too_large(format!("more than {MAX_ROWS} rows")));
        }
        bytes += std::mem::size_of::<Vec<wit::Value>>()
            + columns.len() * std::mem::size_of::<wit::Value>();
        let mut values = Vec::with_capacity(columns.len());
        for (i, column) in prepared.columns().iter().enumerate() {
            // The value's bytes as received, counted before any copy.
            let Raw(raw) = row
                .try_get::<_, Raw<'_>>(i)
                .map_err(|e| Failure::unclean(error(wit::ErrorKind::Data, "", e.to_string())))?;
            bytes += raw.map_or(0, <[u8]>::len);
            if bytes > MAX_RESULT_BYTES {
                return Err(too_large(format!(
                    "more than {} MiB of values",
                    MAX_RESULT_BYTES >> 20
                )));
            }
            let value = match raw {
                None => wit::Value::Null,
                Some(raw) => decode(column.type_(), raw).map_err(|e| {
                    Failure::unclean(error(
                        wit::ErrorKind::Data,
                        "",
                        format!("column `{}` ({}): {e}", column.name(), column.type_()),
                    ))
                })?,
            };
            values.push(value);
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

/// A column's bytes as received (binary format), borrowed from the row.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> Result<Raw<'a>, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Raw<'a>, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Whether [`decode`] converts values of this type.
fn decodes(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::BOOL
            | Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::BYTEA
            | Type::NUMERIC
            | Type::UUID
            | Type::DATE
            | Type::TIME
            | Type::TIMESTAMP
            | Type::TIMESTAMPTZ
            | Type::JSONB
            | Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::UNKNOWN
            | Type::JSON
            | Type::XML
            | Type::VOID
    ) || matches!(ty.kind(), tokio_postgres::types::Kind::Enum(_))
        || ty.name() == "citext"
}

/// A column value from PostgreSQL's binary format: booleans, integers and
/// floats as such, `bytea` as a blob, `numeric` as its exact decimal text
/// (`NaN`, `Infinity` included), `uuid` as text, dates and times as ISO
/// 8601 text (`infinity`/`-infinity` and `24:00:00` as PostgreSQL writes
/// them), json and text types as text, `void` as null.
fn decode(ty: &Type, raw: &[u8]) -> Result<wit::Value, Box<dyn std::error::Error + Sync + Send>> {
    use wit::Value as V;
    let text = |s: String| V::Text(s);
    // PostgreSQL's infinite dates and times: the type's extreme values.
    let infinite = |max: bool| text(if max { "infinity" } else { "-infinity" }.into());
    Ok(match *ty {
        Type::VOID => V::Null,
        Type::BOOL => V::Boolean(bool::from_sql(ty, raw)?),
        Type::INT2 => V::Int64(i16::from_sql(ty, raw)?.into()),
        Type::INT4 => V::Int64(i32::from_sql(ty, raw)?.into()),
        Type::INT8 => V::Int64(i64::from_sql(ty, raw)?),
        Type::OID => V::Int64(u32::from_sql(ty, raw)?.into()),
        Type::FLOAT4 => V::Float64(f32::from_sql(ty, raw)?.into()),
        Type::FLOAT8 => V::Float64(f64::from_sql(ty, raw)?),
        Type::BYTEA => V::Blob(raw.to_vec()),
        Type::NUMERIC => text(numeric_text(raw)?),
        Type::UUID => text(uuid::Uuid::from_sql(ty, raw)?.to_string()),
        Type::DATE => match i32::from_sql(ty, raw)? {
            i32::MAX => infinite(true),
            i32::MIN => infinite(false),
            _ => text(chrono::NaiveDate::from_sql(ty, raw)?.to_string()),
        },
        Type::TIME => match i64::from_sql(ty, raw)? {
            86_400_000_000 => text("24:00:00".into()),
            _ => text(chrono::NaiveTime::from_sql(ty, raw)?.to_string()),
        },
        Type::TIMESTAMP => match i64::from_sql(ty, raw)? {
            i64::MAX => infinite(true),
            i64::MIN => infinite(false),
            _ => text(
                chrono::NaiveDateTime::from_sql(ty, raw)?
                    .format("%Y-%m-%dT%H:%M:%S%.f")
                    .to_string(),
            ),
        },
        Type::TIMESTAMPTZ => match i64::from_sql(ty, raw)? {
            i64::MAX => infinite(true),
            i64::MIN => infinite(false),
            _ => text(
                chrono::DateTime::<chrono::Utc>::from_sql(ty, raw)?
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
        },
        // jsonb's binary format is a version byte, then the text.
        Type::JSONB => match raw.split_first() {
            Some((1, rest)) => utf8(rest),
            _ => return Err("unsupported jsonb version".into()),
        },
        // Text in the server's encoding; json's binary format is its
        // text; enums and citext send their text.
        _ => utf8(raw),
    })
}

/// `numeric`'s binary format (a count of base-10,000 digits, the first
/// one's weight, the sign or special value, the display scale, the digits)
/// as the exact text PostgreSQL prints for it.
fn numeric_text(raw: &[u8]) -> Result<String, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        let b = raw.get(i * 2..i * 2 + 2).ok_or("a short numeric value")?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    };
    let (ndigits, weight, sign, dscale) = (
        word(0)? as usize,
        word(1)? as i16,
        word(2)?,
        word(3)? as usize,
    );
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        other => return Err(format!("an unknown numeric sign {other:#x}").into()),
    }
    let digit = |i: i64| -> Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        if i < 0 || i as usize >= ndigits {
            Ok(0)
        } else {
            word(4 + i as usize)
        }
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=i64::from(weight) {
            let d = digit(i)?;
            if i == 0 {
                out.push_str(&d.to_string());
            } else {
                out.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        let mut fraction = String::with_capacity(dscale + 4);
        let mut i = i64::from(weight) + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(i)?));
            i += 1;
        }
        fraction.truncate(dscale);
        out.push('.');
        out.push_str(&fraction);
    }
    Ok(out)
}

/// Text that is not UTF-8 (a server in another encoding) comes back as a
/// blob of its bytes, as from SQLite.
fn utf8(raw: &[u8]) -> wit::Value {
    match std::str::from_utf8(raw) {
        Ok(s) => wit::Value::Text(s.to_string()),
        Err(_) => wit::Value::Blob(raw.to_vec()),
    }
}

/// Run `script` (statements separated by `;`, as `psql -f` takes them) on
/// one of `pool`'s connections, within `within`: a granted database's
/// schema, when the host starts. Errors name the server (never the
/// password) and carry the server's message and SQLSTATE.
pub async fn run_script(
    pool: &deadpool_postgres::Pool,
    target: &Target,
    script: &str,
    within: Duration,
) -> Result<(), String> {
    let work = async {
        let client = pool
            .get()
            .await
            .map_err(|e| match &e {
                deadpool_postgres::PoolError::Backend(b) => pg_message(b),
                other => other.to_string(),
            })
            .map_err(|why| format!("cannot connect to {}: {why}", target.display))?;
        client
            .batch_execute(script)
            .await
            .map_err(|e| match e.code() {
                Some(code) => format!("{} (SQLSTATE {})", pg_message(&e), code.code()),
                None => pg_message(&e),
            })
    };
    match tokio::time::timeout(within, work).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{} did not finish it within {} s",
            target.display,
            within.as_secs()
        )),
    }
}

/// The server's message, without its DETAIL (which can quote the values
/// of a row); otherwise what went wrong and why ("error connecting to
/// server: Connection refused").
fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.ends_with(&text) {
            message = format!("{message}: {text}");
        }
        source = s.source();
    }
    message
}

/// The message of a statement's error for its span: a data error's
/// (`22…`) quoted value is left out (`invalid input syntax for type
/// integer: "4111-…"` → `invalid input syntax for type integer: ?`), as
/// values never reach a trace; the guest's error keeps it.
pub fn span_message(e: &wit::Error) -> String {
    match e.message.find(": \"") {
        Some(at) if e.code.starts_with("22") => format!("{}: ?", &e.message[..at]),
        _ => e.message.clone(),
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
        let here = std::path::Path::new("/app");
        let t = Target::parse("postgres://app:s3cret@db.internal:6543/orders", here).unwrap();
        assert_eq!(
            (t.address.as_str(), t.port, t.namespace.as_str()),
            ("db.internal", 6543, "orders")
        );
        assert_eq!(t.display, "postgres://app@db.internal:6543/orders");
        assert!(!format!("{t:?}").contains("s3cret"), "{t:?}");
        let e =
            Target::parse("postgres://app:s3cret@db.internal:notaport/orders", here).unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(
            Target::parse("postgres://app@db.internal", here)
                .unwrap_err()
                .contains("name the database")
        );
    }

    #[test]
    fn tls_is_asked_for_by_sslmode() {
        let dir = std::path::Path::new("/app");
        let (url, tls) = split_tls(
            "postgres://a@h/db?sslmode=verify-full&sslrootcert=ca.pem&application_name=x",
            dir,
        )
        .unwrap();
        assert_eq!(url, "postgres://a@h/db?sslmode=require&application_name=x");
        assert_eq!(
            tls,
            Some(Tls {
                root_cert: Some("/app/ca.pem".into())
            })
        );
        let (url, tls) = split_tls("postgres://a@h/db?sslmode=prefer", dir).unwrap();
        assert_eq!(
            (url.as_str(), tls),
            ("postgres://a@h/db?sslmode=prefer", None)
        );
        assert!(split_tls("postgres://a@h/db?sslrootcert=ca.pem", dir).is_err());
        // The file must hold certificates: checked at start.
        let target = Target::parse(
            "postgres://a@h/db?sslmode=require&sslrootcert=/nonexistent.pem",
            dir,
        )
        .unwrap();
        assert!(target.check().unwrap_err().contains("/nonexistent.pem"));
    }

    #[test]
    fn plain_transaction_statements_are_recognized() {
        assert_eq!(plain_control("begin").as_deref(), Some("BEGIN"));
        assert_eq!(
            plain_control("START TRANSACTION;").as_deref(),
            Some("BEGIN")
        );
        assert_eq!(plain_control(" commit work ").as_deref(), Some("COMMIT"));
        assert_eq!(plain_control("END").as_deref(), Some("COMMIT"));
        assert_eq!(plain_control("abort").as_deref(), Some("ROLLBACK"));
        // Anything else is asked of the server.
        for s in [
            "ROLLBACK TO SAVEPOINT a",
            "ROLLBACK WORK TO a",
            "/* c */ ROLLBACK",
            "COMMIT AND CHAIN",
            "COMMIT PREPARED 'x'",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        ] {
            assert_eq!(plain_control(s), None, "{s}");
        }
    }

    #[test]
    fn numerics_print_exactly() {
        // ndigits, weight, sign, dscale, then base-10,000 digits.
        let numeric = |words: &[u16]| {
            let raw: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
            numeric_text(&raw).unwrap()
        };
        assert_eq!(numeric(&[2, 0, 0, 2, 123, 4500]), "123.45");
        assert_eq!(numeric(&[1, 1, 0x4000, 0, 12]), "-120000");
        assert_eq!(numeric(&[0, 0, 0, 0]), "0");
        // 1e-100: one digit, far below the point.
        let tiny = numeric(&[1, (-25i16) as u16, 0, 100, 1]);
        assert_eq!(tiny, format!("0.{}1", "0".repeat(99)));
        assert_eq!(numeric(&[0, 0, 0xC000, 0]), "NaN");
        assert_eq!(numeric(&[0, 0, 0xF000, 0]), "-Infinity");
        assert!(numeric_text(&[0, 1]).is_err());
    }
}
