//! Outbound HTTP from guests: a CLIENT span for every request, W3C headers
//! injected, and dispatch: a component id goes to that component in-process,
//! another host to the network only if `allowed_outbound_hosts` says so.

use crate::app::{App, Inbound};
use crate::manifest::default_port;
use crate::telemetry::{RequestTrace, record_exception, semconv, start_span};
use http_body_util::BodyExt;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status};
use std::sync::Arc;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// How many in-process hops one request may take before it is a loop.
pub const MAX_IN_PROCESS_DEPTH: u32 = 16;

/// Per-instance outbound hooks; also the owner of the request's trace state.
pub struct Outbound {
    pub(crate) trace: RequestTrace,
    app: Arc<App>,
    component: usize,
    depth: u32,
}

impl Outbound {
    pub fn new(trace: RequestTrace, app: Arc<App>, component: usize, depth: u32) -> Self {
        Outbound {
            trace,
            app,
            component,
            depth,
        }
    }

    /// Index of the component this instance belongs to.
    pub fn component(&self) -> usize {
        self.component
    }

    pub fn component_metrics(&self) -> &crate::telemetry::metrics::ComponentMetrics {
        self.app.telemetry.metrics.component(self.component)
    }

    pub fn logs(&self) -> Arc<crate::telemetry::logs::Logs> {
        self.app.telemetry.logs.clone()
    }
}

enum Target {
    Component(usize),
    Network,
    Denied(String),
}

/// Resolves when the response body has been fully transmitted.
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
/// What `send_request` yields: the response head and its I/O driver.
type Sent = Result<(http::Response<WasiBody>, IoFuture), Error>;
type ResponseFuture = Box<dyn Future<Output = Sent> + Send>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> ResponseFuture {
        let parent = self.trace.current().clone();
        let (name, attrs) = semconv::client_request(request.method().as_str(), request.uri());
        let mut span = start_span(
            self.trace.tracer(),
            name,
            SpanKind::Client,
            attrs,
            Some(&parent),
        );
        for (k, v) in self.trace.inject(span.span_context()) {
            if let Ok(v) = http::HeaderValue::from_str(&v) {
                request.headers_mut().insert(k, v);
            }
        }
        let target = self.target(request.uri());
        let mut metric_attrs =
            semconv::client_metric_attributes(request.method().as_str(), request.uri());
        let started = std::time::Instant::now();
        let app = self.app.clone();
        let component = self.component;
        let depth = self.depth + 1;
        let caller = self.app.component_id(self.component).to_string();
        Box::new(async move {
            let result: Sent = match target {
                Target::Component(_) if depth > MAX_IN_PROCESS_DEPTH => Err(Error::LoopDetected),
                Target::Component(idx) => {
                    let response = app
                        .handle(idx, request, Inbound::in_process(depth, caller))
                        .await;
                    Ok((response, Box::new(async { Ok(()) })))
                }
                Target::Network => wasmtime_wasi_http::default_send_request(request, options)
                    .await
                    .map(|(r, io)| (r.map(BodyExt::boxed_unsync), Box::new(io) as Box<_>)),
                Target::Denied(why) => {
                    record_exception(&mut span, "HttpRequestDenied", &why, None);
                    Err(Error::HttpRequestDenied)
                }
            };
            match &result {
                Ok((response, _)) => {
                    let code = response.status().as_u16();
                    let (attrs, status) = semconv::client_response(code);
                    metric_attrs.extend(
                        attrs
                            .iter()
                            .filter(|kv| {
                                matches!(
                                    kv.key.as_str(),
                                    "http.response.status_code" | "error.type"
                                )
                            })
                            .cloned(),
                    );
                    span.set_attributes(attrs);
                    span.set_status(status);
                }
                Err(e) => {
                    let kind = error_type(e);
                    metric_attrs.push(KeyValue::new("error.type", kind.clone()));
                    span.set_attribute(KeyValue::new("error.type", kind));
                    span.set_status(Status::error(format!("{e}")));
                }
            }
            span.end();
            app.telemetry
                .metrics
                .component(component)
                .client_duration
                .record(started.elapsed().as_secs_f64(), &metric_attrs);
            result
        })
    }
}

impl Outbound {
    fn target(&self, uri: &http::Uri) -> Target {
        let scheme = uri.scheme_str().unwrap_or("http");
        let Some(host) = uri.host() else {
            return Target::Denied("the request has no host".into());
        };
        if scheme == "http"
            && uri.port_u16().is_none()
            && let Some(idx) = self.app.component_index(host)
        {
            return Target::Component(idx);
        }
        let port = uri.port_u16().unwrap_or_else(|| default_port(scheme));
        let allowed = &self.app.component(self.component).allowed_outbound_hosts;
        if allowed.iter().any(|a| a.allows(scheme, host, port)) {
            Target::Network
        } else {
            Target::Denied(format!(
                "component `{}` may not call {scheme}://{host}:{port}: add it to `allowed_outbound_hosts` in the manifest",
                self.app.component_id(self.component)
            ))
        }
    }
}

/// A low-cardinality `error.type` for a failed outbound request: the
/// wasi:http error code's name.
fn error_type(e: &Error) -> String {
    let debug = format!("{e:?}");
    debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or("_OTHER")
        .to_string()
}
