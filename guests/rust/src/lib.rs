//! Rust guest SDK for polytrace.
//!
//! The host supplies the telemetry; this crate makes it idiomatic:
//!
//! ```ignore
//! use polytrace_guest::{Span, kv};
//!
//! let span = Span::start("validate_order", [kv("order.items", 3), kv("user.id", "u-1")]);
//! span.add_event("checkpoint", [kv("step", 1)]);
//! // ... the span ends when `span` goes out of scope.
//! ```
//!
//! Outgoing `wasi:http` requests get CLIENT spans and `traceparent` from the
//! host without any code here; [`http`] has small helpers for handlers.
//! [`metrics`] has counters, histograms and gauges; [`logs`] has log records
//! (and the `log` crate's macros after [`logs::init`]).

pub mod http;
pub mod logs;
pub mod metrics;
pub mod keyvalue;
pub mod sql;
#[cfg(feature = "opentelemetry")]
pub mod otel;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/telemetry.wit",
        world: "polytrace:telemetry/imports",
    });
}

use bindings::polytrace::telemetry::tracing as wit;
pub use bindings::polytrace::telemetry::tracing::{SpanContext, SpanKind};
pub use bindings::polytrace::telemetry::types::{KeyValue, Value};

/// An attribute: `kv("order.items", 3)`.
pub fn kv(key: impl Into<String>, value: impl Into<Value>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident($conv:expr)),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant($conv(v))
            }
        })*
    };
}

value_from! {
    &str => String(str::to_string),
    String => String(std::convert::identity),
    bool => Bool(std::convert::identity),
    i64 => S64(std::convert::identity),
    i32 => S64(i64::from),
    u32 => S64(i64::from),
    f64 => F64(std::convert::identity),
    f32 => F64(f64::from),
    Vec<String> => StringArray(std::convert::identity),
    Vec<&str> => StringArray(|v: Vec<&str>| v.into_iter().map(str::to_string).collect()),
    Vec<bool> => BoolArray(std::convert::identity),
    Vec<i64> => S64Array(std::convert::identity),
    Vec<f64> => F64Array(std::convert::identity),
}

/// The span status.
pub use wit::Status;

/// A span that ends when dropped. Creating one makes it the current span:
/// spans started after it, and outgoing HTTP requests, are its children.
///
/// Spans are recorded through the host's `span-batch` interface: each
/// start and end reaches the host at once (so the current span is always
/// right for printed lines and outgoing requests), and what is set in
/// between (attributes, events, status, name) travels with the next one,
/// in one buffer instead of one host call each.
pub struct Span {
    handle: u32,
    // Atomics and OnceLock (plain loads and stores on single-threaded wasm)
    // keep a span Send + Sync, as the `opentelemetry` crate's API needs.
    ended: std::sync::atomic::AtomicBool,
    /// Its context, once asked for (the host forgets ended spans).
    context: std::sync::OnceLock<SpanContext>,
}

impl Span {
    /// Start an `internal` span under the current span.
    pub fn start(name: &str, attributes: impl IntoIterator<Item = KeyValue>) -> Span {
        Self::start_with_kind(name, SpanKind::Internal, attributes)
    }

    /// Start a span of a given kind under the current span.
    pub fn start_with_kind(
        name: &str,
        kind: SpanKind,
        attributes: impl IntoIterator<Item = KeyValue>,
    ) -> Span {
        // Collected first: an attribute iterator may itself use the SDK.
        let attributes: Vec<KeyValue> = attributes.into_iter().collect();
        Self::start_encoded(name, kind, None, |b| b.attributes(attributes))
    }

    /// Start a span under an explicit parent (for example one [`extract`]ed
    /// from a message).
    pub fn start_with_parent(
        name: &str,
        kind: SpanKind,
        attributes: impl IntoIterator<Item = KeyValue>,
        parent: &SpanContext,
    ) -> Span {
        let attributes: Vec<KeyValue> = attributes.into_iter().collect();
        Self::start_encoded(name, kind, Some(parent), |b| b.attributes(attributes))
    }

