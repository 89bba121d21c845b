// Package trace has the shapes of go.opentelemetry.io/otel/trace, backed
// by the host: tracer.Start(ctx, name) returns a context carrying the new
// span, span.SetAttributes, span.RecordError, span.SetStatus, span.End.
// Code written against the official package ports by changing the import
// path to wit_component/polytrace/otel/trace.
//
// Spans are the host's: they nest, export and obey the limits exactly as
// polytrace.Start's do, and the host makes the SERVER and CLIENT spans.
// What differs from the official SDK, as its no-op implementation does:
// links are dropped and explicit start and end timestamps are ignored (the
// host stamps them); a span is the host's current span (for outgoing
// requests and log records) from its start to its end, whatever context it
// is passed in — children still nest by the context they are started from;
// the instrumentation scope is the component's.
package trace

import (
	"context"
	"encoding/hex"
	"fmt"
	"runtime/debug"

	"wit_component/polytrace"
	"wit_component/polytrace/otel/attribute"
	"wit_component/polytrace/otel/codes"
)

// TraceID is a W3C trace id.
type TraceID [16]byte

// SpanID is a W3C span (parent) id.
type SpanID [8]byte

func (t TraceID) String() string { return hex.EncodeToString(t[:]) }
func (t TraceID) IsValid() bool  { return t != TraceID{} }
func (s SpanID) String() string  { return hex.EncodeToString(s[:]) }
func (s SpanID) IsValid() bool   { return s != SpanID{} }

// TraceFlags are the W3C trace flags.
type TraceFlags byte

// FlagsSampled is the sampled bit.
const FlagsSampled = TraceFlags(0x01)

func (f TraceFlags) IsSampled() bool { return f&FlagsSampled != 0 }
func (f TraceFlags) String() string  { return hex.EncodeToString([]byte{byte(f)}) }

// TraceState is the W3C tracestate header value.
type TraceState struct{ header string }

func (ts TraceState) String() string { return ts.header }

// ParseTraceState keeps a tracestate header value (the host validates it).
func ParseTraceState(header string) (TraceState, error) { return TraceState{header}, nil }

// SpanContext is the immutable identity of a span.
type SpanContext struct {
	traceID    TraceID
	spanID     SpanID
	traceFlags TraceFlags
	traceState TraceState
	remote     bool
}

// SpanContextConfig makes a SpanContext with NewSpanContext.
type SpanContextConfig struct {
	TraceID    TraceID
	SpanID     SpanID
	TraceFlags TraceFlags
	TraceState TraceState
	Remote     bool
}

func NewSpanContext(c SpanContextConfig) SpanContext {
	return SpanContext{c.TraceID, c.SpanID, c.TraceFlags, c.TraceState, c.Remote}
}

func (sc SpanContext) TraceID() TraceID       { return sc.traceID }
func (sc SpanContext) SpanID() SpanID         { return sc.spanID }
func (sc SpanContext) TraceFlags() TraceFlags { return sc.traceFlags }
func (sc SpanContext) TraceState() TraceState { return sc.traceState }
func (sc SpanContext) IsRemote() bool         { return sc.remote }
func (sc SpanContext) IsSampled() bool        { return sc.traceFlags.IsSampled() }
func (sc SpanContext) HasTraceID() bool       { return sc.traceID.IsValid() }
func (sc SpanContext) HasSpanID() bool        { return sc.spanID.IsValid() }
func (sc SpanContext) IsValid() bool          { return sc.HasTraceID() && sc.HasSpanID() }

// WithRemote returns a copy marked as coming from another process.
func (sc SpanContext) WithRemote(remote bool) SpanContext { sc.remote = remote; return sc }

func fromHost(cx polytrace.SpanContext) SpanContext {
	var sc SpanContext
	hex.Decode(sc.traceID[:], []byte(cx.TraceId))
	hex.Decode(sc.spanID[:], []byte(cx.SpanId))
	sc.traceFlags = TraceFlags(cx.TraceFlags)
	sc.traceState = TraceState{cx.TraceState}
	sc.remote = cx.IsRemote
	return sc
}

