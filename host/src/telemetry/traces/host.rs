//! `polytrace:telemetry` host implementation: thin glue from the generated
//! WIT traits to [`RequestTrace`](super::RequestTrace).

use super::GuestSpan;
use crate::bindings::tracing::{self as wit, Host, HostSpan};
use crate::bindings::types::{self as wit_types, KeyValue as WitKeyValue, Value as WitValue};
use crate::instance::InstanceState;
use crate::telemetry::attributes::{Adjustments, to_key_value, to_value};
use crate::telemetry::propagation;
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanKind, Status};
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

impl crate::bindings::server::Host for InstanceState {
    fn set_route(&mut self, route: String) -> wasmtime::Result<()> {
        self.request()?.telemetry.trace.set_route(route);
        Ok(())
    }

    fn set_attributes(&mut self, attributes: Vec<WitKeyValue>) -> wasmtime::Result<()> {
        let attrs = attributes.into_iter().map(to_key_value).collect();
        self.request()?.telemetry.trace.set_server_attributes(attrs);
        Ok(())
    }

    fn record_exception(
        &mut self,
        exception_type: String,
        message: String,
        stacktrace: Option<String>,
    ) -> wasmtime::Result<()> {
        self.request()?.telemetry.trace.record_server_exception(
            exception_type,
            message,
            stacktrace,
        );
        Ok(())
    }
}

impl crate::bindings::span_batch::Host for InstanceState {
    fn apply(&mut self, ops: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        let trace = &mut self.request()?.telemetry.trace;
        match trace.apply_batch(&ops) {
            Ok(()) => Ok(Ok(())),
            // Leaking spans is leaking handles: trapped, as the handle table does.
            Err(e) if e.what == super::batched::TOO_MANY_OPEN => Err(wasmtime::Error::msg(e)),
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    fn context_of(&mut self, handle: u32) -> wasmtime::Result<Option<wit::SpanContext>> {
        let trace = &self.request()?.telemetry.trace;
        Ok(trace.batched_context(handle).map(to_wit_context))
    }

    fn is_recording(&mut self, handle: u32) -> wasmtime::Result<bool> {
        Ok(self.request()?.telemetry.trace.batched_is_recording(handle))
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
    pub(crate) fn end_abandoned_spans(&mut self) -> Adjustments {
        let Ok((t, table)) = self.telemetry_and_table() else {
            return Adjustments::default();
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
    super::batched::remote_parent(
        &cx.trace_id,
        &cx.span_id,
        cx.trace_flags,
        cx.is_remote,
        &cx.trace_state,
    )
}
