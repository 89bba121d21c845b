//! Guest logs: records from the WIT `logs` interface and from every line a
//! guest writes to stdout or stderr, stamped with the current span and the
//! component's resource, exported over OTLP and printed on the console.
//!
//! Emitting never blocks a request: records go onto one bounded queue
//! ([`batch`]); a worker on the tokio runtime batches them per component,
//! prints what the console level asks for, hands records to the trace store
//! and then the batches to the OTLP exporters, whose exports run on their
//! own (a slow or absent backend never holds back the console or the
//! store). A full queue drops the record and counts it
//! (`polytrace.telemetry.dropped{signal="log_records"}`), so a guest that
//! prints a million lines costs dropped records, not memory or latency.

pub mod console;
pub mod host;
pub mod stdio;

use super::batch::{self, BatchQueue, Batches, Export, FlushRequest};
use super::config::{ConsoleLogs, Exporter, LogsSettings};
use super::drops::Dropped;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::SpanContext;
use opentelemetry::{InstrumentationScope, Key, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    LogBatch, LogExporter as _, LogProcessor, SdkLogRecord, SdkLogger, SdkLoggerProvider,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Severity of a line a guest wrote to stdout.
pub const STDOUT_SEVERITY: u8 = 9;
/// Severity of a line a guest wrote to stderr.
pub const STDERR_SEVERITY: u8 = 13;

/// Longest line kept from stdout/stderr; a longer one becomes several records.
pub const MAX_LINE: usize = 8192;

/// The OpenTelemetry severity and its short name for a severity number;
/// `None` for 0 (unspecified). Numbers past 24 are 24 (FATAL4).
pub fn severity(n: u8) -> Option<(Severity, &'static str)> {
    use Severity::*;
    Some(match n {
        0 => return None,
        1 => (Trace, "TRACE"),
        2 => (Trace2, "TRACE2"),
        3 => (Trace3, "TRACE3"),
        4 => (Trace4, "TRACE4"),
        5 => (Debug, "DEBUG"),
        6 => (Debug2, "DEBUG2"),
        7 => (Debug3, "DEBUG3"),
        8 => (Debug4, "DEBUG4"),
        9 => (Info, "INFO"),
        10 => (Info2, "INFO2"),
        11 => (Info3, "INFO3"),
        12 => (Info4, "INFO4"),
        13 => (Warn, "WARN"),
        14 => (Warn2, "WARN2"),
        15 => (Warn3, "WARN3"),
        16 => (Warn4, "WARN4"),
        17 => (Error, "ERROR"),
        18 => (Error2, "ERROR2"),
        19 => (Error3, "ERROR3"),
        20 => (Error4, "ERROR4"),
        21 => (Fatal, "FATAL"),
        22 => (Fatal2, "FATAL2"),
        23 => (Fatal3, "FATAL3"),
        _ => (Fatal4, "FATAL4"),
    })
}

/// The logs of an application: one logger per component.
pub struct Logs {
    loggers: Vec<SdkLogger>,
    _providers: Vec<SdkLoggerProvider>,
    flush: mpsc::Sender<FlushRequest>,
    console: ConsoleLogs,
    /// Records go somewhere besides the console (OTLP or the store).
    kept: bool,
}

impl Logs {
    /// Start the worker. Must run within a tokio runtime.
    pub fn start(
        settings: &LogsSettings,
        console: ConsoleLogs,
        resources: &[Resource],
        dropped: Vec<Arc<Dropped>>,
        store: Option<Arc<crate::store::Store>>,
    ) -> anyhow::Result<Logs> {
        let queue = Arc::new(BatchQueue::new(
            settings.batch.max_queue_size,
            settings.batch.max_export_batch_size,
        ));
        let mut exporters = Vec::new();
        let mut providers = Vec::new();
        let mut loggers = Vec::new();
        let mut services = Vec::new();
        for (i, resource) in resources.iter().enumerate() {
            if settings.exporter == Exporter::Otlp {
                let mut e = super::otlp::log_exporter(settings)?;
                e.set_resource(resource);
                exporters.push(Arc::new(e));
            }
            let provider = SdkLoggerProvider::builder()
                .with_resource(resource.clone())
                .with_log_processor(Enqueue {
                    index: i,
                    queue: queue.clone(),
                    dropped: dropped[i].clone(),
                })
                .build();
            loggers.push(provider.logger("polytrace"));
            providers.push(provider);
            services.push(
                resource
                    .get(&Key::from_static_str("service.name"))
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            );
        }
        let (flush, flush_rx) = mpsc::channel(4);
        let worker = Worker {
            exporters,
            services,
            console,
            scope: Arc::new(InstrumentationScope::builder("polytrace").build()),
            outcomes: Arc::new(Outcomes {
                settings: settings.clone(),
                dropped,
                failed_warning: Default::default(),
                skipped_warning: Default::default(),
            }),
            store: store.clone(),
        };
        tokio::spawn(batch::run(
            queue,
            resources.len(),
            worker,
            settings.batch.schedule_delay,
            flush_rx,
        ));
        Ok(Logs {
            loggers,
            _providers: providers,
            flush,
            console,
            kept: settings.exporter == Exporter::Otlp || store.is_some(),
        })
    }

    /// Whether a record of severity `n` goes anywhere.
    pub fn enabled(&self, n: u8) -> bool {
        self.kept
            || self
                .console
                .min_severity
                .is_some_and(|min| n == 0 || n >= min)
    }

    /// Emit one record for component `index`, correlated with `span`.
    pub fn emit(
        &self,
        index: usize,
        severity_number: u8,
        body: String,
        attributes: Vec<KeyValue>,
        span: Option<&SpanContext>,
    ) {
        if !self.enabled(severity_number) {
            return;
        }
        let logger = &self.loggers[index];
        let mut record = logger.create_log_record();
        let now = SystemTime::now();
        record.set_timestamp(now);
        record.set_observed_timestamp(now);
        if let Some((sev, text)) = severity(severity_number) {
            record.set_severity_number(sev);
            record.set_severity_text(text);
        }
        record.set_body(AnyValue::from(body));
        record.add_attributes(
            attributes
                .into_iter()
                .map(|kv| (kv.key, any_value(kv.value))),
        );
        match span {
            Some(cx) if cx.is_valid() => {
                record.set_trace_context(cx.trace_id(), cx.span_id(), Some(cx.trace_flags()))
            }
            _ => {}
        }
        logger.emit(record);
    }

    /// Export and print every record queued so far; waits at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> bool {
        batch::flush(&self.flush, timeout).await
    }
}