func toHost(sc SpanContext) polytrace.SpanContext {
	return polytrace.SpanContext{
		TraceId:    sc.traceID.String(),
		SpanId:     sc.spanID.String(),
		TraceFlags: uint8(sc.traceFlags),
		TraceState: sc.traceState.header,
		IsRemote:   sc.remote,
	}
}

// SpanKind is the role of a span (the official values).
type SpanKind int

const (
	SpanKindUnspecified SpanKind = 0
	SpanKindInternal    SpanKind = 1
	SpanKindServer      SpanKind = 2
	SpanKindClient      SpanKind = 3
	SpanKindProducer    SpanKind = 4
	SpanKindConsumer    SpanKind = 5
)

func (k SpanKind) host() polytrace.Kind {
	switch k {
	case SpanKindServer:
		return polytrace.KindServer
	case SpanKindClient:
		return polytrace.KindClient
	case SpanKindProducer:
		return polytrace.KindProducer
	case SpanKindConsumer:
		return polytrace.KindConsumer
	}
	return polytrace.KindInternal
}

// Link is accepted and dropped (the host does not record links).
type Link struct {
	SpanContext SpanContext
	Attributes  []attribute.KeyValue
}

// Span is a span: the official interface's methods.
type Span interface {
	End(options ...SpanEndOption)
	AddEvent(name string, options ...EventOption)
	AddLink(link Link)
	IsRecording() bool
	RecordError(err error, options ...EventOption)
	SpanContext() SpanContext
	SetStatus(code codes.Code, description string)
	SetName(name string)
	SetAttributes(kv ...attribute.KeyValue)
	TracerProvider() TracerProvider
}

// Tracer starts spans.
type Tracer interface {
	Start(ctx context.Context, spanName string, opts ...SpanStartOption) (context.Context, Span)
}

// TracerProvider gives tracers; every tracer is the component's.
type TracerProvider interface {
	Tracer(name string, options ...TracerOption) Tracer
}

// Options, as the official package has them. Timestamps and links are
// accepted and ignored (the host stamps spans; links are not recorded).

type config struct {
	attributes []attribute.KeyValue
	kind       SpanKind
	stackTrace bool
}

type SpanStartOption interface{ applyStart(*config) }
type SpanEndOption interface{ applyEnd(*config) }
type EventOption interface{ applyEvent(*config) }
type TracerOption interface{ applyTracer() }
type SpanStartEventOption interface {
	SpanStartOption
	EventOption
}
type SpanEndEventOption interface {
	SpanEndOption
	EventOption
}

type attributesOption []attribute.KeyValue

func (o attributesOption) applyStart(c *config) { c.add(o) }
func (o attributesOption) applyEvent(c *config) { c.add(o) }

// add appends attributes, taking the first option's slice as it is (no
// copy: most calls pass one WithAttributes) and capped, so that a later
// append copies instead of writing into the caller's array.
func (c *config) add(attributes []attribute.KeyValue) {
	if c.attributes == nil {
		c.attributes = attributes[:len(attributes):len(attributes)]
		return
	}
	c.attributes = append(c.attributes, attributes...)
}

// WithAttributes adds attributes to a span's start or an event.
func WithAttributes(attributes ...attribute.KeyValue) SpanStartEventOption {
	return attributesOption(attributes)
}

type kindOption SpanKind

func (o kindOption) applyStart(c *config) { c.kind = SpanKind(o) }

// WithSpanKind sets the kind of a span.
func WithSpanKind(kind SpanKind) SpanStartOption { return kindOption(kind) }

type ignored struct{}

func (ignored) applyStart(*config) {}
func (ignored) applyEnd(*config)   {}
func (ignored) applyEvent(*config) {}
func (ignored) applyTracer()       {}

// WithTimestamp is accepted and ignored: the host stamps spans and events.
func WithTimestamp(any) SpanStartEventOption { return ignored{} }

