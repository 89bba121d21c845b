//! Metrics: one OpenTelemetry meter provider per component (its own
//! resource), the host's automatic HTTP and health instruments, the
//! instruments guests create through WIT, and export.
//!
//! Every provider has two readers: a cumulative one that Prometheus
//! `GET /metrics` collects on each scrape, and, when OTLP export is on, one
//! with the configured temporality that a tokio task collects every
//! `OTEL_METRIC_EXPORT_INTERVAL` and hands to that component's OTLP exporter.
//! Aggregation (and its cardinality limit: 2000 attribute sets per
//! instrument, the rest folded into one `otel.metric.overflow=true` series)
//! is the SDK's.

pub mod host;
pub mod prometheus;

use super::batch::FlushRequest;
use super::config::{Exporter, MetricsSettings};
use super::semconv;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _, UpDownCounter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Bucket boundaries of the HTTP duration histograms, in seconds, as the
/// HTTP semantic conventions advise.
pub const HTTP_DURATION_BOUNDARIES: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The explicit bucket boundaries (s) the database semantic conventions
/// advise for `db.client.operation.duration`.
pub const DB_DURATION_BOUNDARIES: [f64; 9] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// Instruments one component may create through WIT; past this, creating a
/// new one is `rejected` (the ones it has keep working).
pub const MAX_GUEST_INSTRUMENTS: usize = 256;

/// Bucket boundaries a guest histogram may have at most.
pub const MAX_BOUNDARIES: usize = 256;

/// Host health metric: component instances created.
pub const INSTANTIATIONS: &str = "polytrace.guest.instantiations";
/// Host health metric: requests served by an instance that had already
/// served one (a warm instance taken from the pool).
pub const REUSES: &str = "polytrace.guest.instance_reuses";
/// Host health metric: instances thrown away (attribute
/// [`DISCARD_REASON`]: `trap`, `timeout`, `no_response`, `memory`,
/// `handles`, `max_requests`, `per_request`, `idle`, `evicted`, `error`).
pub const DISCARDS: &str = "polytrace.guest.instance_discards";
/// Attribute of [`DISCARDS`]: why the instance was thrown away.
pub const DISCARD_REASON: &str = "polytrace.instance.discard_reason";
/// Host health metric: guest traps (attribute `error.type`: the trap).
pub const TRAPS: &str = "polytrace.guest.traps";
/// Host health metric: requests a guest did not finish within its timeout.
pub const TIMEOUTS: &str = "polytrace.guest.timeouts";
pub use super::drops::{DROPPED, Dropped};

/// The kinds of instrument a guest can create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    UpDownCounter,
    Histogram,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::UpDownCounter => "up-down-counter",
            Kind::Histogram => "histogram",
            Kind::Gauge => "gauge",
        }
    }
}

/// An instrument a guest holds a handle to.
#[derive(Clone, Debug)]
pub enum GuestInstrument {
    Counter(Counter<f64>),
    UpDownCounter(UpDownCounter<f64>),
    Histogram(Histogram<f64>),
    Gauge(Gauge<f64>),
}

impl GuestInstrument {
    fn kind(&self) -> Kind {
        match self {
            GuestInstrument::Counter(_) => Kind::Counter,
            GuestInstrument::UpDownCounter(_) => Kind::UpDownCounter,
            GuestInstrument::Histogram(_) => Kind::Histogram,
            GuestInstrument::Gauge(_) => Kind::Gauge,
        }
    }

    /// Record one measurement; values the instrument cannot take (negative
    /// or non-finite increments of a counter, non-finite values) are ignored.
    pub fn record(&self, value: f64, attrs: &[KeyValue]) {
        if !value.is_finite() {
            return;
        }
        match self {
            GuestInstrument::Counter(c) if value >= 0.0 => c.add(value, attrs),
            GuestInstrument::Counter(_) => {}
            GuestInstrument::UpDownCounter(c) => c.add(value, attrs),
            GuestInstrument::Histogram(h) => h.record(value, attrs),
            GuestInstrument::Gauge(g) => g.record(value, attrs),
        }
    }
}

/// Why a guest could not create an instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstrumentError {
    InvalidName(String),
    InvalidUnit(String),
    InvalidBoundaries(String),
    Rejected(String),
}