    /// Start a span (under `parent`, else the current span) whose attribute
    /// list `attributes` writes into the batch itself: the `opentelemetry`
    /// API's key-values go in without a copy. `attributes` must not use
    /// the SDK (the batch is borrowed).
    pub(crate) fn start_encoded(
        name: &str,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: impl FnOnce(&mut batch::Batch),
    ) -> Span {
        let handle = batch::with(|b| {
            let h = b.next_handle();
            // Time 0: the host stamps it, as this goes to the host at once.
            match parent {
                None => {
                    b.op(batch::START).u32(h).u8(kind as u8).u64(0).str(name);
                }
                Some(parent) => {
                    b.op(batch::START_WITH_PARENT)
                        .u32(h)
                        .u8(kind as u8)
                        .u64(0)
                        .str(name);
                    b.bytes(&hex_id::<16>(&parent.trace_id));
                    b.bytes(&hex_id::<8>(&parent.span_id));
                    b.u8(parent.trace_flags)
                        .u8(u8::from(parent.is_remote))
                        .str(&parent.trace_state);
                }
            }
            attributes(b);
            h
        });
        batch::flush();
        Span {
            handle,
            ended: std::sync::atomic::AtomicBool::new(false),
            context: std::sync::OnceLock::new(),
        }
    }

    fn op(&self, op: u8, f: impl FnOnce(&mut batch::Batch)) {
        if !self.ended.load(std::sync::atomic::Ordering::Relaxed) {
            batch::with(|b| {
                b.op(op).u32(self.handle);
                f(b);
            });
        }
    }

    pub fn set_attribute(&self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        self.op(batch::SET_ATTRIBUTES, |b| {
            b.u32(1).str(key).value(&value);
        });
    }

    pub fn set_attributes(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        let attributes: Vec<KeyValue> = attributes.into_iter().collect();
        self.op(batch::SET_ATTRIBUTES, |b| b.attributes(attributes));
    }

    pub fn add_event(&self, name: &str, attributes: impl IntoIterator<Item = KeyValue>) {
        let attributes: Vec<KeyValue> = attributes.into_iter().collect();
        self.op(batch::ADD_EVENT, |b| {
            b.now().str(name);
            b.attributes(attributes);
        });
    }

    /// Record an error as an `exception` event and set the status to Error.
    /// The stack trace is the error's source chain and where it was recorded
    /// (wasm has no unwinder to capture a backtrace).
    #[track_caller]
    pub fn record_error(&self, error: &dyn std::error::Error) {
        let mut chain = error.to_string();
        let mut source = error.source();
        while let Some(s) = source {
            chain.push_str(&format!("\ncaused by: {s}"));
            source = s.source();
        }
        chain.push_str(&format!("\n  at {}", std::panic::Location::caller()));
        self.exception(short_type_name(error), &error.to_string(), &chain);
    }

    /// Record an exception with an explicit type, and set the status to
    /// Error. Without a stack trace, the caller's location is recorded.
    #[track_caller]
    pub fn record_exception(&self, exception_type: &str, message: &str, stacktrace: Option<&str>) {
        let location = format!("at {}", std::panic::Location::caller());
        self.exception(exception_type, message, stacktrace.unwrap_or(&location));
    }

    fn exception(&self, exception_type: &str, message: &str, stacktrace: &str) {
        self.exception_with(exception_type, message, stacktrace, true);
    }

    /// An `exception` event; the status is set to Error when `set_status`.
    pub(crate) fn exception_with(
        &self,
        exception_type: &str,
        message: &str,
        stacktrace: &str,
        set_status: bool,
    ) {
        self.op(batch::RECORD_EXCEPTION, |b| {
            b.now()
                .str(exception_type)
                .str(message)
                .u8(1)
                .str(stacktrace)
                .u8(u8::from(set_status));
        });
    }

    pub fn set_status(&self, status: Status) {
        self.op(batch::SET_STATUS, |b| match &status {
            Status::Unset => {
                b.u8(0).str("");
            }
            Status::Ok => {
                b.u8(1).str("");
            }
            Status::Error(d) => {
                b.u8(2).str(d);
            }
        });
    }

