//! Span export: one bounded queue for every component, a batching worker on
//! the tokio runtime, and one OTLP exporter per component (each carries its
//! component's resource, so a backend sees one service per component).
//!
//! `on_end` never blocks and never wakes anyone for a single span (see
//! [`batch`]). When the queue is full the span is dropped and counted. The
//! worker prints a batch (console exporter) and hands it to the embedded
//! store before its OTLP export starts, and exports run on their own
//! ([`batch::ExportStage`]): a backend that is down, slow or hangs only ever
//! costs spans the backend does not get, never the console's or the store's.

use super::encoded::{EncodedSpan, Scopes};
use super::otlp_http::HttpSpanExporter;
use crate::telemetry::batch::{self, BatchQueue, Batches, Export, FlushRequest};
use crate::telemetry::config::{Exporter, Protocol, TracesSettings};
use crate::telemetry::drops::{Dropped, Throttle};
use crate::telemetry::otlp;
use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Counters of the export pipeline, readable while it runs.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans acknowledged by the backend.
    pub exported: AtomicU64,
    /// Spans dropped: queue full, or the backend failed or timed out.
    pub dropped: AtomicU64,
    /// Of `dropped`, those that found the queue full.
    pub queue_full: AtomicU64,
}

/// What span processors and the worker share.
#[derive(Debug)]
struct Shared {
    queue: Arc<BatchQueue<EncodedSpan>>,
    /// The instrumentation scopes the queued spans name.
    scopes: Scopes,
    stats: ExportStats,
    /// Per component, for the `polytrace.telemetry.dropped` metric.
    dropped: Vec<Arc<Dropped>>,
}

/// The sending side of the pipeline; cheap to clone.
#[derive(Clone, Debug)]
pub struct SpanExport {
    shared: Arc<Shared>,
    flush: mpsc::Sender<FlushRequest>,
}

impl SpanExport {
    /// Start the worker. `resources[i]` is the resource of component `i`.
    /// Must be called within a tokio runtime.
    pub fn start(
        settings: &TracesSettings,
        resources: Vec<Resource>,
        store: Option<Arc<crate::store::Store>>,
        dropped: Vec<Arc<Dropped>>,
    ) -> anyhow::Result<SpanExport> {
        let shared = Arc::new(Shared {
            queue: Arc::new(BatchQueue::new(
                settings.batch.max_queue_size,
                settings.batch.max_export_batch_size,
            )),
            scopes: Scopes::default(),
            stats: ExportStats::default(),
            dropped,
        });
        let (flush, flush_rx) = mpsc::channel(8);
        let mut exporters = Vec::with_capacity(resources.len());
        if settings.exporter == Exporter::Otlp {
            for resource in &resources {
                exporters.push(span_exporter(settings, resource)?);
            }
        }
        let worker = Worker {
            store,
            shared: shared.clone(),
            exporters,
            services: resources
                .iter()
                .map(|r| {
                    r.get(&opentelemetry::Key::from_static_str("service.name"))
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                })
                .collect(),
            settings: settings.clone(),
            outcomes: Arc::new(Outcomes {
                shared: shared.clone(),
                endpoint: settings.otlp.endpoint.clone(),
                errors: settings.otlp.errors.clone(),
                failed_warning: Default::default(),
                skipped_warning: Default::default(),
            }),
            reported_queue_full: 0,
            queue_full_warning: Throttle::default(),
        };
        tokio::spawn(batch::run(
            shared.queue.clone(),
            resources.len(),
            worker,
            settings.batch.schedule_delay,
            flush_rx,
        ));
        Ok(SpanExport { shared, flush })
    }

    /// The processor to install in component `index`'s tracer provider.
    pub fn processor(&self, index: usize) -> ComponentProcessor {
        ComponentProcessor {
            index,
            pipeline: self.clone(),
        }
    }

    /// A pipeline with no worker, for tests: spans stay queued until
    /// [`SpanExport::drain`].
    #[cfg(test)]
    pub(crate) fn detached(components: usize) -> SpanExport {
        let shared = Arc::new(Shared {
            queue: Arc::new(BatchQueue::new(100_000, 512)),
            scopes: Scopes::default(),
            stats: ExportStats::default(),
            dropped: (0..components)
                .map(|_| Arc::new(Dropped::default()))
                .collect(),
        });
        SpanExport {
            shared,
            flush: mpsc::channel(1).0,
        }
    }

