//! Traces: one tracer provider per component (its own resource), the
//! per-request span state guests build on, the SERVER span written
//! straight to its wire form ([`wire`]), and the span export pipeline
//! ([`export`]) with its OTLP/HTTP encoder ([`otlp_http`]) and console
//! printer ([`console`]). The WIT glue is in [`host`].

pub mod batched;
pub mod console;
pub mod encoded;
pub mod export;
pub mod host;
pub mod otlp_http;
pub mod server;
pub mod wire;

use super::attributes::{Adjustments, MAX_RECORD_ATTRIBUTES, cap_string, cap_value};
use super::propagation;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use batched::SpanSink;
pub use export::SpanExport;

/// The instrumentation scope name of every span the host records.
pub const TRACER_NAME: &str = "polytrace";

/// Marks a span the host ended because the guest's request finished first.
pub const AUTO_ENDED: &str = "polytrace.span.auto_ended";

/// Spans one request may record in one component; past this, new guest
/// spans are not recorded (they still nest and propagate) and are counted
/// on the SERVER span as
/// [`DROPPED_SPANS`](super::attributes::DROPPED_SPANS).
pub const MAX_SPANS_PER_REQUEST: u64 = 1000;

/// The name given to a guest span started with an empty one.
pub const UNNAMED: &str = "unnamed";

/// The tracer providers of an application, one per component, all ending
/// in one [`SpanExport`].
pub struct Traces {
    providers: Vec<SdkTracerProvider>,
    tracers: Vec<SdkTracer>,
    sinks: Vec<Arc<SpanSink>>,
    export: SpanExport,
}

impl Traces {
    /// A provider for each of `resources` (component order), sampling with
    /// `sampler`, exporting through `export`.
    pub fn new(
        resources: Vec<Resource>,
        sampler: &opentelemetry_sdk::trace::Sampler,
        export: SpanExport,
    ) -> Traces {
        let mut providers = Vec::new();
        let mut tracers = Vec::new();
        let mut sinks = Vec::new();
        let limits = batched::span_limits();
        let scope = InstrumentationScope::builder(TRACER_NAME).build();
        for (i, resource) in resources.into_iter().enumerate() {
            let provider = SdkTracerProvider::builder()
                .with_resource(resource)
                .with_sampler(sampler.clone())
                .with_span_limits(limits)
                .with_span_processor(export.processor(i))
                .build();
            tracers.push(provider.tracer_with_scope(scope.clone()));
            providers.push(provider);
            sinks.push(Arc::new(SpanSink::new(
                &export,
                i,
                &scope,
                sampler.clone(),
                limits,
            )));
        }
        Traces {
            providers,
            tracers,
            sinks,
            export,
        }
    }

    /// The tracer of component `index`.
    pub fn tracer(&self, index: usize) -> &SdkTracer {
        &self.tracers[index]
    }

    /// Where component `index`'s batched guest spans go.
    pub fn sink(&self, index: usize) -> &Arc<SpanSink> {
        &self.sinks[index]
    }

    /// The span pipeline every provider ends in (its stats, flush).
    pub fn export(&self) -> &SpanExport {
        &self.export
    }

    pub fn component_count(&self) -> usize {
        self.providers.len()
    }
}

/// A guest-created span, as held in the instance's resource table.
pub struct GuestSpan {
    /// `None` past [`MAX_SPANS_PER_REQUEST`]: the handle works, records nothing.
    span: Option<Span>,
    cx: SpanContext,
    ended: bool,
}

impl GuestSpan {
    pub fn context(&self) -> &SpanContext {
        &self.cx
    }

    pub fn is_recording(&self) -> bool {
        !self.ended && self.span.as_ref().is_some_and(|s| s.is_recording())
    }

    /// The SDK span, while it can still change.
    fn live(&mut self) -> Option<&mut Span> {
        if self.ended { None } else { self.span.as_mut() }
    }
}

/// An open guest span: a `tracing.span` resource (its table rep) or a
/// batched span (its guest-chosen handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Resource(u32),
    Batched(u32),
    /// A span that ended below the innermost open one: left in place (so
    /// ending a span costs O(1), whatever its depth) until the stack is
    /// compacted.
    Ended,
}

