//! polytrace: a WebAssembly runtime that runs wasi:http components written
//! in any language and supplies their instrumentation: one implementation of
//! spans, semantic conventions and W3C propagation for every guest.
//!
//! The pieces, each in its own module: [`manifest`] (the app description),
//! [`build`] (running components' build commands),
//! [`runtime`] (engine, linker, compiled-code cache), [`instance`] (what a
//! store holds: per-instance state and the per-request scope), [`pool`]
//! (warm instances and when one is thrown away), [`app`] (a request's life),
//! [`http`] (listener and outbound dispatch), [`telemetry`] (spans,
//! propagation, export), [`data`] (SQL for guests, traced) and
//! [`bindings`] (the WIT contract).

pub mod app;
pub mod bindings;
pub mod build;
pub mod data;
pub mod http;
pub mod instance;
pub mod manifest;
pub mod pool;
pub mod query;
pub mod runtime;
pub mod store;
pub mod telemetry;
