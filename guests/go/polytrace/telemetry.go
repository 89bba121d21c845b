// Metrics and logs supplied by the host.
//
//	orders, err := polytrace.NewCounter("orders.created", "Orders accepted", "{order}")
//	orders.Add(1, polytrace.String("status", "approved"))
//
//	slog.Info("order accepted", "order.id", id) // a host log record, in the current span
//	polytrace.LogWarn("card declined", polytrace.String("payment.method", "card"))
//
// The package makes a log/slog handler the default logger when it loads,
// so slog's package functions send records to the host; fmt.Println works
// too (each stdout line is an INFO record, stderr WARN).

package polytrace

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	logs "wit_component/polytrace_telemetry_logs"
	metrics "wit_component/polytrace_telemetry_metrics"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// MetricError is the host refusing an instrument. Kind is "invalid-name",
// "invalid-unit", "invalid-boundaries" or "rejected".
type MetricError struct {
	Kind    string
	Message string
}

func (e *MetricError) Error() string { return e.Message }

func metricError(e metrics.MetricError) error {
	switch e.Tag() {
	case metrics.MetricError_InvalidName:
		return &MetricError{"invalid-name", e.InvalidName()}
	case metrics.MetricError_InvalidUnit:
		return &MetricError{"invalid-unit", e.InvalidUnit()}
	case metrics.MetricError_InvalidBoundaries:
		return &MetricError{"invalid-boundaries", e.InvalidBoundaries()}
	default:
		return &MetricError{"rejected", e.Rejected()}
	}
}

// Counter is a monotonic sum. UpDownCounter goes both ways. Histogram is a
// distribution. Gauge keeps the last value.
type (
	Counter       struct{ inner *metrics.Counter }
	UpDownCounter struct{ inner *metrics.UpDownCounter }
	Histogram     struct{ inner *metrics.Histogram }
	Gauge         struct{ inner *metrics.Gauge }
)

// Instruments made in this instance (one request), by kind and name.
var instruments = map[string]any{}

func lookup[T any](kind, name string, make func() (T, error)) (T, error) {
	key := kind + ":" + strings.ToLower(name)
	if found, ok := instruments[key]; ok {
		return found.(T), nil
	}
	made, err := make()
	if err == nil {
		instruments[key] = made
	}
	return made, err
}

// NewCounter returns the counter `name`; asking again returns the same one.
func NewCounter(name, description, unit string) (*Counter, error) {
	return lookup("counter", name, func() (*Counter, error) {
		r := metrics.CreateCounter(name, description, unit)
		if r.IsErr() {
			return nil, metricError(r.Err())
		}
		return &Counter{r.Ok()}, nil
	})
}

func NewUpDownCounter(name, description, unit string) (*UpDownCounter, error) {
	return lookup("up-down-counter", name, func() (*UpDownCounter, error) {
		r := metrics.CreateUpDownCounter(name, description, unit)
		if r.IsErr() {
			return nil, metricError(r.Err())
		}
		return &UpDownCounter{r.Ok()}, nil
	})
}

// NewHistogram returns a histogram; boundaries (optional) are explicit
// bucket boundaries.
func NewHistogram(name, description, unit string, boundaries ...float64) (*Histogram, error) {
	return lookup("histogram", name, func() (*Histogram, error) {
		bounds := witTypes.None[[]float64]()
		if len(boundaries) > 0 {
			bounds = witTypes.Some(boundaries)
		}
		r := metrics.CreateHistogram(name, description, unit, bounds)
		if r.IsErr() {
			return nil, metricError(r.Err())
		}
		return &Histogram{r.Ok()}, nil
	})
}

func NewGauge(name, description, unit string) (*Gauge, error) {
	return lookup("gauge", name, func() (*Gauge, error) {
		r := metrics.CreateGauge(name, description, unit)
		if r.IsErr() {
			return nil, metricError(r.Err())
		}
		return &Gauge{r.Ok()}, nil
	})
}

// Add adds a non-negative amount (the host ignores others).
func (c *Counter) Add(value float64, attrs ...Attribute)       { c.inner.Add(value, attrs) }
func (c *UpDownCounter) Add(value float64, attrs ...Attribute) { c.inner.Add(value, attrs) }
func (h *Histogram) Record(value float64, attrs ...Attribute)  { h.inner.Record(value, attrs) }
func (g *Gauge) Record(value float64, attrs ...Attribute)      { g.inner.Record(value, attrs) }

// OpenTelemetry severity numbers of the plain levels.
const (
	SeverityTrace uint8 = 1
	SeverityDebug uint8 = 5
	SeverityInfo  uint8 = 9
	SeverityWarn  uint8 = 13
	SeverityError uint8 = 17
	SeverityFatal uint8 = 21
)

// Log emits a record with an OpenTelemetry severity number.
func Log(severity uint8, body string, attrs ...Attribute) { logs.Emit(severity, body, attrs) }

func LogDebug(body string, attrs ...Attribute) { Log(SeverityDebug, body, attrs...) }
func LogInfo(body string, attrs ...Attribute)  { Log(SeverityInfo, body, attrs...) }
func LogWarn(body string, attrs ...Attribute)  { Log(SeverityWarn, body, attrs...) }
func LogError(body string, attrs ...Attribute) { Log(SeverityError, body, attrs...) }

// LogHandler is a slog.Handler that emits host log records. Group names
// prefix attribute keys ("request.id" for slog.Group("request", "id", x)).
type LogHandler struct {
	attrs  []Attribute
	prefix string
}

func severityOf(level slog.Level) uint8 {
	switch {
	case level >= slog.LevelError:
		return SeverityError
	case level >= slog.LevelWarn:
		return SeverityWarn
	case level >= slog.LevelInfo:
		return SeverityInfo
	default:
		return SeverityDebug
	}
}

func (h *LogHandler) Enabled(_ context.Context, level slog.Level) bool {
	return logs.Enabled(severityOf(level))
}

func (h *LogHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := append([]Attribute(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		attrs = appendAttr(attrs, h.prefix, a)
		return true
	})
	logs.Emit(severityOf(r.Level), r.Message, attrs)
	return nil
}

func (h *LogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	attrs := append([]Attribute(nil), h.attrs...)
	for _, a := range as {
		attrs = appendAttr(attrs, h.prefix, a)
	}
	return &LogHandler{attrs: attrs, prefix: h.prefix}
}

func (h *LogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &LogHandler{attrs: h.attrs, prefix: h.prefix + name + "."}
}

func appendAttr(attrs []Attribute, prefix string, a slog.Attr) []Attribute {
	v := a.Value.Resolve()
	key := prefix + a.Key
	switch v.Kind() {
	case slog.KindGroup:
		for _, g := range v.Group() {
			attrs = appendAttr(attrs, key+".", g)
		}
		return attrs
	case slog.KindString:
		return append(attrs, String(key, v.String()))
	case slog.KindInt64:
		return append(attrs, Int64(key, v.Int64()))
	case slog.KindUint64:
		return append(attrs, Int64(key, int64(v.Uint64())))
	case slog.KindFloat64:
		return append(attrs, Float64(key, v.Float64()))
	case slog.KindBool:
		return append(attrs, Bool(key, v.Bool()))
	default:
		return append(attrs, String(key, fmt.Sprint(v.Any())))
	}
}

func init() {
	slog.SetDefault(slog.New(&LogHandler{}))
}
