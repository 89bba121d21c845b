//! Key-value stores through the host (`wasi:keyvalue`): the stores the
//! component's manifest grants, opened by the name it grants them under
//! (`keyvalue = { sessions = "sqlite:sessions.db" }`, or a `redis://`
//! URL). The host traces every operation: a CLIENT span under the current
//! span (`GET sessions`, keys and values never recorded) and
//! `db.client.operation.duration`.
//!
//! ```ignore
//! use polytrace_guest::keyvalue::Store;
//! let sessions = Store::open("sessions")?;
//! sessions.set("s-1", b"{\"user\":\"u-1\"}")?;
//! let value: Option<Vec<u8>> = sessions.get("s-1")?;
//! let visits = sessions.increment("visits", 1)?;
//! ```

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports",
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

/// A failed operation: `kind` is `access-denied`, `no-such-store`,
/// `unavailable`, `timeout`, `too-large`, `data` or `other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: String,
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Error {
        let (kind, message) = match e {
            store::Error::AccessDenied => (
                "access-denied",
                "this key-value store is not granted to the component".to_string(),
            ),
            store::Error::NoSuchStore => ("no-such-store", "no such key-value store".to_string()),
            store::Error::Other(text) => {
                return match text.split_once(": ") {
                    Some((kind, message))
                        if ["unavailable", "timeout", "too-large", "data", "other"]
                            .contains(&kind) =>
                    {
                        Error {
                            kind: kind.to_string(),
                            message: message.to_string(),
                        }
                    }
                    _ => Error {
                        kind: "other".to_string(),
                        message: text,
                    },
                };
            }
        };
        Error {
            kind: kind.to_string(),
            message,
        }
    }
}

/// A granted key-value store (a `wasi:keyvalue` bucket).
pub struct Store(store::Bucket);

impl Store {
    /// Open the store granted as `name`.
    pub fn open(name: &str) -> Result<Store, Error> {
        crate::batch::flush();
        Ok(Store(store::open(name)?))
    }

    /// The value of `key`, if it has one.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        crate::batch::flush();
        Ok(self.0.get(key)?)
    }

    /// Set `key` to `value`.
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
        crate::batch::flush();
        Ok(self.0.set(key, value.as_ref())?)
    }

    /// Remove `key` (no error when it is not there).
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        crate::batch::flush();
        Ok(self.0.delete(key)?)
    }

    /// Whether `key` has a value.
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        crate::batch::flush();
        Ok(self.0.exists(key)?)
    }

    /// Add `delta` to the integer at `key` (0 when there is none),
    /// atomically: the new value.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        crate::batch::flush();
        Ok(atomics::increment(&self.0, key, delta)?)
    }

    /// The values of `keys` in one operation, in their order.
    pub fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        crate::batch::flush();
        let owned: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let found = batch::get_many(&self.0, &owned)?;
        let mut by_key: std::collections::HashMap<String, Vec<u8>> =
            found.into_iter().flatten().collect();
        Ok(keys.iter().map(|k| by_key.remove(*k)).collect())
    }

    /// Set every pair in one operation.
    pub fn set_many(&self, pairs: &[(&str, &[u8])]) -> Result<(), Error> {
        crate::batch::flush();
        let owned: Vec<(String, Vec<u8>)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        Ok(batch::set_many(&self.0, &owned)?)
    }

    /// Remove `keys` in one operation.
    pub fn delete_many(&self, keys: &[&str]) -> Result<(), Error> {
        crate::batch::flush();
        let owned: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        Ok(batch::delete_many(&self.0, &owned)?)
    }

    /// Every key, asking a page at a time (in no promised order).
    pub fn keys(&self) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            crate::batch::flush();
            let page = self.0.list_keys(cursor)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(keys),
            }
        }
    }
}