/// The tracing state of one request inside one component instance: which
/// span is current, what to propagate, and the limits on guest data.
pub struct RequestTrace {
    tracer: SdkTracer,
    server: SpanContext,
    /// Open guest spans, innermost last.
    /// Entries below the top may be [`Slot::Ended`]; the top never is.
    open: Vec<(Slot, SpanContext)>,
    /// How many entries of `open` are [`Slot::Ended`].
    open_ended: usize,
    /// Where batched spans go, and the open ones ([`batched`]).
    sink: Arc<SpanSink>,
    /// Keyed by the guest's handles with foldhash (seeded per process):
    /// SipHash was ~2% of a guest span's cost.
    batched: std::collections::HashMap<u32, batched::Batched, foldhash::fast::RandomState>,
    /// Recently ended batched spans, for `span-context` queries.
    ended: std::collections::VecDeque<(u32, SpanContext)>,
    baggage: String,
    /// The caller's `tracestate` list as received ([`propagation::Extracted::tracestate`]).
    tracestate: String,
    /// Level 2 random flag: true when the trace id was generated randomly here
    /// or the caller said so.
    random: bool,
    value_cap: usize,
    started: u64,
    adjustments: Adjustments,
    /// What the guest said about its SERVER span ([`server`]).
    server_notes: server::ServerNotes,
    /// The current span, for the guest's stdout and stderr.
    shared: std::sync::Arc<CurrentSpan>,
}

impl RequestTrace {
    /// The trace state of a request whose SERVER span is `server`, with
    /// batched guest spans going to `sink`.
    pub fn new(
        tracer: SdkTracer,
        sink: Arc<SpanSink>,
        server: SpanContext,
        baggage: String,
        tracestate: String,
        random: bool,
        value_cap: usize,
    ) -> Self {
        RequestTrace {
            shared: CurrentSpan::new(&server),
            tracer,
            server: with_random(server, random),
            open: Vec::new(),
            open_ended: 0,
            sink,
            batched: Default::default(),
            ended: Default::default(),
            baggage,
            tracestate,
            random,
            value_cap,
            started: 0,
            adjustments: Adjustments::default(),
            server_notes: Default::default(),
        }
    }

