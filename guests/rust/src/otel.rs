//! The `opentelemetry` crate's API, backed by the host (feature
//! `opentelemetry`).
//!
//! Code written against the API runs unchanged once [`init`] has made the
//! host its SDK (there is no exporter, processor or provider to set up):
//!
//! ```ignore
//! use opentelemetry::{global, KeyValue, trace::{Span as _, Tracer as _}};
//!
//! polytrace_guest::otel::init();
//! let tracer = global::tracer("billing");
//! tracer.in_span("charge_card", |cx| {
//!     cx.span().set_attribute(KeyValue::new("charge.amount", 42.5));
//! });
//! global::meter("billing").u64_counter("charges.created").build().add(1, &[]);
//! ```
//!
//! Spans are the SDK's [`Span`](crate::Span)s: they nest, export and obey
//! the limits exactly as `Span::start`'s do; the host makes the SERVER and
//! CLIENT spans. What differs from `opentelemetry_sdk`, as the API's no-op
//! implementation does: links, explicit start and end times and span
//! builder events are not recorded (the host stamps spans); a span is the
//! host's current span from its start to its end, whatever context it was
//! started in (children still nest by the API's context); the
//! instrumentation scope is the component's; observable (callback)
//! instruments are no-ops. An API span asks the host for its context when
//! it is first needed — when it goes into a `Context` (`in_span`,
//! `Context::current_with_span`), which copies it: one call more than
//! `Span::start` for a span that is a parent.

use crate::{KeyValue, Status, Value};
use opentelemetry::trace::{
    self as ot, SpanBuilder, SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, Context, InstrumentationScope, global};
use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// Make the host the SDK of the `opentelemetry` API: the global tracer and
/// meter providers. Call it before the first span, for example at the top
/// of the handler: after the first call it costs an atomic load.
pub fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        global::set_tracer_provider(TracerProvider);
        global::set_meter_provider(MeterProvider);
    });
}

/// A span's context, asked of the host once, when first needed.
type LazyContext = Arc<OnceLock<SpanContext>>;

/// The spans this module started and has not ended, oldest first: the host
/// makes the innermost current, so a span whose parent is that one needs no
/// explicit parent. A span in an API `Context` has its context known (the
/// crate's `Context` copies it), so one whose context was never asked for
/// is no parent.
static OPEN: Mutex<Vec<LazyContext>> = Mutex::new(Vec::new());

fn open() -> std::sync::MutexGuard<'static, Vec<LazyContext>> {
    OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The global tracer provider: every tracer is the component's.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracerProvider;

impl ot::TracerProvider for TracerProvider {
    type Tracer = Tracer;

    fn tracer_with_scope(&self, _scope: InstrumentationScope) -> Tracer {
        Tracer
    }
}

/// Starts host spans.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tracer;

impl ot::Tracer for Tracer {
    type Span = Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Span {
        let kind = match builder.span_kind {
            Some(ot::SpanKind::Server) => crate::SpanKind::Server,
            Some(ot::SpanKind::Client) => crate::SpanKind::Client,
            Some(ot::SpanKind::Producer) => crate::SpanKind::Producer,
            Some(ot::SpanKind::Consumer) => crate::SpanKind::Consumer,
            _ => crate::SpanKind::Internal,
        };
        let attributes = builder.attributes.unwrap_or_default();
        let parent = parent_cx
            .has_active_span()
            .then(|| parent_cx.span().span_context().clone())
            .filter(SpanContext::is_valid);
        let host_current = |p: &SpanContext| {
            open()
                .last()
                .and_then(|c| c.get())
                .is_some_and(|c| c.span_id() == p.span_id())
        };
        // No span in the context (the handler's own code), or the host's
        // current one: the host's current span is the parent.
        let parent = parent.filter(|p| !host_current(p)).map(|p| to_host(&p));
        let inner = crate::Span::start_encoded(&builder.name, kind, parent.as_ref(), |b| {
            encode_attributes(b, &attributes)
        });
        let context = LazyContext::default();
        open().push(context.clone());
        Span {
            inner,
            context,
            ended: false,
        }
    }
}

/// A span made through the API: the host's span behind `opentelemetry`'s
/// `Span` trait. Ends when ended or dropped.
pub struct Span {
    inner: crate::Span,
    context: LazyContext,
    ended: bool,
}

