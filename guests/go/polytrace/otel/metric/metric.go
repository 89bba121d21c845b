// Package metric has the shapes of go.opentelemetry.io/otel/metric, backed
// by the host: meter.Int64Counter("orders.created", metric.WithUnit("{order}")),
// counter.Add(ctx, 1, metric.WithAttributes(attribute.String("k", "v"))).
// Code written against the official package ports by changing the import
// path to wit_component/polytrace/otel/metric.
//
// The host aggregates and exports with the component's resource; the
// instrumentation scope is the component's. Observable (callback)
// instruments are not offered: the host never calls into an instance
// between requests.
package metric

import (
	"context"

	"wit_component/polytrace"
	"wit_component/polytrace/otel/attribute"
)

// Meter creates instruments. An instrument the host refuses (a bad name,
// or a name taken by another kind) returns the host's error and a no-op
// instrument, as the official API does.
type Meter interface {
	Int64Counter(name string, options ...InstrumentOption) (Int64Counter, error)
	Float64Counter(name string, options ...InstrumentOption) (Float64Counter, error)
	Int64UpDownCounter(name string, options ...InstrumentOption) (Int64UpDownCounter, error)
	Float64UpDownCounter(name string, options ...InstrumentOption) (Float64UpDownCounter, error)
	Int64Histogram(name string, options ...InstrumentOption) (Int64Histogram, error)
	Float64Histogram(name string, options ...InstrumentOption) (Float64Histogram, error)
	Int64Gauge(name string, options ...InstrumentOption) (Int64Gauge, error)
	Float64Gauge(name string, options ...InstrumentOption) (Float64Gauge, error)
}

// MeterProvider gives meters; every meter is the component's.
type MeterProvider interface {
	Meter(name string, options ...MeterOption) Meter
}

// MeterOption (version, schema URL) is accepted and ignored.
type MeterOption interface{ applyMeter() }

type ignored struct{}

func (ignored) applyMeter() {}

func WithInstrumentationVersion(string) MeterOption { return ignored{} }
func WithSchemaURL(string) MeterOption              { return ignored{} }

type instrumentConfig struct {
	description, unit string
	boundaries        []float64
}

// InstrumentOption configures an instrument.
type InstrumentOption interface{ apply(*instrumentConfig) }

type optionFunc func(*instrumentConfig)

func (f optionFunc) apply(c *instrumentConfig) { f(c) }

func WithDescription(d string) InstrumentOption {
	return optionFunc(func(c *instrumentConfig) { c.description = d })
}
func WithUnit(u string) InstrumentOption { return optionFunc(func(c *instrumentConfig) { c.unit = u }) }

// WithExplicitBucketBoundaries sets a histogram's bucket boundaries.
func WithExplicitBucketBoundaries(bounds ...float64) InstrumentOption {
	return optionFunc(func(c *instrumentConfig) { c.boundaries = bounds })
}

// MeasurementOption carries a measurement's attributes; AddOption and
// RecordOption are the same here.
type MeasurementOption interface{ attributes() []attribute.KeyValue }
type AddOption = MeasurementOption
type RecordOption = MeasurementOption

type attributesOption []attribute.KeyValue

func (o attributesOption) attributes() []attribute.KeyValue { return o }

// WithAttributes sets a measurement's attributes.
func WithAttributes(attributes ...attribute.KeyValue) MeasurementOption {
	return attributesOption(attributes)
}

func attrs(options []MeasurementOption) []attribute.KeyValue {
	if len(options) == 1 {
		return options[0].attributes()
	}
	var out []attribute.KeyValue
	for _, o := range options {
		out = append(out, o.attributes()...)
	}
	return out
}

type (
	Int64Counter interface {
		Add(context.Context, int64, ...AddOption)
	}
	Float64Counter interface {
		Add(context.Context, float64, ...AddOption)
	}
	Int64UpDownCounter interface {
		Add(context.Context, int64, ...AddOption)
	}
	Float64UpDownCounter interface {
		Add(context.Context, float64, ...AddOption)
	}
	Int64Histogram interface {
		Record(context.Context, int64, ...RecordOption)
	}
	Float64Histogram interface {
		Record(context.Context, float64, ...RecordOption)
	}
	Int64Gauge interface {
		Record(context.Context, int64, ...RecordOption)
	}
	Float64Gauge interface {
		Record(context.Context, float64, ...RecordOption)
	}
)

