// Package propagation has the shapes of go.opentelemetry.io/otel/propagation
// for W3C Trace Context: a TextMapPropagator writes and reads traceparent
// and tracestate through a carrier. Outgoing wasi:http requests need none
// of it (the host propagates); it is for other transports.
package propagation

import (
	"context"
	"net/http"

	"wit_component/polytrace"
	"wit_component/polytrace/otel/trace"
)

// TextMapCarrier is a header-like map.
type TextMapCarrier interface {
	Get(key string) string
	Set(key, value string)
	Keys() []string
}

// MapCarrier is a TextMapCarrier over a map.
type MapCarrier map[string]string

func (c MapCarrier) Get(key string) string { return c[key] }
func (c MapCarrier) Set(key, value string) { c[key] = value }
func (c MapCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// HeaderCarrier is a TextMapCarrier over http.Header.
type HeaderCarrier http.Header

func (c HeaderCarrier) Get(key string) string { return http.Header(c).Get(key) }
func (c HeaderCarrier) Set(key, value string) { http.Header(c).Set(key, value) }
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// TextMapPropagator injects a context into a carrier and extracts one.
type TextMapPropagator interface {
	Inject(ctx context.Context, carrier TextMapCarrier)
	Extract(ctx context.Context, carrier TextMapCarrier) context.Context
	Fields() []string
}

// TraceContext is the W3C Trace Context propagator.
type TraceContext struct{}

// Inject writes traceparent (and tracestate) of the span ctx carries.
func (TraceContext) Inject(ctx context.Context, carrier TextMapCarrier) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return
	}
	carrier.Set("traceparent", "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-"+sc.TraceFlags().String())
	if ts := sc.TraceState().String(); ts != "" {
		carrier.Set("tracestate", ts)
	}
}

// Extract reads traceparent and tracestate (parsed by the host, by the
// W3C rules) into a context carrying a remote span context.
func (TraceContext) Extract(ctx context.Context, carrier TextMapCarrier) context.Context {
	headers := map[string]string{}
	for _, k := range []string{"traceparent", "tracestate"} {
		if v := carrier.Get(k); v != "" {
			headers[k] = v
		}
	}
	cx, ok := polytrace.Extract(headers)
	if !ok {
		return ctx
	}
	var tid trace.TraceID
	var sid trace.SpanID
	copy(tid[:], decode(cx.TraceId))
	copy(sid[:], decode(cx.SpanId))
	ts, _ := trace.ParseTraceState(cx.TraceState)
	return trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(cx.TraceFlags), TraceState: ts,
	}))
}

func (TraceContext) Fields() []string { return []string{"traceparent", "tracestate"} }

func decode(h string) []byte {
	out := make([]byte, len(h)/2)
	for i := range out {
		out[i] = nibble(h[2*i])<<4 | nibble(h[2*i+1])
	}
	return out
}

func nibble(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return 0
}

type composite []TextMapPropagator

// NewCompositeTextMapPropagator runs several propagators in order.
func NewCompositeTextMapPropagator(p ...TextMapPropagator) TextMapPropagator { return composite(p) }

func (c composite) Inject(ctx context.Context, carrier TextMapCarrier) {
	for _, p := range c {
		p.Inject(ctx, carrier)
	}
}
func (c composite) Extract(ctx context.Context, carrier TextMapCarrier) context.Context {
	for _, p := range c {
		ctx = p.Extract(ctx, carrier)
	}
	return ctx
}
func (c composite) Fields() []string {
	var f []string
	for _, p := range c {
		f = append(f, p.Fields()...)
	}
	return f
}