    pub fn update_name(&self, name: &str) {
        self.op(batch::UPDATE_NAME, |b| {
            b.str(name);
        });
    }

    /// The span's context (all zeros if the host does not know the span:
    /// one ended long before its context was first asked for).
    pub fn context(&self) -> SpanContext {
        if let Some(cx) = self.context.get() {
            return cx.clone();
        }
        batch::flush();
        match batch::span_batch::context_of(self.handle) {
            Some(cx) => self.context.get_or_init(|| cx).clone(),
            None => SpanContext {
                trace_id: "0".repeat(32),
                span_id: "0".repeat(16),
                trace_flags: 0,
                trace_state: String::new(),
                is_remote: false,
            },
        }
    }

    pub fn is_recording(&self) -> bool {
        if self.ended.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        batch::flush();
        batch::span_batch::is_recording(self.handle)
    }

    /// End now; dropping the span does the same. Calls on an ended span
    /// (including a second `end`) do nothing, as in OpenTelemetry's API.
    pub fn end(&self) {
        if self.ended.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        batch::with(|b| {
            b.op(batch::END).u32(self.handle).u64(0);
        });
        batch::flush();
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.end();
    }
}

/// The bytes of a hex id (zeros if it is not `N` bytes of hex; the host
/// then starts the span under the current one, as for any invalid parent).
fn hex_id<const N: usize>(hex: &str) -> [u8; N] {
    let mut out = [0u8; N];
    // Lowercase only, as W3C Trace Context and the per-call API read ids.
    if hex.len() != 2 * N || !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return out;
    }
    for (i, o) in out.iter_mut().enumerate() {
        match u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16) {
            Ok(b) => *o = b,
            Err(_) => return [0u8; N],
        }
    }
    out
}

mod batch {
    //! The span operations waiting for the host, in the `span-batch`
    //! encoding (wit/telemetry.wit).

    pub use crate::bindings::polytrace::telemetry::span_batch;
    use crate::{KeyValue, Value};
    use std::cell::RefCell;

    pub const START: u8 = 1;
    pub const START_WITH_PARENT: u8 = 2;
    pub const SET_ATTRIBUTES: u8 = 3;
    pub const ADD_EVENT: u8 = 4;
    pub const RECORD_EXCEPTION: u8 = 5;
    pub const SET_STATUS: u8 = 6;
    pub const UPDATE_NAME: u8 = 7;
    pub const END: u8 = 8;

    /// Past this many bytes waiting, they go to the host at once.
    const FLUSH_AT: usize = 64 * 1024;

    #[derive(Default)]
    pub struct Batch {
        ops: Vec<u8>,
        last_handle: u32,
    }

    thread_local! {
        static BATCH: RefCell<Batch> = RefCell::new(Batch::default());
    }

    /// Append to the waiting operations.
    pub fn with<T>(f: impl FnOnce(&mut Batch) -> T) -> T {
        let (t, full) = BATCH.with_borrow_mut(|b| {
            let t = f(b);
            (t, b.ops.len() >= FLUSH_AT)
        });
        if full {
            flush();
        }
        t
    }

    /// Hand the waiting operations to the host.
    pub fn flush() {
        let ops = BATCH.with_borrow_mut(|b| std::mem::take(&mut b.ops));
        if ops.is_empty() {
            return;
        }
        if let Err(e) = span_batch::apply(&ops) {
            eprintln!("polytrace-guest: {e}");
        }
        // Keep the allocation for the next batch.
        BATCH.with_borrow_mut(|b| {
            if b.ops.is_empty() {
                let mut ops = ops;
                ops.clear();
                b.ops = ops;
            }
        });
    }

    impl Batch {
        pub fn next_handle(&mut self) -> u32 {
            self.last_handle = self.last_handle.wrapping_add(1).max(1);
            self.last_handle
        }

        pub fn op(&mut self, op: u8) -> &mut Self {
            self.u8(op)
        }

        pub fn u8(&mut self, v: u8) -> &mut Self {
            self.ops.push(v);
            self
        }

        pub fn u32(&mut self, v: u32) -> &mut Self {
            self.ops.extend_from_slice(&v.to_le_bytes());
            self
        }