impl ot::Span for Span {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        _timestamp: SystemTime,
        attributes: Vec<opentelemetry::KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        self.inner
            .add_event(&name.into(), attributes.into_iter().map(key_value));
    }

    fn span_context(&self) -> &SpanContext {
        // The host knows an ended span's context for a while after its end.
        self.context
            .get_or_init(|| from_host(&self.inner.context()))
    }

    fn is_recording(&self) -> bool {
        !self.ended && self.inner.is_recording()
    }

    fn set_attribute(&mut self, attribute: opentelemetry::KeyValue) {
        self.inner.op(crate::batch::SET_ATTRIBUTES, |b| {
            b.u32(1).str(attribute.key.as_str());
            encode_value(b, &attribute.value);
        });
    }

    fn set_status(&mut self, status: ot::Status) {
        match status {
            ot::Status::Error { description } => self
                .inner
                .set_status(Status::Error(description.into_owned())),
            ot::Status::Ok => self.inner.set_status(Status::Ok),
            ot::Status::Unset => {}
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        self.inner.update_name(&new_name.into());
    }

    fn add_link(&mut self, _span_context: SpanContext, _attributes: Vec<opentelemetry::KeyValue>) {}

    /// An `exception` event with the error's source chain (the API's own
    /// default records the message only); the status is left to
    /// `set_status`, as the API does.
    fn record_error(&mut self, err: &dyn std::error::Error) {
        let mut chain = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            chain.push_str(&format!("\ncaused by: {s}"));
            source = s.source();
        }
        self.inner
            .exception_with("Error", &err.to_string(), &chain, false);
    }

    fn end_with_timestamp(&mut self, _timestamp: SystemTime) {
        self.close();
    }
}

impl Span {
    fn close(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let mut open = open();
        if let Some(i) = open.iter().rposition(|c| Arc::ptr_eq(c, &self.context)) {
            open.remove(i);
        }
        drop(open);
        self.inner.end();
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.close();
    }
}

fn to_host(cx: &SpanContext) -> crate::SpanContext {
    crate::SpanContext {
        trace_id: cx.trace_id().to_string(),
        span_id: cx.span_id().to_string(),
        trace_flags: cx.trace_flags().to_u8(),
        trace_state: cx.trace_state().header(),
        is_remote: cx.is_remote(),
    }
}

fn from_host(cx: &crate::SpanContext) -> SpanContext {
    SpanContext::new(
        TraceId::from_hex(&cx.trace_id).unwrap_or(TraceId::INVALID),
        SpanId::from_hex(&cx.span_id).unwrap_or(SpanId::INVALID),
        TraceFlags::new(cx.trace_flags),
        cx.is_remote,
        cx.trace_state.parse::<TraceState>().unwrap_or_default(),
    )
}

/// Writes API key-values into the batch as an attribute list (count, then
/// each key and value), borrowing their strings: no copy on the way.
fn encode_attributes(b: &mut crate::batch::Batch, attributes: &[opentelemetry::KeyValue]) {
    b.u32(attributes.len() as u32);
    for kv in attributes {
        b.str(kv.key.as_str());
        encode_value(b, &kv.value);
    }
}

/// Writes one API value as the host's typed value (what [`key_value`]
/// converts it to).
fn encode_value(b: &mut crate::batch::Batch, value: &opentelemetry::Value) {
    match value {
        opentelemetry::Value::Bool(x) => b.bool(*x),
        opentelemetry::Value::I64(i) => b.s64(*i),
        opentelemetry::Value::F64(f) => b.f64(*f),
        opentelemetry::Value::String(s) => b.string(s.as_str()),
        opentelemetry::Value::Array(Array::Bool(v)) => b.bool_array(v),
        opentelemetry::Value::Array(Array::I64(v)) => b.s64_array(v),
        opentelemetry::Value::Array(Array::F64(v)) => b.f64_array(v),
        opentelemetry::Value::Array(Array::String(v)) => {
            b.string_array(v.iter().map(|s| s.as_str()))
        }
        other => b.string(&other.to_string()),
    };
}

/// The host's typed key-value of an API one.
fn key_value(kv: opentelemetry::KeyValue) -> KeyValue {
    let value = match kv.value {
        opentelemetry::Value::Bool(b) => Value::Bool(b),
        opentelemetry::Value::I64(i) => Value::S64(i),
        opentelemetry::Value::F64(f) => Value::F64(f),
        opentelemetry::Value::String(s) => Value::String(s.to_string()),
        opentelemetry::Value::Array(Array::Bool(v)) => Value::BoolArray(v),
        opentelemetry::Value::Array(Array::I64(v)) => Value::S64Array(v),
        opentelemetry::Value::Array(Array::F64(v)) => Value::F64Array(v),
        opentelemetry::Value::Array(Array::String(v)) => {
            Value::StringArray(v.into_iter().map(|s| s.to_string()).collect())
        }
        // Values newer than the host's attribute types: as text.
        other => Value::String(other.to_string()),
    };
    KeyValue {
        key: kv.key.to_string(),
        value,
    }
}

fn key_values(attributes: &[opentelemetry::KeyValue]) -> Vec<KeyValue> {
    attributes.iter().cloned().map(key_value).collect()
}

/// The global meter provider: every meter is the component's.
#[derive(Clone, Copy, Debug, Default)]
pub struct MeterProvider;

impl opentelemetry::metrics::MeterProvider for MeterProvider {
    fn meter_with_scope(&self, _scope: InstrumentationScope) -> opentelemetry::metrics::Meter {
        opentelemetry::metrics::Meter::new(Arc::new(Instruments))
    }
}