    /// Everything queued, oldest first (tests).
    #[cfg(test)]
    pub(crate) fn drain(&self) -> Vec<(usize, EncodedSpan)> {
        self.shared.queue.take(usize::MAX).0
    }

    /// The index of `scope` in the table queued spans name their scope by.
    pub fn scope_index(&self, scope: &opentelemetry::InstrumentationScope) -> u32 {
        self.shared.scopes.index(scope)
    }

    /// Queue a finished span of component `index`; never blocks. A full
    /// queue drops it, counted.
    pub fn push(&self, index: usize, span: EncodedSpan) {
        let shared = &self.shared;
        if !shared.queue.push(index, span) {
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            shared.stats.queue_full.fetch_add(1, Ordering::Relaxed);
            shared.dropped[index].add_spans(1);
        }
    }

    pub fn stats(&self) -> &ExportStats {
        &self.shared.stats
    }

    /// Export everything queued so far; waits at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> bool {
        batch::flush(&self.flush, timeout).await
    }
}

struct Worker {
    /// The embedded store gets every batch the exporters get.
    store: Option<Arc<crate::store::Store>>,
    shared: Arc<Shared>,
    exporters: Vec<SpanExporter>,
    /// service.name of each component, for the console exporter.
    services: Vec<String>,
    settings: TracesSettings,
    outcomes: Arc<Outcomes>,
    /// `queue_full` when last reported, and when.
    reported_queue_full: u64,
    queue_full_warning: Throttle,
}

impl Batches<EncodedSpan> for Worker {
    fn before_drain(&mut self) {
        self.report_queue_full();
    }

    fn deliver(&mut self, i: usize, batch: Vec<EncodedSpan>) -> Option<Export> {
        use SpanExporter as Otlp;
        let n = batch.len() as u64;
        if self.settings.console {
            super::console::print_spans(&self.services[i], &batch);
            if self.exporters.is_empty() {
                self.shared.stats.exported.fetch_add(n, Ordering::Relaxed);
            }
        }
        let send: std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> =
            match self.exporters.get_mut(i) {
                // exporter "none": spans are made (and propagate) but go nowhere.
                None => {
                    if let Some(store) = &self.store {
                        store.add(&self.services[i], batch);
                    }
                    return None;
                }
                // Framed from the borrowed batch; the store then takes the
                // batch itself.
                Some(Otlp::Http(exporter)) => {
                    let body = exporter.body(&batch, &self.shared.scopes);
                    Box::pin(exporter.send(body))
                }
                // opentelemetry-otlp's gRPC exporter takes `SpanData`.
                Some(Otlp::Grpc(exporter)) => {
                    let scopes = &self.shared.scopes;
                    let spans = batch
                        .iter()
                        .map(|s| s.to_span_data(scopes.get(s.scope())))
                        .collect();
                    let exporter = exporter.clone();
                    let timeout = self.settings.otlp.timeout;
                    Box::pin(async move {
                        match tokio::time::timeout(timeout, exporter.export(spans)).await {
                            Ok(result) => result.map_err(|e| e.to_string()),
                            Err(_) => Err("timed out".into()),
                        }
                    })
                }
            };
        if let Some(store) = &self.store {
            store.add(&self.services[i], batch);
        }
        let (outcomes, skipped) = (self.outcomes.clone(), self.outcomes.clone());
        Some(Export {
            send: Box::pin(async move {
                match send.await {
                    Ok(()) => outcomes.exported(n),
                    Err(e) => outcomes.failed(i, n, &e),
                }
            }),
            skipped: Box::new(move || skipped.skipped(i, n)),
        })
    }
}

