//! Test harness: a real OTLP receiver (gRPC and HTTP/protobuf, from the
//! official `opentelemetry-proto` definitions), the real `polytrace` binary
//! started as a child process, and a plain HTTP client.

pub mod pki;

/// A new temporary directory for a database server `kind` started by test
/// `name`, and a free port on 127.0.0.1 for it.
pub(crate) fn server_dir_and_port(kind: &str, name: &str) -> (PathBuf, u16) {
    let dir = std::env::temp_dir().join(format!(
        "polytrace-{kind}-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (dir, port)
}
pub mod postgres;
pub mod redis;
pub mod tree;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One export request as the receiver got it.
#[derive(Clone, Debug)]
pub struct Export {
    pub protocol: &'static str,
    pub headers: Vec<(String, String)>,
    pub request: ExportTraceServiceRequest,
}

/// A span, flattened with its resource, values as JSON for easy asserts.
#[derive(Clone, Debug)]
pub struct FlatSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// OTLP SpanKind: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub attributes: BTreeMap<String, Json>,
    /// OTLP StatusCode: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    pub events: Vec<(String, BTreeMap<String, Json>)>,
    pub resource: BTreeMap<String, Json>,
    pub dropped_attributes_count: u32,
    pub dropped_events_count: u32,
    /// End time minus start time.
    pub duration: Duration,
}

impl FlatSpan {
    pub fn attr(&self, key: &str) -> Option<&Json> {
        self.attributes.get(key)
    }

    pub fn service(&self) -> &str {
        self.resource
            .get("service.name")
            .and_then(Json::as_str)
            .unwrap_or_default()
    }

    pub fn event(&self, name: &str) -> Option<&BTreeMap<String, Json>> {
        self.events.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
}

/// A metric data point, flattened with its metric and resource.
#[derive(Clone, Debug)]
pub struct MetricPoint {
    pub protocol: &'static str,
    pub name: String,
    pub unit: String,
    pub description: String,
    /// `sum`, `gauge` or `histogram`.
    pub kind: String,
    pub monotonic: bool,
    /// OTLP AggregationTemporality: 1 delta, 2 cumulative.
    pub temporality: i32,
    pub attributes: BTreeMap<String, Json>,
    pub resource: BTreeMap<String, Json>,
    /// The number; for a histogram, its sum.
    pub value: f64,
    /// Histogram count.
    pub count: u64,
    pub bounds: Vec<f64>,
    pub bucket_counts: Vec<u64>,
}

impl MetricPoint {
    pub fn service(&self) -> &str {
        self.resource
            .get("service.name")
            .and_then(Json::as_str)
            .unwrap_or_default()
    }

    pub fn attr(&self, key: &str) -> Option<&Json> {
        self.attributes.get(key)
    }
}

/// A log record, flattened with its resource.
#[derive(Clone, Debug)]
pub struct LogRecord {
    pub protocol: &'static str,
    pub severity_number: i32,
    pub severity_text: String,
    pub body: Json,
    pub attributes: BTreeMap<String, Json>,
    pub trace_id: String,
    pub span_id: String,
    pub resource: BTreeMap<String, Json>,
    pub time_unix_nano: u64,
}

impl LogRecord {
    pub fn service(&self) -> &str {
        self.resource
            .get("service.name")
            .and_then(Json::as_str)
            .unwrap_or_default()
    }
}

pub const KIND_INTERNAL: i32 = 1;
pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;
pub const STATUS_UNSET: i32 = 0;
pub const STATUS_ERROR: i32 = 2;

fn any_to_json(v: &Option<AnyValue>) -> Json {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        None => Json::Null,
        Some(any_value::Value::StringValue(s)) => Json::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Json::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Json::from(*i),
        Some(any_value::Value::DoubleValue(f)) => Json::from(*f),
        Some(any_value::Value::ArrayValue(a)) => Json::Array(
            a.values
                .iter()
                .map(|v| any_to_json(&Some(v.clone())))
                .collect(),
        ),
        Some(other) => Json::String(format!("{other:?}")),
    }
}

/// An export request's body, gunzipped when `content-encoding: gzip`.
async fn read_body(req: hyper::Request<hyper::body::Incoming>) -> Bytes {
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !gzip {
        return body;
    }
    let mut out = Vec::new();
    match std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out) {
        Ok(_) => Bytes::from(out),
        // Not gzip after all: the decode that follows answers 400.
        Err(_) => Bytes::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, Json> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_to_json(&kv.value)))
        .collect()
}

