// Package polytrace is the Go guest SDK for polytrace components.
//
// The host supplies the telemetry; this package makes it idiomatic:
//
//	span := polytrace.Start("check_fraud_rules", polytrace.String("transaction.id", id))
//	defer span.End()
//	if err := check(); err != nil {
//		span.RecordError(err)
//	}
//
// Outgoing wasi:http requests (see Send) get CLIENT spans and traceparent
// from the host automatically. scripts/build-guest.sh places this package
// beside the wit-bindgen Go bindings, so components import it as
// "wit_component/polytrace".
package polytrace

import (
	"fmt"
	"runtime/debug"

	tracing "wit_component/polytrace_telemetry_tracing"
	types "wit_component/polytrace_telemetry_types"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// Attribute is one typed span or event attribute.
type Attribute = types.KeyValue

// String, Bool, Int, Int64, Float64 and the slice forms make attributes.
func String(key, value string) Attribute {
	return Attribute{Key: key, Value: types.MakeValueString(value)}
}
func Bool(key string, value bool) Attribute {
	return Attribute{Key: key, Value: types.MakeValueBool(value)}
}
func Int(key string, value int) Attribute {
	return Attribute{Key: key, Value: types.MakeValueS64(int64(value))}
}
func Int64(key string, value int64) Attribute {
	return Attribute{Key: key, Value: types.MakeValueS64(value)}
}
func Float64(key string, value float64) Attribute {
	return Attribute{Key: key, Value: types.MakeValueF64(value)}
}
func Strings(key string, value []string) Attribute {
	return Attribute{Key: key, Value: types.MakeValueStringArray(value)}
}
func Bools(key string, value []bool) Attribute {
	return Attribute{Key: key, Value: types.MakeValueBoolArray(value)}
}
func Int64s(key string, value []int64) Attribute {
	return Attribute{Key: key, Value: types.MakeValueS64Array(value)}
}
func Float64s(key string, value []float64) Attribute {
	return Attribute{Key: key, Value: types.MakeValueF64Array(value)}
}

// Kind is the role of a span.
type Kind = tracing.SpanKind

const (
	KindInternal Kind = tracing.SpanKind_Internal
	KindServer   Kind = tracing.SpanKind_Server
	KindClient   Kind = tracing.SpanKind_Client
	KindProducer Kind = tracing.SpanKind_Producer
	KindConsumer Kind = tracing.SpanKind_Consumer
)

// SpanContext identifies a span across services (W3C Trace Context).
type SpanContext = tracing.SpanContext

// Span is an open span; it is the current span until it ends, so spans
// started after it and outgoing requests are its children. Methods on an
// ended span do nothing.
type Span struct {
	inner *tracing.Span
}

// Start starts an internal span under the current span.
func Start(name string, attrs ...Attribute) *Span {
	return StartKind(name, KindInternal, attrs...)
}

// StartKind starts a span of the given kind under the current span. An
// unknown kind is recorded as internal rather than failing the request.
func StartKind(name string, kind Kind, attrs ...Attribute) *Span {
	if kind > KindConsumer {
		kind = KindInternal
	}
	return &Span{inner: tracing.MakeSpan(name, kind, attrs)}
}

// StartWithParent starts a span under an explicit parent, for example one
// extracted from a message with Extract.
func StartWithParent(name string, kind Kind, parent SpanContext, attrs ...Attribute) *Span {
	if kind > KindConsumer {
		kind = KindInternal
	}
	return &Span{inner: tracing.SpanStartWithParent(name, kind, attrs, parent)}
}

// SetAttributes sets attributes on the span.
func (s *Span) SetAttributes(attrs ...Attribute) {
	if s.inner != nil {
		s.inner.SetAttributes(attrs)
	}
}

// AddEvent adds a timestamped event.
func (s *Span) AddEvent(name string, attrs ...Attribute) {
	if s.inner != nil {
		s.inner.AddEvent(name, attrs, witTypes.None[uint64]())
	}
}

// RecordError records err as an `exception` event (type, message and the
// stack where it was recorded) and sets the status to Error. A nil err is
// ignored.
func (s *Span) RecordError(err error) {
	if s.inner == nil || err == nil {
		return
	}
	s.inner.RecordException(fmt.Sprintf("%T", err), err.Error(), witTypes.Some(string(debug.Stack())), true)
}

// RecordException records an exception with an explicit type and message.
func (s *Span) RecordException(exceptionType, message string, setError bool) {
	if s.inner != nil {
		s.inner.RecordException(exceptionType, message, witTypes.Some(string(debug.Stack())), setError)
	}
}

// SetError sets the status to Error with a description.
func (s *Span) SetError(description string) {
	if s.inner != nil {
		s.inner.SetStatus(tracing.MakeStatusError(description))
	}
}

// SetOK sets the status to Ok.
func (s *Span) SetOK() {
	if s.inner != nil {
		s.inner.SetStatus(tracing.MakeStatusOk())
	}
}

// UpdateName renames the span.
func (s *Span) UpdateName(name string) {
	if s.inner != nil {
		s.inner.UpdateName(name)
	}
}

// Context is the span's context; ok is false once the span has ended.
func (s *Span) Context() (cx SpanContext, ok bool) {
	if s.inner == nil {
		return cx, false
	}
	return s.inner.SpanContext(), true
}

// IsRecording reports whether the span is recorded (open and sampled).
func (s *Span) IsRecording() bool {
	return s.inner != nil && s.inner.IsRecording()
}

// End ends the span and releases its handle. Calling it again does nothing.
func (s *Span) End() {
	if s.inner == nil {
		return
	}
	inner := s.inner
	s.inner = nil
	// Dropping the handle ends the span: one host call, not two.
	inner.Drop()
}

// CurrentSpanContext is the current span's context, if there is one.
func CurrentSpanContext() (SpanContext, bool) {
	cx := tracing.CurrentSpanContext()
	if cx.IsNone() {
		return SpanContext{}, false
	}
	return cx.Some(), true
}

// Inject returns W3C headers for the current span, for transports other
// than wasi:http (which the host propagates by itself).
func Inject() map[string]string {
	headers := map[string]string{}
	for _, h := range tracing.Inject() {
		headers[h.F0] = h.F1
	}
	return headers
}

// Extract reads a span context from W3C headers.
func Extract(headers map[string]string) (SpanContext, bool) {
	pairs := make([]witTypes.Tuple2[string, string], 0, len(headers))
	for k, v := range headers {
		pairs = append(pairs, witTypes.Tuple2[string, string]{F0: k, F1: v})
	}
	cx := tracing.Extract(pairs)
	if cx.IsNone() {
		return SpanContext{}, false
	}
	return cx.Some(), true
}
