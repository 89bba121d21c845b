//! Metric instruments supplied by the host.
//!
//! ```ignore
//! use polytrace_guest::{kv, metrics};
//!
//! let orders = metrics::counter("orders.created", "Orders accepted", "{order}")?;
//! orders.add(1.0, [kv("status", "approved")]);
//! ```
//!
//! An instance lives for one request, so create instruments where you use
//! them: asking again for the same name and kind is a cheap lookup in the
//! host, which aggregates across requests and exports with this component's
//! resource.

use crate::KeyValue;
use crate::bindings::polytrace::telemetry::metrics as wit;

/// Why an instrument could not be created (a bad name, unit or boundaries,
/// or a name taken by another kind); the message says what to fix. It is a
/// `std::error::Error`, so `?` works.
pub use wit::MetricError;

/// A monotonic sum.
pub struct Counter(wit::Counter);
/// A sum that goes up and down.
pub struct UpDownCounter(wit::UpDownCounter);
/// A distribution of values.
pub struct Histogram(wit::Histogram);
/// The last value recorded.
pub struct Gauge(wit::Gauge);

/// A counter: `counter("orders.created", "Orders accepted", "{order}")`.
pub fn counter(name: &str, description: &str, unit: &str) -> Result<Counter, MetricError> {
    wit::create_counter(name, description, unit).map(Counter)
}

pub fn up_down_counter(
    name: &str,
    description: &str,
    unit: &str,
) -> Result<UpDownCounter, MetricError> {
    wit::create_up_down_counter(name, description, unit).map(UpDownCounter)
}

/// A histogram with the SDK's default buckets.
pub fn histogram(name: &str, description: &str, unit: &str) -> Result<Histogram, MetricError> {
    wit::create_histogram(name, description, unit, None).map(Histogram)
}

/// A histogram with explicit bucket boundaries.
pub fn histogram_with_boundaries(
    name: &str,
    description: &str,
    unit: &str,
    boundaries: &[f64],
) -> Result<Histogram, MetricError> {
    wit::create_histogram(name, description, unit, Some(boundaries)).map(Histogram)
}

pub fn gauge(name: &str, description: &str, unit: &str) -> Result<Gauge, MetricError> {
    wit::create_gauge(name, description, unit).map(Gauge)
}

impl Counter {
    /// Add a non-negative amount (others are ignored by the host).
    pub fn add(&self, value: f64, attributes: impl IntoIterator<Item = KeyValue>) {
        self.0
            .add(value, &attributes.into_iter().collect::<Vec<_>>());
    }
}

impl UpDownCounter {
    pub fn add(&self, value: f64, attributes: impl IntoIterator<Item = KeyValue>) {
        self.0
            .add(value, &attributes.into_iter().collect::<Vec<_>>());
    }
}

impl Histogram {
    pub fn record(&self, value: f64, attributes: impl IntoIterator<Item = KeyValue>) {
        self.0
            .record(value, &attributes.into_iter().collect::<Vec<_>>());
    }
}

impl Gauge {
    pub fn record(&self, value: f64, attributes: impl IntoIterator<Item = KeyValue>) {
        self.0
            .record(value, &attributes.into_iter().collect::<Vec<_>>());
    }
}
