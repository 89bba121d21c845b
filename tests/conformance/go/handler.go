// The conformance scenario (tests/conformance/SPEC.md) with the Go SDK.
package export_wasi_http_incoming_handler

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"wit_component/polytrace"
	"wit_component/polytrace/sqldriver"
	http "wit_component/wasi_http_types"
)

// ConformanceError is the fixed error the scenario records.
type ConformanceError struct{}

func (ConformanceError) Error() string { return "conformance failure" }

// Spans the scenario leaves open on purpose; held so nothing releases them.
var unended []*polytrace.Span

func Handle(request *http.IncomingRequest, out *http.ResponseOutparam) {
	r, err := polytrace.ReadRequest(request)
	if err != nil {
		polytrace.Respond(out, 400, "text/plain", []byte(err.Error()))
		return
	}
	if strings.HasSuffix(r.Path, "/bad-input") {
		badInput(out)
		return
	}
	n, err := strconv.Atoi(r.Query.Get("n"))
	if err != nil {
		n = 1000
	}
	switch {
	case strings.HasSuffix(r.Path, "/span-cost"):
		spanCost(n, out)
		return
	case strings.HasSuffix(r.Path, "/metric-cost"):
		metricCost(n, out)
		return
	case strings.HasSuffix(r.Path, "/log-cost"):
		logCost(n, out)
		return
	case strings.HasSuffix(r.Path, "/db"):
		database(out)
		return
	}
	work := polytrace.Start("conformance.work",
		polytrace.String("conformance.string", "text"),
		polytrace.Bool("conformance.bool", true),
		polytrace.Int("conformance.int", 42),
		polytrace.Float64("conformance.float", 2.5),
		polytrace.Strings("conformance.strings", []string{"a", "b"}),
		polytrace.Bools("conformance.bools", []bool{true, false}),
		polytrace.Int64s("conformance.ints", []int64{1, 2, 3}),
		polytrace.Float64s("conformance.floats", []float64{0.5, 1.5}),
	)
	work.AddEvent("checkpoint", polytrace.Int("conformance.step", 1))
	outcome := polytrace.String("conformance.outcome", "ok")
	if c, err := polytrace.NewCounter("conformance.requests", "Conformance scenario runs", "{request}"); err == nil {
		c.Add(1, outcome)
	}
	if h, err := polytrace.NewHistogram("conformance.latency", "Conformance latency", "ms", 1, 10, 100); err == nil {
		h.Record(42.5, outcome)
	}
	polytrace.LogWarn("conformance log", polytrace.Int("conformance.step", 2))
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
	work.SetAttributes(polytrace.Bool("conformance.after_end", true))

	fail := polytrace.Start("conformance.fail")
	fail.RecordException("ConformanceError", ConformanceError{}.Error(), true)
	fail.SetError("conformance failure")
	fail.End()

	unended = append(unended, polytrace.Start("conformance.unended"))

	body, _ := json.Marshal(map[string]any{"language": "go", "next_status": status})
	polytrace.Respond(out, 200, "application/json", body)
}

// badInput is the bad-input scenario.
func badInput(out *http.ResponseOutparam) {
	polytrace.Start("").End()
	polytrace.StartKind("bad.kind", polytrace.Kind(9)).End()
	long := make([]int64, 1000)
	for i := range long {
		long[i] = int64(i)
	}
	polytrace.Start("bad.huge",
		polytrace.String("bad.huge", strings.Repeat("x", 1<<20)),
		polytrace.Int64s("bad.long", long),
	).End()
	many := make([]polytrace.Attribute, 0, 10000)
	for i := 0; i < 10000; i++ {
		many = append(many, polytrace.Int(fmt.Sprintf("bad.attr.%05d", i), i))
	}
	polytrace.Start("bad.many", many...).End()
	metricErr := "none"
	var me *polytrace.MetricError
	if _, err := polytrace.NewCounter("1bad name", "", ""); errors.As(err, &me) {
		metricErr = me.Kind
	} else if err != nil {
		metricErr = "unexpected " + err.Error()
	}
	body, _ := json.Marshal(map[string]any{"language": "go", "metric_error": metricErr})
	polytrace.Respond(out, 200, "application/json", body)
}

// database is the database scenario: a table made, a row upserted in a
// transaction, read back, and a statement on a missing table, handled.
func database(out *http.ResponseOutparam) {
	span := polytrace.Start("conformance.db")
	ctx := context.Background()
	fail := func(err error) {
		span.End()
		polytrace.Respond(out, 500, "text/plain", []byte(err.Error()))
	}
	db, err := sql.Open("polytrace", "conformance")
	if err != nil {
		fail(err)
		return
	}
	defer db.Close()
	// One connection, so every statement runs on the same one.
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS conformance_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"); err != nil {
		fail(err)
		return
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		fail(err)
		return
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO conformance_items (id, name) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name", 1, "tea"); err != nil {
		tx.Rollback()
		fail(err)
		return
	}
	if err := tx.Commit(); err != nil {
		fail(err)
		return
	}
	var name string
	if err := db.QueryRowContext(ctx, "SELECT name FROM conformance_items WHERE id = ?", 1).Scan(&name); err != nil {
		fail(err)
		return
	}
	kind := "none"
	if _, err := db.ExecContext(ctx, "SELECT name FROM conformance_missing"); err != nil {
		var dbErr *sqldriver.Error
		if errors.As(err, &dbErr) {
			kind = dbErr.Kind
		} else {
			kind = "another error"
		}
	}
	span.End()
	body, _ := json.Marshal(map[string]any{"language": "go", "name": name, "error_kind": kind})
	polytrace.Respond(out, 200, "application/json", body)
}

// spanCost is the span-cost scenario: n spans of five attributes, timed in
// the guest.
func spanCost(n int, out *http.ResponseOutparam) {
	started := time.Now()
	for i := 0; i < n; i++ {
		polytrace.Start("bench.span",
			polytrace.String("bench.string", "value"),
			polytrace.Bool("bench.bool", true),
			polytrace.Int("bench.int", i),
			polytrace.Float64("bench.float", 0.5),
			polytrace.String("bench.route", "/checkout"),
		).End()
	}
	elapsed := time.Since(started).Nanoseconds()
	body, _ := json.Marshal(map[string]any{"language": "go", "n": n, "elapsed_ns": elapsed})
	polytrace.Respond(out, 200, "application/json", body)
}

var benchAttributes = []polytrace.Attribute{
	polytrace.String("bench.route", "/checkout"),
	polytrace.String("bench.status", "ok"),
}

func timed(n int, out *http.ResponseOutparam, loop func()) {
	started := time.Now()
	loop()
	elapsed := time.Since(started).Nanoseconds()
	body, _ := json.Marshal(map[string]any{"language": "go", "n": n, "elapsed_ns": elapsed})
	polytrace.Respond(out, 200, "application/json", body)
}

// metricCost is the metric-cost scenario: n counter adds with two attributes.
func metricCost(n int, out *http.ResponseOutparam) {
	c, err := polytrace.NewCounter("bench.counter", "", "{item}")
	if err != nil {
		polytrace.Respond(out, 500, "text/plain", []byte(err.Error()))
		return
	}
	timed(n, out, func() {
		for i := 0; i < n; i++ {
			c.Add(1, benchAttributes...)
		}
	})
}

// logCost is the log-cost scenario: n INFO records with two attributes.
func logCost(n int, out *http.ResponseOutparam) {
	timed(n, out, func() {
		for i := 0; i < n; i++ {
			polytrace.LogInfo("bench log", benchAttributes...)
		}
	})
}
