//! Log records supplied by the host, stamped with the current span.
//!
//! ```ignore
//! use polytrace_guest::{kv, logs};
//!
//! logs::info("order accepted", [kv("order.id", "o-1")]);
//! ```
//!
//! With the `log` feature (on by default), [`init`] makes the `log` crate's
//! macros (`log::info!`, `log::warn!`, ...) emit host log records.
//! Printing works too: every line on stdout is an INFO record, on stderr a
//! WARN record.

use crate::KeyValue;
use crate::bindings::polytrace::telemetry::logs as wit;

/// OpenTelemetry severity numbers of the plain levels.
pub mod severity {
    pub const TRACE: u8 = 1;
    pub const DEBUG: u8 = 5;
    pub const INFO: u8 = 9;
    pub const WARN: u8 = 13;
    pub const ERROR: u8 = 17;
    pub const FATAL: u8 = 21;
}

/// Emit a record with an OpenTelemetry severity number.
pub fn emit(severity: u8, body: &str, attributes: impl IntoIterator<Item = KeyValue>) {
    wit::emit(severity, body, &attributes.into_iter().collect::<Vec<_>>());
}

/// Whether a record of `severity` is wanted by the host.
pub fn enabled(severity: u8) -> bool {
    wit::enabled(severity)
}

pub fn trace(body: &str, attributes: impl IntoIterator<Item = KeyValue>) {
    emit(severity::TRACE, body, attributes)
}
pub fn debug(body: &str, attributes: impl IntoIterator<Item = KeyValue>) {
    emit(severity::DEBUG, body, attributes)
}
pub fn info(body: &str, attributes: impl IntoIterator<Item = KeyValue>) {
    emit(severity::INFO, body, attributes)
}
pub fn warn(body: &str, attributes: impl IntoIterator<Item = KeyValue>) {
    emit(severity::WARN, body, attributes)
}
pub fn error(body: &str, attributes: impl IntoIterator<Item = KeyValue>) {
    emit(severity::ERROR, body, attributes)
}

#[cfg(feature = "log")]
mod facade {
    use super::*;

    /// The `log` crate's records as host log records.
    pub struct HostLogger;

    fn severity_of(level: log::Level) -> u8 {
        match level {
            log::Level::Error => severity::ERROR,
            log::Level::Warn => severity::WARN,
            log::Level::Info => severity::INFO,
            log::Level::Debug => severity::DEBUG,
            log::Level::Trace => severity::TRACE,
        }
    }

    impl log::Log for HostLogger {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            enabled(severity_of(metadata.level()))
        }

        fn log(&self, record: &log::Record<'_>) {
            let sev = severity_of(record.level());
            if !enabled(sev) {
                return;
            }
            let mut attrs = vec![crate::kv("code.namespace", record.target())];
            if let Some(file) = record.file() {
                attrs.push(crate::kv("code.file.path", file));
            }
            if let Some(line) = record.line() {
                attrs.push(crate::kv("code.line.number", line));
            }
            emit(sev, &record.args().to_string(), attrs);
        }

        fn flush(&self) {}
    }

    static LOGGER: HostLogger = HostLogger;

    /// Route the `log` crate to the host, at every level (the host decides
    /// what it keeps). Calling it again does nothing.
    pub fn init() {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    }
}

#[cfg(feature = "log")]
pub use facade::{HostLogger, init};
