//! `polytrace:telemetry` host implementation: thin glue from the generated
//! WIT traits to [`RequestTrace`](super::RequestTrace).

use super::{GuestSpan, propagation};
use crate::bindings::tracing::{self as wit, Host, HostSpan};
use crate::bindings::types::{self as wit_types, KeyValue as WitKeyValue, Value as WitValue};
use crate::instance::InstanceState;
use opentelemetry::trace::{SpanContext, SpanKind, Status};
use opentelemetry::{Array, KeyValue, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime::component::Resource;

impl wit_types::Host for InstanceState {}

impl Host for InstanceState {
    fn current_span_context(&mut self) -> wasmtime::Result<Option<wit::SpanContext>> {
        let trace = &self.request()?.telemetry.trace;
        let cx = trace.current();
        Ok(cx.is_valid().then(|| to_wit_context(cx)))
    }

    fn inject(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        let trace = &self.request()?.telemetry.trace;
        Ok(trace
            // For transports the host does not see (a message queue): the
            // guest chooses the destination. Over wasi:http the host removes
            // and re-injects these headers by the component's policy.
            .inject(trace.current(), propagation::Share::All)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect())
    }

    fn extract(
        &mut self,
        headers: Vec<(String, String)>,
    ) -> wasmtime::Result<Option<wit::SpanContext>> {
        let extracted =
            propagation::extract(headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
        Ok(extracted.parent.as_ref().map(to_wit_context))
    }
}

impl HostSpan for InstanceState {
    fn new(
        &mut self,
        name: String,
        kind: wit::SpanKind,
        attributes: Vec<WitKeyValue>,
    ) -> wasmtime::Result<Resource<GuestSpan>> {
        self.start_guest_span(name, kind, attributes, None)
    }

    fn start_with_parent(
        &mut self,
        name: String,
        kind: wit::SpanKind,
        attributes: Vec<WitKeyValue>,
        parent: wit::SpanContext,
    ) -> wasmtime::Result<Resource<GuestSpan>> {
        // An unparsable parent starts a new trace, as an invalid traceparent would.
        let parent = from_wit_context(&parent);
        self.start_guest_span(name, kind, attributes, parent)
    }

    fn set_attribute(
        &mut self,
        span: Resource<GuestSpan>,
        key: String,
        value: WitValue,
    ) -> wasmtime::Result<()> {
        let (t, table) = self.telemetry_and_table()?;
        let s = table.get_mut(&span)?;
        t.trace
            .set_attribute(s, KeyValue::new(key, to_value(value)));
        Ok(())
    }

    fn set_attributes(
        &mut self,
        span: Resource<GuestSpan>,
        attributes: Vec<WitKeyValue>,
    ) -> wasmtime::Result<()> {
        let (t, table) = self.telemetry_and_table()?;
        let s = table.get_mut(&span)?;
        for kv in attributes {
            t.trace.set_attribute(s, to_key_value(kv));
        }
        Ok(())
    }

    fn add_event(
        &mut self,
        span: Resource<GuestSpan>,
        name: String,
        attributes: Vec<WitKeyValue>,
        timestamp: Option<u64>,
    ) -> wasmtime::Result<()> {
        let (t, table) = self.telemetry_and_table()?;
        let s = table.get_mut(&span)?;
        let attrs = attributes.into_iter().map(to_key_value).collect();
        t.trace.add_event(s, name, attrs, timestamp.map(to_time));
        Ok(())
    }

    fn record_exception(
        &mut self,
        span: Resource<GuestSpan>,
        exception_type: String,
        message: String,
        stacktrace: Option<String>,
        set_error_status: bool,
    ) -> wasmtime::Result<()> {
        let (t, table) = self.telemetry_and_table()?;
        let s = table.get_mut(&span)?;
        t.trace
            .record_exception(s, exception_type, message, stacktrace, set_error_status);
        Ok(())
    }

    fn set_status(
        &mut self,
        span: Resource<GuestSpan>,
        status: wit::Status,
    ) -> wasmtime::Result<()> {
        let (t, table) = self.telemetry_and_table()?;
        let s = table.get_mut(&span)?;
        let status = match status {
            wit::Status::Unset => Status::Unset,
            wit::Status::Ok => Status::Ok,
            wit::Status::Error(d) => Status::error(d),
        };
        t.trace.set_status(s, status);
        Ok(())
    }

    fn update_name(&mut self, span: Resource<GuestSpan>, name: String) -> wasmtime::Result<()> {
        let (t, table) = self.telemetry_and_table()?;
        let s = table.get_mut(&span)?;
        t.trace.update_name(s, name);
        Ok(())
    }

    fn span_context(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<wit::SpanContext> {
        Ok(to_wit_context(self.table.get(&span)?.context()))
    }

    fn is_recording(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&span)?.is_recording())
    }

    fn end(&mut self, span: Resource<GuestSpan>, timestamp: Option<u64>) -> wasmtime::Result<()> {
        let rep = span.rep();
        let (t, table) = self.telemetry_and_table()?;
        let s = table.get_mut(&span)?;
        t.trace.end(rep, s, timestamp.map(to_time));
        Ok(())
    }

    fn drop(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<()> {
        // Dropping the handle ends the span, as the WIT contract says.
        let rep = span.rep();
        let (t, table) = self.telemetry_and_table()?;
        let mut s = table.delete(span)?;
        t.trace.end(rep, &mut s, None);
        Ok(())
    }
}

impl InstanceState {
    fn start_guest_span(
        &mut self,
        name: String,
        kind: wit::SpanKind,
        attributes: Vec<WitKeyValue>,
        parent: Option<SpanContext>,
    ) -> wasmtime::Result<Resource<GuestSpan>> {
        let attrs = attributes.into_iter().map(to_key_value).collect();
        let (t, table) = self.telemetry_and_table()?;
        let span = t.trace.start(name, to_kind(kind), attrs, parent);
        let cx = span.context().clone();
        let handle = table.push(span)?;
        t.trace.push(handle.rep(), cx);
        Ok(handle)
    }

    /// End every span the guest left open, marked as ended by the host;
    /// returns what the limits changed in the request's guest telemetry.
    pub(crate) fn end_abandoned_spans(&mut self) -> super::Adjustments {
        let Ok((t, table)) = self.telemetry_and_table() else {
            return super::Adjustments::default();
        };
        for rep in t.trace.take_open() {
            let handle = Resource::<GuestSpan>::new_borrow(rep);
            if let Ok(s) = table.get_mut(&handle) {
                t.trace.end_abandoned(rep, s);
            }
        }
        t.trace.adjustments()
    }
}

fn to_kind(kind: wit::SpanKind) -> SpanKind {
    match kind {
        wit::SpanKind::Internal => SpanKind::Internal,
        wit::SpanKind::Server => SpanKind::Server,
        wit::SpanKind::Client => SpanKind::Client,
        wit::SpanKind::Producer => SpanKind::Producer,
        wit::SpanKind::Consumer => SpanKind::Consumer,
    }
}

fn to_time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// A WIT attribute as an OpenTelemetry one.
pub fn to_key_value(kv: WitKeyValue) -> KeyValue {
    KeyValue::new(kv.key, to_value(kv.value))
}

fn to_value(v: WitValue) -> Value {
    match v {
        WitValue::String(s) => Value::from(s),
        WitValue::Bool(b) => Value::Bool(b),
        WitValue::S64(i) => Value::I64(i),
        WitValue::F64(f) => Value::F64(f),
        WitValue::StringArray(v) => {
            Value::Array(Array::String(v.into_iter().map(Into::into).collect()))
        }
        WitValue::BoolArray(v) => Value::Array(Array::Bool(v)),
        WitValue::S64Array(v) => Value::Array(Array::I64(v)),
        WitValue::F64Array(v) => Value::Array(Array::F64(v)),
    }
}

fn to_wit_context(cx: &SpanContext) -> wit::SpanContext {
    wit::SpanContext {
        trace_id: cx.trace_id().to_string(),
        span_id: cx.span_id().to_string(),
        trace_flags: cx.trace_flags().to_u8(),
        trace_state: cx.trace_state().header(),
        is_remote: cx.is_remote(),
    }
}

fn from_wit_context(cx: &wit::SpanContext) -> Option<SpanContext> {
    let tp = format!("00-{}-{}-{:02x}", cx.trace_id, cx.span_id, cx.trace_flags);
    let (trace_id, span_id, flags) = propagation::parse_traceparent(&tp)?;
    let state = propagation::parse_tracestate(&cx.trace_state).unwrap_or_default();
    Some(SpanContext::new(
        trace_id,
        span_id,
        opentelemetry::trace::TraceFlags::new(flags),
        cx.is_remote,
        state,
    ))
}

// ---- metrics -------------------------------------------------------------

use super::metrics::{GuestInstrument, InstrumentError, Kind};
use crate::bindings::metrics as wit_metrics;

impl InstanceState {
    fn create_instrument(
        &mut self,
        kind: Kind,
        name: String,
        description: String,
        unit: String,
        boundaries: Option<Vec<f64>>,
    ) -> wasmtime::Result<Result<Resource<GuestInstrument>, wit_metrics::MetricError>> {
        let (t, table) = self.telemetry_and_table()?;
        let made = t
            .metrics
            .instrument(kind, name, description, unit, boundaries);
        Ok(match made {
            Ok(instrument) => Ok(table.push(instrument)?),
            Err(e) => Err(match e {
                InstrumentError::InvalidName(m) => wit_metrics::MetricError::InvalidName(m),
                InstrumentError::InvalidUnit(m) => wit_metrics::MetricError::InvalidUnit(m),
                InstrumentError::InvalidBoundaries(m) => {
                    wit_metrics::MetricError::InvalidBoundaries(m)
                }
                InstrumentError::Rejected(m) => wit_metrics::MetricError::Rejected(m),
            }),
        })
    }

    fn measure(
        &mut self,
        instrument: &Resource<GuestInstrument>,
        value: f64,
        attributes: Vec<WitKeyValue>,
    ) -> wasmtime::Result<()> {
        let (t, table) = self.telemetry_and_table()?;
        let attrs = t
            .trace
            .cap_all(attributes.into_iter().map(to_key_value).collect());
        table.get(instrument)?.record(value, &attrs);
        Ok(())
    }
}

impl wit_metrics::Host for InstanceState {
    fn create_counter(
        &mut self,
        name: String,
        description: String,
        unit: String,
    ) -> wasmtime::Result<Result<Resource<GuestInstrument>, wit_metrics::MetricError>> {
        self.create_instrument(Kind::Counter, name, description, unit, None)
    }

    fn create_up_down_counter(
        &mut self,
        name: String,
        description: String,
        unit: String,
    ) -> wasmtime::Result<Result<Resource<GuestInstrument>, wit_metrics::MetricError>> {
        self.create_instrument(Kind::UpDownCounter, name, description, unit, None)
    }

    fn create_histogram(
        &mut self,
        name: String,
        description: String,
        unit: String,
        boundaries: Option<Vec<f64>>,
    ) -> wasmtime::Result<Result<Resource<GuestInstrument>, wit_metrics::MetricError>> {
        self.create_instrument(Kind::Histogram, name, description, unit, boundaries)
    }

    fn create_gauge(
        &mut self,
        name: String,
        description: String,
        unit: String,
    ) -> wasmtime::Result<Result<Resource<GuestInstrument>, wit_metrics::MetricError>> {
        self.create_instrument(Kind::Gauge, name, description, unit, None)
    }
}

/// The four instrument resources share one host type and one behaviour.
macro_rules! instrument_resource {
    ($trait:ident, $method:ident) => {
        impl wit_metrics::$trait for InstanceState {
            fn $method(
                &mut self,
                instrument: Resource<GuestInstrument>,
                value: f64,
                attributes: Vec<WitKeyValue>,
            ) -> wasmtime::Result<()> {
                self.measure(&instrument, value, attributes)
            }

            fn drop(&mut self, instrument: Resource<GuestInstrument>) -> wasmtime::Result<()> {
                self.table.delete(instrument)?;
                Ok(())
            }
        }
    };
}

instrument_resource!(HostCounter, add);
instrument_resource!(HostUpDownCounter, add);
instrument_resource!(HostHistogram, record);
instrument_resource!(HostGauge, record);

// ---- logs ----------------------------------------------------------------

impl crate::bindings::logs::Host for InstanceState {
    fn emit(
        &mut self,
        severity: u8,
        body: String,
        attributes: Vec<WitKeyValue>,
    ) -> wasmtime::Result<()> {
        let t = &mut self.request()?.telemetry;
        if !t.logs.enabled(severity) {
            return Ok(());
        }
        let attrs = t
            .trace
            .cap_all(attributes.into_iter().map(to_key_value).collect());
        let body = super::cap_string(body, super::logs::MAX_LINE.max(t.trace.value_cap()));
        let span = t.trace.current().clone();
        t.logs.emit(t.component, severity, body, attrs, Some(&span));
        Ok(())
    }

    fn enabled(&mut self, severity: u8) -> wasmtime::Result<bool> {
        Ok(self.request()?.telemetry.logs.enabled(severity))
    }
}