        pub fn u64(&mut self, v: u64) -> &mut Self {
            self.ops.extend_from_slice(&v.to_le_bytes());
            self
        }

        pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
            self.ops.extend_from_slice(b);
            self
        }

        /// The wall-clock time now, in ns since the Unix epoch.
        pub fn now(&mut self) -> &mut Self {
            let ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            self.u64(ns)
        }

        pub fn str(&mut self, s: &str) -> &mut Self {
            self.u32(s.len() as u32);
            self.bytes(s.as_bytes())
        }

        pub fn value(&mut self, v: &Value) -> &mut Self {
            match v {
                Value::String(s) => self.string(s),
                Value::Bool(b) => self.bool(*b),
                Value::S64(i) => self.s64(*i),
                Value::F64(f) => self.f64(*f),
                Value::StringArray(a) => self.string_array(a.iter().map(String::as_str)),
                Value::BoolArray(a) => self.bool_array(a),
                Value::S64Array(a) => self.s64_array(a),
                Value::F64Array(a) => self.f64_array(a),
            }
        }

        // One attribute value each, tagged as the host reads them.

        pub fn string(&mut self, s: &str) -> &mut Self {
            self.u8(0).str(s)
        }

        pub fn bool(&mut self, b: bool) -> &mut Self {
            self.u8(1).u8(u8::from(b))
        }

        pub fn s64(&mut self, i: i64) -> &mut Self {
            self.u8(2).u64(i as u64)
        }

        pub fn f64(&mut self, f: f64) -> &mut Self {
            self.u8(3).u64(f.to_bits())
        }

        pub fn string_array<'a>(&mut self, a: impl ExactSizeIterator<Item = &'a str>) -> &mut Self {
            self.u8(4).u32(a.len() as u32);
            a.for_each(|s| {
                self.str(s);
            });
            self
        }

        pub fn bool_array(&mut self, a: &[bool]) -> &mut Self {
            self.u8(5).u32(a.len() as u32);
            a.iter().for_each(|b| {
                self.u8(u8::from(*b));
            });
            self
        }

        pub fn s64_array(&mut self, a: &[i64]) -> &mut Self {
            self.u8(6).u32(a.len() as u32);
            a.iter().for_each(|i| {
                self.u64(*i as u64);
            });
            self
        }

        pub fn f64_array(&mut self, a: &[f64]) -> &mut Self {
            self.u8(7).u32(a.len() as u32);
            a.iter().for_each(|f| {
                self.u64(f.to_bits());
            });
            self
        }

        /// An attribute list: its count, then each key and value.
        pub fn attributes(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
            let at = self.ops.len();
            self.u32(0);
            let mut n = 0u32;
            for kv in attributes {
                self.str(&kv.key).value(&kv.value);
                n += 1;
            }
            self.ops[at..at + 4].copy_from_slice(&n.to_le_bytes());
        }
    }
}

fn short_type_name(_e: &dyn std::error::Error) -> &'static str {
    // `dyn Error` carries no type name; callers wanting one use record_exception.
    "Error"
}

/// Run `f` in a span named `name`; an `Err` is recorded on the span.
#[track_caller]
pub fn in_span<T, E: std::fmt::Display>(
    name: &str,
    attributes: impl IntoIterator<Item = KeyValue>,
    f: impl FnOnce(&Span) -> Result<T, E>,
) -> Result<T, E> {
    let span = Span::start(name, attributes);
    let result = f(&span);
    if let Err(e) = &result {
        span.record_exception(std::any::type_name::<E>(), &e.to_string(), None);
    }
    result
}

/// The current span's context, if any.
pub fn current_span_context() -> Option<SpanContext> {
    batch::flush();
    wit::current_span_context()
}

/// W3C headers for the current span, for transports that are not wasi:http.
pub fn inject() -> Vec<(String, String)> {
    batch::flush();
    wit::inject()
}

/// Parse W3C headers into a span context.
pub fn extract(headers: &[(String, String)]) -> Option<SpanContext> {
    wit::extract(headers)
}
