//! `polytrace:telemetry/metrics` host implementation: guest instruments,
//! created and recorded through the component's [`ComponentMetrics`](super::ComponentMetrics).

use super::{GuestInstrument, InstrumentError, Kind};
use crate::bindings::metrics as wit_metrics;
use crate::bindings::types::KeyValue as WitKeyValue;
use crate::instance::InstanceState;
use crate::telemetry::attributes::to_key_value;
use wasmtime::component::Resource;

impl InstanceState {
    fn create_instrument(
        &mut self,
        kind: Kind,
        name: String,
        description: String,
        unit: String,
        boundaries: Option<Vec<f64>>,
    ) -> wasmtime::Result<Result<Resource<GuestInstrument>, wit_metrics::MetricError>> {
        let (t, table) = self.telemetry_and_table()?;
        let made = t
            .metrics
            .instrument(kind, name, description, unit, boundaries);
        Ok(match made {
            Ok(instrument) => Ok(table.push(instrument)?),
            Err(e) => Err(match e {
                InstrumentError::InvalidName(m) => wit_metrics::MetricError::InvalidName(m),
                InstrumentError::InvalidUnit(m) => wit_metrics::MetricError::InvalidUnit(m),
                InstrumentError::InvalidBoundaries(m) => {
                    wit_metrics::MetricError::InvalidBoundaries(m)
                }
                InstrumentError::Rejected(m) => wit_metrics::MetricError::Rejected(m),
            }),
        })
    }

    fn measure(
        &mut self,
        instrument: &Resource<GuestInstrument>,
        value: f64,
        attributes: Vec<WitKeyValue>,
    ) -> wasmtime::Result<()> {
        let (t, table) = self.telemetry_and_table()?;
        let attrs = t
            .trace
            .cap_all(attributes.into_iter().map(to_key_value).collect());
        table.get(instrument)?.record(value, &attrs);
        Ok(())
    }
}

impl wit_metrics::Host for InstanceState {
    fn create_counter(
        &mut self,
        name: String,
        description: String,
        unit: String,
    ) -> wasmtime::Result<Result<Resource<GuestInstrument>, wit_metrics::MetricError>> {
        self.create_instrument(Kind::Counter, name, description, unit, None)
    }

    fn create_up_down_counter(
        &mut self,
        name: String,
        description: String,
        unit: String,
    ) -> wasmtime::Result<Result<Resource<GuestInstrument>, wit_metrics::MetricError>> {
        self.create_instrument(Kind::UpDownCounter, name, description, unit, None)
    }

    fn create_histogram(
        &mut self,
        name: String,
        description: String,
        unit: String,
        boundaries: Option<Vec<f64>>,
    ) -> wasmtime::Result<Result<Resource<GuestInstrument>, wit_metrics::MetricError>> {
        self.create_instrument(Kind::Histogram, name, description, unit, boundaries)
    }

    fn create_gauge(
        &mut self,
        name: String,
        description: String,
        unit: String,
    ) -> wasmtime::Result<Result<Resource<GuestInstrument>, wit_metrics::MetricError>> {
        self.create_instrument(Kind::Gauge, name, description, unit, None)
    }
}

/// The four instrument resources share one host type and one behaviour.
macro_rules! instrument_resource {
    ($trait:ident, $method:ident) => {
        impl wit_metrics::$trait for InstanceState {
            fn $method(
                &mut self,
                instrument: Resource<GuestInstrument>,
                value: f64,
                attributes: Vec<WitKeyValue>,
            ) -> wasmtime::Result<()> {
                self.measure(&instrument, value, attributes)
            }

            fn drop(&mut self, instrument: Resource<GuestInstrument>) -> wasmtime::Result<()> {
                self.table.delete(instrument)?;
                Ok(())
            }
        }
    };
}

instrument_resource!(HostCounter, add);
instrument_resource!(HostUpDownCounter, add);
instrument_resource!(HostHistogram, record);
instrument_resource!(HostGauge, record);