fn any_value(v: opentelemetry::Value) -> AnyValue {
    use opentelemetry::{Array, Value};
    match v {
        Value::Bool(b) => AnyValue::Boolean(b),
        Value::I64(i) => AnyValue::Int(i),
        Value::F64(f) => AnyValue::Double(f),
        Value::String(s) => AnyValue::String(s),
        Value::Array(Array::Bool(v)) => {
            AnyValue::ListAny(Box::new(v.into_iter().map(AnyValue::Boolean).collect()))
        }
        Value::Array(Array::I64(v)) => {
            AnyValue::ListAny(Box::new(v.into_iter().map(AnyValue::Int).collect()))
        }
        Value::Array(Array::F64(v)) => {
            AnyValue::ListAny(Box::new(v.into_iter().map(AnyValue::Double).collect()))
        }
        Value::Array(Array::String(v)) => {
            AnyValue::ListAny(Box::new(v.into_iter().map(AnyValue::String).collect()))
        }
        other => AnyValue::String(other.to_string().into()),
    }
}

/// The processor of one component's logger: onto the shared queue, or
/// dropped and counted when it is full.
#[derive(Debug)]
struct Enqueue {
    index: usize,
    queue: Arc<BatchQueue<SdkLogRecord>>,
    dropped: Arc<Dropped>,
}

