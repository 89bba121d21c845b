//! SQL through the host: the databases the component's manifest grants,
//! opened by the name it grants them under (`sql = { orders =
//! "sqlite:orders.db" }`). The host runs and traces every statement: a
//! CLIENT span under the current span with the OpenTelemetry database
//! conventions, and `db.client.operation.duration`.
//!
//! ```ignore
//! use polytrace_guest::sql::{Connection, Value};
//! let db = Connection::open("orders")?;
//! let out = db.execute("SELECT item FROM orders WHERE id = $1", &["o-1".into()])?;
//! ```
//!
//! Placeholders: `?`, `?1` and `$1`. At most 100,000 rows and 64 MiB of
//! values per statement (`ErrorKind::TooLarge` past that).

use crate::bindings::polytrace::telemetry::sql as wit;
pub use wit::{Error, ErrorKind, Outcome, Value};

/// A connection to one granted database; dropping it rolls back a
/// transaction still open (the host does too when the request ends).
pub struct Connection(wit::Connection);

impl Connection {
    /// Open the database granted as `name`; `ErrorKind::NotGranted` when
    /// the manifest grants none of that name.
    pub fn open(name: &str) -> Result<Connection, Error> {
        crate::batch::flush();
        wit::Connection::open(name).map(Connection)
    }

    /// Run one statement with positional parameters: its columns, rows and
    /// changed-row count.
    pub fn execute(&self, statement: &str, parameters: &[Value]) -> Result<Outcome, Error> {
        // The host makes the statement's span under its current span.
        crate::batch::flush();
        self.0.execute(statement, parameters)
    }

    /// Run `f` in a transaction: committed when it returns `Ok`, rolled
    /// back when it returns an error.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.execute("BEGIN", &[])?;
        match f(self) {
            Ok(v) => {
                self.execute("COMMIT", &[])?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.execute("ROLLBACK", &[]);
                Err(e)
            }
        }
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int64(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int64(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float64(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Boolean(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Blob(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}
