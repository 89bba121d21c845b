//! Spans the host makes itself (a request's SERVER span), recorded straight
//! into their OTLP wire form as batched guest spans are ([`super::batched`]),
//! not through opentelemetry-sdk's `Span`: no `SpanData` is built and
//! encoded again when the span ends, and no attribute is copied twice.
//!
//! The span behaves as the SDK's does under the same tracer provider: the
//! component's sampler decides (with the parent's context), the provider's
//! span limits bound attributes, events and links (what they refuse is
//! counted in the span's `dropped_*` fields), a status only ever moves up
//! (`Unset` < `Error` < `Ok`), and the finished span is queued for export
//! on the thread that ends it — when [`Span::end`] is called or the span is
//! dropped. The bytes are the ones [`super::encoded::EncodedSpan::encode`]
//! writes for the SDK's span (tests compare the two).

use super::batched::{Recording, SpanSink};
use super::encoded::{Val, nanos, val};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span, SpanContext, SpanKind, Status};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

/// A host-made span written to its wire form as it is recorded. It is
/// recording when sampled; otherwise it only carries its context.
pub struct WireSpan {
    cx: SpanContext,
    /// `None` when not sampled, or once ended.
    rec: Option<Box<Recording>>,
    sink: Arc<SpanSink>,
}

impl WireSpan {
    /// Start a span named `name` of `kind` with `attributes` under `parent`
    /// (a remote or local context), sampled and bounded as `sink`'s
    /// component's tracer provider would, starting now. Two cases no
    /// caller reaches are simpler than the SDK: a parent that is not valid
    /// is no parent (a new trace; trace-context extraction never returns
    /// one), and the sampler is not shown the attributes (none of the
    /// samplers the configuration accepts reads them or records without
    /// sampling).
    pub fn start(
        sink: &Arc<SpanSink>,
        name: String,
        kind: SpanKind,
        attributes: &[KeyValue],
        parent: Option<&SpanContext>,
    ) -> WireSpan {
        let (cx, mut rec) = sink.begin(parent, name, &kind, nanos(SystemTime::now()));
        if let Some(rec) = rec.as_deref_mut() {
            for kv in attributes {
                rec.add_attribute(sink.limits(), kv.key.as_str(), &val(&kv.value));
            }
        }
        WireSpan {
            cx,
            rec,
            sink: sink.clone(),
        }
    }
}

/// `attributes` as the wire encoder takes them, borrowed.
fn borrowed(attributes: &[KeyValue]) -> Vec<(Cow<'_, str>, Val<'_>)> {
    attributes
        .iter()
        .map(|kv| (Cow::Borrowed(kv.key.as_str()), val(&kv.value)))
        .collect()
}

impl Span for WireSpan {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        if let Some(rec) = self.rec.as_deref_mut() {
            let name = name.into();
            rec.add_event(
                self.sink.limits(),
                nanos(timestamp),
                &name,
                &borrowed(&attributes),
            );
        }
    }

    fn span_context(&self) -> &SpanContext {
        &self.cx
    }

    fn is_recording(&self) -> bool {
        self.rec.is_some()
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        if let Some(rec) = self.rec.as_deref_mut() {
            rec.add_attribute(
                self.sink.limits(),
                attribute.key.as_str(),
                &val(&attribute.value),
            );
        }
    }

    fn set_status(&mut self, status: Status) {
        if let Some(rec) = self.rec.as_deref_mut() {
            rec.set_status(status);
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        if let Some(rec) = self.rec.as_deref_mut() {
            rec.set_name(new_name.into().into_owned());
        }
    }

    fn add_link(&mut self, span_context: SpanContext, attributes: Vec<KeyValue>) {
        if let Some(rec) = self.rec.as_deref_mut() {
            rec.add_link(self.sink.limits(), &span_context, &borrowed(&attributes));
        }
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        if let Some(rec) = self.rec.take() {
            self.sink.push(rec.finish(nanos(timestamp)));
        }
    }
}