impl Worker {
    /// Say (once per 30 s) that spans found the queue full.
    fn report_queue_full(&mut self) {
        let full = self.shared.stats.queue_full.load(Ordering::Relaxed);
        let reported = self.reported_queue_full;
        if full > reported && self.queue_full_warning.ready() {
            self.reported_queue_full = full;
            tracing::warn!(
                "span queue full: {} spans dropped ({full} in all); spans end faster than the \
                 host batches them, so neither the backend, the console nor the trace store \
                 got them. Requests are not affected. Raise OTEL_BSP_MAX_QUEUE_SIZE ({})",
                full - reported,
                self.shared.queue.max_queue_size
            );
        }
    }
}

/// How span exports end, counted and said (once per 30 s each), from the
/// export stage's tasks.
struct Outcomes {
    shared: Arc<Shared>,
    endpoint: String,
    errors: crate::telemetry::tls::TransportErrors,
    failed_warning: crate::telemetry::drops::SharedThrottle,
    skipped_warning: crate::telemetry::drops::SharedThrottle,
}

impl Outcomes {
    fn exported(&self, n: u64) {
        self.errors.clear();
        self.shared.stats.exported.fetch_add(n, Ordering::Relaxed);
    }

    fn failed(&self, i: usize, n: u64, why: &str) {
        let total = self.lost(i, n);
        let why = self.errors.explain(why);
        if self.failed_warning.ready() {
            tracing::warn!(
                endpoint = self.endpoint,
                "span export failed ({why}); {n} spans not exported, {total} in all. \
                 Requests, the console and the trace store are not affected. Is the OTLP \
                 backend running?"
            );
        }
    }

    fn skipped(&self, i: usize, n: u64) {
        let total = self.lost(i, n);
        if self.skipped_warning.ready() {
            tracing::warn!(
                endpoint = self.endpoint,
                "the OTLP backend takes span batches slower than they come ({} exports in \
                 flight, each waiting up to OTEL_EXPORTER_OTLP_TIMEOUT): {n} spans not \
                 exported, {total} in all. Requests, the console and the trace store are not \
                 affected",
                batch::MAX_CONCURRENT_EXPORTS
            );
        }
    }

    /// Count `n` spans of component `i` the backend did not get; the total.
    fn lost(&self, i: usize, n: u64) -> u64 {
        self.shared.dropped[i].add_spans(n);
        self.shared.stats.dropped.fetch_add(n, Ordering::Relaxed) + n
    }
}

/// The OTLP span exporter of one component: over HTTP, polytrace's own
/// encoder ([`super::otlp_http`]); over gRPC, opentelemetry-otlp's.
fn span_exporter(
    s: &TracesSettings,
    resource: &opentelemetry_sdk::Resource,
) -> anyhow::Result<SpanExporter> {
    let otlp = &s.otlp;
    Ok(match otlp.protocol {
        Protocol::HttpProtobuf => {
            let client = otlp
                .tls
                .http_client(otlp.timeout, otlp.errors.clone())
                .map_err(|e| anyhow::anyhow!(e))?;
            SpanExporter::Http(Box::new(HttpSpanExporter::new(
                resource,
                client,
                &otlp.endpoint,
                &otlp.headers,
                otlp.compression == Some(opentelemetry_otlp::Compression::Gzip),
                otlp.timeout,
            )?))
        }
        Protocol::Grpc => SpanExporter::Grpc(Arc::new(otlp::grpc_span_exporter(otlp, resource)?)),
    })
}

/// A span exporter of either protocol.
enum SpanExporter {
    /// OTLP/HTTP with polytrace's encoder: borrows the batch.
    Http(Box<HttpSpanExporter>),
    /// OTLP/gRPC with opentelemetry-otlp: takes the batch by value.
    Grpc(Arc<opentelemetry_otlp::SpanExporter>),
}

/// The [`SpanProcessor`] of one component: hands finished spans to the
/// shared pipeline without blocking.
#[derive(Debug)]
pub struct ComponentProcessor {
    index: usize,
    pipeline: SpanExport,
}

impl SpanProcessor for ComponentProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    /// Encodes the span here, on the thread that ended it, and queues its
    /// bytes (see [`super::encoded`]).
    fn on_end(&self, span: SpanData) {
        let scope = self.pipeline.scope_index(&span.instrumentation_scope);
        let encoded = EncodedSpan::encode(&span, scope);
        drop(span);
        self.pipeline.push(self.index, encoded);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}