// WithLinks is accepted and ignored: the host does not record links.
func WithLinks(...Link) SpanStartOption { return ignored{} }

// WithNewRoot is accepted and ignored: a guest's spans belong to the request's trace.
func WithNewRoot() SpanStartOption { return ignored{} }

// WithInstrumentationVersion and WithSchemaURL are accepted and ignored.
func WithInstrumentationVersion(string) TracerOption { return ignored{} }
func WithSchemaURL(string) TracerOption              { return ignored{} }

type stackOption bool

func (o stackOption) applyEnd(c *config)   { c.stackTrace = bool(o) }
func (o stackOption) applyEvent(c *config) { c.stackTrace = bool(o) }

// WithStackTrace records the stack with RecordError (on by default here:
// the host's exception events carry one).
func WithStackTrace(b bool) SpanEndEventOption { return stackOption(b) }

// The spans this package started and has not ended, oldest first: the
// host makes the innermost current, so a span whose parent is that one
// (or, with none open, the SERVER span) needs no explicit parent.
var open []*span

type spanKey struct{}

// ContextWithSpan returns ctx carrying span.
func ContextWithSpan(ctx context.Context, s Span) context.Context {
	return context.WithValue(ctx, spanKey{}, s)
}

// ContextWithSpanContext returns ctx carrying a non-recording span of sc.
func ContextWithSpanContext(ctx context.Context, sc SpanContext) context.Context {
	return ContextWithSpan(ctx, nonRecording{sc})
}

// ContextWithRemoteSpanContext is ContextWithSpanContext marked remote.
func ContextWithRemoteSpanContext(ctx context.Context, sc SpanContext) context.Context {
	return ContextWithSpanContext(ctx, sc.WithRemote(true))
}

// SpanFromContext is the span ctx carries, or a no-op span.
func SpanFromContext(ctx context.Context) Span {
	if ctx != nil {
		if s, ok := ctx.Value(spanKey{}).(Span); ok {
			return s
		}
	}
	return nonRecording{}
}

// SpanContextFromContext is the context of the span ctx carries.
func SpanContextFromContext(ctx context.Context) SpanContext {
	return SpanFromContext(ctx).SpanContext()
}

// ServerContext returns ctx carrying the request's SERVER span (which the
// host makes): the net/http bridge puts it in r.Context(). Call it at the
// start of a request.
func ServerContext(ctx context.Context) context.Context {
	open = open[:0]
	sc := SpanContext{}
	if cx, ok := polytrace.CurrentSpanContext(); ok {
		sc = fromHost(cx)
	}
	return ContextWithSpan(ctx, serverSpan{sc})
}

type provider struct{}

func (provider) Tracer(string, ...TracerOption) Tracer { return tracer{} }

// Provider is the global tracer provider (otel.GetTracerProvider).
var Provider TracerProvider = provider{}

type tracer struct{}

func (tracer) Start(ctx context.Context, name string, opts ...SpanStartOption) (context.Context, Span) {
	var c config
	for _, o := range opts {
		o.applyStart(&c)
	}
	parent := SpanFromContext(ctx)
	if ctx == nil {
		ctx = context.Background()
	}
	// The span is also the context that carries it, and holds the host's
	// span by value: one allocation, not three.
	s := &span{Context: ctx}
	if hostCurrentIs(parent) {
		polytrace.StartIn(&s.inner, name, c.kind.host(), nil, c.attributes...)
	} else {
		var cx polytrace.SpanContext
		if p, ok := parent.(*span); ok {
			cx, _ = p.inner.Context()
		} else {
			cx = toHost(parent.SpanContext())
		}
		polytrace.StartIn(&s.inner, name, c.kind.host(), &cx, c.attributes...)
	}
	open = append(open, s)
	return s, s
}

