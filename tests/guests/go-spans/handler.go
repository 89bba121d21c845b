// The Go span-parent test guest (tests/tests/tracing.rs,
// go_spans_nest_by_their_context): spans started through the OpenTelemetry
// API shapes from a context whose span is not the host's current one
// (explicit parents in span-batch), a remote parent from another process,
// and the SDK's StartWithParent with a parent that is not a valid one.
package export_wasi_http_incoming_handler

import (
	"encoding/json"
	"net/http"

	"wit_component/polytrace"
	"wit_component/polytrace/nethttp"
	"wit_component/polytrace/otel"
	"wit_component/polytrace/otel/trace"
	wasihttp "wit_component/wasi_http_types"
)

var tracer = otel.Tracer("go-spans")

// Handle serves every request.
func Handle(request *wasihttp.IncomingRequest, out *wasihttp.ResponseOutparam) {
	nethttp.Serve(http.HandlerFunc(serve), request, out)
}

func serve(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// go.a is the host's current span when go.b starts: go.b's parent (the
	// SERVER span) goes to the host explicitly; so does go.c's (go.a)
	// while go.b is current.
	actx, a := tracer.Start(ctx, "go.a")
	_, b := tracer.Start(ctx, "go.b")
	_, c := tracer.Start(actx, "go.c")
	c.End()
	b.End()
	a.End()

	// A parent from another process (a message's headers).
	state, _ := trace.ParseTraceState("vendor=value")
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		TraceState: state,
		Remote:     true,
	})
	_, d := tracer.Start(trace.ContextWithRemoteSpanContext(ctx, remote), "go.remote")
	dc := d.SpanContext()
	d.End()

	// Not a parent (ids that are not hex): under the current span.
	polytrace.StartWithParent("go.invalid", polytrace.KindInternal,
		polytrace.SpanContext{TraceId: "zz", SpanId: "not-hex!", TraceFlags: 1}).End()

	w.Header().Set("content-type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"remote_child": map[string]any{
			"trace_id":    dc.TraceID().String(),
			"trace_state": dc.TraceState().String(),
			"sampled":     dc.IsSampled(),
			"remote":      dc.IsRemote(),
		},
	})
}