/// A real OTLP receiver on loopback for traces, metrics and logs: gRPC on
/// one port, HTTP/protobuf (`POST /v1/traces`, `/v1/metrics`, `/v1/logs`)
/// on another.
#[derive(Clone)]
pub struct Receiver {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    exports: Arc<Mutex<Vec<Export>>>,
    signals: Signals,
    /// Bytes of HTTP/protobuf export bodies received (also in sink mode).
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
    /// Both endpoints speak TLS (`https://localhost:port`).
    tls: bool,
}

/// Metric and log exports received, with the protocol each came over.
#[derive(Clone, Default)]
struct Signals {
    metrics: Arc<Mutex<Vec<(&'static str, ExportMetricsServiceRequest)>>>,
    logs: Arc<Mutex<Vec<(&'static str, ExportLogsServiceRequest)>>>,
    /// `(signal, protocol, content encoding)` of every export received:
    /// `grpc-encoding` for gRPC, `content-encoding` for HTTP ("" for none).
    encodings: Arc<Mutex<Vec<Encoding>>>,
}

/// `(signal, protocol, content encoding)` of one export received.
pub type Encoding = (String, &'static str, String);

impl Signals {
    fn note_grpc(&self, signal: &str, metadata: &tonic::metadata::MetadataMap) {
        let encoding = metadata
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.encodings
            .lock()
            .unwrap()
            .push((signal.to_string(), "grpc", encoding));
    }
}

struct Grpc(Arc<Mutex<Vec<Export>>>, Signals);

#[tonic::async_trait]
impl MetricsService for Signals {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.note_grpc("metrics", request.metadata());
        self.metrics
            .lock()
            .unwrap()
            .push(("grpc", request.into_inner()));
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Signals {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.note_grpc("logs", request.metadata());
        self.logs
            .lock()
            .unwrap()
            .push(("grpc", request.into_inner()));
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.1.note_grpc("traces", request.metadata());
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        self.0.lock().unwrap().push(Export {
            protocol: "grpc",
            headers,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Start both endpoints on ephemeral loopback ports.
    pub async fn start() -> Receiver {
        Self::start_with(true, None).await
    }

    /// Both endpoints over TLS with `pki`'s server certificate; with
    /// `mutual`, a client certificate signed by `pki`'s CA is demanded.
    /// Gzip-compressed exports are accepted on both protocols.
    pub async fn start_tls(pki: &pki::Pki, mutual: bool) -> Receiver {
        Self::start_with(true, Some((pki.clone(), mutual))).await
    }

    /// A receiver that accepts HTTP/protobuf exports without decoding them,
    /// so a benchmark does not charge the backend's work to the host.
    pub async fn start_sink() -> Receiver {
        Self::start_with(false, None).await
    }

    async fn start_with(decode: bool, tls: Option<(pki::Pki, bool)>) -> Receiver {
        use tonic::codec::CompressionEncoding::Gzip;
        let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let exports = Arc::new(Mutex::new(Vec::new()));
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let signals = Signals::default();
        let service =
            TraceServiceServer::new(Grpc(exports.clone(), signals.clone())).accept_compressed(Gzip);
        let metrics_service = MetricsServiceServer::new(signals.clone()).accept_compressed(Gzip);
        let logs_service = LogsServiceServer::new(signals.clone()).accept_compressed(Gzip);
        let mut grpc_server = tonic::transport::Server::builder();
        if let Some((pki, mutual)) = &tls {
            grpc_server = grpc_server.tls_config(pki.tonic_server(*mutual)).unwrap();
        }
        let acceptor = tls.as_ref().map(|(pki, mutual)| {
            tokio_rustls::TlsAcceptor::from(Arc::new(pki.rustls_server(*mutual)))
        });
        tokio::spawn(async move {
            grpc_server
                .add_service(service)
                .add_service(metrics_service)
                .add_service(logs_service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                    grpc_listener,
                ))
                .await
                .unwrap();
        });
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = http_listener.local_addr().unwrap();
        let store = exports.clone();
        let counter = bytes.clone();
        let http_signals = signals.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = http_listener.accept().await else {
                    continue;
                };
                let store = store.clone();
                let counter = counter.clone();
                let signals = http_signals.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        let counter = counter.clone();
                        let signals = signals.clone();
                        async move {
                            let post = req.method() == hyper::Method::POST;
                            let path = req.uri().path().to_string();
                            let encoding = req
                                .headers()
                                .get("content-encoding")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            signals.encodings.lock().unwrap().push((
                                path.trim_start_matches("/v1/").to_string(),
                                "http/protobuf",
                                encoding.clone(),
                            ));

                            if post && !decode && (path == "/v1/metrics" || path == "/v1/logs") {
                                let body = read_body(req).await;
                                counter.fetch_add(
                                    body.len() as u64,
                                    std::sync::atomic::Ordering::Relaxed,
                                );
                                return Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(200)
                                        .header("content-type", "application/x-protobuf")
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                );
                            }
                            if post && (path == "/v1/metrics" || path == "/v1/logs") {
                                let body = read_body(req).await;
                                let ok = if path == "/v1/metrics" {
                                    ExportMetricsServiceRequest::decode(body)
                                        .map(|r| {
                                            signals
                                                .metrics
                                                .lock()
                                                .unwrap()
                                                .push(("http/protobuf", r))
                                        })
                                        .is_ok()
                                } else {
                                    ExportLogsServiceRequest::decode(body)
                                        .map(|r| {
                                            signals.logs.lock().unwrap().push(("http/protobuf", r))
                                        })
                                        .is_ok()
                                };
                                return Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(if ok { 200 } else { 400 })
                                        .header("content-type", "application/x-protobuf")
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                );
                            }
                            let ok = post && path == "/v1/traces";
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.to_string(), v.to_str().unwrap_or_default().to_string())
                                })
                                .collect();
                            let body = read_body(req).await;
                            counter
                                .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
                            let decoded = if decode {
                                ExportTraceServiceRequest::decode(body)
                            } else {
                                Ok(ExportTraceServiceRequest::default())
                            };
                            let status = match (ok, decoded) {
                                (true, Ok(_)) if !decode => 200,
                                (true, Ok(request)) => {
                                    store.lock().unwrap().push(Export {
                                        protocol: "http/protobuf",
                                        headers,
                                        request,
                                    });
                                    200
                                }
                                _ => 400,
                            };
                            let reply = ExportTraceServiceResponse {
                                partial_success: None,
                            }
                            .encode_to_vec();
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::from(reply)))
                                    .unwrap(),
                            )
                        }
                    });
                    let http1 = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = http1.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            // A client that fails the handshake (untrusted
                            // server, no client certificate) sends nothing.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http1.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        Receiver {
            grpc,
            http,
            exports,
            signals,
            bytes,
            tls: tls.is_some(),
        }
    }

    /// Every metric data point received so far, flattened.
    pub fn metric_points(&self) -> Vec<MetricPoint> {
        use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
        let mut out = Vec::new();
        for (protocol, export) in self.signals.metrics.lock().unwrap().iter() {
            for rm in &export.resource_metrics {
                let resource = rm
                    .resource
                    .as_ref()
                    .map(|r| attrs(&r.attributes))
                    .unwrap_or_default();
                for sm in &rm.scope_metrics {
                    for m in &sm.metrics {
                        let base = MetricPoint {
                            protocol,
                            name: m.name.clone(),
                            unit: m.unit.clone(),
                            description: m.description.clone(),
                            kind: String::new(),
                            monotonic: false,
                            temporality: 0,
                            attributes: BTreeMap::new(),
                            resource: resource.clone(),
                            value: 0.0,
                            count: 0,
                            bounds: Vec::new(),
                            bucket_counts: Vec::new(),
                        };
                        let number =
                            |p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint| match p
                                .value
                            {
                                Some(number_data_point::Value::AsDouble(d)) => d,
                                Some(number_data_point::Value::AsInt(i)) => i as f64,
                                None => f64::NAN,
                            };
                        match &m.data {
                            Some(metric::Data::Sum(sum)) => {
                                for p in &sum.data_points {
                                    out.push(MetricPoint {
                                        kind: "sum".into(),
                                        monotonic: sum.is_monotonic,
                                        temporality: sum.aggregation_temporality,
                                        attributes: attrs(&p.attributes),
                                        value: number(p),
                                        ..base.clone()
                                    });
                                }
                            }
                            Some(metric::Data::Gauge(g)) => {
                                for p in &g.data_points {
                                    out.push(MetricPoint {
                                        kind: "gauge".into(),
                                        attributes: attrs(&p.attributes),
                                        value: number(p),
                                        ..base.clone()
                                    });
                                }
                            }
                            Some(metric::Data::Histogram(h)) => {
                                for p in &h.data_points {
                                    out.push(MetricPoint {
                                        kind: "histogram".into(),
                                        temporality: h.aggregation_temporality,
                                        attributes: attrs(&p.attributes),
                                        value: p.sum.unwrap_or_default(),
                                        count: p.count,
                                        bounds: p.explicit_bounds.clone(),
                                        bucket_counts: p.bucket_counts.clone(),
                                        ..base.clone()
                                    });
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        out
    }

    /// The latest point of metric `name` from service `service` whose
    /// attributes include `with`, waiting up to 20 s for one that satisfies
    /// `done`.
    pub async fn wait_metric(
        &self,
        service: &str,
        name: &str,
        done: impl Fn(&[MetricPoint]) -> bool,
    ) -> Vec<MetricPoint> {
        let started = Instant::now();
        loop {
            let points: Vec<MetricPoint> = self
                .metric_points()
                .into_iter()
                .filter(|p| p.name == name && p.service() == service)
                .collect();
            if done(&points) {
                return points;
            }
            if started.elapsed() > Duration::from_secs(20) {
                panic!("metric {name} of {service} never satisfied the test; got {points:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every log record received so far, flattened.
    pub fn log_records(&self) -> Vec<LogRecord> {
        let mut out = Vec::new();
        for (protocol, export) in self.signals.logs.lock().unwrap().iter() {
            for rl in &export.resource_logs {
                let resource = rl
                    .resource
                    .as_ref()
                    .map(|r| attrs(&r.attributes))
                    .unwrap_or_default();
                for sl in &rl.scope_logs {
                    for r in &sl.log_records {
                        out.push(LogRecord {
                            protocol,
                            severity_number: r.severity_number,
                            severity_text: r.severity_text.clone(),
                            body: any_to_json(&r.body),
                            attributes: attrs(&r.attributes),
                            trace_id: hex(&r.trace_id),
                            span_id: hex(&r.span_id),
                            resource: resource.clone(),
                            time_unix_nano: r.time_unix_nano,
                        });
                    }
                }
            }
        }
        out
    }

    /// Log records satisfying `keep`, once `done` holds for them (20 s at most).
    pub async fn wait_logs(
        &self,
        keep: impl Fn(&LogRecord) -> bool,
        done: impl Fn(&[LogRecord]) -> bool,
    ) -> Vec<LogRecord> {
        let started = Instant::now();
        loop {
            let records: Vec<LogRecord> = self.log_records().into_iter().filter(&keep).collect();
            if done(&records) {
                return records;
            }
            if started.elapsed() > Duration::from_secs(20) {
                panic!("log records never satisfied the test; got {records:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for this receiver and protocol.
    pub fn endpoint(&self, protocol: &str) -> String {
        let port = match protocol {
            "grpc" => self.grpc.port(),
            _ => self.http.port(),
        };
        if self.tls {
            format!("https://localhost:{port}")
        } else {
            format!("http://127.0.0.1:{port}")
        }
    }

    /// `(signal, protocol, encoding)` of every export received so far;
    /// the encoding is `gzip` for a compressed one, empty otherwise.
    pub fn encodings(&self) -> Vec<Encoding> {
        self.signals.encodings.lock().unwrap().clone()
    }

    pub fn exports(&self) -> Vec<Export> {
        self.exports.lock().unwrap().clone()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<FlatSpan> {
        let mut out = Vec::new();
        for export in self.exports() {
            for rs in &export.request.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| attrs(&r.attributes))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push(FlatSpan {
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent_span_id: hex(&s.parent_span_id),
                            name: s.name.clone(),
                            kind: s.kind,
                            attributes: attrs(&s.attributes),
                            status_code: s.status.as_ref().map_or(0, |st| st.code),
                            status_message: s
                                .status
                                .as_ref()
                                .map(|st| st.message.clone())
                                .unwrap_or_default(),
                            events: s
                                .events
                                .iter()
                                .map(|e| (e.name.clone(), attrs(&e.attributes)))
                                .collect(),
                            resource: resource.clone(),
                            dropped_attributes_count: s.dropped_attributes_count,
                            dropped_events_count: s.dropped_events_count,
                            duration: Duration::from_nanos(
                                s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano),
                            ),
                        });
                    }
                }
            }
        }
        out
    }

    /// The spans of `trace_id` once at least `count` have arrived (waits up
    /// to 20 s, polling; fails with what did arrive).
    pub async fn trace(&self, trace_id: &str, count: usize) -> Vec<FlatSpan> {
        let started = Instant::now();
        loop {
            let spans: Vec<FlatSpan> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if spans.len() >= count {
                return spans;
            }
            if started.elapsed() > Duration::from_secs(20) {
                panic!(
                    "expected {count} spans of trace {trace_id}, got {}: {spans:#?}",
                    spans.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The repository's root directory.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The cargo target directory the tests were built into.
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// The `polytrace` binary under test.
pub fn polytrace_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("POLYTRACE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.ancestors().nth(2).unwrap();
    let bin = profile_dir.join("polytrace");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --release -p polytrace`, as scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A guest component built by scripts/build-guests.sh.
pub fn component(name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-guests.sh",
        path.display()
    );
    path
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = target_dir().join("test-scratch").join(format!(
        "{name}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A running `polytrace up`.
pub struct Polytrace {
    child: Child,
    pub addr: SocketAddr,
    /// The viewer and query API, when it runs.
    pub ui: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl Polytrace {
    /// CPU time the `polytrace` process has used so far: see
    /// [`bench::process_cpu_time`].
    pub fn cpu_time(&self) -> Duration {
        bench::process_cpu_time(self.pid())
    }

    /// Write `manifest` into a scratch dir and run `polytrace up` on it,
    /// exporting to `receiver` over `protocol`.
    pub fn up(
        name: &str,
        manifest: &str,
        receiver: &Receiver,
        protocol: &str,
        env: &[(&str, &str)],
    ) -> Polytrace {
        Self::up_bin(&polytrace_bin(), name, manifest, receiver, protocol, env)
    }

    /// Run `polytrace up` on an existing app directory (an example),
    /// exporting to `receiver` over `protocol`.
    pub fn up_dir(
        dir: &Path,
        receiver: &Receiver,
        protocol: &str,
        env: &[(&str, &str)],
    ) -> Polytrace {
        Self::up_dir_bin(&polytrace_bin(), dir, receiver, protocol, env)
    }

    /// Like [`Polytrace::up`], with another `polytrace` binary (a
    /// benchmark comparing two builds).
    pub fn up_bin(
        bin: &Path,
        name: &str,
        manifest: &str,
        receiver: &Receiver,
        protocol: &str,
        env: &[(&str, &str)],
    ) -> Polytrace {
        let dir = scratch_dir(name);
        std::fs::write(dir.join("polytrace.toml"), manifest).unwrap();
        Self::up_dir_bin(bin, &dir, receiver, protocol, env)
    }

    fn up_dir_bin(
        bin: &Path,
        dir: &Path,
        receiver: &Receiver,
        protocol: &str,
        env: &[(&str, &str)],
    ) -> Polytrace {
        let mut all_env = vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
                receiver.endpoint(protocol),
            ),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
                protocol.to_string(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "100".to_string()),
            ("OTEL_BLRP_SCHEDULE_DELAY".to_string(), "100".to_string()),
            ("OTEL_METRIC_EXPORT_INTERVAL".to_string(), "200".to_string()),
        ];
        all_env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::start_bin(bin, dir, &[], &all_env)
    }

    /// Run `polytrace up DIR --listen 127.0.0.1:0` with exactly `env` added.
    pub fn start(dir: &Path, env: &[(String, String)]) -> Polytrace {
        Self::start_with_args(dir, &[], env)
    }

    /// Like [`Polytrace::start`], with extra `up` arguments.
    pub fn start_with_args(dir: &Path, args: &[&str], env: &[(String, String)]) -> Polytrace {
        Self::start_bin(&polytrace_bin(), dir, args, env)
    }

    /// Like [`Polytrace::start_with_args`], with another `polytrace` binary
    /// (a benchmark's earlier build).
    pub fn start_bin(bin: &Path, dir: &Path, args: &[&str], env: &[(String, String)]) -> Polytrace {
        let mut cmd = Command::new(bin);
        cmd.arg("up").args(args);
        // Unless a test says otherwise: traces in memory, viewer on a free port.
        if !args.iter().any(|a| a.starts_with("--store"))
            && !env.iter().any(|(k, _)| k == "POLYTRACE_STORE")
        {
            cmd.args(["--store", "memory"]);
        }
        if !args
            .iter()
            .any(|a| a.starts_with("--ui") || *a == "--no-ui")
        {
            cmd.args(["--ui", "127.0.0.1:0"]);
        }
        cmd.arg(dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("POLYTRACE_CACHE_DIR", target_dir().join("test-cache"))
            .env("POLYTRACE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start polytrace");
        let stdout = Arc::new(Mutex::new(String::new()));
        let out_sink = stdout.clone();
        let out_pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                let mut o = out_sink.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let ui: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let ui_sink = ui.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line
                    .split("viewer on http://")
                    .nth(1)
                    .or_else(|| line.split("metrics on http://").nth(1))
                {
                    let addr = rest
                        .split(|c: char| c.is_whitespace() || c == '/')
                        .next()
                        .unwrap()
                        .parse()
                        .ok();
                    *ui_sink.lock().unwrap() = addr;
                }
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
                    let _ = tx.send(addr);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("polytrace did not start:\n{}", log.lock().unwrap());
            }
        };
        let ui = *ui.lock().unwrap();
        Polytrace {
            child,
            addr,
            ui,
            log,
            stdout,
        }
    }

    /// The process id of the host.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A URL on the viewer / query API listener.
    pub fn ui_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.ui.expect("the viewer is not running"),
            path
        )
    }

    /// What the host logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// What the host (the console exporter, guests' inherited stdout) printed.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Send SIGTERM and wait for exit; returns the exit code and the log.
    pub fn terminate(self) -> (Option<i32>, String) {
        let (code, log, _) = self.terminate_with_stdout();
        (code, log)
    }

    /// Like [`terminate`](Self::terminate), also returning what went to stdout.
    pub fn terminate_with_stdout(mut self) -> (Option<i32>, String, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Give the readers a moment to drain the last lines.
        std::thread::sleep(Duration::from_millis(100));
        (code, self.log(), self.stdout())
    }
}

impl Drop for Polytrace {
    /// Stops the host, and fails the test if one of the host's own threads
    /// panicked (a guest's panic is a trap, logged from thread `<unnamed>`):
    /// a panic in a detached task is otherwise seen by nobody.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
        let log = self.log();
        if let Some(line) = host_panic(&log) {
            panic!("the host panicked: {line}\n{log}");
        }
    }
}

/// The first line of `log` where one of the host's own threads panicked.
pub fn host_panic(log: &str) -> Option<&str> {
    log.lines()
        .find(|l| l.contains("panicked at") && l.contains("thread '") && !l.contains("'<unnamed>'"))
}

/// A response, read whole.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The trace id from the W3C `traceresponse` header.
    pub fn trace_id(&self) -> String {
        let tr = self
            .headers
            .get("traceresponse")
            .expect("traceresponse header")
            .to_str()
            .unwrap();
        tr.split('-').nth(1).unwrap().to_string()
    }
}

/// Send a request with extra headers; panics (naming the request) if it
/// cannot be sent or its answer not read.
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Response {
    try_request(method, url, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// [`request`] for callers that expect it may fail (a host refusing or
/// closing connections): the error as text instead of a panic.
pub async fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Response, String> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut builder = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub async fn get(url: &str) -> Response {
    request("GET", url, &[], "").await
}

/// Helpers the benchmarks share.
pub mod bench {
    /// The number in environment variable `name`, else `default`.
    pub fn env_or(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// CPU time of every live thread of process `pid` so far, in
    /// nanoseconds: the sum of the first field of each
    /// `/proc/PID/task/TID/schedstat` (time on a CPU, kernel and user).
    /// Threads that have exited drop out of the sum: take differences with
    /// [`cpu_ns_between`], which refuses a sum that went down.
    ///
    /// Panics when no thread's time can be read (a kernel without
    /// schedstat): a benchmark must not report 0 as a cost.
    pub fn process_cpu_ns(pid: u32) -> u64 {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/task: {e}"));
        let times: Vec<u64> = tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .collect();
        assert!(!times.is_empty(), "no /proc/{pid}/task/*/schedstat to read");
        times.into_iter().sum()
    }

    /// CPU time of every live thread of process `pid` so far, in
    /// nanoseconds, summed by thread name (`/proc/PID/task/TID/comm`, e.g.
    /// `tokio-runtime-w`, `polytrace-store`), from each thread's
    /// `schedstat` as [`process_cpu_ns`] reads it. Empty when the process
    /// is gone.
    pub fn thread_cpu_ns(pid: u32) -> std::collections::BTreeMap<String, u64> {
        let mut by_name = std::collections::BTreeMap::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return by_name;
        };
        for task in tasks.flatten() {
            let (Ok(name), Ok(stat)) = (
                std::fs::read_to_string(task.path().join("comm")),
                std::fs::read_to_string(task.path().join("schedstat")),
            ) else {
                continue;
            };
            if let Some(ns) = stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                *by_name.entry(name.trim().to_string()).or_default() += ns;
            }
        }
        by_name
    }

    /// `after - before` of two [`process_cpu_ns`] readings; panics when a
    /// thread that exited in between made the sum go down.
    pub fn cpu_ns_between(before: u64, after: u64) -> u64 {
        after.checked_sub(before).unwrap_or_else(|| {
            panic!("CPU time went down ({before} → {after} ns): a thread exited while measuring")
        })
    }

    /// CPU time process `pid` has used so far (user + system, all its
    /// threads, those that exited included), from `/proc/PID/stat`; 10 ms
    /// resolution. Zero when the process is gone.
    pub fn process_cpu_time(pid: u32) -> std::time::Duration {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        // After the name: utime and stime are fields 14 and 15 (1-based).
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<u64>().ok()))
            .sum();
        std::time::Duration::from_millis(ticks * 10)
    }

    /// A native service of the benchmarks, killed when dropped.
    pub struct Native {
        child: std::process::Child,
        /// Where it listens, from the `listening on http://ADDR` line it
        /// prints on stdout.
        pub addr: std::net::SocketAddr,
    }

    impl Native {
        /// Start `cmd` (stdout is taken, stderr dropped) and wait up to
        /// 60 s for its `listening on` line; panics naming `label` when it
        /// cannot start (the natives are installed by
        /// scripts/setup-native.sh).
        pub fn start(label: &str, mut cmd: std::process::Command) -> Native {
            use std::io::BufRead;
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null());
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!("{label}: cannot start ({e}); run scripts/setup-native.sh")
            });
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Some(rest) = line.split("listening on ").nth(1)
                        && let Some(tx) = tx.take()
                    {
                        let addr = rest.trim().trim_start_matches("http://").to_string();
                        let _ = tx.send(addr);
                    }
                }
            });
            let addr = rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("{label} did not start"))
                .parse()
                .unwrap_or_else(|e| {
                    panic!("{label}: a listening address that does not parse: {e}")
                });
            Native { child, addr }
        }

        /// Its process id (for its CPU time and memory).
        pub fn pid(&self) -> u32 {
            self.child.id()
        }
    }

    impl Drop for Native {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The median of `v` (the upper one of an even count); `v` not empty.
    pub fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
}

/// The environment that keeps examples/checkout's data (the gateway's
/// orders, billing's charges: SQLite files; the sessions: an embedded
/// key-value store) in a fresh scratch directory, so that tests running
/// side by side share nothing.
/// Its directory (spans name the files by their path: `db.namespace`) and
/// the environment.
pub fn checkout_data_env(name: &str) -> (PathBuf, Vec<(String, String)>) {
    let dir = scratch_dir(name);
    let at = |file: &str| format!("sqlite:{}", dir.join(file).display());
    let env = vec![
        ("CHECKOUT_ORDERS_DB".into(), at("orders.db")),
        ("CHECKOUT_BILLING_DB".into(), at("billing.db")),
        ("CHECKOUT_SESSIONS_STORE".into(), at("sessions.db")),
    ];
    (dir, env)
}

/// The sessions examples/checkout's cases use, as the demo creates them:
/// `abc` (user-1) and `xyz` (user-2), stored through the session service
/// (`PUT /sessions/{id}`). Returns the trace ids of those requests.
pub async fn seed_checkout_sessions(base_url: &str) -> Vec<String> {
    let mut traces = Vec::new();
    for (id, user) in [("abc", "user-1"), ("xyz", "user-2")] {
        let r = request(
            "PUT",
            &format!("{base_url}/sessions/{id}"),
            &[("content-type", "application/json")],
            &format!(r#"{{"user_id": "{user}"}}"#),
        )
        .await;
        assert_eq!(r.status, 200, "PUT /sessions/{id}: {}", r.body);
        traces.push(r.trace_id());
    }
    traces
}