/// Synchronous instruments go to the host; observable ones are the API's
/// no-ops. An instrument the host refuses is logged (a WARN record) and
/// records nothing, as the API never fails.
struct Instruments;

/// A host instrument (`None` when the host refused it).
struct HostInstrument<I>(Option<I>);

fn made<I>(
    kind: &str,
    name: &str,
    made: Result<I, crate::metrics::MetricError>,
) -> HostInstrument<I> {
    match made {
        Ok(i) => HostInstrument(Some(i)),
        Err(e) => {
            crate::logs::warn(&format!("{kind} {name:?} not created: {e}"), []);
            HostInstrument(None)
        }
    }
}

macro_rules! sync_instrument {
    ($host:ty, $method:ident, $($t:ty),+) => {$(
        impl opentelemetry::metrics::SyncInstrument<$t> for HostInstrument<$host> {
            fn measure(&self, measurement: $t, attributes: &[opentelemetry::KeyValue]) {
                if let Some(i) = &self.0 {
                    i.$method(measurement as f64, key_values(attributes));
                }
            }
        }
    )+};
}

sync_instrument!(crate::metrics::Counter, add, u64, f64);
sync_instrument!(crate::metrics::UpDownCounter, add, i64, f64);
sync_instrument!(crate::metrics::Histogram, record, u64, f64);
sync_instrument!(crate::metrics::Gauge, record, u64, i64, f64);

fn text<'a>(s: &'a Option<Cow<'static, str>>) -> &'a str {
    s.as_deref().unwrap_or("")
}

use opentelemetry::metrics::{
    Counter, Gauge, Histogram, HistogramBuilder, InstrumentBuilder, InstrumentProvider,
    UpDownCounter,
};

impl Instruments {
    fn counter(
        &self,
        b: &InstrumentBuilder<'_, impl Sized>,
    ) -> Arc<HostInstrument<crate::metrics::Counter>> {
        Arc::new(made(
            "counter",
            &b.name,
            crate::metrics::counter(&b.name, text(&b.description), text(&b.unit)),
        ))
    }
    fn up_down(
        &self,
        b: &InstrumentBuilder<'_, impl Sized>,
    ) -> Arc<HostInstrument<crate::metrics::UpDownCounter>> {
        Arc::new(made(
            "up-down counter",
            &b.name,
            crate::metrics::up_down_counter(&b.name, text(&b.description), text(&b.unit)),
        ))
    }
    fn gauge(
        &self,
        b: &InstrumentBuilder<'_, impl Sized>,
    ) -> Arc<HostInstrument<crate::metrics::Gauge>> {
        Arc::new(made(
            "gauge",
            &b.name,
            crate::metrics::gauge(&b.name, text(&b.description), text(&b.unit)),
        ))
    }
    fn histogram(
        &self,
        b: &HistogramBuilder<'_, impl Sized>,
    ) -> Arc<HostInstrument<crate::metrics::Histogram>> {
        let made_one = match &b.boundaries {
            Some(bounds) => crate::metrics::histogram_with_boundaries(
                &b.name,
                text(&b.description),
                text(&b.unit),
                bounds,
            ),
            None => crate::metrics::histogram(&b.name, text(&b.description), text(&b.unit)),
        };
        Arc::new(made("histogram", &b.name, made_one))
    }
}

impl InstrumentProvider for Instruments {
    fn u64_counter(&self, b: InstrumentBuilder<'_, Counter<u64>>) -> Counter<u64> {
        Counter::new(self.counter(&b))
    }
    fn f64_counter(&self, b: InstrumentBuilder<'_, Counter<f64>>) -> Counter<f64> {
        Counter::new(self.counter(&b))
    }
    fn i64_up_down_counter(
        &self,
        b: InstrumentBuilder<'_, UpDownCounter<i64>>,
    ) -> UpDownCounter<i64> {
        UpDownCounter::new(self.up_down(&b))
    }
    fn f64_up_down_counter(
        &self,
        b: InstrumentBuilder<'_, UpDownCounter<f64>>,
    ) -> UpDownCounter<f64> {
        UpDownCounter::new(self.up_down(&b))
    }
    fn u64_gauge(&self, b: InstrumentBuilder<'_, Gauge<u64>>) -> Gauge<u64> {
        Gauge::new(self.gauge(&b))
    }
    fn i64_gauge(&self, b: InstrumentBuilder<'_, Gauge<i64>>) -> Gauge<i64> {
        Gauge::new(self.gauge(&b))
    }
    fn f64_gauge(&self, b: InstrumentBuilder<'_, Gauge<f64>>) -> Gauge<f64> {
        Gauge::new(self.gauge(&b))
    }
    fn f64_histogram(&self, b: HistogramBuilder<'_, Histogram<f64>>) -> Histogram<f64> {
        Histogram::new(self.histogram(&b))
    }
    fn u64_histogram(&self, b: HistogramBuilder<'_, Histogram<u64>>) -> Histogram<u64> {
        Histogram::new(self.histogram(&b))
    }
}