    /// The innermost open guest span, or the request's SERVER span.
    pub fn current(&self) -> &SpanContext {
        self.open.last().map_or(&self.server, |(_, cx)| cx)
    }

    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Keep `cell` (an instance's current-span cell, what its stdout and
    /// stderr read) at this request's current span from now on.
    pub fn share_current(&mut self, cell: std::sync::Arc<CurrentSpan>) {
        cell.set(self.current());
        self.shared = cell;
    }

    /// Attributes of a metric measurement or log record: at most
    /// [`MAX_RECORD_ATTRIBUTES`], each with the value-length and array caps;
    /// what is cut or left out is counted.
    pub fn cap_all(&mut self, mut attrs: Vec<KeyValue>) -> Vec<KeyValue> {
        if attrs.len() > MAX_RECORD_ATTRIBUTES {
            self.adjustments.truncated_values += (attrs.len() - MAX_RECORD_ATTRIBUTES) as u64;
            attrs.truncate(MAX_RECORD_ATTRIBUTES);
        }
        attrs.into_iter().map(|kv| self.cap(kv)).collect()
    }

    /// The cap on string values, in bytes.
    pub fn value_cap(&self) -> usize {
        self.value_cap
    }

    /// What the limits changed so far in this request.
    pub fn adjustments(&self) -> Adjustments {
        self.adjustments
    }

    /// The headers to send with an outbound request made under `cx`, as
    /// far as `share` allows. Within the request's own trace the caller's
    /// `tracestate` is forwarded as it came.
    pub fn inject(
        &self,
        cx: &SpanContext,
        share: propagation::Share,
    ) -> Vec<(&'static str, String)> {
        let tracestate = if cx.trace_id() == self.server.trace_id() {
            self.tracestate.as_str()
        } else {
            ""
        };
        propagation::inject(
            &with_random(cx.clone(), self.random),
            tracestate,
            &self.baggage,
            share,
        )
    }

    /// Start a guest span under the current span (or under `parent`) and make
    /// it current once `register` gives it its table slot.
    pub fn start(
        &mut self,
        name: String,
        kind: SpanKind,
        attrs: Vec<KeyValue>,
        parent: Option<SpanContext>,
    ) -> GuestSpan {
        let parent = parent.unwrap_or_else(|| self.current().clone());
        if self.started >= MAX_SPANS_PER_REQUEST {
            // Not recorded: its children and outbound calls attach to `parent`.
            self.adjustments.dropped_spans += 1;
            return GuestSpan {
                span: None,
                cx: parent,
                ended: false,
            };
        }
        self.started += 1;
        let attrs = attrs.into_iter().map(|kv| self.cap(kv)).collect();
        let name = if name.is_empty() {
            self.adjustments.unnamed_spans += 1;
            UNNAMED.to_string()
        } else {
            self.cap_str(name)
        };
        let span = start_span(&self.tracer, name, kind, attrs, Some(&parent));
        let cx = with_random(span.span_context().clone(), self.random);
        GuestSpan {
            span: Some(span),
            cx,
            ended: false,
        }
    }

    /// Record that the span in table slot `rep` is now the current one.
    pub fn push(&mut self, rep: u32, cx: SpanContext) {
        self.shared.set(&cx);
        self.open.push((Slot::Resource(rep), cx));
    }

    /// Forget `slot` (its span ended); its parent becomes current again.
    fn pop(&mut self, slot: Slot) {
        if let Some(i) = self.open.iter().rposition(|(s, _)| *s == slot) {
            self.close_at(i);
        }
    }

    /// Mark entry `i` of the open stack ended: the innermost span still
    /// open is current. Ended entries are dropped from the top at once and
    /// compacted away when they are more than half of the stack.
    fn close_at(&mut self, i: usize) {
        if let Some((slot, _)) = self.open.get_mut(i)
            && *slot != Slot::Ended
        {
            *slot = Slot::Ended;
            self.open_ended += 1;
        }
        while let Some((Slot::Ended, _)) = self.open.last() {
            self.open.pop();
            self.open_ended -= 1;
        }
        if self.open_ended > 64 && self.open_ended * 2 > self.open.len() {
            self.open.retain(|(s, _)| *s != Slot::Ended);
            self.open_ended = 0;
            for (i, (s, _)) in self.open.iter().enumerate() {
                if let Slot::Batched(h) = s
                    && let Some(b) = self.batched.get_mut(h)
                {
                    b.at = i;
                }
            }
        }
        self.shared.set(self.current());
    }

    /// End the batched spans still open, marked as ended by the host, and
    /// return the table slots of the `tracing.span` resources still open,
    /// innermost first.
    pub fn take_open(&mut self) -> Vec<u32> {
        let mut reps = Vec::new();
        while let Some((slot, _)) = self.open.pop() {
            match slot {
                Slot::Batched(handle) => self.end_batched_abandoned(handle),
                Slot::Resource(rep) => reps.push(rep),
                Slot::Ended => {}
            }
        }
        self.open_ended = 0;
        self.shared.set(&self.server);
        reps
    }

    /// Apply the value-length and array caps to one attribute, counting a cut.
    pub fn cap(&mut self, kv: KeyValue) -> KeyValue {
        let (kv, cut) = cap_value(kv, self.value_cap);
        self.adjustments.truncated_values += u64::from(cut);
        kv
    }

    /// Apply the value-length cap to a name or message, counting a cut.
    fn cap_str(&mut self, s: String) -> String {
        if s.len() > self.value_cap {
            self.adjustments.truncated_values += 1;
        }
        cap_string(s, self.value_cap)
    }

    pub fn set_attribute(&mut self, s: &mut GuestSpan, kv: KeyValue) {
        if s.live().is_some() {
            let kv = self.cap(kv);
            if let Some(span) = s.live() {
                span.set_attribute(kv);
            }
        }
    }

    pub fn add_event(
        &mut self,
        s: &mut GuestSpan,
        name: String,
        attrs: Vec<KeyValue>,
        at: Option<SystemTime>,
    ) {
        if s.live().is_none() {
            return;
        }
        let attrs: Vec<KeyValue> = attrs.into_iter().map(|kv| self.cap(kv)).collect();
        let name = self.cap_str(name);
        if let Some(span) = s.live() {
            span.add_event_with_timestamp(name, at.unwrap_or_else(SystemTime::now), attrs);
        }
    }

    pub fn record_exception(
        &mut self,
        s: &mut GuestSpan,
        ty: String,
        message: String,
        stacktrace: Option<String>,
        set_status: bool,
    ) {
        if s.live().is_none() {
            return;
        }
        let status = set_status.then(|| Status::error(self.cap_str(message.clone())));
        let attrs: Vec<KeyValue> = exception_attributes(ty, message, stacktrace)
            .into_iter()
            .map(|kv| self.cap(kv))
            .collect();
        if let Some(span) = s.live() {
            span.add_event("exception", attrs);
            if let Some(status) = status {
                span.set_status(status);
            }
        }
    }

    pub fn set_status(&self, s: &mut GuestSpan, status: Status) {
        if let Some(span) = s.live() {
            span.set_status(status);
        }
    }

    pub fn update_name(&mut self, s: &mut GuestSpan, name: String) {
        if s.live().is_some() && !name.is_empty() {
            let name = self.cap_str(name);
            if let Some(span) = s.live() {
                span.update_name(name);
            }
        }
    }

    /// End a guest span (idempotent) and make its parent current.
    pub fn end(&mut self, rep: u32, s: &mut GuestSpan, at: Option<SystemTime>) {
        if let Some(span) = s.live() {
            span.end_with_timestamp(at.unwrap_or_else(SystemTime::now));
        }
        s.ended = true;
        self.pop(Slot::Resource(rep));
    }

    /// End a span the guest left open when its request finished, marked so.
    pub fn end_abandoned(&mut self, rep: u32, s: &mut GuestSpan) {
        if let Some(span) = s.live() {
            span.set_attribute(KeyValue::new(AUTO_ENDED, true));
        }
        self.end(rep, s, None);
    }
}

/// The span a request's guest is in right now, shared with the guest's
/// stdout and stderr streams (which live outside the request's state), so
/// their log records carry it.
#[derive(Debug)]
pub struct CurrentSpan(Mutex<(TraceId, SpanId, TraceFlags)>);

impl CurrentSpan {
    pub fn new(cx: &SpanContext) -> Arc<CurrentSpan> {
        Arc::new(CurrentSpan(Mutex::new((
            cx.trace_id(),
            cx.span_id(),
            cx.trace_flags(),
        ))))
    }

