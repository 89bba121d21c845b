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
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"time"

	spanbatch "wit_component/polytrace_telemetry_span_batch"
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
//
// Spans go through the host's span-batch interface: a span's start and end
// reach the host at once (so the current span is always right for printed
// lines and outgoing requests), and what is set in between travels with
// the next one, in one byte buffer instead of a host call each.
type Span struct {
	handle uint32 // 0 once ended
	last   uint32 // the handle, kept after the end for Context
	cx     *SpanContext
}

// Start starts an internal span under the current span.
func Start(name string, attrs ...Attribute) *Span {
	return StartKind(name, KindInternal, attrs...)
}

// StartKind starts a span of the given kind under the current span. An
// unknown kind is recorded as internal rather than failing the request.
func StartKind(name string, kind Kind, attrs ...Attribute) *Span {
	s := &Span{}
	StartIn(s, name, kind, nil, attrs...)
	return s
}

// StartWithParent starts a span under an explicit parent, for example one
// extracted from a message with Extract.
func StartWithParent(name string, kind Kind, parent SpanContext, attrs ...Attribute) *Span {
	s := &Span{}
	StartIn(s, name, kind, &parent, attrs...)
	return s
}

// StartIn starts a span in s (which must be a zero Span) under parent, or
// under the current span when parent is nil: StartKind and
// StartWithParent for a type that holds its Span by value, as the
// OpenTelemetry API bridge's spans do (one allocation a span, not two).
func StartIn(s *Span, name string, kind Kind, parent *SpanContext, attrs ...Attribute) {
	if kind > KindConsumer {
		kind = KindInternal
	}
	h := batch.nextHandle()
	// Written through a local slice, which Go's wasm code keeps in locals
	// (each of batch's methods loads and stores batch.ops).
	op := uint8(opStart)
	if parent != nil {
		op = opStartWithParent
	}
	ops := append(batch.ops, op)
	ops = binary.LittleEndian.AppendUint32(ops, h)
	ops = append(ops, uint8(kind))
	// Time 0: the host stamps it, as this goes to the host at once.
	ops = binary.LittleEndian.AppendUint64(ops, 0)
	ops = appendStr(ops, name)
	if parent != nil {
		batch.ops = ops
		batch.hexID(parent.TraceId, 16).hexID(parent.SpanId, 8)
		remote := uint8(0)
		if parent.IsRemote {
			remote = 1
		}
		batch.u8(parent.TraceFlags).u8(remote).str(parent.TraceState)
		ops = batch.ops
	}
	batch.ops = appendAttributes(ops, attrs)
	batch.flush()
	*s = Span{handle: h}
}

// SetAttributes sets attributes on the span.
func (s *Span) SetAttributes(attrs ...Attribute) {
	if s.handle != 0 {
		batch.u8(opSetAttributes).u32(s.handle).attributes(attrs)
		batch.flushIfFull()
	}
}

// AddEvent adds a timestamped event.
func (s *Span) AddEvent(name string, attrs ...Attribute) {
	if s.handle != 0 {
		batch.u8(opAddEvent).u32(s.handle).u64(uint64(time.Now().UnixNano())).str(name).attributes(attrs)
		batch.flushIfFull()
	}
}

// RecordError records err as an `exception` event (type, message and the
// stack where it was recorded) and sets the status to Error. A nil err is
// ignored.
func (s *Span) RecordError(err error) {
	if s.handle == 0 || err == nil {
		return
	}
	s.exception(fmt.Sprintf("%T", err), err.Error(), true)
}

// RecordException records an exception with an explicit type and message.
func (s *Span) RecordException(exceptionType, message string, setError bool) {
	if s.handle != 0 {
		s.exception(exceptionType, message, setError)
	}
}

func (s *Span) exception(exceptionType, message string, setError bool) {
	set := uint8(0)
	if setError {
		set = 1
	}
	batch.u8(opRecordException).u32(s.handle).u64(uint64(time.Now().UnixNano())).
		str(exceptionType).str(message).u8(1).str(string(debug.Stack())).u8(set)
	batch.flushIfFull()
}

// SetError sets the status to Error with a description.
func (s *Span) SetError(description string) {
	if s.handle != 0 {
		batch.u8(opSetStatus).u32(s.handle).u8(2).str(description)
	}
}

// SetOK sets the status to Ok.
func (s *Span) SetOK() {
	if s.handle != 0 {
		batch.u8(opSetStatus).u32(s.handle).u8(1).str("")
	}
}

// UpdateName renames the span.
func (s *Span) UpdateName(name string) {
	if s.handle != 0 {
		batch.u8(opUpdateName).u32(s.handle).str(name)
	}
}

// Context is the span's context; after the end, ok is false once the host
// has forgotten the span (it remembers the last 64 ended in a request).
func (s *Span) Context() (cx SpanContext, ok bool) {
	h := s.handle
	if h == 0 {
		h = s.last
	}
	if h == 0 {
		return cx, false
	}
	if s.cx == nil {
		batch.flush()
		found := spanbatch.ContextOf(h)
		if found.IsNone() {
			return cx, false
		}
		c := found.Some()
		s.cx = &c
	}
	return *s.cx, true
}

// IsRecording reports whether the span is recorded (open and sampled).
func (s *Span) IsRecording() bool {
	if s.handle == 0 {
		return false
	}
	batch.flush()
	return spanbatch.IsRecording(s.handle)
}

// End ends the span. Calling it again does nothing.
func (s *Span) End() {
	if s.handle == 0 {
		return
	}
	ops := append(batch.ops, opEnd)
	ops = binary.LittleEndian.AppendUint32(ops, s.handle)
	batch.ops = binary.LittleEndian.AppendUint64(ops, 0)
	s.last, s.handle = s.handle, 0
	batch.flush()
}

