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
pub struct Span {
    inner: wit::Span,
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
        let attrs: Vec<KeyValue> = attributes.into_iter().collect();
        Span {
            inner: wit::Span::new(name, kind, &attrs),
        }
    }

    /// Start a span under an explicit parent (for example one [`extract`]ed
    /// from a message).
    pub fn start_with_parent(
        name: &str,
        kind: SpanKind,
        attributes: impl IntoIterator<Item = KeyValue>,
        parent: &SpanContext,
    ) -> Span {
        let attrs: Vec<KeyValue> = attributes.into_iter().collect();
        Span {
            inner: wit::Span::start_with_parent(name, kind, &attrs, parent),
        }
    }

    pub fn set_attribute(&self, key: &str, value: impl Into<Value>) {
        self.inner.set_attribute(key, &value.into());
    }

    pub fn set_attributes(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        let attrs: Vec<KeyValue> = attributes.into_iter().collect();
        self.inner.set_attributes(&attrs);
    }

    pub fn add_event(&self, name: &str, attributes: impl IntoIterator<Item = KeyValue>) {
        let attrs: Vec<KeyValue> = attributes.into_iter().collect();
        self.inner.add_event(name, &attrs, None);
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
        self.inner.record_exception(
            short_type_name(error),
            &error.to_string(),
            Some(&chain),
            true,
        );
    }

    /// Record an exception with an explicit type, and set the status to
    /// Error. Without a stack trace, the caller's location is recorded.
    #[track_caller]
    pub fn record_exception(&self, exception_type: &str, message: &str, stacktrace: Option<&str>) {
        let location = format!("at {}", std::panic::Location::caller());
        self.inner.record_exception(
            exception_type,
            message,
            Some(stacktrace.unwrap_or(&location)),
            true,
        );
    }

    pub fn set_status(&self, status: Status) {
        self.inner.set_status(&status);
    }

    pub fn update_name(&self, name: &str) {
        self.inner.update_name(name);
    }

    pub fn context(&self) -> SpanContext {
        self.inner.span_context()
    }

    pub fn is_recording(&self) -> bool {
        self.inner.is_recording()
    }

    /// End now; dropping the span does the same. Calls on an ended span
    /// (including a second `end`) do nothing, as in OpenTelemetry's API.
    pub fn end(&self) {
        self.inner.end(None);
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
    wit::current_span_context()
}

/// W3C headers for the current span, for transports that are not wasi:http.
pub fn inject() -> Vec<(String, String)> {
    wit::inject()
}

/// Parse W3C headers into a span context.
pub fn extract(headers: &[(String, String)]) -> Option<SpanContext> {
    wit::extract(headers)
}