/// Dropped unended, the span ends now (as the SDK's does).
impl Drop for WireSpan {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::super::encoded::EncodedSpan;
    use super::super::{SpanExport, TRACER_NAME, start_span};
    use super::*;
    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState, TracerProvider as _};
    use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanLimits};
    use std::time::{Duration, UNIX_EPOCH};

    struct Setup {
        export: SpanExport,
        tracer: SdkTracer,
        sink: Arc<SpanSink>,
        _provider: SdkTracerProvider,
    }

    /// A tracer provider and the sink of the same component, with small
    /// limits so that every limit is reached.
    fn setup(sampler: Sampler) -> Setup {
        let export = SpanExport::detached(1);
        let limits = SpanLimits {
            max_attributes_per_span: 4,
            max_events_per_span: 2,
            max_links_per_span: 2,
            max_attributes_per_event: 1,
            max_attributes_per_link: 1,
        };
        let scope = InstrumentationScope::builder(TRACER_NAME).build();
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler.clone())
            .with_span_limits(limits)
            .with_span_processor(export.processor(0))
            .build();
        Setup {
            tracer: provider.tracer_with_scope(scope.clone()),
            sink: Arc::new(SpanSink::new(&export, 0, &scope, sampler, limits)),
            export,
            _provider: provider,
        }
    }

    fn time(n: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000 + n)
    }

    fn remote_parent(sampled: bool) -> SpanContext {
        remote_parent_with(if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        })
    }

    fn remote_parent_with(flags: TraceFlags) -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            flags,
            true,
            TraceState::from_key_value([("vendor", "v1")]).unwrap(),
        )
    }

    /// Everything a SERVER span goes through, past every limit.
    fn record(span: &mut impl Span) {
        span.set_attribute(KeyValue::new("http.response.status_code", 503));
        span.set_attribute(KeyValue::new("http.route", "/orders/{id}"));
        span.set_attribute(KeyValue::new("error.type", "503"));
        let two = || vec![KeyValue::new("a", 1), KeyValue::new("b", true)];
        span.add_event_with_timestamp("exception", time(1), two());
        span.add_event_with_timestamp("second", time(2), vec![]);
        span.add_event_with_timestamp("third, past the limit", time(3), vec![]);
        span.add_link(remote_parent(true), two());
        span.add_link(remote_parent(false), vec![]);
        span.add_link(remote_parent(true), vec![]);
        span.set_status(Status::error("upstream failed"));
        span.set_status(Status::Unset);
        span.update_name("GET /orders/{id}");
        span.end_with_timestamp(time(9));
    }

    fn start_attributes() -> Vec<KeyValue> {
        vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("url.path", "/orders/7"),
            KeyValue::new(
                "tags",
                opentelemetry::Value::Array(vec![opentelemetry::StringValue::from("x")].into()),
            ),
        ]
    }

    /// The spans queued, as `SpanData`, with their span ids and start
    /// times (the only parts chosen at random or by the clock) set to one
    /// value; each span's bytes are checked to be what the encoder of the
    /// SDK's spans writes for it.
    fn queued(s: &Setup) -> Vec<SpanData> {
        s.export
            .drain()
            .into_iter()
            .map(|(_, span)| {
                let scope = InstrumentationScope::builder(TRACER_NAME).build();
                let mut data = span.to_span_data(scope);
                assert_eq!(
                    EncodedSpan::encode(&data, span.scope()).bytes(),
                    span.bytes(),
                    "written as the SDK's spans are encoded"
                );
                let cx = &data.span_context;
                data.span_context = SpanContext::new(
                    cx.trace_id(),
                    SpanId::from_bytes([0, 0, 0, 0, 0, 0, 0, 1]),
                    cx.trace_flags(),
                    cx.is_remote(),
                    cx.trace_state().clone(),
                );
                data.start_time = time(0);
                data
            })
            .collect()
    }

    #[test]
    fn a_wire_span_is_the_span_the_sdk_records() {
        // The last parent also has the W3C Level 2 random flag.
        let random = remote_parent_with(TraceFlags::new(0x03));
        for parent in [None, Some(remote_parent(true)), Some(random)] {
            let s = setup(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
            let mut sdk = start_span(
                &s.tracer,
                "GET".into(),
                SpanKind::Server,
                start_attributes(),
                parent.as_ref(),
            );
            record(&mut sdk);
            let sdk_cx = sdk.span_context().clone();
            let mut wire = WireSpan::start(
                &s.sink,
                "GET".into(),
                SpanKind::Server,
                &start_attributes(),
                parent.as_ref(),
            );
            assert!(wire.is_recording());
            record(&mut wire);
            let wire_cx = wire.span_context().clone();
            assert_eq!(wire_cx.trace_flags(), sdk_cx.trace_flags());
            assert_eq!(wire_cx.trace_state(), sdk_cx.trace_state());
            assert!(!wire_cx.is_remote());
            match &parent {
                Some(p) => assert_eq!(wire_cx.trace_id(), p.trace_id()),
                None => assert_ne!(wire_cx.trace_id(), sdk_cx.trace_id(), "a new trace"),
            }
            let mut spans = queued(&s);
            assert_eq!(spans.len(), 2, "{spans:#?}");
            let (wire, sdk) = (spans.pop().unwrap(), spans.pop().unwrap());
            if parent.is_some() {
                assert_eq!(wire, sdk);
            } else {
                assert_eq!(
                    SpanData {
                        span_context: sdk.span_context.clone(),
                        ..wire.clone()
                    },
                    sdk
                );
            }
            assert_eq!(wire.attributes.len(), 4);
            assert_eq!(wire.dropped_attributes_count, 2);
            assert_eq!(wire.events.len(), 2);
            assert_eq!(wire.events.dropped_count, 1);
            assert_eq!(wire.events.events[0].dropped_attributes_count, 1);
            assert_eq!(wire.links.len(), 2);
            assert_eq!(wire.links.dropped_count, 1);
            assert_eq!(wire.name, "GET /orders/{id}");
            assert_eq!(wire.status, Status::error("upstream failed"));
            assert_eq!(wire.end_time, time(9));
        }
    }

    /// The SDK's and the wire span's contexts under the same sampler and
    /// parent, span ids aside (and trace ids, for a new trace).
    fn same_context(sampler: Sampler, parent: Option<&SpanContext>) {
        let s = setup(sampler.clone());
        let sdk = start_span(&s.tracer, "GET".into(), SpanKind::Server, vec![], parent);
        let wire = WireSpan::start(&s.sink, "GET".into(), SpanKind::Server, &[], parent);
        let (a, b) = (sdk.span_context(), wire.span_context());
        let what = format!("{sampler:?} under {parent:?}");
        assert_eq!(a.trace_flags(), b.trace_flags(), "{what}");
        assert_eq!(a.trace_state(), b.trace_state(), "{what}");
        assert_eq!(a.is_remote(), b.is_remote(), "{what}");
        assert_eq!(sdk.is_recording(), wire.is_recording(), "{what}");
        if parent.is_some() {
            assert_eq!(a.trace_id(), b.trace_id(), "{what}");
        }
    }

    #[test]
    fn the_samplers_decide_as_for_the_sdks_span() {
        let parents = [
            None,
            Some(remote_parent(true)),
            Some(remote_parent(false)),
            Some(remote_parent_with(TraceFlags::new(0x03))),
            Some(remote_parent_with(TraceFlags::new(0x02))),
        ];
        for sampler in [
            Sampler::AlwaysOn,
            Sampler::AlwaysOff,
            Sampler::TraceIdRatioBased(1.0),
            Sampler::TraceIdRatioBased(0.0),
            Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.0))),
        ] {
            for parent in &parents {
                same_context(sampler.clone(), parent.as_ref());
            }
        }
    }

    #[test]
    fn sampled_out_spans_carry_their_context_and_record_nothing() {
        // OTEL_SDK_DISABLED=true runs with AlwaysOff.
        let s = setup(Sampler::AlwaysOff);
        let span = WireSpan::start(&s.sink, "GET".into(), SpanKind::Server, &[], None);
        assert!(!span.is_recording());
        assert!(span.span_context().is_valid());
        assert!(!span.span_context().is_sampled());
        drop(span);
        // The caller said not sampled: ParentBased follows it.
        let s = setup(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let parent = remote_parent(false);
        let mut span = WireSpan::start(&s.sink, "GET".into(), SpanKind::Server, &[], Some(&parent));
        record(&mut span);
        assert_eq!(span.span_context().trace_id(), parent.trace_id());
        assert!(!span.span_context().is_sampled());
        assert!(s.export.drain().is_empty());
    }

    #[test]
    fn a_span_dropped_unended_ends_once() {
        let s = setup(Sampler::AlwaysOn);
        let invalid = SpanContext::empty_context();
        let mut span =
            WireSpan::start(&s.sink, "GET".into(), SpanKind::Server, &[], Some(&invalid));
        span.set_attribute(KeyValue::new("k", "v"));
        drop(span);
        let spans = queued(&s);
        assert_eq!(spans.len(), 1);
        assert_eq!(
            spans[0].parent_span_id,
            SpanId::INVALID,
            "an invalid parent is none"
        );
        let s = setup(Sampler::AlwaysOn);
        let mut span = WireSpan::start(&s.sink, "GET".into(), SpanKind::Server, &[], None);
        span.end();
        span.end();
        drop(span);
        assert_eq!(s.export.drain().len(), 1);
    }
}