// hostCurrentIs says whether the host's current span is parent already.
func hostCurrentIs(parent Span) bool {
	switch p := parent.(type) {
	case *span:
		return len(open) > 0 && open[len(open)-1] == p
	case serverSpan:
		return len(open) == 0
	}
	// No span in the context: a handler without the bridge, whose spans
	// nest under the host's current span as polytrace.Start's do.
	return !parent.SpanContext().IsValid()
}

// span is a span started through this package: the host's span behind
// the official interface. It is also the context Start returns: the
// context it was started in, carrying the span.
type span struct {
	context.Context
	inner polytrace.Span
	ended bool
}

// Value is the span for the span key, else the parent context's value.
func (s *span) Value(key any) any {
	if _, ok := key.(spanKey); ok {
		return s
	}
	return s.Context.Value(key)
}

func (s *span) End(...SpanEndOption) {
	if s.ended {
		return
	}
	s.ended = true
	for i := len(open) - 1; i >= 0; i-- {
		if open[i] == s {
			open = append(open[:i], open[i+1:]...)
			break
		}
	}
	s.inner.End()
}

func (s *span) AddEvent(name string, options ...EventOption) {
	var c config
	for _, o := range options {
		o.applyEvent(&c)
	}
	s.inner.AddEvent(name, c.attributes...)
}

func (s *span) AddLink(Link) {}

func (s *span) IsRecording() bool { return !s.ended && s.inner.IsRecording() }

func (s *span) RecordError(err error, options ...EventOption) {
	if err != nil {
		// The official SDK leaves the status alone: SetStatus does that.
		s.inner.RecordException(fmt.Sprintf("%T", err), err.Error(), false)
	}
}

func (s *span) SpanContext() SpanContext {
	cx, ok := s.inner.Context()
	if !ok {
		return SpanContext{}
	}
	return fromHost(cx)
}

func (s *span) SetStatus(code codes.Code, description string) {
	switch code {
	case codes.Error:
		s.inner.SetError(description)
	case codes.Ok:
		s.inner.SetOK()
	}
}

func (s *span) SetName(name string)                    { s.inner.UpdateName(name) }
func (s *span) SetAttributes(kv ...attribute.KeyValue) { s.inner.SetAttributes(kv...) }
func (s *span) TracerProvider() TracerProvider         { return Provider }

// serverSpan is the request's SERVER span, which the host makes and ends:
// attributes and errors go to it; its name and status are the host's.
type serverSpan struct{ sc SpanContext }

func (serverSpan) End(...SpanEndOption)            {}
func (serverSpan) AddEvent(string, ...EventOption) {}
func (serverSpan) AddLink(Link)                    {}
func (s serverSpan) IsRecording() bool             { return s.sc.IsSampled() }
func (s serverSpan) RecordError(err error, _ ...EventOption) {
	if err != nil {
		polytrace.RecordServerException(fmt.Sprintf("%T", err), err.Error(), string(debug.Stack()))
	}
}
func (s serverSpan) SpanContext() SpanContext             { return s.sc }
func (serverSpan) SetStatus(codes.Code, string)           {}
func (serverSpan) SetName(string)                         {}
func (serverSpan) SetAttributes(kv ...attribute.KeyValue) { polytrace.SetServerAttributes(kv...) }
func (serverSpan) TracerProvider() TracerProvider         { return Provider }

// nonRecording is a span context without a span: a remote parent, or none.
type nonRecording struct{ sc SpanContext }

func (nonRecording) End(...SpanEndOption)                {}
func (nonRecording) AddEvent(string, ...EventOption)     {}
func (nonRecording) AddLink(Link)                        {}
func (nonRecording) IsRecording() bool                   { return false }
func (nonRecording) RecordError(error, ...EventOption)   {}
func (s nonRecording) SpanContext() SpanContext          { return s.sc }
func (nonRecording) SetStatus(codes.Code, string)        {}
func (nonRecording) SetName(string)                      {}
func (nonRecording) SetAttributes(...attribute.KeyValue) {}
func (nonRecording) TracerProvider() TracerProvider      { return Provider }
