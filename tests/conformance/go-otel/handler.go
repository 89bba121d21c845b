// The conformance scenario (tests/conformance/SPEC.md) written against the
// shapes of go.opentelemetry.io/otel: the host is its SDK. Its trees,
// metrics and logs must equal the SDK version's (go/handler.go).
package export_wasi_http_incoming_handler

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"wit_component/polytrace"
	"wit_component/polytrace/otel"
	"wit_component/polytrace/otel/attribute"
	"wit_component/polytrace/otel/codes"
	"wit_component/polytrace/otel/metric"
	"wit_component/polytrace/otel/trace"
	http "wit_component/wasi_http_types"
)

var (
	tracer = otel.Tracer("conformance")
	meter  = otel.Meter("conformance")
	// Spans the scenario leaves open on purpose; held so nothing releases them.
	unended []trace.Span
)

func Handle(request *http.IncomingRequest, out *http.ResponseOutparam) {
	r, err := polytrace.ReadRequest(request)
	if err != nil {
		polytrace.Respond(out, 400, "text/plain", []byte(err.Error()))
		return
	}
	ctx := context.Background()
	if strings.HasSuffix(r.Path, "/span-cost") {
		n, err := strconv.Atoi(r.Query.Get("n"))
		if err != nil {
			n = 1000
		}
		spanCost(ctx, n, out)
		return
	}
	wctx, work := tracer.Start(ctx, "conformance.work", trace.WithAttributes(
		attribute.String("conformance.string", "text"),
		attribute.Bool("conformance.bool", true),
		attribute.Int("conformance.int", 42),
		attribute.Float64("conformance.float", 2.5),
		attribute.StringSlice("conformance.strings", []string{"a", "b"}),
		attribute.BoolSlice("conformance.bools", []bool{true, false}),
		attribute.Int64Slice("conformance.ints", []int64{1, 2, 3}),
		attribute.Float64Slice("conformance.floats", []float64{0.5, 1.5}),
	))
	work.AddEvent("checkpoint", trace.WithAttributes(attribute.Int("conformance.step", 1)))
	outcome := metric.WithAttributes(attribute.String("conformance.outcome", "ok"))
	if c, err := meter.Int64Counter("conformance.requests",
		metric.WithDescription("Conformance scenario runs"), metric.WithUnit("{request}")); err == nil {
		c.Add(wctx, 1, outcome)
	}
	if h, err := meter.Float64Histogram("conformance.latency", metric.WithDescription("Conformance latency"),
		metric.WithUnit("ms"), metric.WithExplicitBucketBoundaries(1, 10, 100)); err == nil {
		h.Record(wctx, 42.5, outcome)
	}
	slog.Warn("conformance log", "conformance.step", 2)
	slog.Info("conformance native log")
	var status *int
	if url := r.Query.Get("next"); url != "" {
		if s, _, err := polytrace.Send("GET", url, nil); err != nil {
			work.RecordError(err)
		} else {
			status = &s
		}
	}
	work.End()
	work.SetAttributes(attribute.Bool("conformance.after_end", true))

	_, fail := tracer.Start(ctx, "conformance.fail")
	// The exception's type, as the semantic conventions name it (the
	// official SDK's RecordError would name the Go type).
	fail.AddEvent("exception", trace.WithAttributes(
		attribute.String("exception.type", "ConformanceError"),
		attribute.String("exception.message", "conformance failure"),
		attribute.String("exception.stacktrace", "handler.go: Handle"),
	))
	fail.SetStatus(codes.Error, "conformance failure")
	fail.End()

	_, open := tracer.Start(ctx, "conformance.unended")
	unended = append(unended, open)

	body, _ := json.Marshal(map[string]any{"language": "go-otel", "next_status": status})
	polytrace.Respond(out, 200, "application/json", body)
}

// spanCost is the span-cost scenario through the API: n spans of five
// attributes, timed in the guest.
func spanCost(ctx context.Context, n int, out *http.ResponseOutparam) {
	started := time.Now()
	for i := 0; i < n; i++ {
		_, span := tracer.Start(ctx, "bench.span", trace.WithAttributes(
			attribute.String("bench.string", "value"),
			attribute.Bool("bench.bool", true),
			attribute.Int("bench.int", i),
			attribute.Float64("bench.float", 0.5),
			attribute.String("bench.route", "/checkout"),
		))
		span.End()
	}
	elapsed := time.Since(started).Nanoseconds()
	body, _ := json.Marshal(map[string]any{"language": "go-otel", "n": n, "elapsed_ns": elapsed})
	polytrace.Respond(out, 200, "application/json", body)
}