// The span operations of span-batch (wit/telemetry.wit).
const (
	opStart           = 1
	opStartWithParent = 2
	opSetAttributes   = 3
	opAddEvent        = 4
	opRecordException = 5
	opSetStatus       = 6
	opUpdateName      = 7
	opEnd             = 8
)

// The operations waiting for the host, in span-batch's binary encoding.
type opBuffer struct {
	ops        []byte
	lastHandle uint32
}

var batch = &opBuffer{ops: make([]byte, 0, 4096)}

func (b *opBuffer) nextHandle() uint32 {
	b.lastHandle++
	if b.lastHandle == 0 {
		b.lastHandle = 1
	}
	return b.lastHandle
}

func (b *opBuffer) flush() {
	if len(b.ops) == 0 {
		return
	}
	message, failed := applyOps(b.ops)
	b.ops = b.ops[:0]
	if failed {
		fmt.Fprintln(os.Stderr, "polytrace: "+message)
	}
}

// Flush hands the span operations recorded so far to the host: call it
// before a host call that works under the current span (the SQL driver
// does, as outgoing requests do).
func Flush() { batch.flush() }

func (b *opBuffer) flushIfFull() {
	if len(b.ops) >= 64<<10 {
		b.flush()
	}
}

func (b *opBuffer) u8(v uint8) *opBuffer { b.ops = append(b.ops, v); return b }
func (b *opBuffer) u32(v uint32) *opBuffer {
	b.ops = binary.LittleEndian.AppendUint32(b.ops, v)
	return b
}
func (b *opBuffer) u64(v uint64) *opBuffer {
	b.ops = binary.LittleEndian.AppendUint64(b.ops, v)
	return b
}
func (b *opBuffer) str(v string) *opBuffer {
	b.u32(uint32(len(v)))
	b.ops = append(b.ops, v...)
	return b
}

func (b *opBuffer) value(v types.Value) {
	switch v.Tag() {
	case types.Value_String:
		b.u8(0).str(v.String())
	case types.Value_Bool:
		if v.Bool() {
			b.u8(1).u8(1)
		} else {
			b.u8(1).u8(0)
		}
	case types.Value_S64:
		b.u8(2).u64(uint64(v.S64()))
	case types.Value_F64:
		b.u8(3).u64(math.Float64bits(v.F64()))
	case types.Value_StringArray:
		a := v.StringArray()
		b.u8(4).u32(uint32(len(a)))
		for _, s := range a {
			b.str(s)
		}
	case types.Value_BoolArray:
		a := v.BoolArray()
		b.u8(5).u32(uint32(len(a)))
		for _, x := range a {
			if x {
				b.u8(1)
			} else {
				b.u8(0)
			}
		}
	case types.Value_S64Array:
		a := v.S64Array()
		b.u8(6).u32(uint32(len(a)))
		for _, x := range a {
			b.u64(uint64(x))
		}
	default:
		a := v.F64Array()
		b.u8(7).u32(uint32(len(a)))
		for _, x := range a {
			b.u64(math.Float64bits(x))
		}
	}
}

func (b *opBuffer) attributes(attrs []Attribute) {
	b.ops = appendAttributes(b.ops, attrs)
}

// appendStr appends v with its u32 length first.
func appendStr(ops []byte, v string) []byte {
	ops = binary.LittleEndian.AppendUint32(ops, uint32(len(v)))
	return append(ops, v...)
}

// appendAttributes appends a u32 count and each attribute's key and
// value, the scalar values inline (the hot path of every span start).
func appendAttributes(ops []byte, attrs []Attribute) []byte {
	ops = binary.LittleEndian.AppendUint32(ops, uint32(len(attrs)))
	for i := range attrs {
		a := &attrs[i]
		ops = appendStr(ops, a.Key)
		switch a.Value.Tag() {
		case types.Value_String:
			ops = appendStr(append(ops, 0), a.Value.String())
		case types.Value_Bool:
			if a.Value.Bool() {
				ops = append(ops, 1, 1)
			} else {
				ops = append(ops, 1, 0)
			}
		case types.Value_S64:
			ops = binary.LittleEndian.AppendUint64(append(ops, 2), uint64(a.Value.S64()))
		case types.Value_F64:
			ops = binary.LittleEndian.AppendUint64(append(ops, 3), math.Float64bits(a.Value.F64()))
		default:
			arrays := opBuffer{ops: ops}
			arrays.value(a.Value)
			ops = arrays.ops
		}
	}
	return ops
}

// hexID appends the n bytes of a lowercase hex id, or n zeros when it is
// not one (the host then starts the span under the current one, as for
// any invalid parent).
func (b *opBuffer) hexID(hex string, n int) *opBuffer {
	at := len(b.ops)
	b.ops = append(b.ops, make([]byte, n)...)
	if len(hex) != 2*n {
		return b
	}
	for i := 0; i < n; i++ {
		hi, lo := nibble(hex[2*i]), nibble(hex[2*i+1])
		if hi < 0 || lo < 0 {
			clear(b.ops[at:])
			return b
		}
		b.ops[at+i] = byte(hi<<4 | lo)
	}
	return b
}

func nibble(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}

// CurrentSpanContext is the current span's context, if there is one.
func CurrentSpanContext() (SpanContext, bool) {
	batch.flush()
	cx := CallHost(tracing.CurrentSpanContext)
	if cx.IsNone() {
		return SpanContext{}, false
	}
	return cx.Some(), true
}

// Inject returns W3C headers for the current span, for transports other
// than wasi:http (which the host propagates by itself).
func Inject() map[string]string {
	batch.flush()
	headers := map[string]string{}
	for _, h := range CallHost(tracing.Inject) {
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