    pub fn set(&self, cx: &SpanContext) {
        if let Ok(mut c) = self.0.lock() {
            *c = (cx.trace_id(), cx.span_id(), cx.trace_flags());
        }
    }

    pub fn get(&self) -> SpanContext {
        let (t, s, f) = self.0.lock().map(|c| *c).unwrap_or((
            TraceId::INVALID,
            SpanId::INVALID,
            TraceFlags::default(),
        ));
        SpanContext::new(t, s, f, false, Default::default())
    }
}

/// A context with the Level 2 random flag set when it applies.
fn with_random(cx: SpanContext, random: bool) -> SpanContext {
    let flags = cx.trace_flags().to_u8();
    if !random || !cx.is_valid() || flags & propagation::FLAG_RANDOM != 0 {
        return cx;
    }
    SpanContext::new(
        cx.trace_id(),
        cx.span_id(),
        TraceFlags::new(flags | propagation::FLAG_RANDOM),
        cx.is_remote(),
        cx.trace_state().clone(),
    )
}

/// The attributes of an `exception` event, as the semantic conventions name them.
pub fn exception_attributes(
    ty: String,
    message: String,
    stacktrace: Option<String>,
) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("exception.type", ty),
        KeyValue::new("exception.message", message),
    ];
    attrs.extend(stacktrace.map(|st| KeyValue::new("exception.stacktrace", st)));
    attrs
}

