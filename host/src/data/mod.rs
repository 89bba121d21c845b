//! Data access the host supplies to guests, traced once for every
//! language: [`sql`] (the databases a manifest grants a component, on
//! SQLite or on a PostgreSQL server through [`postgres`]) and [`kv`]
//! (`wasi:keyvalue` over the embedded store or a Redis server).

pub mod kv;
pub mod postgres;
pub mod sql;
pub mod sql_json;