// adder and recorder are the host's instruments (nil when refused).
type adder struct {
	add func(float64, ...polytrace.Attribute)
}

func (a adder) addFloat(v float64, o []AddOption) {
	if a.add != nil {
		a.add(v, attrs(o)...)
	}
}

type int64Adder struct{ adder }

func (a int64Adder) Add(_ context.Context, v int64, o ...AddOption) { a.addFloat(float64(v), o) }

type float64Adder struct{ adder }

func (a float64Adder) Add(_ context.Context, v float64, o ...AddOption) { a.addFloat(v, o) }

type int64Recorder struct{ adder }

func (r int64Recorder) Record(_ context.Context, v int64, o ...RecordOption) {
	r.addFloat(float64(v), o)
}

type float64Recorder struct{ adder }

func (r float64Recorder) Record(_ context.Context, v float64, o ...RecordOption) { r.addFloat(v, o) }

type meter struct{}

type provider struct{}

func (provider) Meter(string, ...MeterOption) Meter { return meter{} }

// Provider is the global meter provider (otel.GetMeterProvider).
var Provider MeterProvider = provider{}

func configure(options []InstrumentOption) instrumentConfig {
	var c instrumentConfig
	for _, o := range options {
		o.apply(&c)
	}
	return c
}

func counter(name string, options []InstrumentOption) (adder, error) {
	c := configure(options)
	made, err := polytrace.NewCounter(name, c.description, c.unit)
	if err != nil {
		return adder{}, err
	}
	return adder{made.Add}, nil
}

func upDown(name string, options []InstrumentOption) (adder, error) {
	c := configure(options)
	made, err := polytrace.NewUpDownCounter(name, c.description, c.unit)
	if err != nil {
		return adder{}, err
	}
	return adder{made.Add}, nil
}

func histogram(name string, options []InstrumentOption) (adder, error) {
	c := configure(options)
	made, err := polytrace.NewHistogram(name, c.description, c.unit, c.boundaries...)
	if err != nil {
		return adder{}, err
	}
	return adder{made.Record}, nil
}

func gauge(name string, options []InstrumentOption) (adder, error) {
	c := configure(options)
	made, err := polytrace.NewGauge(name, c.description, c.unit)
	if err != nil {
		return adder{}, err
	}
	return adder{made.Record}, nil
}

func (meter) Int64Counter(name string, o ...InstrumentOption) (Int64Counter, error) {
	a, err := counter(name, o)
	return int64Adder{a}, err
}
func (meter) Float64Counter(name string, o ...InstrumentOption) (Float64Counter, error) {
	a, err := counter(name, o)
	return float64Adder{a}, err
}
func (meter) Int64UpDownCounter(name string, o ...InstrumentOption) (Int64UpDownCounter, error) {
	a, err := upDown(name, o)
	return int64Adder{a}, err
}
func (meter) Float64UpDownCounter(name string, o ...InstrumentOption) (Float64UpDownCounter, error) {
	a, err := upDown(name, o)
	return float64Adder{a}, err
}
func (meter) Int64Histogram(name string, o ...InstrumentOption) (Int64Histogram, error) {
	a, err := histogram(name, o)
	return int64Recorder{a}, err
}
func (meter) Float64Histogram(name string, o ...InstrumentOption) (Float64Histogram, error) {
	a, err := histogram(name, o)
	return float64Recorder{a}, err
}
func (meter) Int64Gauge(name string, o ...InstrumentOption) (Int64Gauge, error) {
	a, err := gauge(name, o)
	return int64Recorder{a}, err
}
func (meter) Float64Gauge(name string, o ...InstrumentOption) (Float64Gauge, error) {
	a, err := gauge(name, o)
	return float64Recorder{a}, err
}
