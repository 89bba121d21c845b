//! `polytrace:telemetry/logs` host implementation: guest log records,
//! correlated with the current span.

use crate::bindings::types::KeyValue as WitKeyValue;
use crate::instance::InstanceState;
use crate::telemetry::attributes::to_key_value;

impl crate::bindings::logs::Host for InstanceState {
    fn emit(
        &mut self,
        severity: u8,
        body: String,
        attributes: Vec<WitKeyValue>,
    ) -> wasmtime::Result<()> {
        let t = &mut self.request()?.telemetry;
        if !t.logs.enabled(severity) {
            return Ok(());
        }
        let attrs = t
            .trace
            .cap_all(attributes.into_iter().map(to_key_value).collect());
        let body = crate::telemetry::attributes::cap_string(
            body,
            super::MAX_LINE.max(t.trace.value_cap()),
        );
        let span = t.trace.current().clone();
        t.logs.emit(t.component, severity, body, attrs, Some(&span));
        Ok(())
    }

    fn enabled(&mut self, severity: u8) -> wasmtime::Result<bool> {
        Ok(self.request()?.telemetry.logs.enabled(severity))
    }
}
