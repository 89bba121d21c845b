//! Telemetry the host supplies to every guest, organized by signal as the
//! OpenTelemetry SDK is: [`traces`], [`metrics`] and [`logs`], each with its
//! provider, its export worker, its console printer and its WIT glue; shared
//! between them: [`config`] (settings), [`otlp`] (exporter factory),
//! [`batch`] (the batching worker), [`drops`] (drop counters and throttled
//! warnings), [`attributes`] (limits), [`printable`] (guest text on the
//! console), [`propagation`] and [`semconv`].
//!
//! Everything but the WIT glue is plain Rust that the unit tests exercise
//! without any wasm.

pub mod attributes;
pub mod batch;
pub mod config;
pub mod drops;
pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod printable;
pub mod propagation;
pub mod semconv;
pub mod tls;
pub mod traces;

use crate::manifest::{Component, Manifest};
use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use std::time::Duration;

pub use attributes::Adjustments;
pub use config::Settings;
pub use traces::{GuestSpan, RequestTrace, SpanExport};

/// The tracers, meters and loggers of one application and the pipelines
/// they export through.
pub struct Telemetry {
    pub traces: traces::Traces,
    pub metrics: metrics::Metrics,
    pub logs: std::sync::Arc<logs::Logs>,
    pub settings: Settings,
}

impl Telemetry {
    /// One tracer, meter and logger provider per component; must run within
    /// a tokio runtime. Finished spans and log records go to the exporters
    /// and, when given, to `store`.
    pub fn start(
        settings: Settings,
        manifest: &Manifest,
        store: Option<std::sync::Arc<crate::store::Store>>,
    ) -> anyhow::Result<Telemetry> {
        let resources: Vec<Resource> = manifest
            .components
            .iter()
            .map(|c| component_resource(manifest, c, &settings.resource_attributes))
            .collect();
        if let Some(store) = &store {
            for (c, r) in manifest.components.iter().zip(&resources) {
                let tags: Vec<serde_json::Value> = r
                    .iter()
                    .filter(|(k, _)| k.as_str() != "service.name")
                    .map(|(k, v)| crate::store::tag(k.as_str(), v))
                    .collect();
                store.register_service(
                    &c.id,
                    c.language.as_deref().unwrap_or("unknown"),
                    &serde_json::Value::Array(tags),
                );
            }
        }
        let dropped: Vec<std::sync::Arc<drops::Dropped>> =
            resources.iter().map(|_| Default::default()).collect();
        let export = SpanExport::start(
            &settings.traces,
            resources.clone(),
            store.clone(),
            dropped.clone(),
        )?;
        let metrics =
            metrics::Metrics::start(&settings.metrics, &resources, &dropped, !settings.disabled)?;
        let logs = std::sync::Arc::new(logs::Logs::start(
            &settings.logs,
            settings.console_logs,
            &resources,
            dropped,
            // Disabled: nothing is kept (guest output still prints).
            store.filter(|_| !settings.disabled),
        )?);
        Ok(Telemetry {
            traces: traces::Traces::new(resources, &settings.sampler, export),
            metrics,
            logs,
            settings,
        })
    }

    /// The tracer of component `index`.
    pub fn tracer(&self, index: usize) -> &opentelemetry_sdk::trace::SdkTracer {
        self.traces.tracer(index)
    }

    /// Export every finished span, metric and log record; used at shutdown.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (spans, metrics, logs) = tokio::join!(
            self.traces.export().flush(timeout),
            self.metrics.flush(timeout),
            self.logs.flush(timeout)
        );
        spans && metrics && logs
    }

    pub fn component_count(&self) -> usize {
        self.traces.component_count()
    }
}

/// The resource of one component: it is its own service.
/// `from_env` is `OTEL_RESOURCE_ATTRIBUTES`, decoded ([`config::parse_resource_attributes`]):
/// it applies to every component, but `service.name` is always the
/// component id (whatever `OTEL_SERVICE_NAME` or the variable say), as are
/// the attributes below.
pub fn component_resource(
    manifest: &Manifest,
    c: &Component,
    from_env: &[(String, String)],
) -> Resource {
    let mut attrs = vec![
        KeyValue::new("service.name", c.id.clone()),
        KeyValue::new("service.namespace", manifest.app.clone()),
        KeyValue::new("telemetry.sdk.name", "polytrace"),
        KeyValue::new("telemetry.sdk.language", "rust"),
        KeyValue::new("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("process.runtime.name", "wasmtime"),
        KeyValue::new(
            "polytrace.guest.language",
            c.language.clone().unwrap_or_else(|| "unknown".into()),
        ),
    ];
    if let Some(v) = c.version.clone().or_else(|| manifest.version.clone()) {
        attrs.push(KeyValue::new("service.version", v));
    }
    Resource::builder_empty()
        .with_attributes(
            from_env
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_attributes(attrs)
        .build()
}

/// The telemetry one request's guest code reaches, installed into the
/// instance for the request and taken out after it: the trace state, the
/// component's instruments and the log pipeline.
pub struct RequestTelemetry {
    pub trace: RequestTrace,
    /// Index of the component the request runs in.
    pub component: usize,
    pub metrics: std::sync::Arc<metrics::ComponentMetrics>,
    pub logs: std::sync::Arc<logs::Logs>,
}