/// Record an exception on a host-made span and set its status to Error.
pub fn record_exception(
    span: &mut impl opentelemetry::trace::Span,
    ty: &str,
    message: &str,
    stacktrace: Option<String>,
) {
    span.add_event(
        "exception",
        exception_attributes(ty.to_string(), message.to_string(), stacktrace),
    );
    span.set_status(Status::error(message.to_string()));
}

/// Start a span with the SDK under `parent` (a remote or local context).
pub fn start_span(
    tracer: &SdkTracer,
    name: String,
    kind: SpanKind,
    attrs: Vec<KeyValue>,
    parent: Option<&SpanContext>,
) -> Span {
    let cx = match parent {
        Some(p) => Context::new().with_remote_span_context(p.clone()),
        None => Context::new(),
    };
    tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attrs)
        .start_with_context(tracer, &cx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::attributes::{TRUNCATED_VALUES, UNNAMED_SPANS};

    pub(super) fn test_sink() -> Arc<SpanSink> {
        Arc::new(SpanSink::new(
            &SpanExport::detached(1),
            0,
            &InstrumentationScope::builder(TRACER_NAME).build(),
            opentelemetry_sdk::trace::Sampler::AlwaysOn,
            Default::default(),
        ))
    }

    #[test]
    fn current_span_follows_the_stack() {
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("t");
        let server = start_span(&tracer, "s".into(), SpanKind::Server, vec![], None);
        let server_cx = server.span_context().clone();
        let mut rt = RequestTrace::new(
            tracer,
            test_sink(),
            server_cx.clone(),
            String::new(),
            String::new(),
            true,
            100,
        );
        assert_eq!(rt.current().span_id(), server_cx.span_id());
        assert_ne!(
            rt.current().trace_flags().to_u8() & propagation::FLAG_RANDOM,
            0
        );
        let mut a = rt.start("a".into(), SpanKind::Internal, vec![], None);
        rt.push(1, a.context().clone());
        let b = rt.start("b".into(), SpanKind::Internal, vec![], None);
        assert_eq!(b.context().trace_id(), server_cx.trace_id());
        rt.push(2, b.context().clone());
        assert_eq!(rt.current().span_id(), b.context().span_id());
        // Ending a span that is not innermost keeps the innermost current.
        rt.end(1, &mut a, None);
        assert_eq!(rt.current().span_id(), b.context().span_id());
        assert!(!a.is_recording());
        assert_eq!(rt.take_open(), vec![2]);
        assert_eq!(rt.current().span_id(), server_cx.span_id());
    }

    #[test]
    fn bad_guest_input_is_adjusted_and_counted() {
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("t");
        let server = start_span(&tracer, "s".into(), SpanKind::Server, vec![], None);
        let mut rt = RequestTrace::new(
            tracer,
            test_sink(),
            server.span_context().clone(),
            String::new(),
            String::new(),
            false,
            8,
        );
        assert!(rt.adjustments().attributes().is_empty());
        let mut s = rt.start(String::new(), SpanKind::Internal, vec![], None);
        rt.set_attribute(&mut s, KeyValue::new("long", "0123456789"));
        rt.set_attribute(&mut s, KeyValue::new("short", "0123"));
        rt.update_name(&mut s, "a-name-past-the-cap".into());
        rt.end(1, &mut s, None);
        // After the end nothing is recorded, so nothing more is counted.
        rt.set_attribute(&mut s, KeyValue::new("late", "0123456789"));
        assert_eq!(
            rt.adjustments(),
            Adjustments {
                dropped_spans: 0,
                truncated_values: 2,
                unnamed_spans: 1,
                invalid_values: 0,
            }
        );
        let attrs = rt.adjustments().attributes();
        assert_eq!(attrs.len(), 2);
        assert!(attrs.contains(&KeyValue::new(UNNAMED_SPANS, 1)));
        assert!(attrs.contains(&KeyValue::new(TRUNCATED_VALUES, 2)));
        // Metric and log attributes: at most MAX_RECORD_ATTRIBUTES, the rest counted.
        let many = (0..200)
            .map(|i| KeyValue::new(format!("k{i}"), i))
            .collect();
        assert_eq!(rt.cap_all(many).len(), MAX_RECORD_ATTRIBUTES);
        assert_eq!(rt.adjustments().truncated_values, 2 + 72);
    }
}
