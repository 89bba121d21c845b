// Package otel has the shapes of go.opentelemetry.io/otel's global API,
// backed by the host: otel.Tracer(name).Start(ctx, "check_fraud_rules"),
// otel.Meter(name).Int64Counter("verifications.performed"). There is no
// provider, processor or exporter to set up: the Set* functions accept and
// ignore theirs. Code written against the official packages ports by
// changing the import paths:
//
//	go.opentelemetry.io/otel             → wit_component/polytrace/otel
//	go.opentelemetry.io/otel/attribute   → wit_component/polytrace/otel/attribute
//	go.opentelemetry.io/otel/codes       → wit_component/polytrace/otel/codes
//	go.opentelemetry.io/otel/trace       → wit_component/polytrace/otel/trace
//	go.opentelemetry.io/otel/metric      → wit_component/polytrace/otel/metric
//	go.opentelemetry.io/otel/propagation → wit_component/polytrace/otel/propagation
package otel

import (
	"wit_component/polytrace/otel/metric"
	"wit_component/polytrace/otel/propagation"
	"wit_component/polytrace/otel/trace"
)

// Tracer is GetTracerProvider().Tracer(name).
func Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return trace.Provider.Tracer(name, opts...)
}

// Meter is GetMeterProvider().Meter(name).
func Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return metric.Provider.Meter(name, opts...)
}

func GetTracerProvider() trace.TracerProvider { return trace.Provider }
func GetMeterProvider() metric.MeterProvider  { return metric.Provider }

// GetTextMapPropagator is W3C Trace Context.
func GetTextMapPropagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// SetTracerProvider, SetMeterProvider and SetTextMapPropagator accept and
// ignore theirs: the host is the SDK.
func SetTracerProvider(trace.TracerProvider)             {}
func SetMeterProvider(metric.MeterProvider)              {}
func SetTextMapPropagator(propagation.TextMapPropagator) {}
