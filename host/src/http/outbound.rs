//! Outbound HTTP from guests: a CLIENT span for every request, W3C headers
//! injected, and dispatch: a component id goes to that component in-process
//! (through the narrow [`Dispatcher`] the app implements), another host to
//! the network only if `allowed_outbound_hosts` says so.

use super::Inbound;
use crate::manifest::default_port;
use crate::telemetry::propagation::Share;
use crate::telemetry::traces::{record_exception, start_span};
use crate::telemetry::{RequestTelemetry, semconv};
use http_body_util::BodyExt;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status};
use std::pin::Pin;
use std::sync::Arc;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// How many hops — calls from one component to another, in-process or
/// through the network — one request may take before it is a loop: the
/// call past it fails with `loop-detected` and an error CLIENT span.
pub const MAX_HOPS: u32 = 16;

/// The request header that carries the hop count between hosts: set on
/// every outbound network request (the guest's own value is replaced),
/// read on every inbound one, so a loop through the network — a component
/// calling a URL that leads back to itself — stops at [`MAX_HOPS`] as an
/// in-process one does.
pub const HOPS_HEADER: &str = "polytrace-hops";

/// A response a component gives, as a future.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = http::Response<HyperOutgoingBody>> + Send + 'static>>;

/// What outbound code needs from the application, and no more: which hosts
/// are components, what a component may call, and in-process dispatch.
pub trait Dispatcher: Send + Sync + 'static {
    /// The component whose id is `host` (case-insensitive), if any.
    fn component_index(&self, host: &str) -> Option<usize>;
    /// The id (`service.name`) of component `idx`.
    fn component_id(&self, idx: usize) -> &str;
    /// Whether component `from` may call `scheme://host:port` on the network.
    fn allows(&self, from: usize, scheme: &str, host: &str, port: u16) -> bool;
    /// Which propagation headers component `from` sends to `scheme://host:port`
    /// on the network (its manifest `propagation` policy).
    fn share(&self, from: usize, scheme: &str, host: &str, port: u16) -> Share;
    /// Serve `request` in component `to`, as an in-process call.
    fn dispatch(
        self: Arc<Self>,
        to: usize,
        request: http::Request<WasiBody>,
        inbound: Inbound,
    ) -> ResponseFuture;
}

/// The outbound side of one request: who is calling, how deep in
/// in-process hops, and the application to dispatch through.
pub struct Outbound {
    dispatcher: Arc<dyn Dispatcher>,
    component: usize,
    depth: u32,
}

enum Target {
    Component(usize),
    /// With the propagation headers the destination may receive.
    Network(Share),
    Denied(String),
}

/// Resolves when the response body has been fully transmitted.
pub type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
/// What `send_request` yields: the response head and its I/O driver.
pub type Sent = Result<(http::Response<WasiBody>, IoFuture), Error>;
/// The future `send_request` returns.
pub type SentFuture = Box<dyn Future<Output = Sent> + Send>;

impl Outbound {
    /// The outbound side of a request in component `component`, `depth`
    /// in-process hops from the network.
    pub fn new(dispatcher: Arc<dyn Dispatcher>, component: usize, depth: u32) -> Self {
        Outbound {
            dispatcher,
            component,
            depth,
        }
    }

    /// Send `request` under the guest's current span: a CLIENT span, the
    /// W3C headers, then the component, the network or a denial.
    pub fn send(
        &self,
        telemetry: &RequestTelemetry,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> SentFuture {
        let trace = &telemetry.trace;
        let parent = trace.current().clone();
        let (name, attrs) =
            semconv::client_request(request.method().as_str(), request.uri(), trace.value_cap());
        let mut span = start_span(trace.tracer(), name, SpanKind::Client, attrs, Some(&parent));
        let target = self.target(request.uri());
        let share = match target {
            Target::Component(_) => Share::All,
            Target::Network(share) => share,
            Target::Denied(_) => Share::Nothing,
        };
        // The guest's own propagation headers never outrank the policy:
        // what the destination may not receive is removed.
        for name in ["traceparent", "tracestate", "baggage"] {
            request.headers_mut().remove(name);
        }
        let depth = self.depth + 1;
        request
            .headers_mut()
            .insert(HOPS_HEADER, http::HeaderValue::from(depth));
        for (k, v) in trace.inject(span.span_context(), share) {
            if let Ok(v) = http::HeaderValue::from_str(&v) {
                request.headers_mut().insert(k, v);
            }
        }
        let mut metric_attrs = semconv::client_metric_attributes(
            request.method().as_str(),
            request.uri(),
            trace.value_cap(),
        );
        let started = std::time::Instant::now();
        let dispatcher = self.dispatcher.clone();
        let metrics = telemetry.metrics.clone();
        let caller = self.dispatcher.component_id(self.component).to_string();
        Box::new(async move {
            let result: Sent = match target {
                Target::Component(_) | Target::Network(_) if depth > MAX_HOPS => {
                    record_exception(
                        &mut span,
                        "LoopDetected",
                        &format!(
                            "this request has made {MAX_HOPS} hops between components already"
                        ),
                        None,
                    );
                    Err(Error::LoopDetected)
                }
                Target::Component(idx) => {
                    let response = dispatcher
                        .dispatch(idx, request, Inbound::in_process(depth, caller))
                        .await;
                    Ok((response, Box::new(async { Ok(()) })))
                }
                Target::Network(_) => wasmtime_wasi_http::default_send_request(request, options)
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
            metrics
                .client_duration
                .record(started.elapsed().as_secs_f64(), &metric_attrs);
            result
        })
    }

    fn target(&self, uri: &http::Uri) -> Target {
        let scheme = uri.scheme_str().unwrap_or("http");
        let Some(host) = uri.host() else {
            return Target::Denied("the request has no host".into());
        };
        if scheme == "http"
            && uri.port_u16().is_none()
            && let Some(idx) = self.dispatcher.component_index(host)
        {
            return Target::Component(idx);
        }
        let port = uri.port_u16().unwrap_or_else(|| default_port(scheme));
        if self.dispatcher.allows(self.component, scheme, host, port) {
            Target::Network(self.dispatcher.share(self.component, scheme, host, port))
        } else {
            Target::Denied(format!(
                "component `{}` may not call {scheme}://{host}:{port}: add it to `allowed_outbound_hosts` in the manifest",
                self.dispatcher.component_id(self.component)
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