/// Check an instrument name by the OpenTelemetry API rules.
pub fn validate_name(name: &str) -> Result<(), InstrumentError> {
    let bad = |why: &str| {
        Err(InstrumentError::InvalidName(format!(
            "instrument name `{}` {why}: names start with a letter and hold up to 255 of A-Za-z0-9_.-/",
            name.chars().take(80).collect::<String>()
        )))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > 255 {
        return bad("is longer than 255 characters");
    }
    if !name.as_bytes()[0].is_ascii_alphabetic() {
        return bad("does not start with a letter");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
    {
        return bad(&format!("contains `{c}`"));
    }
    Ok(())
}

/// Instruments the host records for every component; a guest may not make
/// one of these names (its series would be indistinguishable from the
/// host's), nor any name in the `polytrace.` namespace.
pub const HOST_INSTRUMENTS: [&str; 3] = [
    "http.server.request.duration",
    "http.server.active_requests",
    "http.client.request.duration",
];

/// Refuse a name the host reserves: one of [`HOST_INSTRUMENTS`] or a name
/// in its family (`http.server.request.duration.seconds`), any name in the
/// `polytrace.` namespace, or `target.info` (the exposition's own block).
/// Names are compared as Prometheus writes them: case-insensitive, every
/// run of characters other than letters and digits one `_`, none at the
/// ends — so `Polytrace_Guest..Traps` cannot pass for
/// `polytrace.guest.traps` on `/metrics` either.
pub fn check_not_reserved(name: &str) -> Result<(), InstrumentError> {
    let flat = |n: &str| -> String {
        let mut out = String::with_capacity(n.len());
        for c in n.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.ends_with('_') {
                out.push('_');
            }
        }
        out.trim_matches('_').to_string()
    };
    let given = flat(name);
    let in_family = |host: &str| {
        let host = flat(host);
        given == host || given.starts_with(&format!("{host}_"))
    };
    let reserved = given == "polytrace"
        || given.starts_with("polytrace_")
        || in_family("target.info")
        || HOST_INSTRUMENTS.iter().any(|host| in_family(host));
    if reserved {
        return Err(InstrumentError::InvalidName(format!(
            "instrument name `{}` is reserved: the host records it (its own metrics and the `polytrace.` \
             namespace); name yours after your service",
            name.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// Check a unit by the OpenTelemetry API rules (ASCII, at most 63).
pub fn validate_unit(unit: &str) -> Result<(), InstrumentError> {
    if unit.len() > 63 || !unit.is_ascii() {
        return Err(InstrumentError::InvalidUnit(format!(
            "unit `{}` must be at most 63 ASCII characters (UCUM, such as `ms`, `By`, `{{request}}`)",
            unit.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

fn validate_boundaries(b: &[f64]) -> Result<(), InstrumentError> {
    if b.len() > MAX_BOUNDARIES {
        return Err(InstrumentError::InvalidBoundaries(format!(
            "{} boundaries: at most {MAX_BOUNDARIES}",
            b.len()
        )));
    }
    if b.iter().any(|v| !v.is_finite()) || b.windows(2).any(|w| w[0] >= w[1]) {
        return Err(InstrumentError::InvalidBoundaries(format!(
            "boundaries {b:?} must be finite and strictly increasing"
        )));
    }
    Ok(())
}

/// The `url.scheme` values [`ActiveRequests`] keeps in atomics.
const ACTIVE_SCHEMES: [&str; 2] = ["http", "https"];

/// Cells of [`ActiveRequests`]: every `http.request.method` value by every
/// one of [`ACTIVE_SCHEMES`].
const ACTIVE_CELLS: usize = semconv::METHOD_VALUES.len() * ACTIVE_SCHEMES.len();

/// `http.server.active_requests` (`{request}`, an asynchronous
/// UpDownCounter by `http.request.method` and `url.scheme`, HTTP semantic
/// conventions): counts kept in atomics that each request changes twice,
/// observed when a reader collects. A request then costs two atomic adds
/// instead of two SDK measurements (each hashes its attribute set and takes
/// a lock). As with a synchronous UpDownCounter, a series appears with the
/// first request of its method and scheme and stays, at 0 while none is
/// active; its temporality is cumulative under every preference (the
/// metrics SDK specification's rule for UpDownCounters).
pub struct ActiveRequests {
    /// Requests active now, by method (the index in
    /// [`semconv::METHOD_VALUES`]) × scheme (in [`ACTIVE_SCHEMES`]).
    counts: [AtomicI64; ACTIVE_CELLS],
    /// Whether a request of that method and scheme was ever made.
    made: [AtomicBool; ACTIVE_CELLS],
    /// Other schemes, by method and scheme. None reaches the host's
    /// listeners (they answer a target naming another scheme with 400);
    /// counted rather than lost if one ever does.
    other: Mutex<HashMap<(&'static str, String), i64>>,
}

/// A request counted by [`ActiveRequests::start`]; give it back to
/// [`ActiveRequests::end`] when the request is done.
pub struct ActiveRequest(ActiveCell);

enum ActiveCell {
    Counted(usize),
    /// Its method and scheme.
    Other((&'static str, String)),
}

impl ActiveRequests {
    /// The counts of `meter`'s `http.server.active_requests`, observed by
    /// its callback.
    fn register(meter: &Meter) -> Arc<ActiveRequests> {
        let active = Arc::new(ActiveRequests {
            counts: [const { AtomicI64::new(0) }; ACTIVE_CELLS],
            made: [const { AtomicBool::new(false) }; ACTIVE_CELLS],
            other: Mutex::new(HashMap::new()),
        });
        let observed = active.clone();
        meter
            .i64_observable_up_down_counter("http.server.active_requests")
            .with_unit("{request}")
            .with_description("Number of active HTTP server requests.")
            .with_callback(move |o| {
                observed.observe(|n, method, scheme| {
                    o.observe(
                        n,
                        &[
                            KeyValue::new("http.request.method", method),
                            KeyValue::new("url.scheme", semconv::scheme_value(scheme)),
                        ],
                    );
                });
            })
            .build();
        active
    }

    /// Count a request of `method` (any; unknown ones are `_OTHER`) and
    /// `scheme` as active.
    pub fn start(&self, method: &str, scheme: &str) -> ActiveRequest {
        let method = semconv::method_index(method);
        match ACTIVE_SCHEMES.iter().position(|&s| s == scheme) {
            Some(s) => {
                let cell = method * ACTIVE_SCHEMES.len() + s;
                self.counts[cell].fetch_add(1, Ordering::Relaxed);
                if !self.made[cell].load(Ordering::Relaxed) {
                    self.made[cell].store(true, Ordering::Relaxed);
                }
                ActiveRequest(ActiveCell::Counted(cell))
            }
            None => {
                let key = (semconv::METHOD_VALUES[method], scheme.to_string());
                *self
                    .other
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key.clone())
                    .or_default() += 1;
                ActiveRequest(ActiveCell::Other(key))
            }
        }
    }

    /// The request `r` is no longer active (taken, so it ends once).
    pub fn end(&self, r: ActiveRequest) {
        match r.0 {
            ActiveCell::Counted(cell) => {
                self.counts[cell].fetch_sub(1, Ordering::Relaxed);
            }
            ActiveCell::Other(key) => {
                let mut other = self.other.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = other.get_mut(&key) {
                    *n -= 1;
                }
            }
        }
    }

    /// Each series made so far: its count, method and scheme.
    fn observe(&self, mut f: impl FnMut(i64, &'static str, &str)) {
        for (m, method) in semconv::METHOD_VALUES.into_iter().enumerate() {
            for (s, scheme) in ACTIVE_SCHEMES.iter().enumerate() {
                let cell = m * ACTIVE_SCHEMES.len() + s;
                if self.made[cell].load(Ordering::Relaxed) {
                    f(self.counts[cell].load(Ordering::Relaxed), method, scheme);
                }
            }
        }
        let other = self.other.lock().unwrap_or_else(|e| e.into_inner());
        for ((method, scheme), n) in other.iter() {
            f(*n, method, scheme);
        }
    }
}

/// The instruments of one component.
pub struct ComponentMetrics {
    meter: Meter,
    pub server_duration: Histogram<f64>,
    /// `http.server.active_requests`, observed when a reader collects.
    pub server_active: Arc<ActiveRequests>,
    pub client_duration: Histogram<f64>,
    /// `db.client.operation.duration` (s): every SQL statement a guest runs.
    pub db_duration: Histogram<f64>,
    pub instantiations: Counter<u64>,
    pub reuses: Counter<u64>,
    pub discards: Counter<u64>,
    pub traps: Counter<u64>,
    pub timeouts: Counter<u64>,
    pub dropped: Arc<Dropped>,
    /// Guest instruments by lowercased name (names are case-insensitive).
    guest: Mutex<HashMap<String, GuestInstrument>>,
}

impl ComponentMetrics {
    fn new(meter: Meter, dropped: Arc<Dropped>) -> ComponentMetrics {
        let observed = dropped.clone();
        meter
            .u64_observable_counter(DROPPED)
            .with_unit("{item}")
            .with_description("Telemetry the host dropped: export queue full, export failed, or a per-request limit")
            .with_callback(move |o| {
                for (signal, n) in [
                    ("spans", &observed.spans),
                    ("metric_points", &observed.metric_points),
                    ("log_records", &observed.log_records),
                ] {
                    o.observe(n.load(Ordering::Relaxed), &[KeyValue::new("signal", signal)]);
                }
            })
            .build();
        ComponentMetrics {
            server_duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests.")
                .with_boundaries(HTTP_DURATION_BOUNDARIES.to_vec())
                .build(),
            server_active: ActiveRequests::register(&meter),
            client_duration: meter
                .f64_histogram("http.client.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP client requests.")
                .with_boundaries(HTTP_DURATION_BOUNDARIES.to_vec())
                .build(),
            db_duration: meter
                .f64_histogram("db.client.operation.duration")
                .with_unit("s")
                .with_description("Duration of database client operations.")
                .with_boundaries(DB_DURATION_BOUNDARIES.to_vec())
                .build(),
            instantiations: meter
                .u64_counter(INSTANTIATIONS)
                .with_unit("{instance}")
                .with_description("Component instances created.")
                .build(),
            reuses: meter
                .u64_counter(REUSES)
                .with_unit("{request}")
                .with_description("Requests served by a warm instance that had served one before.")
                .build(),
            discards: meter
                .u64_counter(DISCARDS)
                .with_unit("{instance}")
                .with_description(
                    "Instances thrown away, by reason (polytrace.instance.discard_reason).",
                )
                .build(),
            traps: meter
                .u64_counter(TRAPS)
                .with_unit("{trap}")
                .with_description("Guest traps, by trap (error.type).")
                .build(),
            timeouts: meter
                .u64_counter(TIMEOUTS)
                .with_unit("{request}")
                .with_description(
                    "Requests the guest did not finish within the component's timeout.",
                )
                .build(),
            dropped,
            meter,
            guest: Mutex::new(HashMap::new()),
        }
    }

    /// The instrument a guest asked for: the existing one of that name and
    /// kind, or a new one.
    pub fn instrument(
        &self,
        kind: Kind,
        name: String,
        description: String,
        unit: String,
        boundaries: Option<Vec<f64>>,
    ) -> Result<GuestInstrument, InstrumentError> {
        validate_name(&name)?;
        check_not_reserved(&name)?;
        validate_unit(&unit)?;
        if let Some(b) = &boundaries {
            validate_boundaries(b)?;
        }
        let key = name.to_ascii_lowercase();
        let mut guest = self.guest.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = guest.get(&key) {
            return if existing.kind() == kind {
                Ok(existing.clone())
            } else {
                Err(InstrumentError::Rejected(format!(
                    "`{name}` is already a {}; it cannot also be a {}",
                    existing.kind().name(),
                    kind.name()
                )))
            };
        }
        if guest.len() >= MAX_GUEST_INSTRUMENTS {
            return Err(InstrumentError::Rejected(format!(
                "this component already has {MAX_GUEST_INSTRUMENTS} instruments, the most the host allows; \
                 use attributes rather than one instrument per value"
            )));
        }
        let m = &self.meter;
        let made = match kind {
            Kind::Counter => GuestInstrument::Counter(
                m.f64_counter(name)
                    .with_description(description)
                    .with_unit(unit)
                    .build(),
            ),
            Kind::UpDownCounter => GuestInstrument::UpDownCounter(
                m.f64_up_down_counter(name)
                    .with_description(description)
                    .with_unit(unit)
                    .build(),
            ),
            Kind::Histogram => {
                let mut b = m
                    .f64_histogram(name)
                    .with_description(description)
                    .with_unit(unit);
                if let Some(bounds) = boundaries {
                    b = b.with_boundaries(bounds);
                }
                GuestInstrument::Histogram(b.build())
            }
            Kind::Gauge => GuestInstrument::Gauge(
                m.f64_gauge(name)
                    .with_description(description)
                    .with_unit(unit)
                    .build(),
            ),
        };
        guest.insert(key, made.clone());
        Ok(made)
    }
}

/// A [`ManualReader`] that both the provider and polytrace hold.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The metrics of an application.
pub struct Metrics {
    components: Vec<Arc<ComponentMetrics>>,
    /// Cumulative readers, one per component, for Prometheus.
    scrape: Vec<SharedReader>,
    /// Held so the providers (and their readers) live as long as the app.
    _providers: Vec<SdkMeterProvider>,
    flush: Option<mpsc::Sender<FlushRequest>>,
}

impl Metrics {
    /// One provider per component; starts the OTLP export task when
    /// `settings` asks for OTLP. With `record` false (`OTEL_SDK_DISABLED`)
    /// the providers have no readers: instruments aggregate nothing and
    /// `/metrics` is empty. Must run within a tokio runtime.
    pub fn start(
        settings: &MetricsSettings,
        resources: &[Resource],
        dropped: &[Arc<Dropped>],
        record: bool,
    ) -> anyhow::Result<Metrics> {
        let mut components = Vec::new();
        let mut scrape = Vec::new();
        let mut providers = Vec::new();
        let mut export = Vec::new();
        for (resource, dropped) in resources.iter().zip(dropped) {
            let prometheus = SharedReader(Arc::new(ManualReader::builder().build()));
            let mut builder = SdkMeterProvider::builder().with_resource(resource.clone());
            if record {
                builder = builder.with_reader(prometheus.clone());
                scrape.push(prometheus);
            }
            if record && settings.exporter == Exporter::Otlp {
                let reader = SharedReader(Arc::new(
                    ManualReader::builder()
                        .with_temporality(settings.temporality)
                        .build(),
                ));
                builder = builder.with_reader(reader.clone());
                export.push((
                    reader,
                    super::otlp::metric_exporter(settings)?,
                    dropped.clone(),
                ));
            }
            let provider = builder.build();
            components.push(Arc::new(ComponentMetrics::new(
                provider.meter("polytrace"),
                dropped.clone(),
            )));
            providers.push(provider);
        }
        let flush = if export.is_empty() {
            None
        } else {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(export_loop(export, settings.clone(), rx));
            Some(tx)
        };
        Ok(Metrics {
            components,
            scrape,
            _providers: providers,
            flush,
        })
    }

    pub fn component(&self, index: usize) -> &Arc<ComponentMetrics> {
        &self.components[index]
    }

    /// Cumulative metrics of every component, as of now.
    pub fn collect(&self) -> Vec<ResourceMetrics> {
        self.scrape
            .iter()
            .filter_map(|r| {
                let mut rm = ResourceMetrics::default();
                r.collect(&mut rm).ok().map(|()| rm)
            })
            .collect()
    }

    /// The Prometheus text exposition of every component's metrics.
    pub fn prometheus(&self) -> String {
        prometheus::render(&self.collect())
    }

    /// Export what has been recorded so far over OTLP; waits at most `timeout`.
    pub async fn flush(&self, timeout: Duration) -> bool {
        match &self.flush {
            Some(tx) => super::batch::flush(tx, timeout).await,
            None => true,
        }
    }
}

type Export = (
    SharedReader,
    opentelemetry_otlp::MetricExporter,
    Arc<Dropped>,
);

async fn export_loop(
    export: Vec<Export>,
    settings: MetricsSettings,
    mut flush: mpsc::Receiver<FlushRequest>,
) {
    let interval = settings.interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed_warning = super::drops::Throttle::default();
    loop {
        let done = tokio::select! {
            _ = tick.tick() => None,
            d = flush.recv() => match d {
                Some(d) => Some(d),
                None => return,
            },
        };
        for (reader, exporter, dropped) in &export {
            let mut rm = ResourceMetrics::default();
            if reader.collect(&mut rm).is_err() {
                continue;
            }
            let points = count_points(&rm);
            if points == 0 {
                continue;
            }
            let result = tokio::time::timeout(settings.otlp.timeout, exporter.export(&rm)).await;
            let why = match result {
                Ok(Ok(())) => {
                    settings.otlp.errors.clear();
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            let total = dropped.metric_points.fetch_add(points, Ordering::Relaxed) + points;
            let why = settings.otlp.errors.explain(&why);
            if failed_warning.ready() {
                tracing::warn!(
                    endpoint = settings.otlp.endpoint,
                    "metric export failed ({why}); {points} points dropped, {total} in all. \
                     Requests are not affected; /metrics still has them"
                );
            }
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

/// Data points in one collection.
pub fn count_points(rm: &ResourceMetrics) -> u64 {
    fn points<T>(d: &MetricData<T>) -> usize {
        match d {
            MetricData::Gauge(g) => g.data_points().count(),
            MetricData::Sum(s) => s.data_points().count(),
            MetricData::Histogram(h) => h.data_points().count(),
            MetricData::ExponentialHistogram(h) => h.data_points().count(),
        }
    }
    rm.scope_metrics()
        .flat_map(|s| s.metrics())
        .map(|m| match m.data() {
            AggregatedMetrics::F64(d) => points(d),
            AggregatedMetrics::U64(d) => points(d),
            AggregatedMetrics::I64(d) => points(d),
        } as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_opentelemetry_rules() {
        for ok in [
            "orders.created",
            "a",
            "http.server.request.duration",
            "A_b-c/d.e1",
        ] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "",
            "1orders",
            "_x",
            "orders created",
            "ordérs",
            "a$b",
            long.as_str(),
        ] {
            assert!(
                matches!(validate_name(bad), Err(InstrumentError::InvalidName(_))),
                "{bad}"
            );
        }
        assert_eq!(validate_name(&"a".repeat(255)), Ok(()));
        for reserved in [
            "polytrace.guest.traps",
            "Polytrace_Guest.Traps",
            "polytrace.anything.new",
            "polytrace-x",
            "http.server.request.duration",
            "HTTP.Client.Request.Duration",
            "http_server_active_requests",
            "http.server.request.duration.seconds",
            "http..server.request.duration",
            "http.server.request.duration_",
            "target.info",
            "polytrace",
        ] {
            assert!(
                matches!(check_not_reserved(reserved), Err(InstrumentError::InvalidName(m)) if m.contains("reserved")),
                "{reserved}"
            );
        }
        for free in [
            "polytraced.x",
            "http.server.request.size",
            "orders.created",
            "target.infos",
        ] {
            assert_eq!(check_not_reserved(free), Ok(()), "{free}");
        }
        assert!(validate_unit("ms").is_ok());
        assert!(validate_unit("{request}").is_ok());
        assert!(validate_unit(&"x".repeat(64)).is_err());
        assert!(validate_unit("µs").is_err());
        assert!(validate_boundaries(&[1.0, 2.0]).is_ok());
        assert!(validate_boundaries(&[2.0, 1.0]).is_err());
        assert!(validate_boundaries(&[1.0, f64::NAN]).is_err());
    }

    fn metrics() -> Metrics {
        let settings = super::super::Settings::resolve(&Default::default(), |k| {
            (k == "OTEL_METRICS_EXPORTER").then(|| "none".to_string())
        })
        .unwrap()
        .metrics;
        Metrics::start(
            &settings,
            &[Resource::builder_empty()
                .with_attribute(KeyValue::new("service.name", "svc"))
                .build()],
            &[Arc::new(Dropped::default())],
            true,
        )
        .unwrap()
    }

    #[test]
    fn guest_instruments_are_shared_by_name_and_kind() {
        let m = metrics();
        let c = m.component(0);
        let a = c
            .instrument(
                Kind::Counter,
                "orders.created".into(),
                "".into(),
                "{order}".into(),
                None,
            )
            .unwrap();
        // Same name, other case: the same instrument.
        let b = c
            .instrument(
                Kind::Counter,
                "Orders.Created".into(),
                "".into(),
                "".into(),
                None,
            )
            .unwrap();
        a.record(2.0, &[KeyValue::new("status", "ok")]);
        b.record(3.0, &[KeyValue::new("status", "ok")]);
        a.record(-1.0, &[]);
        a.record(f64::NAN, &[]);
        assert!(matches!(
            c.instrument(
                Kind::Gauge,
                "orders.created".into(),
                "".into(),
                "".into(),
                None
            ),
            Err(InstrumentError::Rejected(_))
        ));
        let text = m.prometheus();
        assert!(
            text.contains(
                "orders_created_total{job=\"svc\",otel_scope_name=\"polytrace\",status=\"ok\"} 5"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_component_has_a_bounded_number_of_instruments() {
        let m = metrics();
        let c = m.component(0);
        for i in 0..MAX_GUEST_INSTRUMENTS {
            c.instrument(Kind::Gauge, format!("g{i}"), "".into(), "".into(), None)
                .unwrap();
        }
        assert!(matches!(
            c.instrument(Kind::Gauge, "one.more".into(), "".into(), "".into(), None),
            Err(InstrumentError::Rejected(_))
        ));
        // Existing ones are still handed out.
        assert!(
            c.instrument(Kind::Gauge, "g0".into(), "".into(), "".into(), None)
                .is_ok()
        );
        assert!(matches!(
            c.instrument(
                Kind::Histogram,
                "h".into(),
                "".into(),
                "".into(),
                Some(vec![5.0, 1.0])
            ),
            Err(InstrumentError::InvalidBoundaries(_))
        ));
    }

    #[test]
    fn cardinality_is_bounded_with_an_overflow_series() {
        let m = metrics();
        let c = m
            .component(0)
            .instrument(Kind::Counter, "ids".into(), "".into(), "".into(), None)
            .unwrap();
        for i in 0..5000 {
            c.record(1.0, &[KeyValue::new("id", i as i64)]);
        }
        let text = m.prometheus();
        let series = text.lines().filter(|l| l.starts_with("ids_total{")).count();
        assert!(series <= 2002, "{series} series");
        let overflow = text
            .lines()
            .find(|l| l.starts_with("ids_total{") && l.contains("otel_metric_overflow=\"true\""))
            .expect("an overflow series");
        let value: f64 = overflow.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(
            value as usize + series - 1,
            5000,
            "nothing lost: {overflow}"
        );
    }

    /// `http.server.active_requests` lines of the Prometheus exposition.
    fn active_lines(m: &Metrics) -> Vec<String> {
        let mut lines: Vec<String> = m
            .prometheus()
            .lines()
            .filter(|l| l.starts_with("http_server_active_requests{"))
            .map(|l| {
                // Without the resource's labels: method, scheme, value.
                let labels = l.split_once('{').unwrap().1;
                let labels = labels.split_once('}').unwrap();
                let mut kept: Vec<&str> = labels
                    .0
                    .split(',')
                    .filter(|kv| {
                        kv.starts_with("http_request_method=") || kv.starts_with("url_scheme=")
                    })
                    .collect();
                kept.sort();
                format!("{}{}", kept.join(","), labels.1)
            })
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn active_requests_are_counted_by_method_and_scheme_while_they_run() {
        let m = metrics();
        let active = &m.component(0).server_active;
        assert!(active_lines(&m).is_empty(), "no series before a request");
        let a = active.start("GET", "http");
        let b = active.start("GET", "http");
        let c = active.start("FETCH", "https");
        let d = active.start("POST", "gopher");
        assert_eq!(
            active_lines(&m),
            [
                "http_request_method=\"GET\",url_scheme=\"http\" 2",
                "http_request_method=\"POST\",url_scheme=\"gopher\" 1",
                "http_request_method=\"_OTHER\",url_scheme=\"https\" 1",
            ]
        );
        for r in [a, b, c, d] {
            active.end(r);
        }
        let e = active.start("PUT", "http");
        assert_eq!(
            active_lines(&m),
            [
                "http_request_method=\"GET\",url_scheme=\"http\" 0",
                "http_request_method=\"POST\",url_scheme=\"gopher\" 0",
                "http_request_method=\"PUT\",url_scheme=\"http\" 1",
                "http_request_method=\"_OTHER\",url_scheme=\"https\" 0",
            ],
            "a series stays at 0 once its requests are done"
        );
        active.end(e);
        let text = m.prometheus();
        assert!(
            text.contains("# TYPE http_server_active_requests gauge"),
            "a non-monotonic sum: {text}"
        );
    }
}