impl LogProcessor for Enqueue {
    fn emit(&self, record: &mut SdkLogRecord, _scope: &InstrumentationScope) {
        if !self.queue.push(self.index, record.clone()) {
            self.dropped.add_log_records(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

struct Worker {
    exporters: Vec<Arc<opentelemetry_otlp::LogExporter>>,
    services: Vec<String>,
    console: ConsoleLogs,
    scope: Arc<InstrumentationScope>,
    outcomes: Arc<Outcomes>,
    /// The embedded store keeps the records of spans, for the viewer.
    store: Option<Arc<crate::store::Store>>,
}

impl Batches<SdkLogRecord> for Worker {
    fn deliver(&mut self, i: usize, batch: Vec<SdkLogRecord>) -> Option<Export> {
        if let Some(min) = self.console.min_severity {
            console::print_records(&self.services[i], &batch, min, self.console.json);
        }
        let Some(exporter) = self.exporters.get(i).cloned() else {
            if let Some(store) = &self.store {
                store.add_logs(&self.services[i], batch);
            }
            return None;
        };
        if let Some(store) = &self.store {
            store.add_logs(&self.services[i], batch.clone());
        }
        let n = batch.len() as u64;
        let (scope, outcomes, skipped) = (
            self.scope.clone(),
            self.outcomes.clone(),
            self.outcomes.clone(),
        );
        Some(Export {
            send: Box::pin(async move {
                let data: Vec<(&SdkLogRecord, &InstrumentationScope)> =
                    batch.iter().map(|r| (r, &*scope)).collect();
                let result = tokio::time::timeout(
                    outcomes.settings.otlp.timeout,
                    exporter.export(LogBatch::new(&data)),
                )
                .await;
                match result {
                    Ok(Ok(())) => outcomes.settings.otlp.errors.clear(),
                    Ok(Err(e)) => outcomes.failed(i, n, &e.to_string()),
                    Err(_) => outcomes.failed(i, n, "timed out"),
                }
            }),
            skipped: Box::new(move || skipped.skipped(i, n)),
        })
    }
}

/// How log exports end, counted and said (once per 30 s each), from the
/// export stage's tasks.
struct Outcomes {
    settings: LogsSettings,
    dropped: Vec<Arc<Dropped>>,
    failed_warning: super::drops::SharedThrottle,
    skipped_warning: super::drops::SharedThrottle,
}

impl Outcomes {
    fn failed(&self, i: usize, n: u64, why: &str) {
        self.dropped[i].add_log_records(n);
        let why = self.settings.otlp.errors.explain(why);
        if self.failed_warning.ready() {
            tracing::warn!(
                endpoint = self.settings.otlp.endpoint,
                "log export failed ({why}); {n} records not exported. Requests, the console \
                 and the trace store are not affected"
            );
        }
    }

    fn skipped(&self, i: usize, n: u64) {
        self.dropped[i].add_log_records(n);
        if self.skipped_warning.ready() {
            tracing::warn!(
                endpoint = self.settings.otlp.endpoint,
                "the OTLP backend takes log batches slower than they come ({} exports in \
                 flight, each waiting up to OTEL_EXPORTER_OTLP_TIMEOUT): {n} records not \
                 exported. Requests, the console and the trace store are not affected",
                super::batch::MAX_CONCURRENT_EXPORTS
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_and_their_names() {
        assert_eq!(severity(0), None);
        assert_eq!(severity(9), Some((Severity::Info, "INFO")));
        assert_eq!(severity(13), Some((Severity::Warn, "WARN")));
        assert_eq!(severity(18), Some((Severity::Error2, "ERROR2")));
        assert_eq!(severity(200), Some((Severity::Fatal4, "FATAL4")));
    }
}
